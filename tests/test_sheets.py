"""Loading real files: formats, text fidelity, row numbers, headers, and files that are not sheets."""

from __future__ import annotations

import zipfile
from datetime import datetime

import pytest

from mipay_bulk import SheetError, load_payouts
from mipay_bulk.cli import main

from . import sheetmaker as mk

ROWS = [["0712345678", "1,500", "B2C", ""], ["254722456789", 2000, "b2c", "17/09/2030 6:31 pm"]]


@pytest.mark.parametrize("fmt", ["xlsx", "xlsm", "xls", "ods", "csv"])
def test_every_format_loads_the_same_text(tmp_path, fmt):
    path = tmp_path / f"p.{fmt}"
    if fmt in ("xlsx", "xlsm"):
        mk.xlsx(path, ROWS)
    else:
        getattr(mk, {"xls": "xls", "ods": "ods", "csv": "csv_file"}[fmt])(path, ROWS)
    sheet = load_payouts(path)
    assert sheet.rows["row"].tolist() == [2, 3]
    assert sheet.rows["MSISDN"].tolist() == ["0712345678", "254722456789"]
    assert sheet.rows["Amount"].tolist() == ["1,500", "2000"]
    assert sheet.columns == {"msisdn": "MSISDN", "amount": "Amount", "product_id": "Product_ID",
                             "scheduled_send": "Scheduled_Send"}
    assert len(sheet.sha256) == 64


def test_cells_stay_as_typed(tmp_path):
    path = mk.xlsx(tmp_path / "p.xlsx", [
        [712345678, 1500, "B2C", datetime(2030, 9, 17, 18, 31)],
        ["NA", "N/A", "null", "nan"],
        [254712345678, 1500.5, True, 46282.5],
    ])
    rows = load_payouts(path).rows
    assert rows.iloc[0].tolist() == [2, "712345678", "1500", "B2C", "2030-09-17 18:31:00"]
    assert rows.iloc[1].tolist() == [3, "NA", "N/A", "null", "nan"]
    assert rows.iloc[2].tolist() == [4, "254712345678", "1500.5", "TRUE", "46282.5"]


def test_blank_rows_are_skipped_and_row_numbers_kept(tmp_path):
    path = mk.xlsx(tmp_path / "p.xlsx", [ROWS[0], [None, None], ["", "  "], ROWS[1]], title_rows=2)
    sheet = load_payouts(path)
    assert sheet.header_row == 3
    assert sheet.rows["row"].tolist() == [4, 7]


def test_csv_blank_lines_keep_row_numbers(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("MSISDN,Amount\r\n0712345678,100\r\n\r\n,\r\n0712345679,200\r\n")
    assert load_payouts(path).rows["row"].tolist() == [2, 5]


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "cp1252"])
def test_csv_delimiters_and_encodings(tmp_path, delimiter, encoding):
    path = mk.csv_file(tmp_path / "p.csv", [["0712345678", "1,500", "B2C", ""]],
                       header=["Phone", "Amount", "Type", "Send at"], delimiter=delimiter, encoding=encoding)
    with path.open("ab") as fh:
        fh.write(delimiter.join(["0712345679", "200", "B2C", ""]).encode(encoding.removesuffix("-sig")) + b"\r\n")
    sheet = load_payouts(path)
    assert sheet.rows["Phone"].tolist() == ["0712345678", "0712345679"]
    assert sheet.rows["Amount"].tolist() == ["1,500", "200"]
    assert list(sheet.rows.columns)[1] == "Phone"  # no BOM glued to the first header


def test_windows_1252_text_survives(tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes("Phone;Amount;Name\r\n0712345678;100;Nj\u00e9ri \u2013 caf\u00e9\r\n".encode("cp1252"))
    assert load_payouts(path).rows["Name"].tolist() == ["Nj\u00e9ri \u2013 caf\u00e9"]


@pytest.mark.parametrize("header, canon", [
    (["phone number", "amount (KES)", "TYPE", "send at"], ["msisdn", "amount", "product_id", "scheduled_send"]),
    (["Mobile", "KES", "product", "Date"], ["msisdn", "amount", "product_id", "scheduled_send"]),
    (["RECIPIENT", " Amount ", "Product-ID", "schedule"], ["msisdn", "amount", "product_id", "scheduled_send"]),
])
def test_header_aliases(tmp_path, header, canon):
    sheet = load_payouts(mk.xlsx(tmp_path / "p.xlsx", ROWS, header=header))
    assert sorted(sheet.columns) == sorted(canon)


def test_extra_columns_are_carried(tmp_path):
    path = mk.xlsx(tmp_path / "p.xlsx", [["0712345678", 100, "x", "y", "z"]],
                   header=["Phone", "Amount", "Reference", "Name", "Cost centre"])
    sheet = load_payouts(path)
    assert sheet.extra == ["Cost centre"]
    assert sheet.rows["Cost centre"].tolist() == ["z"]


def test_missing_required_column_lists_found_and_accepted(tmp_path):
    path = mk.xlsx(tmp_path / "p.xlsx", [["0712345678", "x"]], header=["Phone", "Comment"])
    with pytest.raises(SheetError) as info:
        load_payouts(path)
    text = str(info.value)
    assert "no amount column" in text and "'Phone', 'Comment'" in text and "amount (KES)" in text


def test_hidden_sheets_are_ignored_unless_named(tmp_path):
    path = mk.xlsx(tmp_path / "p.xlsx", [ROWS[0]], hidden_first=[mk.HEADER, ["0799999999", 5, "B2C", ""]])
    assert load_payouts(path).rows["MSISDN"].tolist() == ["0712345678"]
    assert load_payouts(path, "Hidden").rows["MSISDN"].tolist() == ["0799999999"]
    with pytest.raises(SheetError, match="no sheet named 'Nope'; sheets: Hidden, Payouts"):
        load_payouts(path, "Nope")


def _encrypted(path):
    from msoffcrypto.format.ooxml import OOXMLFile

    plain = mk.xlsx(path.with_suffix(".plain.xlsx"), ROWS)
    with plain.open("rb") as src, path.open("wb") as dst:
        OOXMLFile(src).encrypt("pw", dst)
    return path


def _zip(path):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hello")
    return path


def _first_sheet_empty(path):
    from openpyxl import Workbook

    wb = Workbook()
    wb.create_sheet("Data").append(mk.HEADER)
    wb.save(path)
    return path


@pytest.mark.parametrize("name, make, message", [
    ("missing.xlsx", None, "no such file"),
    ("empty.xlsx", lambda p: p.write_bytes(b"") or p, "the file is empty"),
    ("dir.xlsx", lambda p: p.mkdir() or p, "is a folder"),
    ("headers.xlsx", lambda p: mk.xlsx(p, []), "a header row but no payout rows"),
    ("report.xlsx", lambda p: p.write_bytes(b"%PDF-1.7\n...") or p, "PDF file"),
    ("archive.xlsx", _zip, "zip archive, not an Excel workbook"),
    ("locked.xlsx", _encrypted, "password-protected"),
    ("first-empty.xlsx", _first_sheet_empty, "sheet 'Sheet' is empty; the workbook's other sheets: Data"),
    ("ragged.csv", lambda p: p.write_text("MSISDN,Amount\n0712345678,1\n0712345679,2,3\n") or p,
     "row 3: this row has 3 fields"),
    ("notes.txt", lambda p: p.write_text("hello") or p, "no payout header found"),
    ("payouts.pdf", lambda p: p.write_text("x") or p, "files ending in .pdf are not read"),
])
def test_files_that_are_not_payout_sheets(tmp_path, capsys, name, make, message):
    path = tmp_path / name
    if make:
        make(path)
    with pytest.raises(SheetError, match=message):
        load_payouts(path)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert message.split(":")[0] in err and str(path) in err and "Traceback" not in err


def test_a_million_rows_is_refused_before_reading(tmp_path):
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.append(mk.HEADER)
    ws.append(ROWS[0])
    ws.cell(row=1_000_001, column=1, value="0712345678")
    path = tmp_path / "big.xlsx"
    wb.save(path)
    with pytest.raises(SheetError, match="1,000,001 rows, more than the limit of 200,000"):
        load_payouts(path)
    big = tmp_path / "big.csv"
    big.write_bytes(b"MSISDN,Amount\n" + b"0712345678,100\n" * 1_000_000)
    with pytest.raises(SheetError, match="more than 200,000 rows"):
        load_payouts(big)


def test_sheet_of_loaded_rows_repr(tmp_path):
    sheet = load_payouts(mk.xlsx(tmp_path / "p.xlsx", ROWS))
    assert "2 rows" in repr(sheet) and "<table" in sheet._repr_html_()

