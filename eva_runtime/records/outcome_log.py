"""The episode outcome log: one SQLite row per deployed episode (outcome, label, counters, model versions).

Durability: WAL with ``synchronous=FULL`` fsyncs the log on every commit, and every public write commits at once,
so a crash or power cut loses at most the counters since the last ``update_episode``. A process that dies leaves
its episode running; the next writer marks it aborted (never deleting anything). One writer at a time holds an
advisory lock on ``<log>.writer.lock`` so that recovery can never abort an episode a live process is still running.
"""

from __future__ import annotations

import fcntl
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eva_runtime.records.outcome_fields import (
    COUNTERS,
    checked_choice,
    checked_number,
    checked_text,
    counter_columns,
    json_mapping,
)

__all__ = ["ABORTED_BY_CRASH", "COUNTERS", "SCHEMA_VERSION", "EpisodeRecord", "OutcomeLog", "OutcomeLogError"]

SCHEMA_VERSION = 1
SPLITS = ("seen", "unseen")
OUTCOMES = ("success", "failure", "aborted")
LABELLERS = ("operator", "automatic")
ABORTED_BY_CRASH = "process ended before the episode was closed"
# Counters the runtime updates while an episode runs; the JSON ones must carry exactly these keys.
_FILTERS = ("run_id", "task", "split", "outcome", "labelled_by", "model_id", "embodiment")
_JSON_FIELDS = ("safety_interventions", "planning_latency_ms", "executability", "bundle", "nominal_interventions")
# Columns added after the first schema, added to an older log when a writer opens it (readers see them as NULL).
_ADDED_COLUMNS = {"nominal_interventions": "TEXT"}

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS episodes (
    id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, task TEXT NOT NULL, instruction TEXT NOT NULL,
    split TEXT NOT NULL CHECK (split IN {SPLITS}), started_at REAL NOT NULL, ended_at REAL,
    outcome TEXT CHECK (outcome IN {OUTCOMES}), labelled_by TEXT CHECK (labelled_by IN {LABELLERS}),
    failure_reason TEXT, note TEXT,
    teleop_interventions INTEGER NOT NULL DEFAULT 0, teleop_seconds REAL NOT NULL DEFAULT 0.0,
    safety_interventions TEXT NOT NULL DEFAULT '{{}}', planning_latency_ms TEXT, executability TEXT,
    embodiment TEXT NOT NULL, bundle TEXT NOT NULL, model_id TEXT NOT NULL, software_version TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS episodes_task_model ON episodes (task, model_id);
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY, episode_id INTEGER NOT NULL REFERENCES episodes (id),
    outcome TEXT NOT NULL CHECK (outcome IN {OUTCOMES}), labelled_by TEXT NOT NULL CHECK (labelled_by IN {LABELLERS}),
    labelled_at REAL NOT NULL, note TEXT
);
CREATE TABLE IF NOT EXISTS recordings (
    episode_id INTEGER PRIMARY KEY REFERENCES episodes (id), path TEXT NOT NULL, sha256 TEXT,
    bytes INTEGER NOT NULL, messages INTEGER NOT NULL, dropped INTEGER NOT NULL, refused INTEGER NOT NULL, error TEXT
);
"""
_RECORDING_COLUMNS = ("path", "sha256", "bytes", "messages", "dropped", "refused", "error")


class OutcomeLogError(Exception):
    """The file cannot serve as an outcome log: missing, not one, newer schema, or another writer holds it."""


@dataclass(frozen=True)
class EpisodeRecord:
    """One episode as stored, with the JSON columns parsed (``outcome`` is None while it runs)."""

    id: int
    run_id: str
    task: str
    instruction: str
    split: str
    started_at: float
    ended_at: float | None
    outcome: str | None
    labelled_by: str | None
    failure_reason: str | None
    note: str | None
    teleop_interventions: int
    teleop_seconds: float
    safety_interventions: dict[str, int]
    planning_latency_ms: dict[str, float] | None
    executability: dict[str, float] | None
    embodiment: str
    bundle: dict[str, Any]
    model_id: str
    software_version: str
    nominal_interventions: dict[str, int] | None = None  # absent in logs written before it was counted


class OutcomeLog:
    """Append-mostly log of deployed episodes; every write commits (and is fsynced) before it returns."""

    def __init__(
        self, path: str | Path, *, recover: bool = True, read_only: bool = False, run_id: str | None = None
    ) -> None:
        self.path = Path(path)
        self.read_only = read_only
        # One process run shares one id unless the caller names it, so episodes group by the run that made them.
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self._mutex = threading.Lock()  # the runtime may update counters from a timer thread
        self._lock_file = None
        if read_only:
            if not self.path.is_file():
                raise OutcomeLogError(f"outcome log {self.path} does not exist")
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._take_writer_lock()
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            self._prepare(recover and not read_only)
        except (sqlite3.DatabaseError, OutcomeLogError) as error:
            self.close()
            if isinstance(error, OutcomeLogError):
                raise
            raise OutcomeLogError(f"{self.path} is not a readable outcome log: {error}") from error

    def _take_writer_lock(self) -> None:
        lock_path = self.path.with_name(self.path.name + ".writer.lock")
        self._lock_file = open(lock_path, "a+")  # noqa: SIM115 - held open for the log's lifetime
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            self._lock_file = None
            raise OutcomeLogError(f"another process is writing {self.path} (lock {lock_path})") from None

    def _prepare(self, recover: bool) -> None:
        db = self._db
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA foreign_keys=ON")
        if self.read_only:
            if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'episodes'").fetchone() is None:
                raise OutcomeLogError(f"{self.path} has no episodes table: not an outcome log")
        else:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise OutcomeLogError(f"{self.path}: WAL journal unavailable (got {mode})")
            db.execute("PRAGMA synchronous=FULL")
            with self._transaction():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                present = {row[1] for row in db.execute("PRAGMA table_info(episodes)")}
                for column, kind in _ADDED_COLUMNS.items():
                    if column not in present:  # names and types are the literals above, never input
                        db.execute(f"ALTER TABLE episodes ADD COLUMN {column} {kind}")
                if db.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 0:
                    db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        versions = [row[0] for row in db.execute("SELECT version FROM schema_version")]
        if not versions or max(versions) > SCHEMA_VERSION:
            raise OutcomeLogError(f"{self.path} has schema {versions}, this runtime reads {SCHEMA_VERSION}")
        self.schema_version = max(versions)
        if recover:
            with self._transaction():
                orphans = "FROM episodes WHERE ended_at IS NULL AND outcome IS NULL"
                db.execute(
                    f"INSERT INTO labels (episode_id, outcome, labelled_by, labelled_at, note) "
                    f"SELECT id, 'aborted', 'automatic', ?, ? {orphans}",
                    (time.time(), ABORTED_BY_CRASH),
                )
                db.execute(
                    "UPDATE episodes SET outcome = 'aborted', labelled_by = 'automatic', failure_reason = ? "
                    "WHERE ended_at IS NULL AND outcome IS NULL",
                    (ABORTED_BY_CRASH,),
                )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        if self.read_only:
            raise OutcomeLogError(f"{self.path} is open read-only")
        with self._mutex:
            # IMMEDIATE takes the write lock up front, so a read-then-write check cannot race another connection.
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def start_episode(
        self,
        task: str,
        instruction: str,
        split: str,
        embodiment: str,
        bundle: Mapping[str, Any],
        model_id: str,
        software_version: str,
        run_id: str | None = None,
        started_at: float | None = None,
    ) -> int:
        """Record a new running episode; returns its id."""
        values = (
            checked_text("run_id", run_id or self.run_id),
            checked_text("task", task),
            checked_text("instruction", instruction),
            checked_choice("split", split, SPLITS),
            time.time() if started_at is None else checked_number("started_at", started_at),
            checked_text("embodiment", embodiment),
            json_mapping("bundle", bundle),
            checked_text("model_id", model_id),
            checked_text("software_version", software_version),
        )
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO episodes (run_id, task, instruction, split, started_at, embodiment, bundle, model_id, "
                "software_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )
            return int(cursor.lastrowid)

    def update_episode(self, episode_id: int, **counters: object) -> None:
        """Overwrite the running episode's counters with their current totals."""
        columns = counter_columns(counters)
        with self._transaction() as db:
            self._running(db, episode_id)
            self._set(db, episode_id, columns)

    def end_episode(
        self,
        episode_id: int,
        outcome: str,
        labelled_by: str,
        failure_reason: str | None = None,
        note: str | None = None,
        ended_at: float | None = None,
        **counters: object,
    ) -> None:
        """Close a running episode with its outcome, who labelled it, and the final counters."""
        columns = counter_columns(counters)
        columns["outcome"] = checked_choice("outcome", outcome, OUTCOMES)
        columns["labelled_by"] = checked_choice("labelled_by", labelled_by, LABELLERS)
        columns["failure_reason"] = failure_reason
        columns["note"] = note
        columns["ended_at"] = time.time() if ended_at is None else checked_number("ended_at", ended_at)
        with self._transaction() as db:
            self._running(db, episode_id)
            self._set(db, episode_id, columns)
            self._add_label(db, episode_id, outcome, labelled_by, note)

    def label_episode(
        self, episode_id: int, outcome: str, labelled_by: str = "operator", note: str | None = None
    ) -> None:
        """Relabel a finished episode (an operator overriding the automatic label); the label history is kept."""
        checked_choice("outcome", outcome, OUTCOMES)
        checked_choice("labelled_by", labelled_by, LABELLERS)
        with self._transaction() as db:
            if self._row(db, episode_id)["outcome"] is None:
                raise ValueError(f"episode_id {episode_id} is still running: end it before labelling it")
            columns: dict[str, object] = {"outcome": outcome, "labelled_by": labelled_by}
            if note is not None:
                columns["note"] = note
            self._set(db, episode_id, columns)
            self._add_label(db, episode_id, outcome, labelled_by, note)

    def labels(self, episode_id: int) -> list[tuple[str, str, float, str | None]]:
        """Every label an episode received, oldest first: (outcome, labelled_by, labelled_at, note)."""
        rows = self._db.execute(
            "SELECT outcome, labelled_by, labelled_at, note FROM labels WHERE episode_id = ? ORDER BY id", (episode_id,)
        )
        return [tuple(row) for row in rows]

    def episodes(self, **filters: str) -> list[EpisodeRecord]:
        """All episodes in id order, optionally filtered by equality on run_id, task, split, outcome, ... ."""
        unknown = set(filters) - set(_FILTERS)
        if unknown:
            raise ValueError(f"cannot filter on {', '.join(sorted(unknown))} (filters: {', '.join(_FILTERS)})")
        # Column names come from the fixed _FILTERS whitelist; every value is a bound parameter.
        where = " AND ".join(f"{name} = ?" for name in filters) or "1"
        with self._mutex:  # never read mid-way through another thread's transaction on this connection
            rows = self._db.execute(f"SELECT * FROM episodes WHERE {where} ORDER BY id", tuple(filters.values()))
            return [self._record(row) for row in rows.fetchall()]

    def episode(self, episode_id: int) -> EpisodeRecord:
        """One episode by id (ValueError naming episode_id if there is none)."""
        with self._mutex:
            return self._record(self._row(self._db, episode_id))

    @staticmethod
    def _record(row: sqlite3.Row) -> EpisodeRecord:
        present = set(row.keys())  # an older log lacks the columns added since
        parsed = {name: json.loads(row[name]) for name in _JSON_FIELDS if name in present and row[name] is not None}
        return EpisodeRecord(**{**dict(row), **parsed})

    @staticmethod
    def _row(db: sqlite3.Connection, episode_id: int) -> sqlite3.Row:
        row = db.execute("SELECT * FROM episodes WHERE id = ?", (episode_id,)).fetchone()
        if row is None:
            raise ValueError(f"episode_id {episode_id!r} is not in the log")
        return row

    def _running(self, db: sqlite3.Connection, episode_id: int) -> None:
        row = self._row(db, episode_id)
        if row["outcome"] is not None or row["ended_at"] is not None:
            raise ValueError(f"episode_id {episode_id} already ended with outcome {row['outcome']!r}")

    @staticmethod
    def _set(db: sqlite3.Connection, episode_id: int, columns: Mapping[str, object]) -> None:
        if columns:
            # Column names are validated names from COUNTERS or fixed literals; values are bound parameters.
            assignments = ", ".join(f"{name} = ?" for name in columns)
            db.execute(f"UPDATE episodes SET {assignments} WHERE id = ?", (*columns.values(), episode_id))

    @staticmethod
    def _add_label(db: sqlite3.Connection, episode_id: int, outcome: str, labelled_by: str, note: str | None) -> None:
        db.execute(
            "INSERT INTO labels (episode_id, outcome, labelled_by, labelled_at, note) VALUES (?, ?, ?, ?, ?)",
            (episode_id, outcome, labelled_by, time.time(), note),
        )

    def attach_recording(self, episode_id: int, summary: Mapping[str, object]) -> None:
        """Name an episode's recording (file, hash, counts, and the error that cut it short if one did)."""
        values = [summary.get(name) for name in _RECORDING_COLUMNS]
        with self._transaction() as db:
            self._row(db, episode_id)
            columns = ", ".join(_RECORDING_COLUMNS)
            db.execute(f"INSERT OR REPLACE INTO recordings (episode_id, {columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (episode_id, *values))  # fmt: skip

    def recording(self, episode_id: int) -> dict[str, object] | None:
        """The recording an episode names, or None (none made, or a log written before recordings existed)."""
        with self._mutex:
            if self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'recordings'").fetchone() is None:
                return None
            row = self._db.execute("SELECT * FROM recordings WHERE episode_id = ?", (episode_id,)).fetchone()
        return None if row is None else {name: row[name] for name in _RECORDING_COLUMNS}

    def pragma(self, name: str) -> object:
        """The current value of a PRAGMA (journal_mode, synchronous, foreign_keys, integrity_check, ...)."""
        if not name.replace("_", "").isalpha():
            raise ValueError(f"pragma name {name!r} is not a plain identifier")
        return self._db.execute(f"PRAGMA {name}").fetchone()[0]

    def close(self) -> None:
        """Close the database and release the writer lock (idempotent)."""
        if getattr(self, "_db", None) is not None:
            self._db.close()
            self._db = None
        if self._lock_file is not None:
            self._lock_file.close()  # closing the file releases the flock
            self._lock_file = None

    def __enter__(self) -> OutcomeLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
