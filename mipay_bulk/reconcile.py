"""Proving a run against the M-PESA organisation statement.

The gateway's answers say what it *answered*; the statement says what *happened*. Each
payout of a run that was sent is matched to at most one completed withdrawal line by
recipient (full or masked number), amount and a time window after the send, one to one:
two identical payouts to one person take two lines, paired in time order. A line whose
receipt was reversed does not count as paid; charge lines are tied to their payment.

Outcomes per payout: ``confirmed`` (accepted, on the statement), ``missing`` (accepted,
not on it), ``paid_despite_rejection`` (rejected or not sent, yet on it), ``not_paid``
(rejected or not sent, and not on it), ``settled_paid`` / ``settled_unpaid`` (an
``unknown`` row the statement decides) and ``unsettled``. Per statement line:
``matched``, ``unexpected`` (a withdrawal inside the run's window that matches no payout),
``out_of_window``, ``charge``, ``reversal``, ``reversed``, ``paid_in``, ``not_completed``.

Two choices where the brief is silent, both for money safety:

* an ``unknown`` row is settled *unpaid* only when the statement reaches at least
  ``settle_after`` (default 10 minutes) past the row's send time; before that it stays
  ``unsettled``, because releasing it could pay twice if the payment completes late;
* with ``apply``, a rejected or not-sent row found on the statement is recorded as paid,
  so a later ``--resume`` or a Failures sheet fed back cannot pay it again.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from .journal import Journal
from .protocol import NAIROBI
from .statement import Statement, load_statement

EXPECTED_PAID = ("accepted", "paid", "unknown", "in_flight")
NOT_PAID = ("rejected", "not_sent")
CLOCK_SKEW = timedelta(minutes=5)


@dataclass
class Reconciliation:
    """The result of :func:`reconcile`: ``payouts``, ``lines`` and the ``tieout`` table."""

    run_id: str
    payouts: pd.DataFrame
    lines: pd.DataFrame
    tieout: pd.DataFrame
    covered_until: datetime | None
    window: timedelta
    applied: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def ties_out(self) -> bool:
        t = self.tieout.set_index("item")["kes"]
        return bool(t["statement: withdrawals matched to this run"] == t["payouts: confirmed + settled paid + "
                                                                          "paid despite rejection"])

    @property
    def clean(self) -> bool:
        """Ties out, and nothing missing, unexpected, unsettled or paid despite a rejection."""
        bad = {"missing", "paid_despite_rejection", "unsettled"}
        return self.ties_out and not self.payouts["reconciliation"].isin(bad).any() and \
            not (self.lines["role"] == "unexpected").any()

    def counts(self) -> dict[str, int]:
        return self.payouts["reconciliation"].value_counts().to_dict()

    def __repr__(self) -> str:
        return (f"<Reconciliation {self.run_id}: {self.counts()}, unexpected lines "
                f"{int((self.lines['role'] == 'unexpected').sum())}, ties out: {self.ties_out}>")

    def _repr_html_(self) -> str:
        return f"<p><b>{self!r}</b></p>" + self.tieout.to_html(index=False)


def _pair(pay: pd.DataFrame, lines: pd.DataFrame) -> list[tuple[int, int]]:
    """One-to-one pairs (payout id, line id) on ``key``, in time order, inside each payout's window.

    The common case is vectorised: within a key, the k-th payout (expected-paid first, then
    by time) takes the k-th line by time. Keys where that pairing would put a line outside
    its payout's window fall back to a greedy pass: each payout takes the earliest unused
    line inside its window.
    """
    if pay.empty or lines.empty:
        return []
    p = pay.sort_values(["key", "prio", "lo"], kind="stable")
    p = p.assign(rank=p.groupby("key", sort=False).cumcount())
    ln = lines.sort_values(["key", "t"], kind="stable")
    ln = ln.assign(rank=ln.groupby("key", sort=False).cumcount())
    m = p.merge(ln, on=["key", "rank"], how="inner")
    inside = (m["t"] >= m["lo"]) & (m["t"] <= m["hi"])
    awkward = set(m.loc[~inside, "key"])
    good = m[~m["key"].isin(awkward)]
    pairs = list(zip(good["pid"].tolist(), good["lid"].tolist(), strict=True))
    if awkward:
        p_aw = p[p["key"].isin(awkward)]
        l_aw = ln[ln["key"].isin(awkward)]
        by_key: dict[Any, list[tuple]] = defaultdict(list)
        for lid, key, t in zip(l_aw["lid"], l_aw["key"], l_aw["t"], strict=True):
            by_key[key].append((t, lid))
        used: set[int] = set()
        for pid, key, lo, hi in zip(p_aw["pid"], p_aw["key"], p_aw["lo"], p_aw["hi"], strict=True):
            for t, lid in by_key[key]:
                if lid not in used and lo <= t <= hi:
                    used.add(lid)
                    pairs.append((pid, lid))
                    break
    return pairs


def _payouts_of(run_id: str, journal: Journal, window: timedelta) -> pd.DataFrame:
    """The run's rows that were sent at least once, with their matching windows."""
    from .protocol import parse_scheduled_send

    rows = journal.rows(run_id)
    first = journal.first_attempts(run_id)
    rows = rows[rows["state"].isin(EXPECTED_PAID + NOT_PAID) & rows["row"].isin(first)]
    sent = pd.to_datetime(rows["row"].map(first), utc=True, format="ISO8601").dt.tz_convert(NAIROBI)
    scheduled = rows["scheduled_send_sent"].map(_schedule_or_none(parse_scheduled_send))
    start = pd.concat([sent, pd.to_datetime(scheduled, utc=True).dt.tz_convert(NAIROBI)], axis=1).max(axis=1)
    return pd.DataFrame({
        "row": rows["row"].astype("int64").to_numpy(), "msisdn": rows["msisdn"].to_numpy(),
        "amount": rows["amount"].astype("int64").to_numpy(), "product_id": rows["product_id"].to_numpy(),
        "state": rows["state"].to_numpy(), "sent_at": sent.to_numpy(),
        "lo": (start - CLOCK_SKEW).to_numpy(), "hi": (start + window).to_numpy(),
    })


def _schedule_or_none(parse):
    def one(text: Any) -> datetime | None:
        try:
            return parse(text) if isinstance(text, str) and text else None
        except ValueError:
            return None
    return one


def reconcile(
    run: Any,
    statement: Statement | str | Path,
    *,
    journal: Journal | str | Path | None = None,
    window_hours: float = 48,
    settle_after_minutes: float = 10,
    apply: bool = False,
) -> Reconciliation:
    """Match a run's payouts to a statement. With ``apply=True``, record what the statement decides."""
    journal = getattr(run, "journal", None) or (journal if isinstance(journal, Journal) else Journal(journal))
    run_id = getattr(run, "run_id", None) or str(run)
    journal.run(run_id)
    if not isinstance(statement, Statement):
        statement = load_statement(statement)
    window = timedelta(hours=window_hours)
    payouts = _payouts_of(run_id, journal, window)
    lines = statement.lines.copy()
    lines["role"] = lines["kind"]
    # Reversals cancel the payment they name (by linked id, or by receipt in the details).
    reversal = lines[lines["kind"] == "reversal"]
    reversed_receipts = set(reversal["linked"]) | {
        r for d in reversal["details"] for r in lines.loc[lines["kind"] == "payment", "receipt"] if r and r in d}
    is_reversed = (lines["kind"] == "payment") & lines["receipt"].isin(reversed_receipts - {""})
    lines.loc[is_reversed, "role"] = "reversed"
    paying = lines[lines["role"] == "payment"]
    pay = pd.DataFrame({"pid": range(len(payouts)), "msisdn": payouts["msisdn"], "amount": payouts["amount"],
                        "lo": payouts["lo"], "hi": payouts["hi"],
                        "prio": (~payouts["state"].isin(EXPECTED_PAID)).astype(int)})
    cand = pd.DataFrame({"lid": paying.index, "party": paying["party"], "amount": paying["withdrawn"],
                         "t": paying["completed_at"]})
    cand = cand[cand["amount"] == cand["amount"].round(0)]
    cand["amount"] = cand["amount"].astype("int64")
    masked = cand["party"].str.contains("*", regex=False)
    pairs: list[tuple[int, int]] = []
    # Full numbers first, then each mask shape on what is left.
    exact = cand[~masked].assign(key=lambda d: d["party"] + "|" + d["amount"].astype(str))
    pairs += _pair(pay.assign(key=pay["msisdn"] + "|" + pay["amount"].astype(str)), exact)
    taken_p = {p for p, _ in pairs}
    rest = cand[masked]
    for (lead, trail, width), group in rest.groupby([rest["party"].str.extract(r"^(\d*)")[0].str.len(),
                                                      rest["party"].str.extract(r"(\d*)$")[0].str.len(),
                                                      rest["party"].str.len()]):
        left = pay[~pay["pid"].isin(taken_p) & (pay["msisdn"].str.len() == width)]
        shape = left["msisdn"].str[:lead] + "*" * (width - lead - trail) + \
            (left["msisdn"].str[-trail:] if trail else "")
        new = _pair(left.assign(key=shape + "|" + left["amount"].astype(str)),
                    group.assign(key=group["party"] + "|" + group["amount"].astype(str)))
        pairs += new
        taken_p |= {p for p, _ in new}
    line_of = dict(pairs)
    matched_lines = set(line_of.values())
    lines.loc[list(matched_lines), "role"] = "matched"
    lo_run = payouts["lo"].min() if len(payouts) else None
    hi_run = payouts["hi"].max() if len(payouts) else None
    unmatched_payment = (lines["role"] == "payment")
    if lo_run is not None:
        inside = (lines["completed_at"] >= lo_run) & (lines["completed_at"] <= hi_run)
        lines.loc[unmatched_payment & inside, "role"] = "unexpected"
        lines.loc[unmatched_payment & ~inside, "role"] = "out_of_window"
    else:
        lines.loc[unmatched_payment, "role"] = "out_of_window"
    # Charges are tied to their payment: by linked id, else by the same receipt.
    receipt_line = {r: i for i, r in zip(lines.index, lines["receipt"], strict=True)
                    if lines.at[i, "kind"] == "payment"}
    charge = lines[lines["kind"] == "charge"]
    charge_of_line: dict[int, float] = defaultdict(float)
    for i, linked, receipt, amount in zip(charge.index, charge["linked"], charge["receipt"], charge["withdrawn"],
                                          strict=True):
        target = receipt_line.get(linked) or receipt_line.get(receipt)
        if target is not None:
            charge_of_line[target] += amount
            lines.at[i, "role"] = "charge"

    row_of_pid = payouts["row"].tolist()
    receipt = [None] * len(payouts)
    completed = [None] * len(payouts)
    charges = [0.0] * len(payouts)
    for pid, lid in line_of.items():
        receipt[pid] = lines.at[lid, "receipt"]
        completed[pid] = lines.at[lid, "completed_at"]
        charges[pid] = charge_of_line.get(lid, 0.0)
    lines["payout_row"] = pd.array([None] * len(lines), dtype="Int64")
    for pid, lid in line_of.items():
        lines.at[lid, "payout_row"] = row_of_pid[pid]
    settle_after = timedelta(minutes=settle_after_minutes)
    outcome = []
    for pid, state in enumerate(payouts["state"]):
        on = pid in line_of
        if state in ("accepted", "paid"):
            outcome.append("confirmed" if on else "missing")
        elif state in ("unknown", "in_flight"):
            covered = statement.covered_until is not None and \
                statement.covered_until >= payouts.at[pid, "sent_at"] + settle_after
            outcome.append("settled_paid" if on else ("settled_unpaid" if covered else "unsettled"))
        else:
            outcome.append("paid_despite_rejection" if on else "not_paid")
    result = payouts.drop(columns=["lo", "hi"]).assign(
        reconciliation=outcome, receipt=receipt,
        completed_at=pd.to_datetime(pd.Series(completed, dtype=object), utc=True).dt.tz_convert(NAIROBI),
        charge=charges)
    rec = Reconciliation(run_id=run_id, payouts=result, lines=lines, tieout=_tieout(result, lines),
                         covered_until=statement.covered_until, window=window)
    if apply:
        rec.applied = _apply(rec, journal)
    return rec


def _tieout(payouts: pd.DataFrame, lines: pd.DataFrame) -> pd.DataFrame:
    def kes(mask) -> int:
        return int(payouts.loc[mask, "amount"].sum())

    by = payouts["reconciliation"]
    statement_kes = float(lines.loc[lines["role"] == "matched", "withdrawn"].sum())
    paid_kes = kes(by.isin(["confirmed", "settled_paid", "paid_despite_rejection"]))
    items = [
        ("statement: withdrawals matched to this run", int((lines["role"] == "matched").sum()), statement_kes),
        ("payouts: confirmed + settled paid + paid despite rejection",
         int(by.isin(["confirmed", "settled_paid", "paid_despite_rejection"]).sum()), paid_kes),
        ("confirmed", int((by == "confirmed").sum()), kes(by == "confirmed")),
        ("settled paid", int((by == "settled_paid").sum()), kes(by == "settled_paid")),
        ("paid despite rejection", int((by == "paid_despite_rejection").sum()), kes(by == "paid_despite_rejection")),
        ("missing (accepted, not on the statement)", int((by == "missing").sum()), kes(by == "missing")),
        ("settled unpaid", int((by == "settled_unpaid").sum()), kes(by == "settled_unpaid")),
        ("unsettled", int((by == "unsettled").sum()), kes(by == "unsettled")),
        ("not paid (rejected or not sent)", int((by == "not_paid").sum()), kes(by == "not_paid")),
        ("charges tied to matched payments", int((payouts["charge"] > 0).sum()), float(payouts["charge"].sum())),
        ("unexpected withdrawals in the window", int((lines["role"] == "unexpected").sum()),
         float(lines.loc[lines["role"] == "unexpected", "withdrawn"].sum())),
        ("reversed payments", int((lines["role"] == "reversed").sum()),
         float(lines.loc[lines["role"] == "reversed", "withdrawn"].sum())),
    ]
    return pd.DataFrame(items, columns=["item", "lines", "kes"])


def _apply(rec: Reconciliation, journal: Journal) -> pd.DataFrame:
    """Record the statement's decisions in the journal, as ``resolve`` would."""
    p = rec.payouts
    done = []
    paid = p[p["reconciliation"] == "settled_paid"]
    if len(paid):
        for row, receipt in zip(paid["row"], paid["receipt"], strict=True):
            journal.resolve(rec.run_id, [int(row)], "paid", note=f"statement receipt {receipt}")
            done.append((int(row), "paid", receipt))
    unpaid = p[p["reconciliation"] == "settled_unpaid"]
    if len(unpaid):
        journal.resolve(rec.run_id, unpaid["row"].astype(int).tolist(), "release",
                        note="not on the statement (reconciliation)")
        done += [(int(r), "release", None) for r in unpaid["row"]]
    despite = p[p["reconciliation"] == "paid_despite_rejection"]
    for row, receipt in zip(despite["row"], despite["receipt"], strict=True):
        journal.mark_paid(rec.run_id, int(row), note=f"on the statement despite the answer: receipt {receipt}")
        done.append((int(row), "paid", receipt))
    return pd.DataFrame(done, columns=["row", "decision", "receipt"])


def write_reconciliation(rec: Reconciliation, path: str | Path) -> Path:
    """The reconciliation as a workbook: tie-out totals at the top, each payout with its
    receipt, then every statement line with its role (the unmatched ones on both sides)."""
    import xlsxwriter

    path = Path(path)
    wb = xlsxwriter.Workbook(str(path), {"strings_to_formulas": False, "strings_to_urls": False,
                                         "strings_to_numbers": False, "remove_timezone": True})
    head = wb.add_format({"bold": True, "bg_color": "#1F4E78", "font_color": "#FFFFFF", "border": 1})
    kes = wb.add_format({"num_format": "#,##0.00"})
    when = wb.add_format({"num_format": "dd/mm/yyyy hh:mm:ss"})
    bold = wb.add_format({"bold": True, "font_size": 12})
    ws = wb.add_worksheet("Reconciliation")
    ws.write_string(0, 0, f"Run {rec.run_id}: {'ties out' if rec.ties_out else 'DOES NOT tie out'}; "
                          f"statement reaches {rec.covered_until:%d/%m/%Y %H:%M}" if rec.covered_until else
                    f"Run {rec.run_id}", bold)
    r = 2
    for c, h in enumerate(["Tie-out", "Lines", "KES"]):
        ws.write_string(r, c, h, head)
    for item, n, k in rec.tieout.itertuples(index=False):
        r += 1
        ws.write_string(r, 0, item)
        ws.write_number(r, 1, n)
        ws.write_number(r, 2, k, kes)
    r += 2
    cols = ["row", "msisdn", "amount", "product_id", "state", "reconciliation", "receipt", "sent_at",
            "completed_at", "charge"]
    top = r
    for c, h in enumerate(cols):
        ws.write_string(r, c, h, head)
    for rowvals in rec.payouts[cols].itertuples(index=False):
        r += 1
        for c, v in enumerate(rowvals):
            _cell(ws, r, c, v, kes if cols[c] in ("amount", "charge") else None, when)
    ws.autofilter(top, 0, max(r, top + 1), len(cols) - 1)
    ws.freeze_panes(top + 1, 0)
    ws.set_column(0, 0, 44)
    ws.set_column(1, len(cols), 16)
    ws2 = wb.add_worksheet("Statement lines")
    lcols = ["line", "receipt", "completed_at", "role", "party_info", "withdrawn", "paid_in", "reason", "details",
             "linked", "payout_row"]
    for c, h in enumerate(lcols):
        ws2.write_string(0, c, h, head)
    for i, rowvals in enumerate(rec.lines[lcols].itertuples(index=False), start=1):
        for c, v in enumerate(rowvals):
            _cell(ws2, i, c, v, kes if lcols[c] in ("withdrawn", "paid_in") else None, when)
    ws2.autofilter(0, 0, max(len(rec.lines), 1), len(lcols) - 1)
    ws2.freeze_panes(1, 0)
    ws2.set_column(0, len(lcols), 16)
    wb.close()
    return path


def _cell(ws, r: int, c: int, v: Any, num_fmt, when_fmt) -> None:
    if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and v != v):
        return
    if isinstance(v, datetime):
        ws.write_datetime(r, c, v.astimezone(NAIROBI).replace(tzinfo=None) if v.tzinfo else v, when_fmt)
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        ws.write_number(r, c, v, num_fmt)
    else:
        ws.write_string(r, c, str(v))
