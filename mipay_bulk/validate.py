"""Validating and normalising payout rows into PROTOCOL.md's wire form.

Problems in the data are data: :func:`validate` returns the typed payouts and an issues
table (``row``, ``column``, ``value``, ``code``, ``severity``, ``message``); it raises only
when the file itself cannot be used. A row with any error is not a payout.

Choices made where the brief is silent (each is also in the README):

* Seconds in a schedule are dropped: the gateway's form has minutes only.
* A blank schedule means "send now": the wire value is the Nairobi time at signing.
* Duplicates (same recipient, amount, product and day) keep the first row; the later rows
  are errors (warnings with ``allow_duplicates``). Rows with different ``reference`` values
  are not duplicates.
* The daily limit (per person, so B2C only) counts only rows that are otherwise valid.
* A B2B payout must name a short code (5 to 7 digits), never a phone number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import cache, lru_cache
from pathlib import Path

import pandas as pd

from .config import Limits
from .errors import SheetError
from .protocol import NAIROBI, PRODUCTS, format_scheduled_send
from .sheets import LoadedSheet, load_sheet

ERROR, WARNING = "error", "warning"
ISSUE_COLUMNS = ["row", "column", "value", "code", "severity", "message"]


class Problem(Exception):
    """One problem with one value: a short ``code`` and a message an analyst understands."""

    def __init__(self, code: str, message: str, severity: str = ERROR) -> None:
        super().__init__(message)
        self.code, self.message, self.severity = code, message, severity


# ---------------------------------------------------------------- MSISDN

_SCI = re.compile(r"^(\d)(?:\.(\d+))?[eE]\+?(\d+)$")
_SEPARATORS = re.compile(r"[\s\-().\u00a0/]")


def _unmangle(text: str) -> str:
    """Undo what Excel does to long numbers: ``712345678.0`` and ``2.54712345678E+11``."""
    if re.fullmatch(r"\d+\.0+", text):
        return text.split(".")[0]
    m = _SCI.match(text)
    if m:
        lead, frac, exp = m.group(1), m.group(2) or "", int(m.group(3))
        if exp < len(frac):
            raise Problem("msisdn_not_whole", "not a whole number")
        if exp > len(frac):
            raise Problem(
                "msisdn_excel_shortened",
                "Excel has shortened this number and lost digits; "
                "format the column as Text and type the number again",
            )
        return lead + frac
    return text


@cache
def _kenyan_mobile_pattern() -> re.Pattern[str]:
    """libphonenumber's own pattern for Kenyan mobile numbers (from the ``phonenumbers`` metadata).

    Matching it is what ``is_valid_number`` and ``number_type == MOBILE`` decide for a
    Kenyan number, at a hundredth of the cost per row.
    """
    import phonenumbers
    from phonenumbers.phonemetadata import PhoneMetadata

    phonenumbers.parse("+254712345678")  # makes the library load its KE metadata
    return re.compile(PhoneMetadata.metadata_for_region("KE").mobile.national_number_pattern)


@cache
def _carrier_prefix_length() -> int:
    from phonenumbers.carrierdata import CARRIER_DATA

    return max(len(k) for k in CARRIER_DATA if k.startswith("254"))


_NETWORKS: dict[str, str] = {}


def original_network(msisdn: str) -> str:
    """The network a Kenyan number was first issued by (numbers are portable, so only a hint).

    Carrier data is keyed by prefixes no longer than ``_carrier_prefix_length()``, so one
    look-up per such prefix serves every number under it.
    """
    prefix = msisdn[: _carrier_prefix_length()]
    network = _NETWORKS.get(prefix)
    if network is None:
        import phonenumbers
        from phonenumbers import carrier

        network = _NETWORKS[prefix] = carrier.name_for_number(phonenumbers.parse("+" + msisdn), "en") or ""
    return network


@lru_cache(maxsize=200_000)
def normalise_msisdn(text: str, product: str = "B2C") -> tuple[str, tuple[Problem, ...]]:
    """``'0712 345 678'`` -> ``'254712345678'``; a B2B short code stays as its digits.

    Raises :class:`Problem` for an error; returns warnings beside the value.
    """
    raw = text.strip()
    if not raw:
        raise Problem("msisdn_missing", "the recipient is blank")
    s = _unmangle(raw)
    s = _SEPARATORS.sub("", s)
    if s.startswith("+"):
        s = s[1:]
        if not s.startswith("254"):
            raise Problem("msisdn_not_kenyan", "not a Kenyan number (+254)")
    if not s.isdigit():
        raise Problem("msisdn_not_a_number", "not a phone number: it holds letters or symbols")
    if product == "B2B":
        if 5 <= len(s) <= 7:
            return s, ()
        raise Problem("shortcode_invalid", "a B2B payout goes to a business short code of 5 to 7 digits")
    if s.startswith("00254"):
        s = s[2:]
    if s.startswith("254"):
        national = s[3:]
    elif s.startswith("0"):
        national = s[1:]
    else:
        national = s
    if len(national) < 9:
        raise Problem("msisdn_too_short", "too short for a Kenyan mobile number")
    if len(national) > 9:
        raise Problem("msisdn_too_long", "too long for a Kenyan mobile number")
    if national[0] not in "71":
        raise Problem("msisdn_not_mobile", "not a Kenyan mobile number (they start 07 or 01)")
    msisdn = "254" + national
    if not _kenyan_mobile_pattern().fullmatch(national):
        raise Problem("msisdn_invalid", "not in a range issued to Kenyan mobile networks")
    network = original_network(msisdn)
    if network != "Safaricom":
        return msisdn, (
            Problem(
                "msisdn_other_network",
                f"was first issued by {network or 'another network'}, not Safaricom; numbers are "
                "portable, so it may still be on M-PESA",
                WARNING,
            ),
        )
    return msisdn, ()


# ---------------------------------------------------------------- amount

_CURRENCY_PREFIX = re.compile(r"^(?:kes|kshs?|shs?)\.?\s*", re.IGNORECASE)
_CURRENCY_SUFFIX = re.compile(r"\s*(?:/=|/-|=/-?|kes|kshs?|shs?)\s*$", re.IGNORECASE)
_PLAIN = re.compile(r"^-?\d+(?:\.\d+)?$")
_GROUPED = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")


@lru_cache(maxsize=100_000)
def parse_amount(text: str) -> int:
    """``'KES 1,500'``, ``'Ksh1,500/='``, ``'1500.00'`` -> ``1500``. Raises :class:`Problem`."""
    raw = text.strip()
    if not raw:
        raise Problem("amount_missing", "the amount is blank")
    s = _CURRENCY_SUFFIX.sub("", _CURRENCY_PREFIX.sub("", raw)).strip()
    negative = False
    if s.startswith("(") and s.endswith(")"):
        s, negative = s[1:-1].strip(), True
    s = _CURRENCY_PREFIX.sub("", s).replace(" ", "").replace("\u00a0", "")
    if not (_PLAIN.match(s) or _GROUPED.match(s)):
        raise Problem("amount_not_a_number", "not an amount in shillings")
    try:
        value = Decimal(s.replace(",", ""))
    except InvalidOperation:
        raise Problem("amount_not_a_number", "not an amount in shillings") from None
    if negative:
        value = -value
    if value != value.to_integral_value():
        raise Problem("amount_has_cents", "has cents; M-PESA pays whole shillings")
    if value < 0:
        raise Problem("amount_negative", "a negative amount: a payout cannot take money back")
    if value == 0:
        raise Problem("amount_zero", "a zero amount")
    return int(value)


def check_amount_limits(amount: int, product: str, limits: Limits) -> None:
    low, high = limits.amount_range(product)
    if amount < low:
        raise Problem("amount_below_minimum", f"KES {amount:,} is below the {product} minimum of KES {low:,}")
    if amount > high:
        raise Problem("amount_above_maximum", f"KES {amount:,} is above the {product} maximum of KES {high:,}")


# ---------------------------------------------------------------- product


def normalise_product(text: str, default: str | None) -> str:
    s = text.strip().upper().replace(" ", "")
    if not s:
        if default:
            return default
        raise Problem("product_missing", "the product is blank and no default was given (--product B2C)")
    if s not in PRODUCTS:
        raise Problem("product_invalid", "not a product: use B2C or B2B")
    return s


# ---------------------------------------------------------------- schedule

_DAY_FIRST = re.compile(
    r"^(\d{1,2})[/\-.](\d{1,2})[/\-.](\d{2,4})"
    r"(?:[ T,]+(\d{1,2})[:.](\d{2})(?::(\d{2})(?:\.\d+)?)?\s*([ap])?\.?\s*(m)?\.?)?$",
    re.IGNORECASE,
)
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}")
_SERIAL = re.compile(r"^\d{5}(?:\.\d+)?$")
_EXCEL_EPOCH = datetime(1899, 12, 30)


def parse_schedule(text: str, default_time) -> datetime | None:
    """An aware Nairobi datetime (to the minute), or ``None`` for "send now". Raises :class:`Problem`."""
    raw = text.strip()
    if not raw:
        return None
    bad = Problem("schedule_invalid", "not a date and time; write it like 17/09/2026 6:31 pm")
    if _SERIAL.match(raw):
        serial = float(raw)
        if not 20_000 <= serial <= 80_000:
            raise bad
        naive = _EXCEL_EPOCH + timedelta(days=serial)
        # Excel serials carry float noise: round to the nearest minute, not down.
        naive = (naive + timedelta(seconds=30)).replace(second=0, microsecond=0)
        return naive.replace(tzinfo=NAIROBI)
    if _ISO.match(raw):
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            raise bad from None
        if len(raw) == 10:
            parsed = datetime.combine(parsed.date(), default_time)
        local = parsed.astimezone(NAIROBI) if parsed.tzinfo else parsed.replace(tzinfo=NAIROBI)
        return local.replace(second=0, microsecond=0)
    m = _DAY_FIRST.match(raw)
    if not m:
        raise bad
    day, month, year, hour, minute, _sec, half, _m = m.groups()
    day, month = int(day), int(month)
    if len(year) != 4:
        raise Problem("schedule_year", "write the year with four digits")
    if month > 12:
        hint = f"; did you mean {month:02d}/{day:02d}/{year}?" if day <= 12 else ""
        raise Problem(
            "schedule_month_first",
            f"there is no month {month}; dates are read day first (DD/MM/YYYY){hint}",
        )
    try:
        when_date = date(int(year), month, day)
    except ValueError:
        raise Problem("schedule_no_such_day", "that day does not exist") from None
    if hour is None:
        t = default_time
        return datetime.combine(when_date, t).replace(tzinfo=NAIROBI)
    h, mi = int(hour), int(minute)
    if half:
        if not 1 <= h <= 12:
            raise bad
        h = h % 12 + (12 if half.lower() == "p" else 0)
    elif h > 23:
        raise bad
    if mi > 59:
        raise bad
    return datetime(when_date.year, when_date.month, when_date.day, h, mi, tzinfo=NAIROBI)


def check_schedule_window(when: datetime, now: datetime, limits: Limits) -> None:
    if when < now - timedelta(minutes=limits.past_tolerance_minutes):
        raise Problem("schedule_in_past", f"{format_scheduled_send(when)} is in the past")
    if when > now + timedelta(days=limits.horizon_days):
        raise Problem(
            "schedule_too_far",
            f"{format_scheduled_send(when)} is more than {limits.horizon_days} days ahead",
        )


# ---------------------------------------------------------------- the whole sheet


@dataclass
class Validation:
    """The result of :func:`validate`.

    ``rows``: every row of the sheet with its normalised values and ``valid``;
    ``payouts``: the valid rows only; ``issues``: one line per problem;
    ``totals``: rows, valid, invalid and KES by product.
    """

    sheet: LoadedSheet
    rows: pd.DataFrame
    issues: pd.DataFrame
    limits: Limits = field(default_factory=Limits)

    @property
    def payouts(self) -> pd.DataFrame:
        return self.rows[self.rows["valid"]].drop(columns=["valid"]).reset_index(drop=True)

    @property
    def errors(self) -> pd.DataFrame:
        return self.issues[self.issues["severity"] == ERROR]

    @property
    def warnings(self) -> pd.DataFrame:
        return self.issues[self.issues["severity"] == WARNING]

    @property
    def ok(self) -> bool:
        """True when every row is a valid payout."""
        return bool(self.rows["valid"].all())

    @property
    def totals(self) -> pd.DataFrame:
        """Control totals by product: rows, valid, invalid, KES (valid rows)."""
        r = self.rows
        product = r["product_id"].where(r["product_id"] != "", "(no product)")
        frame = pd.DataFrame({"product": product, "valid": r["valid"],
                              "kes": r["amount"].where(r["valid"], 0).fillna(0).astype("int64")})
        out = frame.groupby("product", sort=True).agg(
            rows=("valid", "size"), valid=("valid", "sum"), kes=("kes", "sum"))
        out["invalid"] = out["rows"] - out["valid"]
        out = out[["rows", "valid", "invalid", "kes"]]
        out.loc["total"] = out.sum()
        return out.astype("int64")

    def styled_issues(self, limit: int | None = 50):
        """The issues as a pandas Styler for notebooks: errors red, warnings amber."""
        issues = self.issues if limit is None else self.issues.head(limit)
        return _issue_styler(issues)

    def __repr__(self) -> str:
        t = self.totals.loc["total"]
        return (f"<Validation {self.sheet.path.name}: {t['rows']} rows, {t['valid']} valid (KES {t['kes']:,}), "
                f"{len(self.errors)} errors, {len(self.warnings)} warnings>")

    def _repr_html_(self) -> str:
        return f"<p><b>{self!r}</b></p>" + self.totals.to_html() + styled_issues(self.issues.head(50))


def _issue_styler(issues: pd.DataFrame):
    colours = {ERROR: "background-color: #f8d7da", WARNING: "background-color: #fff3cd"}
    styler = issues.style.apply(lambda row: [colours.get(row["severity"], "")] * len(row), axis=1)
    return styler.hide(axis="index").set_properties(subset=["message"], **{"text-align": "left"})


def styled_issues(issues: pd.DataFrame) -> str:
    """The issues as HTML, errors red and warnings amber."""
    if issues.empty:
        return "<p>No issues.</p>"
    return _issue_styler(issues).to_html()


def load_payouts(path: str | Path, sheet: str | int | None = None, *, limits: Limits | None = None) -> LoadedSheet:
    """Load a payout sheet (xlsx, xlsm, xls, ods, csv) as text with Excel row numbers."""
    return load_sheet(path, sheet, max_rows=(limits or Limits()).max_rows)


def validate(
    sheet: LoadedSheet | str | Path,
    *,
    limits: Limits | None = None,
    default_product: str | None = None,
    allow_duplicates: bool = False,
    now: datetime | None = None,
) -> Validation:
    """Validate and normalise every row. Problems are returned as data, never raised."""
    limits = limits or Limits()
    if not isinstance(sheet, LoadedSheet):
        sheet = load_payouts(sheet, limits=limits)
    if default_product is not None:
        default_product = default_product.strip().upper()
        if default_product not in PRODUCTS:
            raise SheetError(f"the default product must be B2C or B2B, not {default_product!r}")
    now = (now or datetime.now(NAIROBI)).astimezone(NAIROBI)
    cols = sheet.columns
    frame = sheet.rows
    n = len(frame)
    blank = [""] * n

    def column(canon: str) -> list[str]:
        return frame[cols[canon]].tolist() if canon in cols else blank

    numbers = frame["row"].tolist()
    phones, amounts, products = column("msisdn"), column("amount"), column("product_id")
    schedules, references, names = column("scheduled_send"), column("reference"), column("name")
    issues: list[tuple] = []

    def report(i: int, canon: str, value: str, problem: Problem) -> None:
        header = cols.get(canon, canon)
        issues.append((numbers[i], header, value, problem.code, problem.severity,
                       f"row {numbers[i]}, {header} {value!r}: {problem.message}"
                       if value.strip() else f"row {numbers[i]}, {header}: {problem.message}"))

    out_msisdn, out_amount, out_product = [""] * n, [None] * n, [""] * n
    out_when: list[datetime | None] = [None] * n
    out_wire = [""] * n
    valid = [True] * n
    schedule_cache: dict[str, datetime | None | Problem] = {}
    for i in range(n):
        try:
            product = normalise_product(products[i], default_product)
            out_product[i] = product
        except Problem as p:
            report(i, "product_id", products[i], p)
            valid[i] = False
            product = default_product or "B2C"
        try:
            msisdn, warnings = normalise_msisdn(phones[i], product)
            out_msisdn[i] = msisdn
            for w in warnings:
                report(i, "msisdn", phones[i], w)
        except Problem as p:
            report(i, "msisdn", phones[i], p)
            valid[i] = False
        try:
            amount = parse_amount(amounts[i])
            out_amount[i] = amount
            if out_product[i]:
                check_amount_limits(amount, product, limits)
        except Problem as p:
            report(i, "amount", amounts[i], p)
            valid[i] = False
        text = schedules[i]
        cached = schedule_cache.get(text, schedule_cache)
        if cached is schedule_cache:
            try:
                cached = parse_schedule(text, limits.default_time)
                if cached is not None:
                    check_schedule_window(cached, now, limits)
            except Problem as p:
                cached = p
            schedule_cache[text] = cached
        if isinstance(cached, Problem):
            report(i, "scheduled_send", text, cached)
            valid[i] = False
        elif cached is not None:
            out_when[i] = cached
            out_wire[i] = format_scheduled_send(cached)

    refs = [r.strip() for r in references]
    originals = {"msisdn": phones, "amount": amounts, "reference": references}
    for i, canon, problem in _cross_row_checks(numbers, out_msisdn, out_amount, out_product, out_when, refs,
                                               valid, now, limits, allow_duplicates, "reference" in cols):
        report(i, canon, originals[canon][i], problem)

    rows = pd.DataFrame({
        "row": numbers,
        "msisdn": out_msisdn,
        "amount": pd.array(out_amount, dtype="Int64"),
        "product_id": out_product,
        "send_at": pd.to_datetime(pd.Series(out_when, dtype=object), utc=True).dt.tz_convert(NAIROBI),
        "scheduled_send": out_wire,
        "reference": refs,
        "name": [s.strip() for s in names],
        "valid": valid,
    })
    originals = frame.drop(columns=["row"])
    originals.columns = [c if c not in rows.columns else f"{c} (sheet)" for c in originals.columns]
    rows = pd.concat([rows, originals.reset_index(drop=True)], axis=1)
    issue_frame = pd.DataFrame(issues, columns=ISSUE_COLUMNS)
    if not issue_frame.empty:
        issue_frame = issue_frame.sort_values(["row"], kind="stable").reset_index(drop=True)
    return Validation(sheet=sheet, rows=rows, issues=issue_frame, limits=limits)


def _cross_row_checks(numbers, msisdns, amounts, products, whens, refs, valid, now, limits,
                      allow_duplicates, has_reference) -> list[tuple[int, str, Problem]]:
    """Checks across rows; marks ``valid`` and returns (index, column, problem) for each finding."""
    found: list[tuple[int, str, Problem]] = []
    today = now.date()
    # A repeated reference is always an error: the reference is the analyst's own unique id.
    if has_reference:
        first_ref: dict[str, int] = {}
        for i, ref in enumerate(refs):
            if not ref:
                continue
            if ref in first_ref:
                found.append((i, "reference", Problem(
                    "reference_repeated", f"the reference is already used on row {numbers[first_ref[ref]]}")))
                valid[i] = False
            else:
                first_ref[ref] = i
    # Duplicates: same recipient, amount, product and day, unless references tell them apart.
    first_seen: dict[tuple, int] = {}
    for i in range(len(numbers)):
        if not valid[i]:
            continue
        day = whens[i].date() if whens[i] else today
        key = (msisdns[i], amounts[i], products[i], day, refs[i] if has_reference else "")
        if key in first_seen:
            j = first_seen[key]
            msg = f"the same payout as row {numbers[j]} (same recipient, amount, product and day)"
            if allow_duplicates:
                found.append((i, "msisdn", Problem("duplicate_payout", msg + "; allowed", WARNING)))
            else:
                found.append((i, "msisdn", Problem(
                    "duplicate_payout", msg + "; add a reference column to tell them apart, or allow duplicates")))
                valid[i] = False
        else:
            first_seen[key] = i
    # M-PESA's daily limit per person (B2C), over the rows that would be sent.
    per_day: dict[tuple, list[int]] = {}
    for i in range(len(numbers)):
        if valid[i] and products[i] == "B2C":
            day = whens[i].date() if whens[i] else today
            per_day.setdefault((msisdns[i], day), []).append(i)
    for (msisdn, day), idx in per_day.items():
        total = sum(amounts[i] for i in idx)
        if total > limits.daily_limit:
            for i in idx:
                found.append((i, "amount", Problem(
                    "daily_limit_exceeded",
                    f"{msisdn} would receive KES {total:,} on {day:%d/%m/%Y}, above the daily limit of "
                    f"KES {limits.daily_limit:,}")))
                valid[i] = False
    return found
