"""The M-PESA organisation statement: reading the portal's export, and writing one (for the sandbox).

The export (csv or xlsx) carries a few preamble lines (organisation, short code, time
period) above a header of ``Receipt No.``, ``Completion Time``, ``Initiation Time``,
``Details``, ``Transaction Status``, ``Paid In``, ``Withdrawn``, ``Balance``, ``Balance
Confirmed``, ``Reason Type``, ``Other Party Info``, ``Linked Transaction ID`` and
``A/C No.``. Money may be negative, blank or have thousands separators; times are Nairobi
local. ``Other Party Info`` is ``254712345678 - JANE DOE``, sometimes with the number
partly masked (``2547******78 - JANE DOE``).

Each line gets a ``kind``: ``payment`` (a completed withdrawal), ``charge`` (its fee: the
reason type names a charge), ``reversal`` (money back for an earlier receipt),
``paid_in``, or ``not_completed``.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import SheetError
from .protocol import NAIROBI
from .sheets import header_key, read_cells

COLUMNS: dict[str, tuple[str, ...]] = {
    "receipt": ("Receipt No.", "Receipt No", "Receipt", "Receipt Number", "Transaction ID"),
    "completed": ("Completion Time", "Completed", "Completion Date", "Completed Time"),
    "initiated": ("Initiation Time", "Initiated", "Initiation Date"),
    "details": ("Details", "Description", "Narrative"),
    "status": ("Transaction Status", "Status"),
    "paid_in": ("Paid In", "Paid in", "Credit", "Money In"),
    "withdrawn": ("Withdrawn", "Withdrawal", "Paid Out", "Debit", "Money Out"),
    "balance": ("Balance",),
    "balance_confirmed": ("Balance Confirmed",),
    "reason": ("Reason Type", "Reason", "Transaction Type"),
    "party": ("Other Party Info", "Other Party", "Opposite Party", "Counterparty"),
    "linked": ("Linked Transaction ID", "Linked Transaction", "Linked ID"),
    "account": ("A/C No.", "A/C No", "Account No", "Account Number"),
}
REQUIRED = ("receipt", "completed", "withdrawn", "party")
_INDEX = {header_key(a): canon for canon, names in COLUMNS.items() for a in names}
EXPORT_HEADER = [names[0] for names in COLUMNS.values()]
_PARTY = re.compile(r"^\s*([0-9*]{5,15})\b")
_PERIOD = re.compile(r"to\s+(\d{1,2}[-/.]\d{1,2}[-/.]\d{4}(?:\s+\d{1,2}:\d{2}(?::\d{2})?)?)", re.IGNORECASE)
_DAY_FIRST = re.compile(r"^(\d{1,2})[-/.](\d{1,2})[-/.](\d{4})(?:[ T]+(\d{1,2}):(\d{2})(?::(\d{2}))?)?$")


@dataclass
class Statement:
    """A statement's lines (``lines``: one row per line, typed) and how far it reaches."""

    path: Path | None
    lines: pd.DataFrame
    covered_until: datetime | None

    def __repr__(self) -> str:
        kinds = self.lines["kind"].value_counts().to_dict() if len(self.lines) else {}
        name = self.path.name if self.path else "statement"
        return f"<Statement {name}: {len(self.lines)} lines {kinds}>"

    def _repr_html_(self) -> str:
        return f"<p><b>{self!r}</b></p>" + self.lines.head(20).to_html(index=False)


def parse_time(text: str) -> datetime | None:
    """A statement time (Nairobi local): ``04-12-2026 15:30:12``, ``04/12/2026 15:30``, ISO."""
    raw = text.strip()
    if not raw:
        return None
    m = _DAY_FIRST.match(raw)
    if m:
        d, mo, y, h, mi, s = m.groups()
        when = datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0))
    else:
        try:
            when = datetime.fromisoformat(raw)
        except ValueError:
            return None
    return when.astimezone(NAIROBI) if when.tzinfo else when.replace(tzinfo=NAIROBI)


def parse_money(text: str) -> float:
    """``'-1,500.00'`` -> ``1500.0`` (the sign says which column it sits in, not more); blank -> 0."""
    raw = text.strip().replace(",", "").replace("KES", "").replace("Ksh", "").strip()
    if not raw or raw == "-":
        return 0.0
    if raw.startswith("(") and raw.endswith(")"):
        raw = raw[1:-1]
    try:
        return abs(round(float(raw), 2))
    except ValueError:
        raise ValueError(f"{text!r} is not an amount") from None


def party_number(text: str) -> str:
    """The number part of ``Other Party Info``: digits, or digits and ``*`` when masked."""
    m = _PARTY.match(text or "")
    return m.group(1) if m else ""


def load_statement(path: str | Path, sheet: str | int | None = None) -> Statement:
    """Read an M-PESA organisation statement export. Raises :class:`SheetError` for one that is unusable."""
    path = Path(path)
    _, texts = read_cells(path, sheet, max_rows=5_000_000, ragged=True)
    header_at, columns = -1, {}
    for i, row in enumerate(texts[:40]):
        found = {_INDEX[header_key(c)]: j for j, c in enumerate(row) if header_key(c) in _INDEX}
        if len(found) > len(columns):
            header_at, columns = i, found
    missing = [c for c in REQUIRED if c not in columns]
    if header_at < 0 or missing:
        raise SheetError(
            f"not an M-PESA statement export: no {', '.join(COLUMNS[c][0] for c in missing)} column "
            f"(expected {', '.join(EXPORT_HEADER)})", path=str(path))
    period_end = None
    for row in texts[:header_at]:
        m = _PERIOD.search(" ".join(row))
        if m:
            period_end = parse_time(m.group(1))
    records = []
    for n, row in enumerate(texts[header_at + 1:], start=header_at + 2):
        if not any(c.strip() for c in row):
            continue

        def cell(name: str, row=row) -> str:
            j = columns.get(name)
            return row[j].strip() if j is not None and j < len(row) else ""

        try:
            completed = parse_time(cell("completed"))
            paid_in, withdrawn = parse_money(cell("paid_in")), parse_money(cell("withdrawn"))
        except ValueError as exc:
            raise SheetError(str(exc), path=str(path), row=n) from None
        if completed is None:
            raise SheetError(f"{cell('completed')!r} is not a completion time", path=str(path), row=n,
                             column=COLUMNS["completed"][0])
        records.append({
            "line": n, "receipt": cell("receipt"), "completed_at": completed,
            "initiated_at": parse_time(cell("initiated")), "details": cell("details"), "status": cell("status"),
            "paid_in": paid_in, "withdrawn": withdrawn, "reason": cell("reason"), "party_info": cell("party"),
            "party": party_number(cell("party")), "linked": cell("linked"), "account": cell("account"),
        })
    lines = pd.DataFrame.from_records(records, columns=[
        "line", "receipt", "completed_at", "initiated_at", "details", "status", "paid_in", "withdrawn", "reason",
        "party_info", "party", "linked", "account"])
    for col in ("completed_at", "initiated_at"):
        lines[col] = pd.to_datetime(lines[col], utc=True).dt.tz_convert(NAIROBI)
    lines["kind"] = classify_lines(lines)
    latest = lines["completed_at"].max() if len(lines) else None
    covered = max([t for t in (period_end, latest) if t is not None and not pd.isna(t)], default=None)
    return Statement(path=path, lines=lines, covered_until=covered)


def classify_lines(lines: pd.DataFrame) -> pd.Series:
    status = lines["status"].str.lower()
    reason = (lines["reason"] + " " + lines["details"]).str.lower()
    kind = pd.Series("paid_in", index=lines.index, dtype=object)
    kind[lines["withdrawn"] > 0] = "payment"
    kind[reason.str.contains("charge")] = "charge"
    kind[reason.str.contains("reversal|reversed", regex=True)] = "reversal"
    kind[~status.isin(["completed", "complete", ""])] = "not_completed"
    return kind


# ---------------------------------------------------------------- the sandbox's export


def b2c_charge(amount: int) -> int:
    """The sandbox's own tariff for a payment's charge line (not Safaricom's)."""
    return 5 if amount <= 1_000 else 10 if amount <= 10_000 else 23


def mask(msisdn: str) -> str:
    """``254712345678`` -> ``2547******78``, as exports sometimes show it."""
    return msisdn[:4] + "*" * (len(msisdn) - 6) + msisdn[-2:]


def write_statement(
    ledger: list[dict[str, Any]],
    path: str | Path,
    *,
    mask_share: float = 0.25,
    charges: bool = True,
    seed: int = 0,
    organisation: str = "MIPAY SANDBOX LTD",
    short_code: str = "600000",
    opening_balance: float = 50_000_000.0,
    period_end: datetime | None = None,
) -> Path:
    """Write a ledger as the organisation portal's statement export (csv or xlsx by suffix)."""
    path = Path(path)
    rng = random.Random(seed)
    rows: list[list[Any]] = []
    balance = opening_balance
    for entry in sorted(ledger, key=lambda e: e["seq"]):
        received = datetime.fromisoformat(entry["received_at"]).astimezone(NAIROBI).replace(tzinfo=None)
        completed = received + timedelta(seconds=2)
        msisdn, amount = entry["msisdn"], int(entry["amount"])
        receipt = entry["transaction_id"]
        shown = mask(msisdn) if len(msisdn) == 12 and rng.random() < mask_share else msisdn
        if entry["service"] == "CHECKOUT":
            balance += amount
            rows.append([receipt, completed, received, f"Customer payment from {shown}", "Completed",
                         amount, None, balance, "Yes", "Pay Bill Online", f"{shown} - CUSTOMER", "",
                         entry.get("reference", "")])
            continue
        b2b = entry.get("product_id") == "B2B"
        balance -= amount
        reason = "Business Pay Bill" if b2b else "Business Payment to Customer via API"
        details = f"{'Business Payment to' if b2b else 'Salary Payment to'} {shown}"
        rows.append([receipt, completed, received, details, "Completed", None, -amount, balance, "Yes", reason,
                     f"{shown} - {'BUSINESS' if b2b else 'RECIPIENT'}", "", ""])
        if charges:
            fee = b2c_charge(amount)
            balance -= fee
            rows.append([receipt, completed, received, "B2C Payment Charge", "Completed", None, -fee, balance,
                         "Yes", "B2C Payment Charge" if not b2b else "Business Pay Bill Charge", "", receipt, ""])
    end = period_end or datetime.now(NAIROBI).replace(tzinfo=None, microsecond=0)
    start = min((r[1] for r in rows), default=end) - timedelta(hours=1)
    preamble = [
        ["Organisation Name:", organisation],
        ["Organisation Short Code:", short_code],
        ["Time Period:", f"From {start:%d-%m-%Y %H:%M:%S} To {end:%d-%m-%Y %H:%M:%S}"],
        ["Report Date:", f"{end:%d-%m-%Y %H:%M:%S}"],
        [],
    ]
    rows.reverse()  # newest first, as the portal lists them

    def money(v: float | None) -> str:
        return "" if v is None else f"{v:,.2f}"

    body = [[r[0], f"{r[1]:%d-%m-%Y %H:%M:%S}", f"{r[2]:%d-%m-%Y %H:%M:%S}", r[3], r[4], money(r[5]), money(r[6]),
             money(r[7]), r[8], r[9], r[10], r[11], r[12]] for r in rows]
    if path.suffix.lower() == ".xlsx":
        import xlsxwriter

        wb = xlsxwriter.Workbook(str(path), {"strings_to_formulas": False, "strings_to_numbers": False})
        ws = wb.add_worksheet("Statement")
        for r, line in enumerate([*preamble, EXPORT_HEADER, *body]):
            for c, v in enumerate(line):
                ws.write_string(r, c, str(v))
        wb.close()
    else:
        import csv

        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerows([*preamble, EXPORT_HEADER, *body])
    return path
