"""The reconciliation workbook of a run, built from the journal alone.

Because nothing here reads the sheet or the gateway, a report can be rebuilt at any time
(``mipay-bulk report RUN``) and always says what the journal says.

Sheets: **Summary** (a sentence saying whether the run is complete, the run's facts,
control totals, outcomes with a chart), **Results** (every row of the source sheet, its
original cells beside what was sent and what came back), **Failures** (rejected and
not-sent rows in the source sheet's own columns, ready to be fed back:
``mipay-bulk report.xlsx --sheet Failures``), **Unknown** (rows to check against the
M-PESA statement) and **Invalid** (every validation issue).

Made for Excel: phone numbers and references are text cells (Excel keeps their digits),
amounts are numbers with a thousands format, times are real date-times in Nairobi time.
Injection-safe: every piece of text is written as a string cell with XlsxWriter's formula
and URL conversion off, so ``=HYPERLINK(...)`` from a sheet or a gateway answer stays inert
text. CSV and JSON exports prefix such values with ``'`` (OWASP's advice).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from .journal import Journal, RunInfo, open_journal
from .protocol import NAIROBI

#: How a row's journal state is shown to the analyst.
OUTCOME_OF_STATE = {
    "accepted": "accepted",
    "paid": "accepted (resolved)",
    "rejected": "rejected",
    "unknown": "unknown",
    "in_flight": "unknown",
    "not_sent": "not sent",
    "pending": "not sent",
    "invalid": "invalid",
    "skipped": "skipped",
}
OUTCOME_ORDER = ["accepted", "accepted (resolved)", "rejected", "unknown", "not sent", "invalid", "skipped"]
OUTCOME_COLOURS = {
    "accepted": "#C6EFCE", "accepted (resolved)": "#C6EFCE", "rejected": "#FFC7CE", "unknown": "#FFEB9C",
    "not sent": "#FCE4D6", "invalid": "#E7E6E6", "skipped": "#DDEBF7",
}
TEXT_COLUMNS = {"msisdn", "product_id", "scheduled_send", "outcome", "response_status", "response", "decision",
                "remark"}


def _run_id(run: Any) -> str:
    return run.run_id if hasattr(run, "run_id") else str(run)


# ---------------------------------------------------------------- tables


def results(run: Any, journal: Journal | str | Path | None = None) -> pd.DataFrame:
    """The Results table of a run as a DataFrame: every sheet row in order, originals first.

    ``run`` is a run id or a :class:`~mipay_bulk.runner.RunResult` (whose journal is used).
    """
    journal = getattr(run, "journal", None) or open_journal(journal)
    return _results(_run_id(run), journal)[0]


def _results(run_id: str, journal: Journal) -> tuple[pd.DataFrame, list[str]]:
    """The Results table, and the names of the original (sheet) columns in it."""
    journal.run(run_id)
    raw = journal.rows(run_id)
    originals = pd.DataFrame.from_records([json.loads(o or "{}") for o in raw["original"]])
    extras = [json.loads(e) if isinstance(e, str) and e else {} for e in raw["extra"]]
    extra_keys = list(dict.fromkeys(k for e in extras for k in e))
    sent_schedule = raw["scheduled_send_sent"].where(raw["scheduled_send_sent"].notna(), raw["scheduled_send"])
    journal_part = pd.DataFrame({
        "msisdn": raw["msisdn"],
        "amount": pd.array(raw["amount"], dtype="Int64"),
        "product_id": raw["product_id"],
        "scheduled_send": sent_schedule.replace("", None),
        "outcome": raw["state"].map(OUTCOME_OF_STATE),
        "response_status": raw["response_status"],
        "response": raw["response"].where(raw["response"].notna(), raw["error"]),
        **{k: [_scalar(e.get(k)) for e in extras] for k in extra_keys},
        "attempts": raw["attempts"].astype("int64"),
        "sent_at": pd.to_datetime(raw["sent_at"], utc=True, format="ISO8601").dt.tz_convert(NAIROBI),
        "latency_ms": (pd.to_numeric(raw["latency"]) * 1000).round(0),
        "decision": raw["decision"],
        "remark": raw["note"],
    })
    clash = set(journal_part.columns) | {"row"}
    originals = originals.rename(columns={c: f"{c} (sheet)" for c in originals.columns if c in clash})
    table = pd.concat([raw[["row"]].astype("int64"), originals, journal_part], axis=1)
    return table, list(originals.columns)


def _scalar(value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else value


def outcome_table(run: Any, journal: Journal | str | Path | None = None) -> pd.DataFrame:
    """Count and KES per outcome, in a fixed order."""
    journal = getattr(run, "journal", None) or open_journal(journal)
    table = pd.DataFrame(0, index=pd.Index(OUTCOME_ORDER, name="outcome"), columns=["count", "kes"], dtype="int64")
    for state, (count, kes) in journal.outcome_sums(_run_id(run)).items():
        label = OUTCOME_OF_STATE[state]
        table.loc[label, "count"] += count
        table.loc[label, "kes"] += kes
    return table


def summary_sentence(run: Any, journal: Journal | str | Path | None = None) -> str:
    """One plain sentence saying whether the run is complete."""
    t = outcome_table(run, journal)
    accepted = int(t.loc["accepted", "count"] + t.loc["accepted (resolved)", "count"])
    accepted_kes = int(t.loc["accepted", "kes"] + t.loc["accepted (resolved)", "kes"])
    payouts = int(t["count"].sum() - t.loc["invalid", "count"])
    parts = [f"{accepted:,} of {payouts:,} payouts accepted, KES {accepted_kes:,}"]
    for label, words in (("rejected", "rejected"), ("not sent", "not sent yet"),
                         ("skipped", "skipped as already paid")):
        if t.loc[label, "count"]:
            parts.append(f"{t.loc[label, 'count']:,} {words}")
    if t.loc["unknown", "count"]:
        parts.append(f"{t.loc['unknown', 'count']:,} unknown: check them against the M-PESA statement")
    if t.loc["invalid", "count"]:
        parts.append(f"{t.loc['invalid', 'count']:,} rows invalid, not sent")
    done = accepted == payouts and not t.loc["invalid", "count"]
    return ("Complete: " if done else "Not complete: ") + "; ".join(parts) + "."


# ---------------------------------------------------------------- writing


def default_report_path(run_id: str, journal: Journal, suffix: str = ".xlsx", kind: str = "report") -> Path:
    """``<sheet>.<run>.<kind><suffix>`` next to the source sheet (or here, if that folder is gone)."""
    info = journal.run(run_id)
    folder = Path(info.source_path).parent if info.source_path else Path.cwd()
    if not folder.is_dir():
        folder = Path.cwd()
    return folder / f"{Path(info.source_name).stem}.{run_id}.{kind}{suffix}"


def write_report(
    run: Any,
    path: str | Path | None = None,
    *,
    journal: Journal | str | Path | None = None,
    format: str | None = None,
) -> Path:
    """Write the run's workbook (or ``format="csv"``/``"json"`` of the Results) and return its path."""
    journal = getattr(run, "journal", None) or open_journal(journal)
    run_id = _run_id(run)
    fmt = (format or (Path(path).suffix.lstrip(".").lower() if path else "xlsx")) or "xlsx"
    if path and format and Path(path).suffix.lower() != f".{format}":
        path = Path(path).with_suffix(f".{format}")
    if fmt not in ("xlsx", "csv", "json"):
        raise ValueError(f"report format must be xlsx, csv or json, not {fmt!r}")
    target = Path(path) if path else default_report_path(run_id, journal, f".{fmt}")
    table, original_cols = _results(run_id, journal)
    if fmt == "csv":
        from .inert import neutralise_frame

        neutralise_frame(_for_export(table)).to_csv(target, index=False, encoding="utf-8-sig")
    elif fmt == "json":
        from .inert import neutralise

        records = [{neutralise(k): neutralise(v) for k, v in r.items()} for r in _for_export(table).to_dict("records")]
        target.write_text(json.dumps(records, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
    else:
        _Workbook(run_id, journal, table, original_cols, target).write()
    return target


def _for_export(table: pd.DataFrame) -> pd.DataFrame:
    out = table.copy()
    out["sent_at"] = out["sent_at"].dt.strftime("%Y-%m-%d %H:%M:%S").where(out["sent_at"].notna(), None)
    return out.astype(object).where(out.notna(), None)


class _Workbook:
    """One XlsxWriter workbook; each sheet is one method."""

    def __init__(self, run_id: str, journal: Journal, table: pd.DataFrame, original_cols: list[str],
                 path: Path) -> None:
        import xlsxwriter

        self.run_id, self.journal, self.table, self.path = run_id, journal, table, path
        self.info: RunInfo = journal.run(run_id)
        self.original_cols = original_cols
        # No formula or URL is ever made from a string; constant_memory keeps 100k rows small.
        self.wb = xlsxwriter.Workbook(str(path), {
            "strings_to_formulas": False, "strings_to_urls": False, "strings_to_numbers": False,
            "constant_memory": True, "default_date_format": "dd/mm/yyyy hh:mm:ss", "remove_timezone": True,
        })
        f = self.wb.add_format
        self.fmt = {
            "head": f({"bold": True, "bg_color": "#1F4E78", "font_color": "#FFFFFF", "border": 1, "valign": "top"}),
            "text": f({"num_format": "@"}),
            "kes": f({"num_format": "#,##0"}),
            "int": f({"num_format": "0"}),
            "time": f({"num_format": "dd/mm/yyyy hh:mm:ss"}),
            "title": f({"bold": True, "font_size": 16}),
            "sentence": f({"bold": True, "font_size": 12, "text_wrap": True, "valign": "top"}),
            "label": f({"bold": True}),
            "sub": f({"bold": True, "font_size": 12, "bottom": 1}),
            "note": f({"italic": True, "font_color": "#595959"}),
        }
        self.outcome_fmt = {k: f({"bg_color": v}) for k, v in OUTCOME_COLOURS.items()}

    def write(self) -> None:
        self.summary()
        self.results()
        self.failures()
        self.unknown()
        self.invalid()
        close_workbook(self.wb)

    # -- helpers ---------------------------------------------------------------------

    def _writer(self, column: str, series: pd.Series) -> Callable:
        """The cell writer for one column: typed where the type is known, text otherwise."""
        ws_methods = {
            "kes": lambda ws, r, c, v: ws.write_number(r, c, int(v), self.fmt["kes"]),
            "int": lambda ws, r, c, v: ws.write_number(r, c, float(v), self.fmt["int"]),
            "time": lambda ws, r, c, v: ws.write_datetime(r, c, v, self.fmt["time"]),
            "text": lambda ws, r, c, v: ws.write_string(r, c, str(v)),
        }
        if column == "amount":
            return ws_methods["kes"]
        if column in ("row", "attempts", "latency_ms"):
            return ws_methods["int"]
        if column == "sent_at":
            return ws_methods["time"]
        if column in TEXT_COLUMNS or column in self.original_cols or series.dtype == object:
            return ws_methods["text"]
        if pd.api.types.is_numeric_dtype(series):
            return ws_methods["int"]
        return ws_methods["text"]

    def _table(self, ws, frame: pd.DataFrame, first_row: int = 0, widths: dict[str, float] | None = None,
               outcome_colours: bool = False) -> None:
        """Write ``frame`` as a typed table with a frozen header and an autofilter."""
        cols = list(frame.columns)
        for c, name in enumerate(cols):
            ws.write_string(first_row, c, str(name), self.fmt["head"])
            ws.set_column(c, c, (widths or {}).get(name, _width(name, frame[name])))
        values = [frame[c].tolist() for c in cols]
        if "sent_at" in frame.columns:  # Excel has no time zones: Nairobi wall-clock time
            values[cols.index("sent_at")] = frame["sent_at"].dt.tz_convert(NAIROBI).dt.tz_localize(None).tolist()
        writers = [self._writer(c, frame[c]) for c in cols]
        for r in range(len(frame)):
            row_no = first_row + 1 + r
            for c in range(len(cols)):
                v = values[c][r]
                if v is None or v is pd.NA or (isinstance(v, float) and v != v) or v is pd.NaT:
                    continue
                if isinstance(v, str) and v == "":
                    continue
                writers[c](ws, row_no, c, v)
        last = first_row + max(len(frame), 1)
        ws.freeze_panes(first_row + 1, 0)
        ws.autofilter(first_row, 0, last, max(len(cols) - 1, 0))
        if outcome_colours and "outcome" in cols:
            c = cols.index("outcome")
            for label, fmt in self.outcome_fmt.items():
                ws.conditional_format(first_row + 1, c, last, c, {
                    "type": "cell", "criteria": "==", "value": f'"{label}"', "format": fmt})

    # -- sheets -----------------------------------------------------------------------

    def summary(self) -> None:
        ws = self.wb.add_worksheet("Summary")
        ws.hide_gridlines(2)
        ws.set_column(0, 0, 30)
        ws.set_column(1, 4, 18)
        info = self.info
        ws.write_string(0, 0, "Payout run report", self.fmt["title"])
        ws.merge_range(1, 0, 2, 9, summary_sentence(self.run_id, self.journal), self.fmt["sentence"])
        ws.set_row(1, 30)
        started = _local(info.started_at)
        finished = _local(info.finished_at)
        facts = [
            ("Run", info.run_id), ("Source file", info.source_name), ("Sheet", info.sheet or ""),
            ("Source SHA-256", info.source_sha256), ("Operator", info.operator or ""),
            ("Tool version", f"mipay-bulk {info.tool_version}"), ("Gateway", info.gateway_url or ""),
            ("Started (Nairobi)", started), ("Finished (Nairobi)", finished),
            ("Duration", _duration(started, finished)), ("Status", info.status),
            ("Rate limit (requests/s)", info.settings.get("rate")),
            ("Concurrency", info.settings.get("concurrency")), ("Batch size", info.settings.get("batch_size")),
            ("Batch pause (s)", info.settings.get("batch_pause")),
        ]
        r = 4
        for label, value in facts:
            ws.write_string(r, 0, label, self.fmt["label"])
            if isinstance(value, datetime):
                ws.write_datetime(r, 1, value, self.fmt["time"])
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                ws.write_number(r, 1, value)
            elif value is not None:
                ws.write_string(r, 1, str(value))
            r += 1
        r += 1
        ws.write_string(r, 0, "Control totals from the sheet", self.fmt["sub"])
        r += 1
        headers = ["Product", "Rows", "Valid", "Invalid", "KES (valid rows)"]
        for c, h in enumerate(headers):
            ws.write_string(r, c, h, self.fmt["head"])
        for t in info.totals.get("by_product", []):
            r += 1
            ws.write_string(r, 0, str(t["product"]))
            for c, key in enumerate(("rows", "valid", "invalid"), start=1):
                ws.write_number(r, c, int(t[key]), self.fmt["int"])
            ws.write_number(r, 4, int(t["kes"]), self.fmt["kes"])
        r += 2
        ws.write_string(r, 0, "Outcomes", self.fmt["sub"])
        r += 1
        ws.write_string(r, 0, "Outcome", self.fmt["head"])
        ws.write_string(r, 1, "Rows", self.fmt["head"])
        ws.write_string(r, 2, "KES", self.fmt["head"])
        table = outcome_table(self.run_id, self.journal)
        first = r + 1
        for label, row in table.iterrows():
            r += 1
            ws.write_string(r, 0, label, self.outcome_fmt.get(label))
            ws.write_number(r, 1, int(row["count"]), self.fmt["int"])
            ws.write_number(r, 2, int(row["kes"]), self.fmt["kes"])
        r += 1
        ws.write_string(r, 0, "Total", self.fmt["label"])
        ws.write_number(r, 1, int(table["count"].sum()), self.fmt["int"])
        ws.write_number(r, 2, int(table["kes"].sum()), self.fmt["kes"])
        chart = self.wb.add_chart({"type": "bar"})
        chart.add_series({
            "name": "Rows", "categories": ["Summary", first, 0, r - 1, 0], "values": ["Summary", first, 1, r - 1, 1],
            "points": [{"fill": {"color": OUTCOME_COLOURS[label]}, "border": {"color": "#7F7F7F"}}
                       for label in table.index],
        })
        chart.set_title({"name": "Rows by outcome"})
        chart.set_legend({"none": True})
        chart.set_y_axis({"reverse": True})
        ws.insert_chart(4, 6, chart, {"x_scale": 1.0, "y_scale": 1.0})

    def results(self) -> None:
        ws = self.wb.add_worksheet("Results")
        self._table(ws, self.table, outcome_colours=True)

    def failures(self) -> None:
        ws = self.wb.add_worksheet("Failures")
        failed = self.table[self.table["outcome"].isin(["rejected", "not sent"])]
        # The source sheet's own columns and values, so the sheet can be fed straight back in.
        cols = list(self.original_cols)
        frame = failed[cols].rename(columns=lambda c: c[:-8] if c.endswith(" (sheet)") else c)
        self._table(ws, frame)

    def unknown(self) -> None:
        ws = self.wb.add_worksheet("Unknown")
        rows = self.table[self.table["outcome"] == "unknown"]
        ws.write_string(0, 0, "Check each row against the M-PESA statement, then record what you found:",
                        self.fmt["label"])
        ws.write_string(1, 0, f"mipay-bulk resolve {self.run_id} --paid ROWS --release ROWS", self.fmt["note"])
        cols = ["row", *self.original_cols, "msisdn", "amount", "product_id", "scheduled_send", "sent_at",
                "response", "attempts"]
        self._table(ws, rows[cols], first_row=3)

    def invalid(self) -> None:
        ws = self.wb.add_worksheet("Invalid")
        issues = self.journal.issues(self.run_id)
        self._table(ws, issues, widths={"message": 90, "value": 24, "column": 16, "code": 24})


def close_workbook(wb) -> None:
    """Close an XlsxWriter workbook, raising the plain ``OSError`` when the file cannot be made."""
    from xlsxwriter.exceptions import FileCreateError

    try:
        wb.close()
    except FileCreateError as exc:
        cause = exc.args[0] if exc.args and isinstance(exc.args[0], OSError) else OSError(str(exc))
        raise cause from None


def _width(name: str, series: pd.Series) -> float:
    sample = series.dropna().head(200).astype(str)
    longest = max([len(str(name))] + [len(s) for s in sample]) if len(sample) else len(str(name))
    return float(min(max(longest + 2, 8), 60))


def _local(stamp: str | None) -> datetime | None:
    if not stamp:
        return None
    return datetime.fromisoformat(stamp).astimezone(NAIROBI).replace(tzinfo=None)


def _duration(start: datetime | None, end: datetime | None) -> str:
    if not start or not end:
        return ""
    seconds = int((end - start).total_seconds())
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m {seconds % 60:02d}s"
