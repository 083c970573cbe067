"""The journal: a SQLite ledger of runs, rows, attempts and decisions; the single source of truth.

SQLite in WAL mode with ``synchronous=FULL``: a committed write survives a crash or a
power cut. The rules that keep money safe live in the order of writes:

* an attempt row is committed (``outcome`` NULL: *in flight*) **before** its request
  leaves, and its outcome is committed when it lands;
* an attempt still in flight when a run is opened again was cut off by a crash: it may
  have reached the gateway, so it becomes ``unknown`` and is never re-sent on its own;
* no secret is ever written here: bodies are not stored, only the fields of a payout.

Row states: ``invalid`` and ``skipped`` (never sent), ``pending`` (to send), ``in_flight``,
``accepted``, ``rejected``, ``unknown``, ``not_sent`` (retries ran out; safe to send on
resume), and ``paid`` (an ``unknown`` row the analyst found on the statement).
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import JournalError
from .protocol import NAIROBI

SCHEMA_VERSION = 1
SENDABLE = ("pending", "not_sent")
#: States in which a row may have moved money: refused as a repeat, never re-sent on its own.
POSSIBLY_PAID = ("accepted", "paid", "unknown", "in_flight")
_POSSIBLY_PAID_SQL = ",".join(f"'{s}'" for s in POSSIBLY_PAID)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    source_name TEXT NOT NULL,
    source_path TEXT,
    source_sha256 TEXT NOT NULL,
    sheet TEXT,
    operator TEXT,
    tool_version TEXT,
    gateway_url TEXT,
    settings TEXT,
    totals TEXT,
    headers TEXT,
    status TEXT NOT NULL DEFAULT 'open',
    started_at TEXT NOT NULL,
    finished_at TEXT
);
CREATE INDEX IF NOT EXISTS runs_sha ON runs(source_sha256);
CREATE TABLE IF NOT EXISTS rows (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    row INTEGER NOT NULL,
    state TEXT NOT NULL,
    payout_key TEXT,
    msisdn TEXT,
    amount INTEGER,
    product_id TEXT,
    scheduled_send TEXT,
    reference TEXT,
    name TEXT,
    original TEXT,
    note TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, row)
);
CREATE INDEX IF NOT EXISTS rows_ref ON rows(reference, state);
CREATE INDEX IF NOT EXISTS rows_key ON rows(payout_key, state);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    row INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    scheduled_send TEXT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    outcome TEXT,
    http_status INTEGER,
    response_status TEXT,
    response TEXT,
    extra TEXT,
    error TEXT,
    latency REAL
);
CREATE INDEX IF NOT EXISTS attempts_row ON attempts(run_id, row);
CREATE TABLE IF NOT EXISTS issues (
    run_id TEXT NOT NULL, row INTEGER, "column" TEXT, value TEXT, code TEXT, severity TEXT, message TEXT
);
CREATE INDEX IF NOT EXISTS issues_run ON issues(run_id);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL, row INTEGER NOT NULL, decision TEXT NOT NULL,
    decided_at TEXT NOT NULL, operator TEXT, note TEXT
);
CREATE INDEX IF NOT EXISTS decisions_row ON decisions(run_id, row);
"""


def default_journal_path() -> Path:
    """``MIPAY_JOURNAL`` if set, else a per-user file (so a sheet copied elsewhere is still known)."""
    env = os.environ.get("MIPAY_JOURNAL")
    if env:
        return Path(env)
    from platformdirs import user_data_dir

    return Path(user_data_dir("mipay-bulk", appauthor=False)) / "journal.sqlite"


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def operator_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in some containers
        return "unknown"


def payout_key(msisdn: str, amount: int, product_id: str) -> str:
    """Identity of a payout for the "same payout in the last 24 hours" check."""
    return hashlib.sha256(f"{msisdn}|{amount}|{product_id}".encode()).hexdigest()[:20]


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    source_name: str
    source_sha256: str
    status: str
    started_at: str
    finished_at: str | None
    settings: dict[str, Any]
    totals: dict[str, Any]
    gateway_url: str | None
    operator: str | None
    tool_version: str | None
    source_path: str | None
    sheet: str | None
    headers: list[str]


class Journal:
    """The SQLite journal. One connection, shared by the runner's threads under a lock."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_journal_path()
        # ":memory:" is for measuring the journal's own cost only: it survives nothing.
        in_memory = str(path) == ":memory:"
        try:
            if not in_memory:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
            self._db.row_factory = sqlite3.Row
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal" and not in_memory:
                raise JournalError(f"{self.path}: the journal needs WAL mode, got {mode}")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"{self.path}: cannot open the journal ({exc})") from None
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r})"

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    # -- runs ----------------------------------------------------------------------

    def create_run(
        self,
        *,
        source_name: str,
        source_path: str,
        source_sha256: str,
        sheet: str | None,
        headers: list[str],
        gateway_url: str,
        settings: dict[str, Any],
        totals: dict[str, Any],
        rows: list[dict[str, Any]],
        issues: list[tuple],
        tool_version: str,
    ) -> str:
        """Plan a run: the run, every row of the sheet (with its state) and the issues, in one commit."""
        run_id = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        with self._tx() as db:
            db.execute(
                "INSERT INTO runs (run_id, source_name, source_path, source_sha256, sheet, operator, tool_version,"
                " gateway_url, settings, totals, headers, started_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (run_id, source_name, source_path, source_sha256, sheet, operator_name(), tool_version, gateway_url,
                 json.dumps(settings), json.dumps(totals), json.dumps(headers), utcnow()),
            )
            db.executemany(
                "INSERT INTO rows (run_id, row, state, payout_key, msisdn, amount, product_id, scheduled_send,"
                " reference, name, original, note) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [(run_id, r["row"], r["state"], r.get("payout_key"), r.get("msisdn"), r.get("amount"),
                  r.get("product_id"), r.get("scheduled_send"), r.get("reference"), r.get("name"),
                  json.dumps(r.get("original", {}), ensure_ascii=False), r.get("note")) for r in rows],
            )
            db.executemany("INSERT INTO issues VALUES (?,?,?,?,?,?,?)", [(run_id, *i) for i in issues])
        return run_id

    def run(self, run_id: str) -> RunInfo:
        rows = self._query("SELECT * FROM runs WHERE run_id = ?", (run_id,))
        if not rows:
            raise JournalError(f"no run {run_id!r} in {self.path} (list them with: mipay-bulk runs)")
        r = rows[0]
        return RunInfo(
            run_id=r["run_id"], source_name=r["source_name"], source_sha256=r["source_sha256"], status=r["status"],
            started_at=r["started_at"], finished_at=r["finished_at"], settings=json.loads(r["settings"] or "{}"),
            totals=json.loads(r["totals"] or "{}"), gateway_url=r["gateway_url"], operator=r["operator"],
            tool_version=r["tool_version"], source_path=r["source_path"], sheet=r["sheet"],
            headers=json.loads(r["headers"] or "[]"),
        )

    def runs_for_file(self, sha256: str) -> list[RunInfo]:
        ids = self._query("SELECT run_id FROM runs WHERE source_sha256 = ? ORDER BY started_at", (sha256,))
        return [self.run(r["run_id"]) for r in ids]

    def set_status(self, run_id: str, status: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE runs SET status = ?, finished_at = ? WHERE run_id = ?",
                       (status, utcnow() if status == "finished" else None, run_id))

    def runs(self) -> pd.DataFrame:
        """Every run with its counts and KES by state."""
        sql = """
        SELECT r.run_id, r.source_name, r.status, r.started_at, r.finished_at,
               COUNT(w.row) AS rows,
               SUM(w.state IN ('accepted','paid')) AS accepted,
               SUM(w.state = 'rejected') AS rejected,
               SUM(w.state = 'unknown') AS unknown,
               SUM(w.state IN ('pending','not_sent','in_flight')) AS to_send,
               SUM(w.state IN ('invalid','skipped')) AS not_payouts,
               COALESCE(SUM(CASE WHEN w.state IN ('accepted','paid') THEN w.amount END), 0) AS kes_accepted
        FROM runs r LEFT JOIN rows w ON w.run_id = r.run_id
        GROUP BY r.run_id ORDER BY r.started_at
        """
        table = pd.DataFrame([dict(r) for r in self._query(sql)],
                             columns=["run_id", "source_name", "status", "started_at", "finished_at", "rows",
                                      "accepted", "rejected", "unknown", "to_send", "not_payouts", "kes_accepted"])
        for col in ("started_at", "finished_at"):  # shown in Nairobi time, as everything an analyst reads
            table[col] = pd.to_datetime(table[col], utc=True, format="ISO8601").dt.tz_convert(NAIROBI) \
                .dt.strftime("%Y-%m-%d %H:%M:%S").where(table[col].notna(), None)
        return table

    # -- money-safety checks ------------------------------------------------------

    def _first_hits(self, values: Iterable[str], sql: str, params: list[Any]) -> dict[str, str]:
        """value -> run_id of the first row ``sql`` finds for it; ``sql`` has ``{marks}`` for the
        values (asked 500 at a time, under SQLite's parameter limit) and ``params`` after them."""
        wanted = sorted({v for v in values if v})
        found: dict[str, str] = {}
        for i in range(0, len(wanted), 500):
            chunk = wanted[i:i + 500]
            for value, run_id in self._query(sql.format(marks=",".join("?" * len(chunk))), [*chunk, *params]):
                found.setdefault(value, run_id)
        return found

    def accepted_references(self, references: Iterable[str]) -> dict[str, str]:
        """reference -> run_id, for references paid or possibly paid (unknown, in flight) in any run."""
        return self._first_hits(references, "SELECT reference, run_id FROM rows WHERE reference IN ({marks}) "
                                f"AND state IN ({_POSSIBLY_PAID_SQL})", [])

    def recently_paid(self, keys: Iterable[str], hours: float = 24, exclude_run: str | None = None) -> dict[str, str]:
        """payout_key -> run_id, for identical payouts accepted, or possibly paid (unknown, in
        flight), in the last ``hours``, in runs other than ``exclude_run``."""
        since = (datetime.now(UTC) - timedelta(hours=hours)).isoformat(timespec="milliseconds")
        return self._first_hits(
            keys,
            "SELECT w.payout_key, w.run_id FROM rows w JOIN attempts a ON a.run_id = w.run_id AND a.row = w.row "
            f"WHERE w.payout_key IN ({{marks}}) AND w.state IN ({_POSSIBLY_PAID_SQL}) AND a.started_at >= ? "
            "AND w.run_id != ?",
            [since, exclude_run or ""],
        )

    def skip(self, run_id: str, rows: dict[int, str]) -> None:
        """Mark sendable rows ``skipped``, each with the reason why."""
        with self._tx() as db:
            for row, note in rows.items():
                db.execute("UPDATE rows SET state = 'skipped', note = ? WHERE run_id = ? AND row = ? "
                           "AND state IN ('pending','not_sent')", (note, run_id, row))

    # -- sending --------------------------------------------------------------------

    def recover(self, run_id: str) -> int:
        """Attempts left in flight by a crash become ``unknown``. Returns how many."""
        with self._tx() as db:
            stale = db.execute("SELECT id, row FROM attempts WHERE run_id = ? AND outcome IS NULL",
                               (run_id,)).fetchall()
            for a in stale:
                db.execute("UPDATE attempts SET outcome = 'unknown', finished_at = ?, error = ? WHERE id = ?",
                           (utcnow(), "the kit stopped while this request was in flight", a["id"]))
                db.execute("UPDATE rows SET state = 'unknown' WHERE run_id = ? AND row = ?", (run_id, a["row"]))
        return len(stale)

    def sendable(self, run_id: str) -> list[sqlite3.Row]:
        marks = ",".join("?" * len(SENDABLE))
        return self._query(f"SELECT * FROM rows WHERE run_id = ? AND state IN ({marks}) ORDER BY row",
                           (run_id, *SENDABLE))

    def begin_attempt(self, run_id: str, row: int, scheduled_send: str) -> int:
        """Commit the intent: from here on the row is in flight. Returns the attempt id."""
        with self._tx() as db:
            n = db.execute("UPDATE rows SET state = 'in_flight', attempts = attempts + 1 "
                           "WHERE run_id = ? AND row = ? AND state IN ('pending','not_sent') RETURNING attempts",
                           (run_id, row)).fetchone()
            if n is None:
                raise JournalError(f"run {run_id} row {row} is not in a state that may be sent")
            cur = db.execute("INSERT INTO attempts (run_id, row, attempt, scheduled_send, started_at) "
                             "VALUES (?,?,?,?,?)", (run_id, row, n[0], scheduled_send, utcnow()))
            return int(cur.lastrowid)

    def finish_attempt(self, attempt_id: int, run_id: str, row: int, outcome: Any, *, row_state: str) -> None:
        """Commit what landed, and the row's new state."""
        with self._tx() as db:
            db.execute(
                "UPDATE attempts SET finished_at = ?, outcome = ?, http_status = ?, response_status = ?,"
                " response = ?, extra = ?, error = ?, latency = ? WHERE id = ?",
                (utcnow(), str(outcome.outcome), outcome.http_status, outcome.response_status, outcome.response,
                 json.dumps(outcome.extra, ensure_ascii=False, default=str), outcome.error, outcome.elapsed,
                 attempt_id),
            )
            db.execute("UPDATE rows SET state = ? WHERE run_id = ? AND row = ?", (row_state, run_id, row))

    # -- decisions ------------------------------------------------------------------

    def resolve(self, run_id: str, rows: Iterable[int], decision: str, note: str | None = None) -> list[int]:
        """Record the analyst's decision on ``unknown`` rows: ``paid`` or ``release`` (send on resume)."""
        if decision not in ("paid", "release"):
            raise ValueError(decision)
        self.run(run_id)
        wanted = sorted(set(rows))
        with self._tx() as db:
            states = {r["row"]: r["state"] for r in db.execute(
                f"SELECT row, state FROM rows WHERE run_id = ? AND row IN ({','.join('?' * len(wanted))})",
                (run_id, *wanted))} if wanted else {}
            bad = [f"row {r} is {states.get(r, 'not in this run')}" for r in wanted if states.get(r) != "unknown"]
            if bad:
                raise JournalError("only unknown rows can be resolved: " + "; ".join(bad))
            new_state = "paid" if decision == "paid" else "pending"
            for r in wanted:
                db.execute("UPDATE rows SET state = ? WHERE run_id = ? AND row = ?", (new_state, run_id, r))
                db.execute("INSERT INTO decisions (run_id, row, decision, decided_at, operator, note) "
                           "VALUES (?,?,?,?,?,?)", (run_id, r, decision, utcnow(), operator_name(), note))
            if decision == "release":
                db.execute("UPDATE runs SET status = 'open', finished_at = NULL WHERE run_id = ?", (run_id,))
        return wanted

    # -- reading back -------------------------------------------------------------------

    def rows(self, run_id: str) -> pd.DataFrame:
        """Every row of a run with its state, last attempt and attempt count."""
        sql = """
        WITH last AS (SELECT row, MAX(id) AS id FROM attempts WHERE run_id = :run GROUP BY row),
             decided AS (SELECT row, MAX(id) AS id FROM decisions WHERE run_id = :run GROUP BY row)
        SELECT w.*, a.outcome AS last_outcome, a.http_status, a.response_status, a.response, a.extra, a.error,
               a.started_at AS sent_at, a.latency, a.scheduled_send AS scheduled_send_sent, d.decision
        FROM rows w
        LEFT JOIN last ON last.row = w.row LEFT JOIN attempts a ON a.id = last.id
        LEFT JOIN decided ON decided.row = w.row LEFT JOIN decisions d ON d.id = decided.id
        WHERE w.run_id = :run ORDER BY w.row
        """
        with self._lock:
            cur = self._db.execute(sql, {"run": run_id})
            names = [c[0] for c in cur.description]
            return pd.DataFrame.from_records(cur.fetchall(), columns=names)

    def outcome_sums(self, run_id: str) -> dict[str, tuple[int, int]]:
        """state -> (rows, KES) of a run."""
        return {r["state"]: (r["n"], r["kes"]) for r in self._query(
            "SELECT state, COUNT(*) AS n, COALESCE(SUM(amount), 0) AS kes FROM rows WHERE run_id = ? "
            "GROUP BY state", (run_id,))}

    def sent_rows(self, run_id: str) -> pd.DataFrame:
        """The rows that were sent at least once: state, payout, first send and last schedule."""
        sql = """
        SELECT w.row, w.state, w.msisdn, w.amount, w.product_id, MIN(a.started_at) AS first_sent,
               MAX(a.scheduled_send) AS scheduled
        FROM rows w JOIN attempts a ON a.run_id = w.run_id AND a.row = w.row
        WHERE w.run_id = ? GROUP BY w.row ORDER BY w.row
        """
        with self._lock:
            cur = self._db.execute(sql, (run_id,))
            return pd.DataFrame.from_records(cur.fetchall(), columns=[c[0] for c in cur.description])

    def mark_paid(self, run_id: str, row: int, note: str) -> None:
        """A row the statement shows paid whatever the gateway answered: never send it again."""
        with self._tx() as db:
            db.execute("UPDATE rows SET state = 'paid' WHERE run_id = ? AND row = ?", (run_id, row))
            db.execute("INSERT INTO decisions (run_id, row, decision, decided_at, operator, note) "
                       "VALUES (?,?,?,?,?,?)", (run_id, row, "paid", utcnow(), operator_name(), note))

    def attempts(self, run_id: str) -> pd.DataFrame:
        return pd.DataFrame([dict(r) for r in self._query(
            "SELECT * FROM attempts WHERE run_id = ? ORDER BY id", (run_id,))])

    def issues(self, run_id: str) -> pd.DataFrame:
        return pd.DataFrame([dict(r) for r in self._query(
            'SELECT row, "column", value, code, severity, message FROM issues WHERE run_id = ? ORDER BY row',
            (run_id,))], columns=["row", "column", "value", "code", "severity", "message"])

    def counts(self, run_id: str) -> dict[str, int]:
        return {r["state"]: r["n"] for r in self._query(
            "SELECT state, COUNT(*) AS n FROM rows WHERE run_id = ? GROUP BY state", (run_id,))}


# ---------------------------------------------------------------- the library face of the journal


def open_journal(journal: Journal | str | Path | None) -> Journal:
    """The journal given, or the one at the path given, or the default one."""
    return journal if isinstance(journal, Journal) else Journal(journal)


def runs(journal: Journal | str | Path | None = None) -> pd.DataFrame:
    """Every run in the journal with its counts and KES accepted (``mipay-bulk runs``)."""
    return open_journal(journal).runs()


def resolve(
    run: Any,
    *,
    paid: Iterable[int] = (),
    release: Iterable[int] = (),
    note: str | None = None,
    journal: Journal | str | Path | None = None,
) -> pd.DataFrame:
    """Record what the M-PESA statement shows for ``unknown`` rows of a run.

    ``paid`` rows were found on the statement: they count as accepted and are never sent
    again. ``release`` rows were not: they go out on the next resume. Returns the decisions.
    """
    journal = getattr(run, "journal", None) or open_journal(journal)
    run_id = getattr(run, "run_id", None) or str(run)
    done = []
    for decision, rows in (("paid", list(paid)), ("release", list(release))):
        if rows:
            done += [(r, decision) for r in journal.resolve(run_id, rows, decision, note=note)]
    return pd.DataFrame(done, columns=["row", "decision"])
