"""Load + validate of a 100,000-row xlsx against a plain ``pandas.read_excel(engine="openpyxl")``.

Each side runs in a fresh Python process, so its peak memory (max RSS) is its own and the
import of pandas is not counted in either time. Prints the times, their ratio (the target:
mipay_bulk <= 1.0x of the plain read) and the peak memory (the target: under 500 MB).

    python benchmarks/bench_load.py [--rows 100000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.gen import in_fresh_process, payout_sheet  # noqa: E402

CHILD = r"""
import json, resource, sys, time
import pandas as pd
import mipay_bulk
path, which = sys.argv[1], sys.argv[2]
t = time.perf_counter()
if which == "mipay_bulk":
    result = mipay_bulk.validate(mipay_bulk.load_payouts(path))
    n, issues = len(result.rows), len(result.issues)
else:
    frame = pd.read_excel(path, engine="openpyxl")
    n, issues = len(frame), 0
seconds = time.perf_counter() - t
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_mb": peak_mb, "rows": n, "issues": issues}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = payout_sheet(Path(tmp) / "payouts.xlsx", args.rows)
        base = in_fresh_process(CHILD, path, "openpyxl")
        ours = in_fresh_process(CHILD, path, "mipay_bulk")
    print(f"rows: {args.rows:,} (issues found: {ours['issues']:,})")
    print(f"plain pandas.read_excel(openpyxl): {base['seconds']:.2f} s, peak {base['peak_mb']:.0f} MB")
    print(f"mipay_bulk load + validate:        {ours['seconds']:.2f} s, peak {ours['peak_mb']:.0f} MB")
    print(f"ratio (mipay_bulk / plain read):   {ours['seconds'] / base['seconds']:.2f}x  (target <= 1.00x)")
    print(f"peak memory under 500 MB:          {'yes' if ours['peak_mb'] < 500 else 'NO'}")


if __name__ == "__main__":
    main()
