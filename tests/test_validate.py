"""Normalising and validating rows: every accepted form, every error with its row and code."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mipay_bulk import Limits, validate
from mipay_bulk.cli import main
from mipay_bulk.protocol import NAIROBI, format_scheduled_send
from mipay_bulk.validate import Problem, normalise_msisdn, parse_amount, parse_schedule

from . import sheetmaker as mk

NOW = datetime(2026, 9, 1, 10, 0, tzinfo=NAIROBI)
SAMPLES = Path(__file__).parent.parent / "samples"


def check(tmp_path, rows, **kw):
    path = mk.xlsx(tmp_path / "p.xlsx", rows)
    return validate(path, now=NOW, **kw)


def codes(result) -> list[tuple[int, str]]:
    return list(zip(result.issues["row"], result.issues["code"], strict=True))


@pytest.mark.parametrize("typed", [
    "0712345678", "712345678", "+254 712 345 678", "254-712-345-678", "(0712) 345678", "254712345678",
    "712345678.0", "2.54712345678E+11", 712345678, 254712345678, " 0712 345678 ", "+254712345678",
])
def test_msisdn_forms(tmp_path, typed):
    r = check(tmp_path, [[typed, 100, "B2C", ""]])
    assert r.ok and r.payouts["msisdn"].tolist() == ["254712345678"]


def test_msisdn_011_numbers():
    assert normalise_msisdn("0110123456") == ("254110123456", ())


@pytest.mark.parametrize("typed, code", [
    ("07123", "msisdn_too_short"),
    ("07123456789", "msisdn_too_long"),
    ("07I2345678", "msisdn_not_a_number"),
    ("+255712345678", "msisdn_not_kenyan"),
    ("2.54712E+11", "msisdn_excel_shortened"),
    ("0212345678", "msisdn_not_mobile"),
    ("", "msisdn_missing"),
])
def test_msisdn_errors_have_row_and_code(tmp_path, typed, code):
    r = check(tmp_path, [["0712345678", 100, "B2C", ""], [typed, 100, "B2C", ""]])
    assert codes(r) == [(3, code)]
    assert r.issues["severity"].tolist() == ["error"]
    assert r.payouts["row"].tolist() == [2]


def test_other_network_is_a_warning_not_an_error(tmp_path):
    r = check(tmp_path, [["0733123456", 100, "B2C", ""]])
    assert r.ok and codes(r) == [(2, "msisdn_other_network")]
    assert r.issues["severity"].tolist() == ["warning"]
    assert "Airtel" in r.issues["message"][0]


def test_b2b_short_codes(tmp_path):
    r = check(tmp_path, [["600123", 5000, "B2B", ""], ["12345", 50, "B2B", ""], ["0712345678", 50, "B2B", ""],
                         ["1234", 50, "B2B", ""]])
    assert r.payouts["msisdn"].tolist() == ["600123", "12345"]
    assert codes(r) == [(4, "shortcode_invalid"), (5, "shortcode_invalid")]


@pytest.mark.parametrize("typed", ["1500", "1,500", "1500.00", "KES 1,500", "Ksh1,500/=", 1500, 1500.0,
                                   "kes1500", "1,500/-", "Kshs. 1,500"])
def test_amount_forms(tmp_path, typed):
    r = check(tmp_path, [["0712345678", typed, "B2C", ""]])
    assert r.ok and r.payouts["amount"].tolist() == [1500]


@pytest.mark.parametrize("typed, code", [
    ("1500.50", "amount_has_cents"), (1500.5, "amount_has_cents"), ("0", "amount_zero"),
    ("-500", "amount_negative"), ("(500)", "amount_negative"), ("five hundred", "amount_not_a_number"),
    ("1,50", "amount_not_a_number"), ("5", "amount_below_minimum"), ("250,001", "amount_above_maximum"),
    ("", "amount_missing"),
])
def test_amount_errors(tmp_path, typed, code):
    assert codes(check(tmp_path, [["0712345678", typed, "B2C", ""]])) == [(2, code)]


def test_limits_are_overridable_in_one_object(tmp_path):
    limits = Limits(b2c_min=50, b2c_max=1000, b2b_max=10_000_000)
    r = check(tmp_path, [["0712345678", 20, "B2C", ""], ["0712345679", 2000, "B2C", ""],
                         ["600123", 5_000_000, "B2B", ""]], limits=limits)
    assert codes(r) == [(2, "amount_below_minimum"), (3, "amount_above_maximum")]


def test_product_forms_and_default(tmp_path):
    rows = [["0712345678", 100, "b2c", ""], ["0712345679", 100, " B2C ", ""], ["0712345670", 100, "", ""],
            ["0712345671", 100, "C2B", ""]]
    r = check(tmp_path, rows)
    assert codes(r) == [(4, "product_missing"), (5, "product_invalid")]
    r = check(tmp_path, rows, default_product="B2C")
    assert codes(r) == [(5, "product_invalid")]
    assert r.payouts["product_id"].tolist() == ["B2C"] * 3


@pytest.mark.parametrize("typed, wire", [
    (datetime(2026, 9, 17, 18, 31), "17/09/2026 6:31 pm"),
    ("2026-09-17 18:31:00", "17/09/2026 6:31 pm"),
    ("2026-09-17T15:31:00Z", "17/09/2026 6:31 pm"),
    ("2026-09-17T18:31:00+03:00", "17/09/2026 6:31 pm"),
    ("2026-09-17T17:31:00+02:00", "17/09/2026 6:31 pm"),
    ("17/09/2026 18:31", "17/09/2026 6:31 pm"),
    ("17/09/2026 6:31 pm", "17/09/2026 6:31 pm"),
    ("17/09/2026 6:31 PM", "17/09/2026 6:31 pm"),
    ("17-09-2026", "17/09/2026 8:00 am"),
    ("17.09.2026 00:05", "17/09/2026 12:05 am"),
    ("17/09/2026 12:00 pm", "17/09/2026 12:00 pm"),
    ("2026-09-17", "17/09/2026 8:00 am"),
    (46282.7715277778, "17/09/2026 6:31 pm"),  # an Excel serial number
])
def test_schedule_forms(tmp_path, typed, wire):
    r = check(tmp_path, [["0712345678", 100, "B2C", typed]])
    assert r.ok, r.issues
    assert r.payouts["scheduled_send"].tolist() == [wire]


def test_real_excel_date_cell_of_date_only_takes_default_time(tmp_path):
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.append(mk.HEADER)
    ws.append(["0712345678", 100, "B2C", datetime(2026, 9, 17).date()])
    ws["D2"].number_format = "dd/mm/yyyy"
    wb.save(tmp_path / "d.xlsx")
    r = validate(tmp_path / "d.xlsx", now=NOW, limits=Limits(default_time=time(9, 30)))
    assert r.payouts["scheduled_send"].tolist() == ["17/09/2026 9:30 am"]


def test_blank_schedule_means_send_now(tmp_path):
    r = check(tmp_path, [["0712345678", 100, "B2C", ""]])
    assert r.payouts["scheduled_send"].tolist() == [""]
    assert r.payouts["send_at"].isna().all()


@pytest.mark.parametrize("typed, code", [
    ("04/13/2027", "schedule_month_first"),
    ("31/02/2027", "schedule_no_such_day"),
    ("17/09/26 6:31 pm", "schedule_year"),
    ("next friday", "schedule_invalid"),
    ("17/09/2026 13:31 pm", "schedule_invalid"),
    ("01/09/2026 9:54 am", "schedule_in_past"),  # six minutes before NOW
    ("01/12/2026 10:01 am", "schedule_too_far"),  # 91 days ahead
])
def test_schedule_errors(tmp_path, typed, code):
    assert codes(check(tmp_path, [["0712345678", 100, "B2C", typed]])) == [(2, code)]


def test_schedule_within_tolerance_and_horizon(tmp_path):
    r = check(tmp_path, [["0712345678", 100, "B2C", "01/09/2026 9:56 am"],
                         ["0712345679", 100, "B2C", "30/11/2026 9:59 am"]])
    assert r.ok


def test_month_first_error_suggests_the_day_first_reading(tmp_path):
    msg = check(tmp_path, [["0712345678", 100, "B2C", "04/13/2027"]]).issues["message"][0]
    assert "row 2" in msg and "'04/13/2027'" in msg and "did you mean 13/04/2027" in msg


def test_duplicates_blocked_unless_allowed_or_referenced(tmp_path):
    rows = [["0712345678", 100, "B2C", ""], ["0712345678", "100.00", "b2c", ""], ["0712345678", 100, "B2B", ""]]
    r = check(tmp_path, rows)
    assert codes(r) == [(3, "duplicate_payout"), (4, "shortcode_invalid")]
    assert "same payout as row 2" in r.issues["message"][0]
    r = check(tmp_path, rows, allow_duplicates=True)
    assert r.payouts["row"].tolist() == [2, 3]
    assert r.issues.set_index("row").loc[3, "severity"] == "warning"
    path = mk.xlsx(tmp_path / "r.xlsx", [["0712345678", 100, "a"], ["0712345678", 100, "b"]],
                   header=["Phone", "Amount", "Reference"])
    assert validate(path, now=NOW, default_product="B2C").ok


def test_repeated_reference_is_an_error(tmp_path):
    path = mk.xlsx(tmp_path / "r.xlsx", [["0712345678", 100, "a"], ["0712345679", 200, "a"]],
                   header=["Phone", "Amount", "Reference"])
    r = validate(path, now=NOW, default_product="B2C")
    assert codes(r) == [(3, "reference_repeated")]


def test_daily_limit_marks_every_row_of_that_day(tmp_path):
    rows = [["0712345678", 250_000, "B2C", "02/09/2026 9:00 am"],
            ["0712345678", 249_000, "B2C", "02/09/2026 3:00 pm"],
            ["0712345678", 2000, "B2C", "02/09/2026 4:00 pm"],
            ["0712345678", 250_000, "B2C", "03/09/2026 9:00 am"]]
    r = check(tmp_path, rows)
    assert codes(r) == [(2, "daily_limit_exceeded"), (3, "daily_limit_exceeded"), (4, "daily_limit_exceeded")]
    assert r.payouts["row"].tolist() == [5]
    # Short codes are businesses: the per-person daily limit does not apply to them.
    r = check(tmp_path, [["600123", 400_000, "B2B", ""], ["600123", 400_000, "B2B", "02/09/2026 9:00 am"]])
    assert r.ok


def test_payouts_keep_originals_beside_normalised_and_totals(tmp_path):
    path = mk.xlsx(tmp_path / "p.xlsx", [["0712 345 678", "KES 1,500", "b2c", "", "x"],
                                         ["600123", "2,000", "B2B", "", "y"],
                                         ["07123", "10", "B2C", "", "z"]],
                   header=mk.HEADER + ["Cost centre"])
    r = validate(path, now=NOW)
    p = r.payouts
    assert p.loc[0, "msisdn"] == "254712345678" and p.loc[0, "MSISDN"] == "0712 345 678"
    assert p.loc[0, "amount"] == 1500 and p.loc[0, "Amount"] == "KES 1,500"
    assert p["Cost centre"].tolist() == ["x", "y"]
    t = r.totals
    assert t.loc["B2C"].tolist() == [2, 1, 1, 1500]
    assert t.loc["B2B"].tolist() == [1, 1, 0, 2000]
    assert t.loc["total"].tolist() == [3, 2, 1, 3500]
    assert "<table" in r._repr_html_() and "#f8d7da" in r._repr_html_()


def test_sample_sheet_shows_every_problem():
    r = validate(SAMPLES / "payouts.xlsx", default_product=None)
    found = set(r.issues["code"])
    for code in ["msisdn_too_short", "msisdn_not_a_number", "msisdn_not_kenyan", "msisdn_excel_shortened",
                 "msisdn_other_network", "amount_has_cents", "amount_zero", "amount_negative",
                 "amount_not_a_number", "amount_below_minimum", "amount_above_maximum", "product_invalid",
                 "product_missing", "schedule_in_past", "schedule_month_first", "schedule_no_such_day",
                 "schedule_too_far", "reference_repeated", "duplicate_payout", "daily_limit_exceeded",
                 "shortcode_invalid"]:
        assert code in found, code
    csv_twin = validate(SAMPLES / "payouts.csv")
    assert csv_twin.payouts["msisdn"].tolist() == r.payouts["msisdn"].tolist()
    assert csv_twin.totals.equals(r.totals)


def test_cli_validate_exit_codes_and_issues_file(tmp_path, capsys):
    good = mk.xlsx(tmp_path / "good.xlsx", [["0712345678", 100, "B2C", ""]])
    assert main(["validate", str(good)]) == 0
    assert "No issues" in capsys.readouterr().out
    bad = mk.csv_file(tmp_path / "bad.csv", [["0712345678", 100, "B2C", ""]] +
                      [["07123", f"={i}+1", "B2C", ""] for i in range(60)])
    assert main(["validate", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "and 70 more" in out and "row 3, MSISDN '07123'" in out
    issues = pd.read_csv(tmp_path / "bad.issues.csv", dtype=str, keep_default_na=False)
    assert len(issues) == 120
    # Values that look like formulas are written inert.
    assert issues["value"].str.startswith("'=").sum() == 60
    assert main(["validate", str(bad), "--out", str(tmp_path / "x.csv")]) == 1
    assert (tmp_path / "x.csv").exists()


# ---------------------------------------------------------------- properties

_national = st.from_regex(r"7[0-2][0-9]{7}", fullmatch=True)
_styles = st.sampled_from([
    lambda n: "0" + n, lambda n: n, lambda n: "254" + n, lambda n: "+254" + n,
    lambda n: f"+254 {n[:3]} {n[3:6]} {n[6:]}", lambda n: f"254-{n[:3]}-{n[3:6]}-{n[6:]}",
    lambda n: f"(0{n[:3]}) {n[3:]}", lambda n: f"{int(n)}.0", lambda n: f"{int('254' + n) / 1e11:.11f}E+11",
    lambda n: f" 0{n[:3]} {n[3:]} ",
])


@given(_national, _styles)
def test_property_every_style_of_a_mobile_normalises_the_same(national, style):
    assert normalise_msisdn(style(national))[0] == "254" + national


@given(st.integers(min_value=1, max_value=10**9), st.sampled_from(["{:d}", "{:,d}", "KES {:,d}", "Ksh{:,d}/=",
                                                                    "{:d}.00", "{:,d}.00"]))
def test_property_amounts_round_trip(amount, form):
    assert parse_amount(form.format(amount)) == amount


@given(st.integers(min_value=0, max_value=365 * 24 * 60 - 1))
def test_property_parser_reads_what_the_formatter_writes(minute):
    when = datetime(2027, 1, 1, tzinfo=NAIROBI) + timedelta(minutes=minute)
    assert parse_schedule(format_scheduled_send(when), time(8)) == when


def test_problem_is_data():
    with pytest.raises(Problem) as info:
        parse_amount("abc")
    assert info.value.code == "amount_not_a_number" and info.value.severity == "error"
