"""The reconciliation workbook, read back with openpyxl; exports; the Failures round trip; LibreOffice."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import datetime

import openpyxl
import pandas as pd
import pytest

from mipay_bulk import results, write_report
from mipay_bulk.cli import main
from mipay_bulk.journal import Journal
from mipay_bulk.report import outcome_table
from mipay_bulk.runner import run_payouts

from . import sheetmaker as mk
from .test_runner import fast

HOSTILE = ['=HYPERLINK("http://x","y")', "+1-1", "@SUM(A1)", "-2+3", "\t=1"]


@pytest.fixture
def finished_run(tmp_path, sandbox):
    """A run with accepted, rejected (hostile answer), unknown and invalid rows, and hostile cells."""
    rows = [
        ["0712345601", "1,500", "B2C", "PAY-1", HOSTILE[0]],
        ["0712345602", "2000", "B2C", "PAY-2", HOSTILE[1]],
        ["0700000001", "300", "B2C", "PAY-3", HOSTILE[2]],      # the sandbox rejects it
        ["0700000009", "400", "B2C", "PAY-4", "plain"],         # paid, then dropped: unknown
        ["07123", "500", "B2C", "PAY-5", HOSTILE[3]],           # invalid
        ["0712345606", "600", "B2C", "PAY-6", HOSTILE[4]],      # answered with a hostile message
    ]
    path = mk.csv_file(tmp_path / "payouts.csv", rows, header=["Phone", "Amount", "Product", "Reference", "Comment"])
    journal = Journal(tmp_path / "j.sqlite")
    hostile_answer = {"response_status": "17", "response": HOSTILE[0], "hint": "@SUM(A1)"}
    for _ in range(4):
        sandbox.script(None)
    sandbox.script(hostile_answer)
    result = run_payouts(path, client=sandbox.client(), journal=journal, **fast(concurrency=1))
    return result, journal, tmp_path


def test_workbook_sheets_totals_and_types(finished_run):
    result, journal, tmp = finished_run
    path = write_report(result.run_id, tmp / "r.xlsx", journal=journal)
    wb = openpyxl.load_workbook(path)
    assert wb.sheetnames == ["Summary", "Results", "Failures", "Unknown", "Invalid"]
    summary = wb["Summary"]
    sentence = summary["A2"].value
    assert sentence.startswith("Not complete: 2 of 5 payouts accepted, KES 3,500; 2 rejected; 1 unknown")
    assert summary.sheet_view.showGridLines is False
    cells = {r[0]: r[1:] for r in summary.iter_rows(values_only=True) if r[0]}
    assert cells["Run"][0] == result.run_id and cells["Source file"][0] == "payouts.csv"
    assert len(cells["Source SHA-256"][0]) == 64
    table = outcome_table(result.run_id, journal)
    for label in ("accepted", "rejected", "unknown", "invalid"):
        assert cells[label][:2] == (table.loc[label, "count"], table.loc[label, "kes"])
    assert cells["Total"][:2] == (6, sum(int(a.replace(",", "")) for a in ["1,500", "2000", "300", "400", "500",
                                                                           "600"]))
    assert summary._charts  # the outcome chart

    res = wb["Results"]
    header = [c.value for c in res[1]]
    assert header[:6] == ["row", "Phone", "Amount", "Product", "Reference", "Comment"]
    assert res.freeze_panes == "A2" and res.auto_filter.ref.startswith("A1:")
    col = {name: i + 1 for i, name in enumerate(header)}
    assert [res.cell(r, col["row"]).value for r in range(2, 8)] == [2, 3, 4, 5, 6, 7]
    phone = res.cell(2, col["Phone"])
    assert phone.value == "0712345601" and phone.data_type == "s"
    msisdn = res.cell(2, col["msisdn"])
    assert msisdn.value == "254712345601" and msisdn.data_type == "s"
    amount = res.cell(2, col["amount"])
    assert amount.value == 1500 and amount.data_type == "n" and amount.number_format == "#,##0"
    sent = res.cell(2, col["sent_at"])
    assert isinstance(sent.value, datetime) and sent.is_date
    assert res.cell(2, col["outcome"]).value == "accepted"
    assert res.cell(5, col["outcome"]).value == "unknown"
    assert res.cell(6, col["outcome"]).value == "invalid"
    assert res.conditional_formatting  # outcome colours

    failures = wb["Failures"]
    assert [c.value for c in failures[1]] == ["Phone", "Amount", "Product", "Reference", "Comment"]
    assert [r[0] for r in failures.iter_rows(min_row=2, values_only=True)] == ["0700000001", "0712345606"]
    unknown = wb["Unknown"]
    assert f"mipay-bulk resolve {result.run_id}" in unknown["A2"].value
    assert unknown.cell(5, 2).value == "0700000009"
    invalid = wb["Invalid"]
    assert [c.value for c in invalid[1]] == ["row", "column", "value", "code", "severity", "message"]
    assert invalid["A2"].value == 6 and invalid["D2"].value == "msisdn_too_short"


def test_hostile_values_stay_text_in_the_workbook(finished_run):
    result, journal, tmp = finished_run
    path = write_report(result.run_id, tmp / "r.xlsx", journal=journal)
    wb = openpyxl.load_workbook(path)
    found = []
    for ws in wb.worksheets:
        for row in ws.iter_rows():
            for cell in row:
                if cell.data_type == "f":
                    pytest.fail(f"{ws.title}!{cell.coordinate} holds a formula: {cell.value!r}")
                if cell.hyperlink is not None:
                    pytest.fail(f"{ws.title}!{cell.coordinate} holds a link")
                if isinstance(cell.value, str) and cell.value in HOSTILE:
                    found.append((ws.title, cell.value))
    values = {v for _, v in found}
    assert set(HOSTILE) <= values  # from the sheet, kept as typed, as text
    assert ("Results", HOSTILE[0]) in found
    res = results(result.run_id, journal)
    hostile_row = res[res["Reference"] == "PAY-6"].iloc[0]
    assert hostile_row["response"] == HOSTILE[0] and hostile_row["hint"] == "@SUM(A1)"  # from the gateway
    assert hostile_row["outcome"] == "rejected"


def test_csv_and_json_exports_are_neutralised(finished_run, capsys):
    result, journal, tmp = finished_run
    csv_path = write_report(result.run_id, tmp / "r.csv", journal=journal)
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    assert set(table["Comment"]) >= {"'" + h for h in HOSTILE}
    assert "'" + HOSTILE[0] in set(table["response"])
    assert main(["report", result.run_id, "--journal", str(journal.path), "--out", str(tmp / "r"),
                 "--format", "json"]) == 0
    records = json.loads((tmp / "r.json").read_text())
    assert {r["Comment"] for r in records} >= {"'" + h for h in HOSTILE}
    assert all(not str(v).startswith(("=", "+", "-", "@", "\t")) for r in records for v in r.values() if v)


def test_report_is_rebuilt_from_the_journal_alone(finished_run, capsys):
    result, journal, tmp = finished_run
    (tmp / "payouts.csv").unlink()  # the source sheet is gone: the journal is enough
    out = tmp / "again.xlsx"
    assert main(["report", result.run_id, "--journal", str(journal.path), "--out", str(out)]) == 0
    assert openpyxl.load_workbook(out)["Summary"]["A2"].value.startswith("Not complete: 2 of 5")


def test_results_dataframe_for_notebooks(finished_run):
    result, journal, _ = finished_run
    frame = result.results()
    assert len(frame) == 6 and frame["row"].tolist() == [2, 3, 4, 5, 6, 7]
    assert str(frame["sent_at"].dt.tz) == "Africa/Nairobi"
    assert frame["amount"].dtype == "Int64"
    assert frame.loc[0, "transaction_id"].startswith("SB")


def test_failures_sheet_round_trip_sends_exactly_those_rows(tmp_path, sandbox):
    rows = [[f"07123456{i:02d}", 100 + i, "B2C"] for i in range(6)]
    path = mk.csv_file(tmp_path / "p.csv", rows, header=["Phone", "Amount", "Product"])
    journal = Journal(tmp_path / "j.sqlite")
    no = {"response_status": "14", "response": "Insufficient funds in the organisation's utility account"}
    sandbox.script(None, no, None, no, None, None)
    first = run_payouts(path, client=sandbox.client(), journal=journal, **fast(concurrency=1))
    assert first.counts == {"accepted": 4, "rejected": 2}
    report = write_report(first.run_id, tmp_path / "report.xlsx", journal=journal)
    before = len(sandbox.ledger())
    second = run_payouts(report, sheet="Failures", client=sandbox.client(), journal=journal,
                         **fast(concurrency=1))
    assert second.counts == {"accepted": 2}
    sent = [(e["msisdn"], e["amount"]) for e in sandbox.ledger()[before:]]
    assert sorted(sent) == [("254712345601", 101), ("254712345603", 103)]
    assert set(sandbox.paid_counts().values()) == {1}


def test_workbook_opens_in_libreoffice(finished_run, tmp_path):
    soffice = shutil.which("soffice") or shutil.which("libreoffice")
    if soffice is None:
        pytest.skip("LibreOffice (soffice) is not installed: apt-get install libreoffice-calc-nogui")
    result, journal, tmp = finished_run
    path = write_report(result.run_id, tmp / "r.xlsx", journal=journal)
    out = tmp_path / "converted"
    done = subprocess.run([soffice, "--headless", f"-env:UserInstallation=file://{tmp_path}/lo-profile",
                           "--convert-to", "csv", "--outdir", str(out), str(path)],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    summary = (out / "r.csv").read_text(encoding="utf-8", errors="replace")
    assert "2 of 5 payouts accepted, KES 3,500" in summary
    assert result.run_id in summary


def test_no_secret_in_the_journal_or_any_report(finished_run):
    from .conftest import find_secrets

    result, journal, tmp = finished_run
    files = [journal.path, *journal.path.parent.glob("j.sqlite*")]
    for fmt in ("xlsx", "csv", "json"):
        files.append(write_report(result.run_id, tmp / f"scan.{fmt}", journal=journal))
    for f in files:
        data = f.read_bytes()
        assert not find_secrets(data.decode("latin-1")), f
    # The xlsx is a zip: look inside it too.
    import zipfile

    with zipfile.ZipFile(tmp / "scan.xlsx") as zf:
        for name in zf.namelist():
            assert not find_secrets(zf.read(name).decode("utf-8", "replace")), name
