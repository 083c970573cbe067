"""Generated sheets and runs for the benchmarks and the large tests."""

from __future__ import annotations

import random
from pathlib import Path

import xlsxwriter

SAFARICOM = ("70", "71", "72", "74", "79", "11")


def payout_sheet(path: Path, rows: int, *, seed: int = 1, bad_share: float = 0.02) -> Path:
    """An xlsx of ``rows`` payouts in mixed styles, with about ``bad_share`` rows in error."""
    rng = random.Random(seed)
    wb = xlsxwriter.Workbook(str(path), {"constant_memory": True, "strings_to_numbers": False})
    ws = wb.add_worksheet("Payouts")
    ws.write_row(0, 0, ["Reference", "Name", "Phone", "Amount (KES)", "Product", "Send at"])
    for i in range(1, rows + 1):
        national = rng.choice(SAFARICOM) + f"{rng.randrange(10**7):07d}"
        style = i % 4
        phone = ("0" + national, "+254 " + national, int(national), "254" + national)[style]
        amount = rng.randrange(10, 50_000)
        amount_cell = amount if i % 2 else f"{amount:,}"
        if rng.random() < bad_share:
            phone = "07" + str(rng.randrange(1000))
        ws.write_row(i, 0, [f"R{i:07d}", f"Payee {i}"])
        if isinstance(phone, int):
            ws.write_number(i, 2, phone)
        else:
            ws.write_string(i, 2, phone)
        if isinstance(amount_cell, int):
            ws.write_number(i, 3, amount_cell)
        else:
            ws.write_string(i, 3, amount_cell)
        ws.write_string(i, 4, "B2C")
        ws.write_string(i, 5, "")
    wb.close()
    return path


def in_fresh_process(code: str, *args: str) -> dict:
    """Run ``code`` in a new Python process and return the JSON it prints: each measured side
    gets its own peak memory (max RSS) and pays for none of the other's imports."""
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)
