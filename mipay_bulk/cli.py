"""The command line: argument parsing and exit codes only; every command calls the library.

Exit codes: 0 all done and accepted; 1 some rows invalid, rejected, not sent or unknown;
2 the file, the settings or the command line cannot be used (nothing sent); 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__, protocol
from .errors import ConfigurationError, InputError, JournalError, MipayError, RunRefused

EXIT_OK, EXIT_ISSUES, EXIT_UNUSABLE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _err(message: str) -> None:
    print(f"mipay-bulk: {message}", file=sys.stderr)


# ---------------------------------------------------------------- sandbox


def cmd_sandbox(args: argparse.Namespace) -> int:
    from .sandbox import SANDBOX_USERNAME, Faults, Sandbox

    faults = Faults(
        latency=args.latency,
        timeout_share=args.timeout_share,
        drop_share=args.drop_share,
        http500_share=args.http500_share,
        http503_share=args.http503_share,
        html_share=args.html_share,
        throttle_share=args.throttle_share,
        rate_limit=args.rate_limit,
        seed=args.seed,
    )
    log = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    sandbox = Sandbox(args.host, args.port, faults=faults, log=log)
    sandbox._bind()
    print(
        f"MIPAY sandbox listening on {sandbox.url} (username {SANDBOX_USERNAME!r}; "
        "password and API key as in the README). Ctrl-C stops it.",
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        sandbox.serve_forever()
    return EXIT_OK


# ---------------------------------------------------------------- sign


def cmd_sign(args: argparse.Namespace) -> int:
    from .config import ENV_VARS, check_api_key, env_value

    path = Path(args.body)
    try:
        body = json.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc.strerror})") from None
    except ValueError as exc:
        raise InputError(f"{path}: not JSON ({exc})") from None
    if not isinstance(body, dict):
        raise InputError(f"{path}: expected a JSON object (the request body), found {type(body).__name__}")
    key = env_value(ENV_VARS["api_key"])
    if not key:
        raise ConfigurationError(
            f"{ENV_VARS['api_key']} is not set",
            hint=f"export {ENV_VARS['api_key']}=... or put it in a .env file in this folder",
        )
    check_api_key(key)
    print("canonical string:")
    print(protocol.canonical_string(body))
    print("sec_hash:")
    print(protocol.sign(body, key))
    if "sec_hash" in body:
        ok = protocol.verify(body, key)
        print(f"the body's own sec_hash {'matches' if ok else 'does NOT match'}")
    return EXIT_OK


# ---------------------------------------------------------------- validate

ISSUES_SHOWN = 50


def _limits(args: argparse.Namespace):
    from .config import Limits

    return Limits(max_rows=args.max_rows) if getattr(args, "max_rows", None) else Limits()


def _load_and_validate(args: argparse.Namespace):
    from .validate import load_payouts, validate

    limits = _limits(args)
    sheet = load_payouts(args.sheet_file, args.sheet, limits=limits)
    return validate(sheet, limits=limits, default_product=args.product, allow_duplicates=args.allow_duplicates)


def print_validation(result, *, stream=None) -> None:
    stream = stream or sys.stdout
    src = result.sheet
    print(f"{src.path.name}" + (f" [{src.sheet}]" if src.sheet else "")
          + f": {len(src.rows):,} rows, header on row {src.header_row}", file=stream)
    totals = result.totals.rename(columns={"kes": "KES"})
    print(totals.to_string(formatters={"KES": "{:,}".format}), file=stream)
    issues = result.issues
    if issues.empty:
        print("No issues: every row is a valid payout.", file=stream)
        return
    errors, warnings = len(result.errors), len(result.warnings)
    print(f"\n{errors:,} errors, {warnings:,} warnings:", file=stream)
    for issue in issues.head(ISSUES_SHOWN).itertuples(index=False):
        print(f"  {issue.severity:<7}  {issue.code:<24}  {issue.message}", file=stream)
    if len(issues) > ISSUES_SHOWN:
        print(f"... and {len(issues) - ISSUES_SHOWN:,} more (see the issues file)", file=stream)


def cmd_validate(args: argparse.Namespace) -> int:
    from .inert import neutralise_frame

    result = _load_and_validate(args)
    print_validation(result)
    src = Path(args.sheet_file)
    out = Path(args.out) if args.out else src.with_name(src.stem + ".issues.csv")
    if not result.issues.empty:
        neutralise_frame(result.issues).to_csv(out, index=False, encoding="utf-8-sig")
        print(f"\nAll issues written to {out}")
    return EXIT_OK if result.ok else EXIT_ISSUES


# ---------------------------------------------------------------- run (the main job)

PREVIEW_ROWS = 5
RESUME_THIS_SHEET = "(the unfinished run of this sheet)"  # what a bare --resume means


def _settings_for(args: argparse.Namespace, stack) -> tuple:
    """Settings (and the sandbox, if one was started) for a command that talks to a gateway."""
    from .config import Settings

    if getattr(args, "sandbox", False):
        from .sandbox import Sandbox

        sandbox = stack.enter_context(Sandbox())
        print(f"Using the embedded sandbox gateway at {sandbox.url} (no real money moves).")
        return sandbox.settings(), sandbox
    return Settings.from_env(gateway_url=args.gateway_url), None


def _journal_for(args: argparse.Namespace, sandbox) -> object:
    import tempfile

    from .journal import Journal

    if args.journal:
        return Journal(args.journal)
    if sandbox is not None:
        # A sandbox's ledger dies with this command, so its runs must not share the real journal.
        folder = Path(tempfile.mkdtemp(prefix="mipay-sandbox-"))
        journal = Journal(folder / "journal.sqlite")
        print(f"Sandbox run: journal at {journal.path}")
        return journal
    return Journal()


def _confirm(question: str, args: argparse.Namespace) -> bool:
    if args.yes:
        return True
    if not sys.stdin.isatty():
        raise InputError("no terminal to confirm on: pass --yes to send without asking")
    answer = input(f"{question} [y/N] ").strip().lower()
    return answer in ("y", "yes")


def _preview(result) -> None:
    payouts = result.payouts
    total = int(payouts["amount"].sum()) if len(payouts) else 0
    print(f"\nTo send: {len(payouts):,} payouts, KES {total:,}")
    if len(payouts):
        shown = payouts[["row", "msisdn", "amount", "product_id", "scheduled_send"]].head(PREVIEW_ROWS).copy()
        shown["scheduled_send"] = shown["scheduled_send"].where(shown["scheduled_send"] != "", "(now)")
        print(shown.to_string(index=False))


def cmd_run(args: argparse.Namespace) -> int:
    import contextlib
    import signal
    from datetime import datetime

    from .client import MipayClient
    from .protocol import NAIROBI, format_scheduled_send
    from .runner import run_payouts

    with contextlib.ExitStack() as stack:
        settings, sandbox = _settings_for(args, stack)
        result = None
        if not args.resume:
            result = _load_and_validate(args)
            print_validation(result)
            _preview(result)
        client = MipayClient.from_settings(settings)
        if args.dry_run:
            if result is not None and len(result.payouts):
                print("\nDry run: the first signed bodies (password masked), nothing sent:")
                for r in result.payouts.head(3).itertuples():
                    from datetime import datetime

                    from .protocol import NAIROBI, format_scheduled_send

                    when = r.scheduled_send or format_scheduled_send(datetime.now(NAIROBI))
                    body = client.masked_body("REMIT", {"MSISDN": r.msisdn, "amount": int(r.amount),
                                                        "product_id": r.product_id, "scheduled_send": when})
                    print(json.dumps(body, ensure_ascii=False))
            return EXIT_OK if result is None or result.ok else EXIT_ISSUES
        if result is not None and not len(result.payouts):
            print("\nNo valid payouts to send.")
            return EXIT_ISSUES
        journal = _journal_for(args, sandbox)
        if result is not None:
            total = int(result.payouts["amount"].sum())
            question = f"Send {len(result.payouts):,} payouts, KES {total:,}, to {settings.gateway_url}?"
        else:
            question = f"Resume sending to {settings.gateway_url}?"
        if not _confirm(question, args):
            print("Nothing sent.")
            return EXIT_UNUSABLE
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            run = run_payouts(
                result if result is not None else args.sheet_file, client=client, journal=journal,
                resume=True if args.resume == RESUME_THIS_SHEET else args.resume,
                new_run=args.new_run, default_product=args.product, allow_duplicates=args.allow_duplicates,
                max_total=args.max_total, strict=args.strict, rate=args.rate, concurrency=args.concurrency,
                batch_size=args.batch_size, batch_pause=args.batch_pause, progress=not args.quiet,
                report=Path(args.out) if args.out else True,
            )
        finally:
            signal.signal(signal.SIGTERM, previous)
    print()
    if run.recovered:
        print(f"{run.recovered} requests were in flight when the last run stopped: they are now unknown.")
    print(run.summary())
    if run.report_path:
        print(f"Report: {run.report_path}")
    if run.report_error:
        _err(f"the report could not be written ({run.report_error}); the run is safe in the journal: "
             f"mipay-bulk report {run.run_id} --out PATH")
    if run.interrupted:
        where = f" --journal {args.journal}" if args.journal else ""
        print(f"Interrupted: {run.remaining:,} rows not sent yet. Resume with:\n"
              f"  mipay-bulk run {args.sheet_file} --resume {run.run_id}{where}")
        return EXIT_INTERRUPTED
    if run.counts.get("unknown"):
        print(f"Record what the statement shows with: mipay-bulk resolve {run.run_id} --paid ROWS / --release ROWS")
    return EXIT_OK if run.complete else EXIT_ISSUES


def _raise_interrupt(signum, frame):  # SIGTERM is handled like Ctrl-C
    raise KeyboardInterrupt


# ---------------------------------------------------------------- runs, resolve, report


def parse_rows(text: str) -> list[int]:
    """``'12,15-18'`` -> ``[12, 15, 16, 17, 18]``."""
    rows: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            if "-" in part:
                a, b = (int(x) for x in part.split("-", 1))
                rows.extend(range(a, b + 1))
            else:
                rows.append(int(part))
        except ValueError:
            raise InputError(f"{part!r} is not a row number or range (e.g. 12,15-18)") from None
    return rows


def cmd_runs(args: argparse.Namespace) -> int:
    from .journal import Journal, runs

    journal = Journal(args.journal)
    table = runs(journal)
    if table.empty:
        print(f"No runs in {journal.path}")
    else:
        print(table.to_string(index=False))
    return EXIT_OK


def cmd_resolve(args: argparse.Namespace) -> int:
    from .journal import Journal, resolve

    if not args.paid and not args.release:
        raise InputError("say which rows: --paid ROWS (found on the statement) and/or --release ROWS")
    journal = Journal(args.journal)
    done = resolve(args.run_id, paid=parse_rows(args.paid or ""), release=parse_rows(args.release or ""),
                   note=args.note, journal=journal)
    for decision, group in done.groupby("decision", sort=False):
        print(f"Run {args.run_id}: rows {', '.join(map(str, group['row']))} recorded as {decision}.")
    if args.release:
        print(f"Released rows go out with: mipay-bulk run SHEET --resume {args.run_id}")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from .journal import Journal
    from .report import write_report

    journal = Journal(args.journal)
    path = write_report(args.run_id, args.out, journal=journal, format=args.format)
    print(f"Report: {path}")
    return EXIT_OK


# ---------------------------------------------------------------- reconcile


def cmd_reconcile(args: argparse.Namespace) -> int:
    from .journal import Journal
    from .reconcile import reconcile, write_reconciliation
    from .report import default_report_path

    journal = Journal(args.journal)
    journal.run(args.run_id)
    rec = reconcile(args.run_id, args.statement, journal=journal, window_hours=args.window_hours,
                    settle_after_minutes=args.settle_after, apply=args.apply)
    print(rec.tieout.to_string(index=False, formatters={"kes": "{:,.2f}".format}))
    counts = ", ".join(f"{k} {v}" for k, v in sorted(rec.counts().items()))
    print(f"\nPayouts: {counts}")
    print("The statement ties out." if rec.ties_out else "The statement does NOT tie out.")
    out = Path(args.out) if args.out else default_report_path(args.run_id, journal, ".xlsx", kind="reconciliation")
    write_reconciliation(rec, out)
    print(f"Reconciliation: {out}")
    if args.apply and len(rec.applied):
        for decision, group in rec.applied.groupby("decision"):
            print(f"Recorded {decision}: rows {', '.join(map(str, group['row']))}")
        if (rec.applied["decision"] == "release").any():
            print(f"Released rows go out with: mipay-bulk run SHEET --resume {args.run_id}")
    elif not args.apply and rec.payouts["reconciliation"].isin(["settled_paid", "settled_unpaid",
                                                                 "paid_despite_rejection"]).any():
        print("Nothing was recorded: add --apply to record what the statement decides.")
    return EXIT_OK if rec.clean else EXIT_ISSUES


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mipay-bulk",
        description="Bulk M-PESA payouts through the MIPAY gateway: load, validate, send, report.",
    )
    parser.add_argument("--version", action="version", version=f"mipay-bulk {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("sandbox", help="run the sandbox gateway on loopback until Ctrl-C")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8642)
    p.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    for name in ("timeout", "drop", "http500", "http503", "html", "throttle"):
        p.add_argument(f"--{name}-share", type=float, default=0.0, dest=f"{name}_share", metavar="P")
    p.add_argument("--rate-limit", type=float, default=None, help="answer 429 above this many requests/s")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="do not log request lines")
    p.set_defaults(func=cmd_sandbox)

    p = sub.add_parser("validate", help="check a payout sheet and report every problem by row")
    _sheet_args(p)
    p.add_argument("--out", help="where to write the full issues list (default: next to the sheet)")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("run", help="load, validate, send and report a payout sheet (the main job)")
    _sheet_args(p)
    p.add_argument("--sandbox", action="store_true", help="start the embedded sandbox gateway and use it")
    p.add_argument("--dry-run", action="store_true", help="everything but sending; shows the first signed bodies")
    p.add_argument("--yes", action="store_true", help="send without asking for confirmation")
    p.add_argument("--gateway-url", help="the gateway (default: MIPAY_GATEWAY_URL, else https://gomipay.com)")
    p.add_argument("--rate", type=float, default=10.0, help="requests per second at most (default 10)")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight at most (default 4)")
    p.add_argument("--batch-size", type=int, default=100, help="rows per batch (default 100)")
    p.add_argument("--batch-pause", type=float, default=0.0, help="seconds to pause between batches")
    p.add_argument("--journal", help="the journal file (default: MIPAY_JOURNAL, else a per-user file)")
    p.add_argument("--out", help="where to write the report")
    p.add_argument("--resume", nargs="?", const=RESUME_THIS_SHEET, metavar="RUN",
                   help="resume the unfinished run of this sheet, or the run named")
    p.add_argument("--new-run", action="store_true", help="pay a sheet that was already planned, again")
    p.add_argument("--max-total", type=int, metavar="KES", help="refuse a sheet whose total is above this")
    p.add_argument("--strict", action="store_true", help="refuse the whole sheet if any row is invalid")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("runs", help="list the runs in the journal with their totals")
    p.add_argument("--journal")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("resolve", help="record what the statement shows for unknown rows")
    p.add_argument("run_id", metavar="RUN")
    p.add_argument("--paid", metavar="ROWS", help="rows found paid on the statement, e.g. 12,15-18")
    p.add_argument("--release", metavar="ROWS", help="rows not on the statement: send them on the next --resume")
    p.add_argument("--note", help="why (kept in the journal)")
    p.add_argument("--journal")
    p.set_defaults(func=cmd_resolve)

    p = sub.add_parser("report", help="write the report of a run again, from the journal")
    p.add_argument("run_id", metavar="RUN")
    p.add_argument("--out")
    p.add_argument("--format", choices=["xlsx", "csv", "json"],
                   help="the workbook (default), or the Results as CSV or JSON with formula-like values made inert")
    p.add_argument("--journal")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("reconcile", help="match a run to the M-PESA organisation statement")
    p.add_argument("run_id", metavar="RUN")
    p.add_argument("statement", metavar="STATEMENT", help="the statement export, .csv or .xlsx")
    p.add_argument("--out", help="where to write the reconciliation workbook")
    p.add_argument("--window-hours", type=float, default=48, help="how long after the send a line may complete")
    p.add_argument("--settle-after", type=float, default=10, metavar="MINUTES",
                   help="an unknown row is settled unpaid only if the statement reaches this far past its send")
    p.add_argument("--apply", action="store_true", help="record the statement's decisions in the journal")
    p.add_argument("--journal")
    p.set_defaults(func=cmd_reconcile)

    p = sub.add_parser("sign", help="print the canonical string and sec_hash of a request body")
    p.add_argument("body", help="a JSON file holding the request body")
    p.set_defaults(func=cmd_sign)
    return parser


COMMANDS = ("run", "validate", "runs", "resolve", "report", "reconcile", "sandbox", "sign")


def _sheet_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("sheet_file", metavar="SHEET", help="the payout sheet: .xlsx, .xlsm, .xls, .ods or .csv")
    p.add_argument("--sheet", help="the sheet to read in a workbook (default: the first visible one)")
    p.add_argument("--product", type=str.upper, choices=["B2C", "B2B"], help="product for rows where it is blank")
    p.add_argument("--allow-duplicates", action="store_true", help="let identical payouts through, with a warning")
    p.add_argument("--max-rows", type=int, help="refuse sheets with more payout rows than this (default 200,000)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # `mipay-bulk payouts.xlsx` is `mipay-bulk run payouts.xlsx`.
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        argv.insert(0, "run")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed its message
        return EXIT_OK if exc.code == 0 else EXIT_UNUSABLE
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_UNUSABLE
    try:
        return args.func(args)
    except (ConfigurationError, InputError, RunRefused, JournalError) as exc:
        _err(str(exc))
        return EXIT_UNUSABLE
    except MipayError as exc:
        _err(str(exc))
        return EXIT_ISSUES
    except OSError as exc:  # a file we were told to write, or the journal's disk
        _err(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "))
        return EXIT_ISSUES
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Output piped into `head` and the like: stop quietly (Python's documented recipe).
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
