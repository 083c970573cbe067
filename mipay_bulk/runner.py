"""Planning and sending a run: throttled workers, retries by outcome class, interruption.

``run_payouts()`` is the one entry point for the CLI and notebooks. What it guarantees:

* a sheet already planned in the journal is refused unless resumed (``resume=``) or paid
  again on purpose (``new_run=True``); a reference paid (or possibly paid) in any earlier
  run is refused for ever; a payout identical to one accepted (or possibly paid) in the
  last 24 hours is refused unless ``allow_duplicates``. Refusals raise
  :class:`~mipay_bulk.errors.RunRefused` before anything is sent;
* on resume, a row paid meanwhile by another run (a Failures sheet fed back) is skipped;
* every attempt is committed to the journal before its request leaves;
* ``not_sent`` and ``throttled`` are retried (capped exponential backoff with jitter, or
  ``Retry-After``); ``accepted``, ``rejected`` and ``unknown`` are final for the run;
* Ctrl-C (``KeyboardInterrupt``) stops dispatching, lets requests in flight land and be
  recorded, and returns a result with ``interrupted=True``.

Rows with validation errors are recorded as ``invalid`` and not sent; the valid rows are
sent (``strict=True`` refuses the whole sheet instead).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from . import __version__
from .client import MipayClient, Outcome
from .config import Settings
from .errors import RunRefused
from .journal import Journal, open_journal, payout_key
from .protocol import NAIROBI, OutcomeClass, format_scheduled_send
from .validate import Validation, load_payouts, validate


class TokenBucket:
    """``rate`` requests per second with a burst of one; ``hold()`` pauses everyone (a 429).

    Our own 25 lines rather than a library: the rate-limit packages change their APIs often,
    and this one needs a ``hold`` that none of them has.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.interval = 1.0 / rate
        self.clock = clock
        self._next = clock()
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Reserve the next slot; returns how long to wait before using it."""
        with self._lock:
            now = self.clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
            return slot - now

    def hold(self, seconds: float) -> None:
        with self._lock:
            self._next = max(self._next, self.clock() + seconds)


@dataclass
class Backoff:
    """Capped exponential backoff with full jitter; ``rng`` is the one place randomness enters."""

    base: float = 0.5
    cap: float = 30.0
    max_attempts: int = 5
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(retry_after, self.cap * 4)
        return self.rng.uniform(0, min(self.cap, self.base * 2 ** (attempt - 1)))


@dataclass
class RunResult:
    """What a call of :func:`run_payouts` did. ``counts`` holds the journal's row states."""

    run_id: str
    journal: Journal
    counts: dict[str, int]
    sent_now: int
    interrupted: bool = False
    recovered: int = 0
    report_path: Path | None = None
    report_error: str | None = None

    @property
    def remaining(self) -> int:
        return sum(self.counts.get(s, 0) for s in ("pending", "not_sent", "in_flight"))

    @property
    def complete(self) -> bool:
        """Every valid row accepted (or resolved as paid), and no invalid or skipped row."""
        return set(self.counts) <= {"accepted", "paid"}

    def results(self) -> pd.DataFrame:
        from .report import results

        return results(self.run_id, self.journal)

    def summary(self) -> str:
        from .report import summary_sentence

        return summary_sentence(self.run_id, self.journal)

    def __repr__(self) -> str:
        states = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        flag = " INTERRUPTED" if self.interrupted else ""
        return f"<RunResult {self.run_id}{flag}: {states}>"

    def _repr_html_(self) -> str:
        table = pd.DataFrame(sorted(self.counts.items()), columns=["state", "rows"]).to_html(index=False)
        return f"<p><b>Run {self.run_id}</b>{' (interrupted)' if self.interrupted else ''}: {self.summary()}</p>{table}"


def _state_for(outcome: OutcomeClass) -> str:
    return {OutcomeClass.ACCEPTED: "accepted", OutcomeClass.REJECTED: "rejected",
            OutcomeClass.UNKNOWN: "unknown"}.get(outcome, "not_sent")


def plan_run(
    validation: Validation,
    journal: Journal,
    *,
    gateway_url: str,
    settings: dict[str, Any],
    new_run: bool = False,
    allow_duplicates: bool = False,
    max_total: int | None = None,
    strict: bool = False,
) -> str:
    """Refuse what could pay twice, then record the run and every row. Returns the run id."""
    src = validation.sheet
    earlier = journal.runs_for_file(src.sha256)
    if earlier and not new_run:
        last = earlier[-1]
        raise RunRefused(
            f"{src.path.name} was already planned as run {last.run_id} ({last.source_name}, {last.status}). "
            f"Nothing was sent. To finish it: mipay-bulk run {src.path} --resume; "
            "to pay the same sheet again on purpose: --new-run"
        )
    payouts = validation.payouts
    if strict and not validation.ok:
        raise RunRefused(f"{len(validation.errors)} problems in {src.path.name} and --strict is on; nothing was sent")
    total = int(payouts["amount"].sum()) if len(payouts) else 0
    if max_total is not None and total > max_total:
        raise RunRefused(f"the sheet totals KES {total:,}, above --max-total KES {max_total:,}; nothing was sent")
    paid_refs = journal.accepted_references(payouts["reference"].tolist())
    if paid_refs:
        listed = "; ".join(f"row {r} reference {ref!r} (run {paid_refs[ref]})"
                           for r, ref in zip(payouts["row"], payouts["reference"], strict=True) if ref in paid_refs)
        raise RunRefused(f"references already paid, or possibly paid, in earlier runs: {listed}. "
                         "Remove those rows; nothing was sent")
    keys = [payout_key(m, int(a), p) for m, a, p in
            zip(payouts["msisdn"], payouts["amount"], payouts["product_id"], strict=True)]
    if not allow_duplicates:
        recent = journal.recently_paid(keys)
        if recent:
            listed = "; ".join(f"row {r} ({m}, KES {a:,}, run {recent[k]})" for r, m, a, k in
                               zip(payouts["row"], payouts["msisdn"], payouts["amount"], keys, strict=True)
                               if k in recent)
            raise RunRefused(f"the same payouts were accepted (or may have been paid) in the last 24 hours: "
                             f"{listed}. Nothing was sent; pass --allow-duplicates if they are meant to be "
                             "paid again")
    rows = validation.rows
    # The cells as the analyst typed them, under the sheet's own headers.
    originals = src.rows.drop(columns=["row"]).to_dict("records")
    key_of = dict(zip(payouts["row"], keys, strict=True))
    records = []
    for i, r in enumerate(rows.itertuples(index=False)):
        ok = bool(r.valid)
        records.append({
            "row": int(r.row), "state": "pending" if ok else "invalid",
            "payout_key": key_of.get(r.row), "msisdn": r.msisdn or None,
            "amount": None if pd.isna(r.amount) else int(r.amount), "product_id": r.product_id or None,
            "scheduled_send": r.scheduled_send, "reference": r.reference or None, "name": r.name or None,
            "original": originals[i],
        })
    totals = validation.totals.reset_index().to_dict("records")
    return journal.create_run(
        source_name=src.path.name, source_path=str(src.path.resolve()), source_sha256=src.sha256, sheet=src.sheet,
        headers=[h for h in src.headers], gateway_url=gateway_url, settings=settings, totals={"by_product": totals},
        rows=records, issues=list(validation.issues.itertuples(index=False, name=None)), tool_version=__version__,
    )


class _Sender:
    """Sends the sendable rows of one run; one instance per call of :func:`send_run`."""

    def __init__(self, journal: Journal, run_id: str, client: MipayClient, *, rate: float, concurrency: int,
                 batch_size: int, batch_pause: float, backoff: Backoff, sleep_event: threading.Event,
                 on_done: Callable[[str], None], now: Callable[[], datetime]) -> None:
        self.journal, self.run_id, self.client = journal, run_id, client
        self.bucket = TokenBucket(rate)
        self.concurrency, self.batch_size, self.batch_pause = concurrency, batch_size, batch_pause
        self.backoff, self.stop, self.on_done, self.now = backoff, sleep_event, on_done, now

    def _send_row(self, row: Any) -> str:
        attempt = 0
        while True:
            wait_for = self.bucket.reserve()
            if wait_for and self.stop.wait(wait_for):
                return row["state"] if attempt == 0 else "not_sent"
            # A blank schedule means "send now": the time of signing, in Nairobi.
            when = row["scheduled_send"] or format_scheduled_send(self.now())
            attempt_id = self.journal.begin_attempt(self.run_id, row["row"], when)
            attempt += 1
            try:
                outcome: Outcome = self.client.remit(msisdn=row["msisdn"], amount=int(row["amount"]),
                                                     product_id=row["product_id"], scheduled_send=when)
            except Exception as exc:  # noqa: BLE001 - whatever it was, the request may have left
                outcome = Outcome(service="REMIT", outcome=OutcomeClass.UNKNOWN,
                                  error=f"unexpected {type(exc).__name__}: {str(exc)[:300]}")
            state = _state_for(outcome.outcome)
            self.journal.finish_attempt(attempt_id, self.run_id, row["row"], outcome, row_state=state)
            if not outcome.outcome.retryable:
                return state
            if outcome.outcome is OutcomeClass.THROTTLED:
                self.bucket.hold(self.backoff.delay(attempt, outcome.retry_after))
            if attempt >= self.backoff.max_attempts:
                return state
            if self.stop.wait(self.backoff.delay(attempt, outcome.retry_after)):
                return state

    def run(self, rows: list[Any]) -> int:
        """Send ``rows``; returns how many were dispatched. Re-raises KeyboardInterrupt after draining."""
        dispatched = 0
        interrupted: BaseException | None = None
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="mipay-send") as pool:
            in_flight: set[Future] = set()

            def reap(block: bool) -> None:
                if not in_flight:
                    return
                done, _ = wait(in_flight, timeout=0.2 if block else 0, return_when=FIRST_COMPLETED)
                for f in done:
                    in_flight.discard(f)
                    self.on_done(f.result())

            try:
                for start in range(0, len(rows), self.batch_size):
                    for row in rows[start:start + self.batch_size]:
                        while len(in_flight) >= self.concurrency:
                            reap(block=True)
                        if self.stop.is_set():
                            raise KeyboardInterrupt
                        in_flight.add(pool.submit(self._send_row, row))
                        dispatched += 1
                        reap(block=False)
                    if self.batch_pause and start + self.batch_size < len(rows):
                        while in_flight:
                            reap(block=True)
                        if self.stop.wait(self.batch_pause):
                            raise KeyboardInterrupt
                while in_flight:
                    reap(block=True)
            except KeyboardInterrupt as exc:
                interrupted = exc
                self.stop.set()  # no new attempt starts; the requests in flight land and are recorded
                while in_flight:
                    try:
                        reap(block=True)
                    except KeyboardInterrupt:  # a second Ctrl-C while draining: keep draining
                        continue
        if interrupted is not None:
            raise interrupted
        return dispatched


def run_payouts(
    source: str | Path | Validation | None = None,
    *,
    settings: Settings | None = None,
    client: MipayClient | None = None,
    journal: Journal | str | Path | None = None,
    resume: str | bool | None = None,
    new_run: bool = False,
    sheet: str | None = None,
    default_product: str | None = None,
    allow_duplicates: bool = False,
    max_total: int | None = None,
    strict: bool = False,
    rate: float = 10.0,
    concurrency: int = 4,
    batch_size: int = 100,
    batch_pause: float = 0.0,
    backoff: Backoff | None = None,
    progress: bool = True,
    report: bool | str | Path = True,
    stop: threading.Event | None = None,
    now: Callable[[], datetime] | None = None,
) -> RunResult:
    """Plan (or resume) a run of a payout sheet and send it. See the module docstring.

    ``source`` is a sheet path or a :class:`Validation`; with ``resume=True`` the unfinished
    run of that sheet is resumed, with ``resume="RUN_ID"`` that run. ``report`` writes the
    reconciliation workbook when the call ends (``True``: next to the sheet; a path: there).
    """
    if client is None:
        if settings is None:
            raise ValueError("give settings= or client=")
        client = MipayClient.from_settings(settings)
    journal = open_journal(journal)
    now = now or (lambda: datetime.now(NAIROBI))
    run_settings = {"rate": rate, "concurrency": concurrency, "batch_size": batch_size, "batch_pause": batch_pause,
                    "default_product": default_product, "allow_duplicates": allow_duplicates,
                    "max_total": max_total}
    if resume:
        run_id = _find_resumable(journal, source, resume, sheet)
    else:
        if source is None:
            raise ValueError("give the sheet to send")
        validation = source if isinstance(source, Validation) else validate(
            load_payouts(source, sheet), default_product=default_product, allow_duplicates=allow_duplicates)
        run_id = plan_run(validation, journal, gateway_url=client.base_url, settings=run_settings,
                          new_run=new_run, allow_duplicates=allow_duplicates, max_total=max_total, strict=strict)
    recovered = journal.recover(run_id)
    rows = journal.sendable(run_id)
    if resume and rows and not journal.run(run_id).settings.get("allow_duplicates"):
        # Rows of this run paid meanwhile by another run (a Failures sheet fed back, say) are
        # skipped, not paid twice.
        elsewhere = journal.recently_paid([r["payout_key"] for r in rows], exclude_run=run_id)
        if elsewhere:
            journal.skip(run_id, {r["row"]: f"paid meanwhile in run {elsewhere[r['payout_key']]}"
                                  for r in rows if r["payout_key"] in elsewhere})
            rows = journal.sendable(run_id)
    bar = _progress(len(rows), run_id) if progress else None
    tally: dict[str, int] = {}

    def on_done(state: str) -> None:
        tally[state] = tally.get(state, 0) + 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix({k: tally.get(k, 0) for k in ("accepted", "rejected", "unknown", "not_sent")},
                            refresh=False)

    sender = _Sender(journal, run_id, client, rate=rate, concurrency=max(1, concurrency),
                     batch_size=max(1, batch_size), batch_pause=batch_pause, backoff=backoff or Backoff(),
                     sleep_event=stop or threading.Event(), on_done=on_done, now=now)
    interrupted = False
    sent = 0
    try:
        sent = sender.run(rows)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if bar is not None:
            bar.close()
    counts = journal.counts(run_id)
    left = sum(counts.get(s, 0) for s in ("pending", "not_sent", "in_flight"))
    journal.set_status(run_id, "interrupted" if interrupted else ("finished" if left == 0 else "open"))
    result = RunResult(run_id=run_id, journal=journal, counts=counts, sent_now=sent, interrupted=interrupted,
                       recovered=recovered)
    if report:
        from .report import write_report

        try:
            result.report_path = write_report(run_id, None if report is True else report, journal=journal)
        except OSError as exc:
            # The payouts are safe in the journal; a report can be rebuilt from it at any time.
            result.report_error = f"{exc.strerror or exc}: {exc.filename or ''}".strip()
    return result


def _find_resumable(journal: Journal, source: Any, resume: str | bool, sheet: str | None) -> str:
    if isinstance(resume, str):
        journal.run(resume)
        return resume
    if source is None:
        raise RunRefused("--resume without a run id needs the sheet whose run to resume")
    from .sheets import file_sha256

    path = source.sheet.path if isinstance(source, Validation) else Path(source)
    runs = journal.runs_for_file(file_sha256(path))
    if not runs:
        raise RunRefused(f"{path.name} has never been planned in {journal.path}; run it without --resume")
    # The unfinished run if there is one; else the latest, which sends only what is still sendable.
    unfinished = [r for r in runs if r.status != "finished"]
    return (unfinished or runs)[-1].run_id


def _progress(total: int, run_id: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"run {run_id}", unit="payout", dynamic_ncols=True)
