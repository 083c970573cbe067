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
    from .config import ENV_VARS, check_api_key

    path = Path(args.body)
    try:
        body = json.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc.strerror})") from None
    except ValueError as exc:
        raise InputError(f"{path}: not JSON ({exc})") from None
    if not isinstance(body, dict):
        raise InputError(f"{path}: expected a JSON object (the request body), found {type(body).__name__}")
    key = _env_value(ENV_VARS["api_key"])
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


def _env_value(var: str) -> str | None:
    import os

    if os.environ.get(var):
        return os.environ[var]
    if Path(".env").is_file():
        from dotenv import dotenv_values

        return dotenv_values(".env").get(var) or None
    return None


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

    p = sub.add_parser("sign", help="print the canonical string and sec_hash of a request body")
    p.add_argument("body", help="a JSON file holding the request body")
    p.set_defaults(func=cmd_sign)
    return parser


def _sheet_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("sheet_file", metavar="SHEET", help="the payout sheet: .xlsx, .xlsm, .xls, .ods or .csv")
    p.add_argument("--sheet", help="the sheet to read in a workbook (default: the first visible one)")
    p.add_argument("--product", type=str.upper, choices=["B2C", "B2B"], help="product for rows where it is blank")
    p.add_argument("--allow-duplicates", action="store_true", help="let identical payouts through, with a warning")
    p.add_argument("--max-rows", type=int, help="refuse sheets with more payout rows than this (default 200,000)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
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
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Output piped into `head` and the like: stop quietly (Python's documented recipe).
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
