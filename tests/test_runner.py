"""Sending: journal before request, refusals before sending, retries by class, resume and resolve."""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections import Counter

import pytest

from mipay_bulk import Faults, RunRefused
from mipay_bulk.journal import Journal
from mipay_bulk.runner import Backoff, TokenBucket, run_payouts

from . import sheetmaker as mk


def numbers(n: int, start: int = 0) -> list[str]:
    return [f"0{710 + (i // 1_000_000) % 10}{i % 1_000_000:06d}" for i in range(start, start + n)]


def sheet(tmp_path, n=20, start=0, name="p.csv", amount=100, refs=False):
    header = ["Phone", "Amount", "Product"] + (["Reference"] if refs else [])
    rows = [[m, amount + i, "B2C"] + ([f"REF-{start + i}"] if refs else []) for i, m in enumerate(numbers(n, start))]
    return mk.csv_file(tmp_path / name, rows, header=header)


def fast(**kw):
    base = dict(rate=500, concurrency=8, progress=False, report=False, backoff=Backoff(base=0.01, cap=0.05))
    base.update(kw)
    return base


@pytest.fixture
def journal(tmp_path):
    with Journal(tmp_path / "journal.sqlite") as j:
        yield j


def test_run_sends_every_valid_row_once(tmp_path, sandbox, journal):
    path = sheet(tmp_path, 30)
    result = run_payouts(path, client=sandbox.client(), journal=journal, **fast())
    assert result.counts == {"accepted": 30} and result.complete
    assert len(sandbox.ledger()) == 30
    assert set(sandbox.paid_counts().values()) == {1}
    attempts = journal.attempts(result.run_id)
    assert (attempts["outcome"] == "accepted").all() and attempts["latency"].gt(0).all()
    con = sqlite3.connect(journal.path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_intent_is_committed_before_the_request_leaves(tmp_path, make_sandbox):
    """The sandbox looks in the journal, from its own connection, while it handles each request."""
    jpath = tmp_path / "journal.sqlite"
    seen: list[int] = []

    def clock() -> float:
        con = sqlite3.connect(jpath)
        seen.append(con.execute("SELECT COUNT(*) FROM attempts WHERE outcome IS NULL").fetchone()[0])
        con.close()
        return time.time()

    sb = make_sandbox(clock=clock)
    run_payouts(sheet(tmp_path, 10), client=sb.client(), journal=jpath, **fast(concurrency=1))
    assert len(seen) == 10 and all(n == 1 for n in seen)


def test_same_file_again_renamed_or_moved_is_refused(tmp_path, sandbox, journal):
    path = sheet(tmp_path, 5)
    first = run_payouts(path, client=sandbox.client(), journal=journal, **fast())
    moved = tmp_path / "elsewhere" / "renamed.csv"
    moved.parent.mkdir()
    shutil.copy(path, moved)
    for p in (path, moved):
        with pytest.raises(RunRefused, match=f"already planned as run {first.run_id}.*--resume.*--new-run"):
            run_payouts(p, client=sandbox.client(), journal=journal, **fast())
    assert len(sandbox.ledger()) == 5
    # --new-run on its own still meets the 24-hour rule; with both, it pays again on purpose.
    with pytest.raises(RunRefused, match=r"accepted \(or may have been paid\) in the last 24 hours"):
        run_payouts(moved, client=sandbox.client(), journal=journal, new_run=True, **fast())
    again = run_payouts(moved, client=sandbox.client(), journal=journal, new_run=True, allow_duplicates=True,
                        **fast())
    assert again.counts == {"accepted": 5} and len(sandbox.ledger()) == 10


def test_earlier_reference_in_a_new_file_is_refused(tmp_path, sandbox, journal):
    run_payouts(sheet(tmp_path, 3, refs=True), client=sandbox.client(), journal=journal, **fast())
    other = sheet(tmp_path, 3, start=2, name="q.csv", amount=900, refs=True)  # REF-2 again, new number
    with pytest.raises(RunRefused, match="row 2 reference 'REF-2'"):
        run_payouts(other, client=sandbox.client(), journal=journal, **fast())
    assert len(sandbox.ledger()) == 3


def test_max_total_and_strict_refuse_before_sending(tmp_path, sandbox, journal):
    path = sheet(tmp_path, 3)
    with pytest.raises(RunRefused, match="above --max-total KES 100"):
        run_payouts(path, client=sandbox.client(), journal=journal, max_total=100, **fast())
    bad = mk.csv_file(tmp_path / "bad.csv", [["0712345678", 100, "B2C"], ["07123", 100, "B2C"]],
                      header=["Phone", "Amount", "Product"])
    with pytest.raises(RunRefused, match="--strict"):
        run_payouts(bad, client=sandbox.client(), journal=journal, strict=True, **fast())
    assert sandbox.ledger() == [] and journal.runs().empty


def test_invalid_rows_are_journalled_not_sent(tmp_path, sandbox, journal):
    bad = mk.csv_file(tmp_path / "bad.csv", [["0712345678", 100, "B2C"], ["07123", 100, "B2C"]],
                      header=["Phone", "Amount", "Product"])
    result = run_payouts(bad, client=sandbox.client(), journal=journal, **fast())
    assert result.counts == {"accepted": 1, "invalid": 1} and not result.complete
    assert journal.issues(result.run_id)["code"].tolist() == ["msisdn_too_short"]


def test_unknown_is_never_resent_until_released(tmp_path, sandbox, journal):
    path = mk.csv_file(tmp_path / "p.csv", [["0712345678", 100, "B2C"], ["0700000009", 200, "B2C"],
                                            ["0712345679", 300, "B2C"]], header=["Phone", "Amount", "Product"])
    first = run_payouts(path, client=sandbox.client(), journal=journal, **fast())
    assert first.counts == {"accepted": 2, "unknown": 1}
    assert sandbox.paid_counts()[("254700000009", 200)] == 1
    again = run_payouts(path, client=sandbox.client(), journal=journal, resume=True, **fast())
    assert again.sent_now == 0 and sandbox.paid_counts()[("254700000009", 200)] == 1
    with pytest.raises(Exception, match="only unknown rows"):
        journal.resolve(first.run_id, [2], "release")
    journal.resolve(first.run_id, [3], "paid", note="on the statement")
    assert journal.counts(first.run_id) == {"accepted": 2, "paid": 1}
    # A release sends it again on the next resume (here the analyst judged it unpaid).
    j2 = Journal(tmp_path / "j2.sqlite")
    second = run_payouts(path, client=sandbox.client(), journal=j2, new_run=True, allow_duplicates=True, **fast())
    j2.resolve(second.run_id, [3], "release")
    resumed = run_payouts(path, client=sandbox.client(), journal=j2, resume=second.run_id, **fast())
    assert resumed.sent_now == 1


def test_not_sent_is_retried_and_resumable(tmp_path, sandbox, journal):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    from mipay_bulk import MipayClient

    from .conftest import TEST_API_KEY, TEST_PASSWORD

    nowhere = MipayClient(f"http://127.0.0.1:{dead}", username="sandbox", password=TEST_PASSWORD,
                          api_key=TEST_API_KEY, ip_address="127.0.0.1", timeout=(0.5, 1))
    path = sheet(tmp_path, 4)
    first = run_payouts(path, client=nowhere, journal=journal, **fast(backoff=Backoff(base=0.01, max_attempts=3)))
    assert first.counts == {"not_sent": 4}
    attempts = journal.attempts(first.run_id)
    assert len(attempts) == 12 and set(attempts["outcome"]) == {"not_sent"}
    resumed = run_payouts(path, client=sandbox.client(), journal=journal, resume=True, **fast())
    assert resumed.counts == {"accepted": 4} and len(sandbox.ledger()) == 4


def test_throttled_waits_and_completes(tmp_path, make_sandbox, journal):
    sb = make_sandbox(faults=Faults(rate_limit=40, retry_after=0.2))
    result = run_payouts(sheet(tmp_path, 60), client=sb.client(), journal=journal,
                         **fast(rate=200, backoff=Backoff(base=0.01, max_attempts=50)))
    assert result.counts == {"accepted": 60}
    outcomes = Counter(journal.attempts(result.run_id)["outcome"])
    assert outcomes["throttled"] > 0 and outcomes["accepted"] == 60
    assert set(sb.paid_counts().values()) == {1}


def test_faults_never_pay_twice_and_ambiguity_is_unknown(tmp_path, make_sandbox, journal):
    faults = Faults(timeout_share=0.03, drop_share=0.03, http500_share=0.03, http503_share=0.03, html_share=0.03,
                    throttle_share=0.05, hang=2.0, seed=11)
    sb = make_sandbox(faults=faults)
    n = 300
    result = run_payouts(sheet(tmp_path, n), journal=journal,
                         client=sb.client(timeout=(1.0, 0.4)),
                         **fast(backoff=Backoff(base=0.01, cap=0.05, max_attempts=20)))
    rows = journal.rows(result.run_id)
    assert set(rows["state"]) <= {"accepted", "unknown"}
    paid = sb.paid_counts()
    assert max(paid.values()) == 1  # nobody paid twice
    by_state = {s: set(zip(g["msisdn"], g["amount"], strict=True)) for s, g in rows.groupby("state")}
    assert all(paid[k] == 1 for k in by_state["accepted"])
    # Every ambiguous answer is unknown: a timeout, a drop, a 500 or an HTML page after payment
    # (paid), or a 503 (not paid). None of them was retried.
    attempts = journal.attempts(result.run_id)
    unknown_rows = set(rows.loc[rows["state"] == "unknown", "row"])
    assert unknown_rows == set(attempts.loc[attempts["outcome"] == "unknown", "row"])
    assert 15 < len(unknown_rows) < 60
    paid_unknown = sum(paid[k] for k in by_state["unknown"])
    assert 0 < paid_unknown < len(by_state["unknown"])  # some unknowns were paid, some were not
    assert Counter(attempts["outcome"])["throttled"] > 0
    assert journal.attempts(result.run_id).groupby("row")["outcome"].apply(
        lambda s: (s == "unknown").sum()).max() == 1


def test_interrupt_lets_in_flight_land_then_resume_finishes(tmp_path, make_sandbox, journal):
    import threading

    sb = make_sandbox(faults=Faults(latency=0.05))
    stop = threading.Event()
    path = sheet(tmp_path, 200)
    threading.Timer(0.4, stop.set).start()
    first = run_payouts(path, client=sb.client(), journal=journal, stop=stop, **fast(rate=100, concurrency=4))
    assert first.interrupted and 0 < first.remaining < 200
    assert journal.counts(first.run_id).get("in_flight", 0) == 0  # everything in flight landed
    assert journal.run(first.run_id).status == "interrupted"
    second = run_payouts(path, client=sb.client(), journal=journal, resume=True, **fast())
    assert second.counts == {"accepted": 200}
    assert len(sb.ledger()) == 200 and set(sb.paid_counts().values()) == {1}


def test_recover_turns_in_flight_into_unknown(tmp_path, sandbox, journal):
    path = sheet(tmp_path, 3)
    result = run_payouts(path, client=sandbox.client(), journal=journal, **fast())
    # Simulate a crash between commit of the intent and the answer.
    with journal._tx() as db:
        db.execute("UPDATE rows SET state = 'pending' WHERE run_id = ? AND row = 2", (result.run_id,))
    journal.begin_attempt(result.run_id, 2, "")
    journal.set_status(result.run_id, "open")
    resumed = run_payouts(path, client=sandbox.client(), journal=journal, resume=True, **fast())
    assert resumed.recovered == 1 and resumed.sent_now == 0
    assert resumed.counts == {"accepted": 2, "unknown": 1}


def test_token_bucket_spaces_requests():
    clock = [0.0]
    bucket = TokenBucket(10, clock=lambda: clock[0])
    waits = [bucket.reserve() for _ in range(5)]
    assert waits == pytest.approx([0, 0.1, 0.2, 0.3, 0.4])
    bucket.hold(2.0)
    assert bucket.reserve() == pytest.approx(2.0)


def test_backoff_is_capped_and_honours_retry_after():
    import random

    b = Backoff(base=1, cap=8, rng=random.Random(3))
    assert all(0 <= b.delay(n) <= min(8, 2 ** (n - 1)) for n in range(1, 12))
    assert b.delay(1, retry_after=5) == 5


def test_an_unexpected_error_while_sending_is_recorded_unknown(tmp_path, sandbox, journal, monkeypatch):
    """Whatever goes wrong after the intent is written, the row is unknown, never lost or resent."""
    client = sandbox.client()
    real = client.remit

    def flaky(**kw):
        if kw["amount"] == 102:
            real(**kw)  # the payment reaches the gateway...
            raise RuntimeError("boom")  # ...and then something unforeseen fails
        return real(**kw)

    monkeypatch.setattr(client, "remit", flaky)
    result = run_payouts(sheet(tmp_path, 4), client=client, journal=journal, **fast())
    assert result.counts == {"accepted": 3, "unknown": 1}
    assert "unexpected RuntimeError: boom" in journal.attempts(result.run_id)["error"].dropna().iloc[0]
    assert len(sandbox.ledger()) == 4


def test_a_report_that_cannot_be_written_does_not_lose_the_run(tmp_path, sandbox, journal):
    result = run_payouts(sheet(tmp_path, 2), client=sandbox.client(), journal=journal,
                         **fast(report=tmp_path / "no-such-folder" / "r.xlsx"))
    assert result.counts == {"accepted": 2}
    assert result.report_path is None and "No such file" in result.report_error
