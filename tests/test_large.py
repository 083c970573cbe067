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
