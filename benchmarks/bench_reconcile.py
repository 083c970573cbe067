"""Reconciling a 100,000-payout run against a 150,000-line statement, against a plain ``pandas.merge``.

The run is planned for real and its outcomes filled in with one bulk insert; the statement
is written in the portal's export format (a fifth of the numbers masked, a charge line for
half the payments, payouts repeated to the same person, unexpected withdrawals) and read
back with ``load_statement`` (timed apart). Then, from the same loaded data:

* the matching core, ``mipay_bulk.reconcile.match`` (one-to-one, in time order, time
  windows, masked numbers) on the same in-memory payouts and lines as the merge;
* the whole ``reconcile(run, statement)``: it also reads the run from the journal,
  handles reversals and charges, classifies every payout and line, and ties out;
* baseline: ``pandas.merge`` of the payouts and the withdrawal lines on recipient and
  amount, which is fast but wrong on duplicates (it pairs every payout with every line).

Target: within 3x of the merge.

    python benchmarks/bench_reconcile.py [--payouts 100000] [--lines 150000]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from mipay_bulk.journal import Journal  # noqa: E402
from mipay_bulk.protocol import NAIROBI  # noqa: E402
from mipay_bulk.reconcile import _payouts_of, match, reconcile  # noqa: E402
from mipay_bulk.runner import plan_run  # noqa: E402
from mipay_bulk.statement import load_statement, mask, write_statement  # noqa: E402
from mipay_bulk.validate import validate  # noqa: E402


def make(folder: Path, payouts: int, lines: int) -> tuple[Journal, str, Path]:
    rng = random.Random(7)
    # A fifth of the recipients get two identical payouts (told apart by reference).
    people = [f"07{rng.choice('0129')}{i:07d}" for i in range(int(payouts * 0.85))]
    sheet_rows = ["Phone,Amount,Product,Reference"]
    for i in range(payouts):
        who = people[i % len(people)]
        amount = 100 + (i % len(people)) % 9000
        sheet_rows.append(f"{who},{amount},B2C,REF{i:07d}")
    sheet = folder / "payouts.csv"
    sheet.write_text("\n".join(sheet_rows) + "\n")
    journal = Journal(folder / "journal.sqlite")
    run_id = plan_run(validate(sheet, allow_duplicates=True), journal, gateway_url="http://127.0.0.1:9",
                      settings={}, allow_duplicates=True)
    start = datetime.now(NAIROBI) - timedelta(hours=2)
    attempts, states, ledger = [], [], []
    for k, r in enumerate(journal.sendable(run_id)):
        outcome = rng.choices(["accepted", "unknown", "rejected"], [0.97, 0.02, 0.01])[0]
        sent = start + timedelta(milliseconds=20 * k)
        attempts.append((run_id, r["row"], 1, "", sent.isoformat(), sent.isoformat(), outcome))
        states.append((outcome, run_id, r["row"]))
        if outcome == "accepted" or (outcome == "unknown" and rng.random() < 0.5):
            ledger.append({"seq": k, "transaction_id": f"R{k:09d}", "service": "REMIT", "msisdn": r["msisdn"],
                           "amount": r["amount"], "product_id": "B2C", "received_at": sent.isoformat()})
    with journal._tx() as db:
        db.executemany("INSERT INTO attempts (run_id, row, attempt, scheduled_send, started_at, finished_at, outcome)"
                       " VALUES (?,?,?,?,?,?,?)", attempts)
        db.executemany("UPDATE rows SET state = ?, attempts = 1 WHERE run_id = ? AND row = ?", states)
    # Charge lines for half the payments, then unexpected withdrawals up to the line count.
    statement = folder / "statement.csv"
    write_statement(ledger, statement, mask_share=0.2, charges=False, seed=3)
    extra = []
    charged = ledger[: len(ledger) // 2]
    for e in charged:
        when = datetime.fromisoformat(e["received_at"]).astimezone(NAIROBI) + timedelta(seconds=2)
        extra.append([e["transaction_id"], f"{when:%d-%m-%Y %H:%M:%S}", f"{when:%d-%m-%Y %H:%M:%S}", "Charge",
                      "Completed", "", "-10.00", "", "Yes", "B2C Payment Charge", "", e["transaction_id"], ""])
    k = 0
    while len(ledger) + len(extra) < lines:
        when = start + timedelta(seconds=rng.randrange(7200))
        who = f"2547{rng.randrange(10**8):08d}"
        extra.append([f"X{k:09d}", f"{when:%d-%m-%Y %H:%M:%S}", f"{when:%d-%m-%Y %H:%M:%S}", "Payment", "Completed",
                      "", f"-{rng.randrange(100, 9000):,}.00", "", "Yes", "Business Payment to Customer via API",
                      f"{mask(who) if k % 5 == 0 else who} - X", "", ""])
        k += 1
    with statement.open("a", newline="") as fh:
        import csv

        csv.writer(fh).writerows(extra)
    return journal, run_id, statement


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payouts", type=int, default=100_000)
    parser.add_argument("--lines", type=int, default=150_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        journal, run_id, path = make(Path(tmp), args.payouts, args.lines)
        t = time.perf_counter()
        statement = load_statement(path)
        load_s = time.perf_counter() - t
        rows = journal.rows(run_id)
        payouts = rows[rows["state"] != "invalid"][["row", "msisdn", "amount"]].astype({"amount": "int64"})
        withdrawals = statement.lines[statement.lines["kind"] == "payment"][["receipt", "party", "withdrawn"]]
        withdrawals = withdrawals.assign(amount=withdrawals["withdrawn"].astype("int64"))
        t = time.perf_counter()
        merged = payouts.merge(withdrawals, left_on=["msisdn", "amount"], right_on=["party", "amount"])
        merge_s = time.perf_counter() - t
        windowed = _payouts_of(run_id, journal, timedelta(hours=48))
        with_roles = statement.lines.assign(role=statement.lines["kind"])
        t = time.perf_counter()
        pairs = match(windowed, with_roles)
        core_s = time.perf_counter() - t
        t = time.perf_counter()
        rec = reconcile(run_id, statement, journal=journal)
        ours_s = time.perf_counter() - t
    counts = rec.counts()
    print(f"payouts: {len(payouts):,}; statement lines: {len(statement.lines):,} "
          f"({json.dumps(statement.lines['kind'].value_counts().to_dict())})")
    print(f"load_statement (not in either figure):   {load_s:6.2f} s")
    print(f"plain pandas.merge on recipient, amount: {merge_s:6.2f} s  ({len(merged):,} pairs, "
          f"{len(merged) - merged['row'].nunique():,} of them a payout paired twice)")
    print(f"mipay_bulk matching core (match):        {core_s:6.2f} s  ({len(pairs):,} one-to-one pairs)")
    print(f"mipay_bulk reconcile, whole:             {ours_s:6.2f} s  ({json.dumps(counts)})")
    print(f"ratio, matching core / merge:   {core_s / merge_s:5.1f}x  (target <= 3x)")
    print(f"ratio, whole reconcile / merge: {ours_s / merge_s:5.1f}x  (ties out: {rec.ties_out})")


if __name__ == "__main__":
    main()
