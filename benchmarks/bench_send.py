"""Sending 5,000 payouts against the sandbox at 50 ms latency, with the rate limit at 200/s.

Prints, from one run:
* throughput as a share of the rate limit (target >= 95%);
* the ratio against a plain serial ``requests`` loop over the same rows (target >= 10x);
* the journal's overhead: the same run with the journal on disk vs. in memory (target <= 5%).

    python benchmarks/bench_send.py [--rows 5000] [--serial-rows N]

``--serial-rows`` times the serial loop on the first N rows only and scales it (a serial
loop over 5,000 rows at 50 ms takes over four minutes); by default it runs them all.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mipay_bulk import Faults, Sandbox, protocol  # noqa: E402
from mipay_bulk.journal import Journal  # noqa: E402
from mipay_bulk.runner import run_payouts  # noqa: E402
from mipay_bulk.sandbox import SANDBOX_API_KEY, SANDBOX_PASSWORD, SANDBOX_USERNAME  # noqa: E402

RATE, LATENCY, CONCURRENCY = 200.0, 0.05, 24


def write_sheet(path: Path, rows: int) -> Path:
    lines = ["Phone,Amount,Product"]
    lines += [f"0{710 + (i // 1_000_000) % 10}{i % 1_000_000:06d},{100 + i % 900},B2C" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def timed_run(sheet: Path, journal: Journal) -> float:
    with Sandbox(faults=Faults(latency=LATENCY)) as sb:
        start = time.perf_counter()
        result = run_payouts(sheet, client=sb.client(), journal=journal, rate=RATE, concurrency=CONCURRENCY,
                             batch_size=1000, progress=False, report=False)
        seconds = time.perf_counter() - start
        assert result.counts == {"accepted": len(sb.ledger())}, result.counts
    return seconds


def serial_loop(rows: int) -> float:
    """The baseline: one signed POST after another with plain requests, no journal."""
    with Sandbox(faults=Faults(latency=LATENCY)) as sb:
        session = requests.Session()
        start = time.perf_counter()
        for i in range(rows):
            body = protocol.build_body(
                "REMIT",
                {"MSISDN": f"254{710 + (i // 1_000_000) % 10}{i % 1_000_000:06d}", "amount": 100 + i % 900,
                 "product_id": "B2C", "scheduled_send": "17/09/2030 6:31 pm"},
                timestamp=int(time.time()), ip_address="127.0.0.1", username=SANDBOX_USERNAME,
                password=SANDBOX_PASSWORD, api_key=SANDBOX_API_KEY)
            session.post(sb.url + "/api/REMIT/", json=body, timeout=10).raise_for_status()
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--serial-rows", type=int, default=None)
    args = parser.parse_args()
    serial_rows = args.serial_rows or args.rows
    with tempfile.TemporaryDirectory() as tmp:
        sheet = write_sheet(Path(tmp) / "payouts.csv", args.rows)
        on_disk = timed_run(sheet, Journal(Path(tmp) / "journal.sqlite"))
        in_memory = timed_run(sheet, Journal(":memory:"))
    serial = serial_loop(serial_rows) * args.rows / serial_rows
    throughput = args.rows / on_disk
    print(f"rows: {args.rows:,}; sandbox latency {LATENCY * 1000:.0f} ms; rate limit {RATE:.0f}/s; "
          f"concurrency {CONCURRENCY}")
    print(f"mipay_bulk, journal on disk:   {on_disk:7.2f} s  ({throughput:.1f} payouts/s)")
    print(f"mipay_bulk, journal in memory: {in_memory:7.2f} s")
    print(f"plain serial requests loop:    {serial:7.2f} s"
          + ("" if serial_rows == args.rows else f"  (timed on {serial_rows:,} rows, scaled)"))
    print(f"throughput / rate limit:       {throughput / RATE:.1%}  (target >= 95%)")
    print(f"speed-up over serial loop:     {serial / on_disk:.1f}x  (target >= 10x)")
    print(f"journal overhead:              {(on_disk - in_memory) / in_memory:+.1%}  (target <= 5%)")


if __name__ == "__main__":
    main()
