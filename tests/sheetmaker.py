"""Writing real sheets for tests, in every format the loader reads."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from openpyxl import Workbook

HEADER = ["MSISDN", "Amount", "Product_ID", "Scheduled_Send"]


def xlsx(path: Path, rows: list[list], header: list | None = HEADER, *, title_rows: int = 0,
         hidden_first: list[list] | None = None) -> Path:
    wb = Workbook()
    ws = wb.active
    if hidden_first is not None:
        ws.title = "Hidden"
        ws.sheet_state = "hidden"
        for r in hidden_first:
            ws.append(r)
        ws = wb.create_sheet("Payouts")
    for _ in range(title_rows):
        ws.append(["Payroll export"])
    if header:
        ws.append(header)
    for r in rows:
        ws.append(r)
    wb.save(path)
    return path


def csv_file(path: Path, rows: list[list], header: list | None = HEADER, *, delimiter: str = ",",
             encoding: str = "utf-8") -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=delimiter, lineterminator="\r\n")
    if header:
        writer.writerow(header)
    writer.writerows(rows)
    path.write_bytes(buf.getvalue().encode(encoding))
    return path


def xls(path: Path, rows: list[list], header: list = HEADER) -> Path:
    import xlwt

    wb = xlwt.Workbook()
    ws = wb.add_sheet("Payouts")
    for c, v in enumerate(header):
        ws.write(0, c, v)
    for r, row in enumerate(rows, start=1):
        for c, v in enumerate(row):
            ws.write(r, c, v)
    wb.save(str(path))
    return path


def ods(path: Path, rows: list[list], header: list = HEADER) -> Path:
    import pandas as pd

    pd.DataFrame(rows, columns=header).to_excel(path, engine="odf", index=False)
    return path
