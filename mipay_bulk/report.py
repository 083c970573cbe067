"""The results of a run, built from the journal alone (so a report can be rebuilt at any time)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .journal import Journal
from .protocol import NAIROBI

#: How a row's journal state is shown to the analyst.
OUTCOME_OF_STATE = {
    "accepted": "accepted",
    "paid": "accepted (resolved)",
    "rejected": "rejected",
    "unknown": "unknown",
    "not_sent": "not sent",
    "pending": "not sent",
    "in_flight": "unknown",
    "invalid": "invalid",
    "skipped": "skipped",
}


def _journal(journal: Journal | str | Path | None) -> Journal:
    return journal if isinstance(journal, Journal) else Journal(journal)


def results(run_id: str, journal: Journal | str | Path | None = None) -> pd.DataFrame:
    """The Results table of a run: every sheet row in order, originals beside outcomes."""
    journal = _journal(journal)
    info = journal.run(run_id)
    raw = journal.rows(run_id)
    originals = pd.DataFrame([json.loads(o or "{}") for o in raw["original"]])
    originals = originals.reindex(columns=[c for c in originals.columns if c in set(originals.columns)])
    extras = [json.loads(e) if isinstance(e, str) and e else {} for e in raw["extra"]]
    extra_keys = sorted({k for e in extras for k in e})
    sent_at = pd.to_datetime(raw["sent_at"], utc=True, format="ISO8601").dt.tz_convert(NAIROBI)
    out = pd.DataFrame({
        "row": raw["row"].astype("int64"),
    })
    out = pd.concat([out, originals.reset_index(drop=True)], axis=1)
    sent_schedule = raw["scheduled_send_sent"].where(raw["scheduled_send_sent"].notna(), raw["scheduled_send"])
    normalised = pd.DataFrame({
        "msisdn": raw["msisdn"],
        "amount": pd.array(raw["amount"], dtype="Int64"),
        "product_id": raw["product_id"],
        "scheduled_send": sent_schedule,
        "outcome": raw["state"].map(OUTCOME_OF_STATE),
        "response_status": raw["response_status"],
        "response": raw["response"].where(raw["response"].notna(), raw["error"]),
        **{k: [e.get(k) for e in extras] for k in extra_keys},
        "attempts": raw["attempts"].astype("int64"),
        "sent_at": sent_at,
        "latency_ms": (raw["latency"].astype("float64") * 1000).round(0),
        "decision": raw["decision"],
        "state": raw["state"],
    })
    clash = [c for c in normalised.columns if c in out.columns]
    normalised = normalised.rename(columns={c: f"{c} (sent)" for c in clash})
    del info
    return pd.concat([out, normalised], axis=1)


def outcome_table(run_id: str, journal: Journal) -> pd.DataFrame:
    """Count and KES per outcome, in a fixed order."""
    raw = journal.rows(run_id)
    shown = raw["state"].map(OUTCOME_OF_STATE)
    frame = pd.DataFrame({"outcome": shown, "kes": raw["amount"].fillna(0).astype("int64")})
    table = frame.groupby("outcome").agg(count=("kes", "size"), kes=("kes", "sum"))
    order = ["accepted", "accepted (resolved)", "rejected", "unknown", "not sent", "invalid", "skipped"]
    return table.reindex(order, fill_value=0).astype("int64")


def summary_sentence(run_id: str, journal: Journal | str | Path | None = None) -> str:
    """One plain sentence saying whether the run is complete."""
    journal = _journal(journal)
    t = outcome_table(run_id, journal)
    accepted = t.loc["accepted", "count"] + t.loc["accepted (resolved)", "count"]
    accepted_kes = t.loc["accepted", "kes"] + t.loc["accepted (resolved)", "kes"]
    payouts = int(t["count"].sum() - t.loc["invalid", "count"])
    parts = [f"{accepted:,} of {payouts:,} payouts accepted, KES {accepted_kes:,}"]
    for label, name in (("rejected", "rejected"), ("not sent", "not sent yet"), ("skipped", "skipped")):
        if t.loc[label, "count"]:
            parts.append(f"{t.loc[label, 'count']:,} {name}")
    if t.loc["unknown", "count"]:
        parts.append(f"{t.loc['unknown', 'count']:,} unknown: check them against the M-PESA statement")
    if t.loc["invalid", "count"]:
        parts.append(f"{t.loc['invalid', 'count']:,} rows invalid, not sent")
    return "; ".join(parts) + "."


def default_report_path(run_id: str, journal: Journal) -> Path:
    info = journal.run(run_id)
    folder = Path(info.source_path).parent if info.source_path else Path.cwd()
    return folder / f"{Path(info.source_name).stem}.{run_id}.results.csv"


def write_report(run_id: str, path: str | Path | None = None, *, journal: Journal | str | Path | None = None) -> Path:
    """Write the run's results (CSV, values made inert) and return the path."""
    from .inert import neutralise_frame

    journal = _journal(journal)
    target = Path(path) if path else default_report_path(run_id, journal)
    neutralise_frame(results(run_id, journal)).to_csv(target, index=False, encoding="utf-8-sig")
    return target
