"""Large inputs: a generated 100,000-row workbook loads and validates, issues table built."""

from __future__ import annotations

import pytest

from benchmarks.gen import payout_sheet
from mipay_bulk import load_payouts, validate


@pytest.fixture(scope="module")
def big_sheet(tmp_path_factory):
    return payout_sheet(tmp_path_factory.mktemp("big") / "big.xlsx", 100_000, bad_share=0.02)


def test_hundred_thousand_rows_load_and_validate(big_sheet):
    sheet = load_payouts(big_sheet)
    assert len(sheet) == 100_000
    assert sheet.rows["row"].iloc[[0, -1]].tolist() == [2, 100_001]
    result = validate(sheet)
    errors = result.errors
    # About 2% of rows were written with a short number; each is an error with its row.
    assert 1_500 < len(errors) < 2_500
    assert set(errors["code"]) == {"msisdn_too_short"}
    assert len(result.payouts) == 100_000 - len(errors)
    assert result.totals.loc["total", "rows"] == 100_000


def test_hundred_thousand_payouts_reconcile_against_150k_lines(tmp_path):
    from benchmarks.bench_reconcile import make
    from mipay_bulk import load_statement, reconcile

    journal, run_id, path = make(tmp_path, 100_000, 150_000)
    statement = load_statement(path)
    assert len(statement.lines) == 150_000
    rec = reconcile(run_id, statement, journal=journal)
    assert rec.ties_out
    assert len(rec.payouts) == 100_000
    # Every line is used at most once, and every matched line belongs to exactly one payout.
    matched = rec.lines[rec.lines["role"] == "matched"]
    assert matched["payout_row"].is_unique and len(matched) == rec.payouts["receipt"].notna().sum()
    assert rec.counts()["confirmed"] > 90_000
