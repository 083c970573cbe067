"""Writing the report of a 100,000-row run, against ``DataFrame.to_excel`` of the same Results table.

The run is planned for real (load, validate, plan into a journal) and its outcomes are
filled in with one bulk insert (sending 100,000 requests is not what this measures). Then,
each in a fresh process so peak memory (max RSS) is its own:

* mipay_bulk: ``write_report(run)``, all five sheets, read from the journal;
* baseline: the same Results table (read beforehand, not timed) through
  ``DataFrame.to_excel`` with pandas' default engine (openpyxl).

Targets: no slower than the plain export, under 600 MB peak.

    python benchmarks/bench_report.py [--rows 100000]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.gen import in_fresh_process  # noqa: E402

CHILD = r"""
import json, resource, sys, time
from mipay_bulk.journal import Journal
from mipay_bulk.report import results, write_report
journal_path, run_id, out, which = sys.argv[1:5]
journal = Journal(journal_path)
if which == "mipay_bulk":
    t = time.perf_counter()
    write_report(run_id, out, journal=journal)
else:
    table = results(run_id, journal)
    table["sent_at"] = table["sent_at"].dt.tz_localize(None)  # Excel has no time zones
    t = time.perf_counter()
    table.to_excel(out, index=False)
seconds = time.perf_counter() - t
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_mb": peak_mb}))
"""


def make_run(folder: Path, rows: int) -> tuple[Path, str]:
    from benchmarks.gen import payout_sheet
    from mipay_bulk.journal import Journal, utcnow
    from mipay_bulk.runner import plan_run
    from mipay_bulk.validate import validate

    sheet = payout_sheet(folder / "payouts.xlsx", rows)
    journal = Journal(folder / "journal.sqlite")
    run_id = plan_run(validate(sheet), journal, gateway_url="http://127.0.0.1:9", settings={"rate": 200})
    rng = random.Random(5)
    pending = [r["row"] for r in journal.sendable(run_id)]
    attempts, states = [], []
    for row in pending:
        outcome = rng.choices(["accepted", "rejected", "unknown"], [0.97, 0.02, 0.01])[0]
        status = {"accepted": "00", "rejected": "11"}.get(outcome)
        answer = "Payment accepted for processing" if outcome == "accepted" else "Not an M-PESA customer"
        attempts.append((run_id, row, 1, "17/09/2030 6:31 pm", utcnow(), utcnow(), outcome, 200, status, answer,
                         json.dumps({"transaction_id": f"SB{row:010d}"}), None, 0.05))
        states.append((outcome, run_id, row))
    with journal._tx() as db:
        db.executemany("INSERT INTO attempts (run_id, row, attempt, scheduled_send, started_at, finished_at, outcome,"
                       " http_status, response_status, response, extra, error, latency)"
                       " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", attempts)
        db.executemany("UPDATE rows SET state = ?, attempts = 1 WHERE run_id = ? AND row = ?", states)
    journal.set_status(run_id, "finished")
    journal.close()
    return folder / "journal.sqlite", run_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        journal, run_id = make_run(folder, args.rows)
        base = in_fresh_process(CHILD, journal, run_id, folder / "plain.xlsx", "to_excel")
        ours = in_fresh_process(CHILD, journal, run_id, folder / "report.xlsx", "mipay_bulk")
    print(f"rows: {args.rows:,}")
    print(f"plain DataFrame.to_excel (openpyxl), Results only: {base['seconds']:6.2f} s, peak {base['peak_mb']:.0f} MB")
    print(f"mipay_bulk write_report, five sheets:             {ours['seconds']:6.2f} s, peak {ours['peak_mb']:.0f} MB")
    print(f"ratio (mipay_bulk / plain export): {ours['seconds'] / base['seconds']:.2f}x  (target <= 1.00x)")
    print(f"peak memory under 600 MB:          {'yes' if ours['peak_mb'] < 600 else 'NO'}")


if __name__ == "__main__":
    main()
