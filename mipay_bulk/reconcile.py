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

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .journal import Journal, open_journal
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


def _ranks(sorted_keys: np.ndarray) -> np.ndarray:
    """0, 1, 2... within each run of equal keys of a sorted array."""
    if not len(sorted_keys):
        return np.zeros(0, dtype=np.int64)
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_keys)) + 1]
    sizes = np.diff(np.r_[starts, len(sorted_keys)])
    return np.arange(len(sorted_keys)) - np.repeat(starts, sizes)


def _pair(pay: dict[str, np.ndarray], lines: dict[str, np.ndarray]) -> list[tuple[int, int]]:
    """One-to-one pairs (payout id, line id) on integer ``key``, in time order, inside each window.

    The common case is vectorised: within a key, the k-th payout (expected-paid first, then
    by time) takes the k-th line by time. Keys where that pairing would put a line outside
    its payout's window fall back to a greedy pass: each payout takes the earliest unused
    line inside its window.
    """
    if not len(pay["key"]) or not len(lines["key"]):
        return []
    po = np.lexsort((pay["lo"], pay["prio"], pay["key"]))
    lo_ = np.lexsort((lines["t"], lines["key"]))
    left = pd.DataFrame({"k": pay["key"][po], "r": _ranks(pay["key"][po]), "p": po})
    right = pd.DataFrame({"k": lines["key"][lo_], "r": _ranks(lines["key"][lo_]), "l": lo_})
    m = left.merge(right, on=["k", "r"], how="inner")
    p_i, l_i = m["p"].to_numpy(), m["l"].to_numpy()
    t = lines["t"][l_i]
    inside = (t >= pay["lo"][p_i]) & (t <= pay["hi"][p_i])
    awkward = np.unique(m["k"].to_numpy()[~inside])
    good = ~np.isin(m["k"].to_numpy(), awkward)
    pairs = list(zip(pay["pid"][p_i[good]].tolist(), lines["lid"][l_i[good]].tolist(), strict=True))
    if len(awkward):
        by_key: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for j in lo_[np.isin(lines["key"][lo_], awkward)]:
            by_key[int(lines["key"][j])].append((int(lines["t"][j]), int(lines["lid"][j])))
        used: set[int] = set()
        for i in po[np.isin(pay["key"][po], awkward)]:
            for when, lid in by_key[int(pay["key"][i])]:
                if lid not in used and pay["lo"][i] <= when <= pay["hi"][i]:
                    used.add(lid)
                    pairs.append((int(pay["pid"][i]), lid))
                    break
    return pairs


def _payouts_of(run_id: str, journal: Journal, window: timedelta) -> pd.DataFrame:
    """The run's rows that were sent at least once, with their matching windows ``lo``..``hi``."""
    from .protocol import parse_scheduled_send

    rows = journal.sent_rows(run_id)
    rows = rows[rows["state"].isin(EXPECTED_PAID + NOT_PAID)]
    sent = pd.to_datetime(rows["first_sent"], utc=True, format="ISO8601").dt.tz_convert(NAIROBI)
    # A payout scheduled for later completes then: its window opens at the schedule.
    schedules = {t: _schedule_or_none(parse_scheduled_send, t) for t in rows["scheduled"].unique()}
    scheduled = pd.to_datetime(rows["scheduled"].map(schedules), utc=True).dt.tz_convert(NAIROBI)
    start = sent.where(scheduled.isna() | (scheduled < sent), scheduled)
    return pd.DataFrame({
        "row": rows["row"].astype("int64"), "msisdn": rows["msisdn"], "amount": rows["amount"].astype("int64"),
        "product_id": rows["product_id"], "state": rows["state"], "sent_at": sent,
        "lo": start - CLOCK_SKEW, "hi": start + window,
    }).reset_index(drop=True)


def _ns(times: pd.Series) -> np.ndarray:
    """Aware times as integer nanoseconds since the epoch: comparisons without boxing each value."""
    return times.dt.tz_convert("UTC").dt.as_unit("ns").astype("int64").to_numpy()


def _schedule_or_none(parse, text: Any) -> datetime | None:
    try:
        return parse(text) if isinstance(text, str) and text else None
    except ValueError:
        return None


def match(payouts: pd.DataFrame, lines: pd.DataFrame) -> pd.DataFrame:
    """The matching core: one-to-one pairs of payouts (``msisdn``, ``amount``, ``lo``, ``hi``,
    ``state``) and payment lines (``party``, ``withdrawn``, ``completed_at``, ``role ==
    "payment"``). Returns ``pid`` (payout position) and ``lid`` (line index) per pair.

    Recipients are factorised into integer codes once, so sorting and joining never touch
    strings: a key is (recipient code, amount) packed into one int64.
    """
    paying = lines[(lines["role"] == "payment") & (lines["withdrawn"] == lines["withdrawn"].round(0))]
    party = paying["party"].to_numpy(dtype=object)
    masked = np.fromiter(("*" in p for p in party), dtype=bool, count=len(party))
    msisdn = payouts["msisdn"].to_numpy(dtype=object)
    amount = payouts["amount"].to_numpy(dtype=np.int64)
    line_amount = paying["withdrawn"].to_numpy().astype(np.int64)
    pay = {"pid": np.arange(len(payouts)), "lo": _ns(payouts["lo"]), "hi": _ns(payouts["hi"]),
           "prio": (~payouts["state"].isin(EXPECTED_PAID)).to_numpy().astype(np.int64)}
    cand = {"lid": paying.index.to_numpy(), "t": _ns(paying["completed_at"])}

    def keys(who_pay: np.ndarray, who_line: np.ndarray, pay_sel: np.ndarray, line_sel: np.ndarray):
        codes, _ = pd.factorize(np.concatenate([who_pay, who_line]))
        shift = np.int64(1) << np.int64(24)  # amounts below KES 16.7 million fit beside the code
        k_pay = codes[: len(who_pay)].astype(np.int64) * shift + amount[pay_sel]
        k_line = codes[len(who_pay):].astype(np.int64) * shift + line_amount[line_sel]
        return k_pay, k_line

    def subset(d: dict[str, np.ndarray], sel: np.ndarray, key: np.ndarray) -> dict[str, np.ndarray]:
        return {**{k: v[sel] for k, v in d.items()}, "key": key}

    everyone = np.ones(len(payouts), dtype=bool)
    k_pay, k_line = keys(msisdn, party[~masked], everyone, ~masked)
    pairs = _pair(subset(pay, everyone, k_pay), subset(cand, ~masked, k_line))
    if masked.any():
        # Each mask shape (digits shown before and after the stars) is matched on what is left.
        shown = party[masked]
        shapes = pd.DataFrame({"lead": [len(p) - len(p.lstrip("0123456789")) for p in shown],
                               "trail": [len(p) - len(p.rstrip("0123456789")) for p in shown],
                               "width": [len(p) for p in shown]})
        where_masked = np.flatnonzero(masked)
        lengths = np.fromiter((len(m) for m in msisdn), dtype=np.int64, count=len(msisdn))
        for (lead, trail, width), group in shapes.groupby(["lead", "trail", "width"]):
            left = lengths == width
            left[[p for p, _ in pairs]] = False
            stars = "*" * (width - lead - trail)
            as_shown = np.array([m[:lead] + stars + (m[-trail:] if trail else "") for m in msisdn[left]],
                                dtype=object)
            sel = np.zeros(len(party), dtype=bool)
            sel[where_masked[group.index.to_numpy()]] = True
            k_pay, k_line = keys(as_shown, party[sel], left, sel)
            pairs += _pair(subset(pay, left, k_pay), subset(cand, sel, k_line))
    return pd.DataFrame(pairs, columns=["pid", "lid"], dtype=np.int64)


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
    journal = getattr(run, "journal", None) or open_journal(journal)
    run_id = getattr(run, "run_id", None) or str(run)
    journal.run(run_id)
    if not isinstance(statement, Statement):
        statement = load_statement(statement)
    window = timedelta(hours=window_hours)
    payouts = _payouts_of(run_id, journal, window)
    lines = statement.lines.copy()
    lines["role"] = lines["kind"]
    kind = lines["kind"]
    # Reversals cancel the payment they name (by linked id, or by its receipt in the details).
    reversal = lines[kind == "reversal"]
    named = set(reversal["linked"]) - {""}
    if len(reversal):
        receipts = set(lines.loc[kind == "payment", "receipt"]) - {""}
        named |= {r for d in reversal["details"] for r in re.findall(r"[A-Z0-9]{6,}", d) if r in receipts}
    lines.loc[(kind == "payment") & lines["receipt"].isin(named), "role"] = "reversed"
    pairs = match(payouts, lines)
    pid, lid = pairs["pid"].to_numpy(), pairs["lid"].to_numpy()
    lines.loc[lid, "role"] = "matched"
    unmatched = lines["role"] == "payment"
    if len(payouts):
        inside = (lines["completed_at"] >= payouts["lo"].min()) & (lines["completed_at"] <= payouts["hi"].max())
    else:
        inside = pd.Series(False, index=lines.index)
    lines.loc[unmatched & inside, "role"] = "unexpected"
    lines.loc[unmatched & ~inside, "role"] = "out_of_window"
    # Charges are tied to their payment: by the linked id, else by the same receipt.
    payment_of_receipt = pd.Series(lines.index[kind == "payment"], index=lines.loc[kind == "payment", "receipt"])
    payment_of_receipt = payment_of_receipt[~payment_of_receipt.index.duplicated()]
    charge = lines[kind == "charge"]
    target = charge["linked"].map(payment_of_receipt).fillna(charge["receipt"].map(payment_of_receipt))
    lines.loc[charge.index, "role"] = "charge"
    charge_of_line = charge["withdrawn"].groupby(target.dropna().astype("int64")).sum()
    # Per payout: the line it matched, and what that means.
    receipt = pd.Series(None, index=range(len(payouts)), dtype=object)
    receipt.iloc[pid] = lines.loc[lid, "receipt"].to_numpy()
    completed = pd.Series(lines.loc[lid, "completed_at"].array, index=pid).reindex(range(len(payouts)))
    charges = pd.Series(0.0, index=range(len(payouts)))
    charges.iloc[pid] = pd.Series(lid).map(charge_of_line).fillna(0.0).to_numpy()
    lines["payout_row"] = pd.array([pd.NA] * len(lines), dtype="Int64")
    lines.loc[lid, "payout_row"] = payouts["row"].to_numpy()[pid]
    on = pd.Series(False, index=range(len(payouts)))
    on.iloc[pid] = True
    state = pd.Series(payouts["state"].to_numpy())
    covered = pd.Series(False, index=range(len(payouts)))
    if statement.covered_until is not None:
        settle_after = timedelta(minutes=settle_after_minutes)
        covered = pd.Series(payouts["sent_at"] + settle_after <= pd.Timestamp(statement.covered_until))
    outcome = pd.Series("not_paid", index=range(len(payouts)), dtype=object)
    outcome[state.isin(NOT_PAID) & on] = "paid_despite_rejection"
    paid_state = state.isin(["accepted", "paid"])
    outcome[paid_state] = "missing"
    outcome[paid_state & on] = "confirmed"
    unsure = state.isin(["unknown", "in_flight"])
    outcome[unsure] = "unsettled"
    outcome[unsure & ~on & covered] = "settled_unpaid"
    outcome[unsure & on] = "settled_paid"
    result = payouts.drop(columns=["lo", "hi"]).assign(  # every Series here is on the same 0..n-1 index
        reconciliation=outcome, receipt=receipt, completed_at=completed, charge=charges)
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
    from .report import close_workbook

    close_workbook(wb)
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
