"""Reconciling runs against statements: ones the sandbox wrote, and hand-made ones for each case."""

from __future__ import annotations

import csv
from datetime import datetime, timedelta

import openpyxl
import pytest

from mipay_bulk import Faults, SheetError, load_statement, reconcile
from mipay_bulk.cli import main
from mipay_bulk.journal import Journal
from mipay_bulk.protocol import NAIROBI
from mipay_bulk.runner import Backoff, run_payouts
from mipay_bulk.statement import EXPORT_HEADER, mask

from . import sheetmaker as mk
from .test_runner import fast

PEOPLE = {c: f"07120000{i:02d}" for i, c in enumerate("ABCDEFGHI", start=1)}


def wire(local: str) -> str:
    return "254" + local[1:]


@pytest.fixture
def run_with_every_case(tmp_path, sandbox):
    rows = [
        [PEOPLE["A"], 1000, "R-A"], [PEOPLE["B"], 2000, "R-B1"], [PEOPLE["B"], 2000, "R-B2"],
        [PEOPLE["C"], 3000, "R-C"], [PEOPLE["D"], 4000, "R-D"], [PEOPLE["E"], 5000, "R-E"],
        [PEOPLE["F"], 6000, "R-F"], [PEOPLE["G"], 7000, "R-G"], [PEOPLE["H"], 8000, "R-H"],
        [PEOPLE["I"], 900, "R-I"],
    ]
    path = mk.csv_file(tmp_path / "p.csv", [[p, a, "B2C", r] for p, a, r in rows],
                       header=["Phone", "Amount", "Product", "Reference"])
    no = {"response_status": "14", "response": "Insufficient funds in the organisation's utility account"}
    sandbox.script(None, None, None, None, None, None, None, "drop", "http503", no)
    journal = Journal(tmp_path / "j.sqlite")
    run = run_payouts(path, client=sandbox.client(), journal=journal, **fast(concurrency=1))
    assert journal.counts(run.run_id) == {"accepted": 7, "unknown": 2, "rejected": 1}
    return run, journal, path


def write(path, lines, *, period_end):
    with path.open("w", newline="", encoding="utf-8-sig") as fh:
        w = csv.writer(fh)
        w.writerow(["Organisation Name:", "ACME LTD"])
        w.writerow(["Time Period:", f"From 01-12-2026 00:00:00 To {period_end:%d-%m-%Y %H:%M:%S}"])
        w.writerow([])
        w.writerow(EXPORT_HEADER)
        w.writerows(lines)
    return path


def line(receipt, when, party, withdrawn=None, paid_in=None, reason="Business Payment to Customer via API",
         linked="", status="Completed", details="Salary Payment"):
    def money(v):
        return "" if v is None else f"{v:,.2f}"

    return [receipt, f"{when:%d-%m-%Y %H:%M:%S}", f"{when:%d-%m-%Y %H:%M:%S}", details, status, money(paid_in),
            money(None if withdrawn is None else -withdrawn), "1,000,000.00", "Yes", reason,
            f"{party} - SOMEONE" if party else "", linked, ""]


def test_hand_made_statement_covers_every_case(tmp_path, run_with_every_case):
    run, journal, _ = run_with_every_case
    now = datetime.now(NAIROBI).replace(microsecond=0)
    s = now + timedelta(seconds=20)
    lines = [
        line("RA1", s, wire(PEOPLE["A"]), 1000),
        line("RA1", s, "", 5, reason="B2C Payment Charge", linked="RA1", details="Charge"),     # a charge
        line("RB2", s + timedelta(minutes=3), wire(PEOPLE["B"]), 2000),                        # B twice,
        line("RB1", s, wire(PEOPLE["B"]), 2000),                                               # out of order
        line("RC1", s, mask(wire(PEOPLE["C"])), 3000),                                         # masked
        line("RD1", now + timedelta(hours=47), wire(PEOPLE["D"]), 4000),                       # late, inside
        line("RE1", now + timedelta(hours=49), wire(PEOPLE["E"]), 5000),                       # late, outside
        line("RF1", s, wire(PEOPLE["F"]), 6000),
        line("RF2", s + timedelta(hours=1), wire(PEOPLE["F"]), paid_in=6000, reason="Reversal", linked="RF1",
             details="Reversal of RF1"),                                                        # a reversal
        line("RG1", s, mask(wire(PEOPLE["G"])), 7000),                                         # unknown, paid
        line("RI1", s, wire(PEOPLE["I"]), 900),                                                # rejected, paid
        line("RZ1", s, "254712999999", 500),                                                   # unexpected
        line("RX1", s, wire(PEOPLE["A"]), 1000, status="Failed"),                               # not completed
    ]
    path = write(tmp_path / "statement.csv", lines, period_end=now + timedelta(days=3))
    statement = load_statement(path)
    assert statement.lines["line"].iloc[0] == 5  # the header is on row 4, below the preamble
    rec = reconcile(run, statement)
    by_row = rec.payouts.set_index("row")
    assert by_row.loc[2, ["reconciliation", "receipt", "charge"]].tolist() == ["confirmed", "RA1", 5.0]
    assert sorted(by_row.loc[[3, 4], "receipt"]) == ["RB1", "RB2"]            # one to one
    assert by_row.loc[3, "receipt"] == "RB1" and by_row.loc[4, "receipt"] == "RB2"  # in time order
    assert by_row.loc[5, ["reconciliation", "receipt"]].tolist() == ["confirmed", "RC1"]
    assert by_row.loc[6, ["reconciliation", "receipt"]].tolist() == ["confirmed", "RD1"]
    assert by_row.loc[7, "reconciliation"] == "missing"                       # completed after the window
    assert by_row.loc[8, "reconciliation"] == "missing"                       # paid, then reversed
    assert by_row.loc[9, ["reconciliation", "receipt"]].tolist() == ["settled_paid", "RG1"]
    assert by_row.loc[10, "reconciliation"] == "settled_unpaid"
    assert by_row.loc[11, ["reconciliation", "receipt"]].tolist() == ["paid_despite_rejection", "RI1"]
    roles = rec.lines.set_index("receipt")["role"]
    assert roles["RZ1"] == "unexpected" and roles["RE1"] == "out_of_window" and roles["RX1"] == "not_completed"
    assert roles["RF1"] == "reversed" and roles["RF2"] == "reversal"
    assert rec.lines.loc[rec.lines["details"] == "Charge", "role"].tolist() == ["charge"]
    # Totals tie out: the statement's matched withdrawals equal the payouts found paid.
    t = rec.tieout.set_index("item")
    assert t.loc["statement: withdrawals matched to this run", "kes"] == 1000 + 4000 + 3000 + 4000 + 7000 + 900
    assert rec.ties_out and not rec.clean


def test_unknown_rows_settled_each_way_and_applied(tmp_path, run_with_every_case, sandbox):
    run, journal, path = run_with_every_case
    now = datetime.now(NAIROBI)
    lines = [line("RG1", now, wire(PEOPLE["G"]), 7000)]
    statement = write(tmp_path / "s.csv", lines, period_end=now + timedelta(hours=1))
    before = journal.counts(run.run_id)
    rec = reconcile(run, statement)
    assert journal.counts(run.run_id) == before  # without apply, nothing changes
    rec = reconcile(run, statement, apply=True)
    assert sorted(rec.applied[["row", "decision"]].itertuples(index=False, name=None)) == [
        (9, "paid"), (10, "release")]
    assert journal.counts(run.run_id) == {"accepted": 7, "paid": 1, "rejected": 1, "pending": 1}
    resumed = run_payouts(path, client=sandbox.client(), journal=journal, resume=True, **fast())
    assert resumed.sent_now == 1
    assert sandbox.paid_counts()[(wire(PEOPLE["H"]), 8000)] == 1
    assert sandbox.paid_counts()[(wire(PEOPLE["G"]), 7000)] == 1  # paid once, by the dropped request


def test_unknown_is_unsettled_when_the_statement_stops_too_early(tmp_path, run_with_every_case):
    run, journal, _ = run_with_every_case
    now = datetime.now(NAIROBI)
    statement = write(tmp_path / "s.csv", [line("RA1", now, wire(PEOPLE["A"]), 1000)],
                      period_end=now - timedelta(hours=1))
    rec = reconcile(run, statement, apply=True)
    assert rec.payouts.set_index("row").loc[[9, 10], "reconciliation"].tolist() == ["unsettled", "unsettled"]
    assert rec.applied.empty
    assert journal.counts(run.run_id)["unknown"] == 2


def test_sandbox_statement_after_a_fault_run_apply_then_resume_pays_everyone_once(tmp_path, make_sandbox):
    faults = Faults(drop_share=0.05, http500_share=0.05, http503_share=0.05, html_share=0.03, seed=4)
    sb = make_sandbox(faults=faults)
    n = 200
    rows = [[f"0713{i:06d}", 100 + i, "B2C"] for i in range(n)]
    path = mk.csv_file(tmp_path / "p.csv", rows, header=["Phone", "Amount", "Product"])
    journal = Journal(tmp_path / "j.sqlite")
    run = run_payouts(path, client=sb.client(), journal=journal,
                      **fast(backoff=Backoff(base=0.01, max_attempts=10)))
    assert journal.counts(run.run_id).get("unknown", 0) > 5
    for fmt in ("csv", "xlsx"):
        statement = sb.write_statement(tmp_path / f"statement.{fmt}", mask_share=0.3, seed=1)
        rec = reconcile(run, statement, settle_after_minutes=0)
        assert rec.ties_out and not (rec.lines["role"] == "unexpected").any()
    rec = reconcile(run, statement, settle_after_minutes=0, apply=True)
    assert set(rec.payouts["reconciliation"]) <= {"confirmed", "settled_paid", "settled_unpaid"}
    resumed = run_payouts(path, client=sb.client(), journal=journal, resume=True, **fast())
    assert resumed.sent_now == int((rec.payouts["reconciliation"] == "settled_unpaid").sum())
    # A released row may meet another fault when sent again: then the loop goes round once more.
    for _ in range(5):
        if not journal.counts(run.run_id).get("unknown"):
            break
        sb.write_statement(tmp_path / "again.csv", seed=2)
        reconcile(run, tmp_path / "again.csv", settle_after_minutes=0, apply=True)
        run_payouts(path, client=sb.client(), journal=journal, resume=True, **fast())
    assert set(journal.counts(run.run_id)) <= {"accepted", "paid"}
    paid = sb.paid_counts()
    assert len(paid) == n and set(paid.values()) == {1}


def test_cli_reconcile_writes_the_workbook_and_applies(tmp_path, run_with_every_case, capsys):
    run, journal, _ = run_with_every_case
    now = datetime.now(NAIROBI)
    statement = write(tmp_path / "s.csv", [line("RA1", now, wire(PEOPLE["A"]), 1000)],
                      period_end=now + timedelta(hours=1))
    out = tmp_path / "rec.xlsx"
    code = main(["reconcile", run.run_id, str(statement), "--journal", str(journal.path), "--out", str(out)])
    assert code == 1  # missing and unsettled rows remain
    text = capsys.readouterr().out
    assert "ties out" in text and "add --apply" in text
    wb = openpyxl.load_workbook(out)
    assert wb.sheetnames == ["Reconciliation", "Statement lines"]
    ws = wb["Reconciliation"]
    assert "ties out" in ws["A1"].value and ws["A3"].value == "Tie-out"
    receipts = [r[6] for r in ws.iter_rows(min_row=17, values_only=True) if r[0] == 2]
    assert receipts == ["RA1"]
    assert main(["reconcile", run.run_id, str(statement), "--journal", str(journal.path), "--out", str(out),
                 "--apply"]) == 1
    assert "Recorded release: rows 9, 10" in capsys.readouterr().out


def test_statement_files_that_are_not_statements(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(SheetError, match="not an M-PESA statement export"):
        load_statement(tmp_path / "x.csv")
    bad = write(tmp_path / "s.csv", [line("R1", datetime(2026, 12, 1, tzinfo=NAIROBI), "254712345678", 10)],
                period_end=datetime(2026, 12, 2))
    text = bad.read_text(encoding="utf-8-sig").replace("01-12-2026 00:00:00,01-12-2026", "yesterday,01-12-2026")
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(SheetError, match="row 5.*not a completion time"):
        load_statement(bad)
