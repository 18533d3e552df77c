"""The run log: one SQLite database per run (layout in ``schema.py``), written by the client.

Durability: WAL journal with ``synchronous=FULL``, so a transaction is on disk when ``add``
returns; the client acknowledges records to the board only after that (DESIGN.md §1), and a
host crash or power cut never loses an acknowledged record. Each ``add`` is one transaction:
either every record of the batch is stored or none is. Records carry the board's sequence
numbers (shared by samples and events) and are inserted with ``ON CONFLICT(seq) DO NOTHING``
(the effect of ``INSERT OR IGNORE`` on duplicate seqs, without also skipping malformed rows), so
replaying a range the database already holds never duplicates a row.

A full disk (or quota) raises ``StoreFullError``: the batch is rolled back, everything committed
before stays, and the client can keep the records unacknowledged on the board (which buffers)
until space is freed.

Event reasons: the protocol's EVENT carries a ``reason`` (``messages.RE_*``/``SE_*``/``SF_*``,
the reset cause...) that ``schema.py``'s ``events`` table has no column for. The store keeps
it in an extra table, ``event_reasons(seq INTEGER PRIMARY KEY, reason INTEGER NOT NULL)``,
one row per event (``events`` itself is exactly as in ``schema.py``, so readers of the
documented layout are unaffected); ``RunStore.events()`` joins it back.

The record classes (``SampleRecord``, ``EventRecord``) live in ``sicell.records`` and are
imported from here; ``read_extent`` and ``read_events`` read a database without a writer.
"""

from __future__ import annotations

import errno
import json
import math
import os
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from sicell import schema
from sicell.errors import StoreFullError, StoreSchemaError
from sicell.protocol import messages
from sicell.records import EventRecord, SampleRecord, event_name

__all__ = [
    "EVENT_REASONS_DDL",
    "EventRecord",
    "RunStore",
    "SampleRecord",
    "StoreFullError",
    "StoreSchemaError",
    "StoredExtent",
    "event_name",
    "read_events",
    "read_extent",
]

EVENT_REASONS_DDL = """
CREATE TABLE IF NOT EXISTS event_reasons (
    seq    INTEGER PRIMARY KEY,     -- events.seq
    reason INTEGER NOT NULL         -- EVENT reason field (messages.RE_*, SE_*, SF_*, ...)
);
"""


def _is_full(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return bool((code & 0xFF) == sqlite3.SQLITE_FULL)
    return "full" in str(exc).lower()


def _encode(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)


def _link_exclusive(src: Path, dst: Path) -> None:
    """Give ``src`` the name ``dst`` at once, failing if ``dst`` exists."""
    try:
        os.link(src, dst)
    except FileExistsError:
        raise FileExistsError(
            errno.EEXIST, "a run database already exists here; refusing to overwrite it", str(dst)
        ) from None
    except OSError as e:  # a file system without hard links: a rename, exclusive by a check
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if dst.exists():
            raise FileExistsError(
                errno.EEXIST,
                "a run database already exists here; refusing to overwrite it",
                str(dst),
            ) from None
        os.replace(src, dst)


class RunStore:
    """One run's SQLite log. Thread-safe: a lock serialises all access to the connection."""

    def __init__(self, path: Path, con: sqlite3.Connection) -> None:
        self.path = path
        self._con = con
        self._lock = threading.RLock()
        self._offset = 0.0
        self._closed = False
        self._load_offset()

    # ---- lifecycle -------------------------------------------------------------------------
    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        con = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            con.close()
            raise OSError(f"{path}: cannot switch the database to WAL mode (got {mode!r})")
        con.execute("PRAGMA synchronous=FULL")
        con.execute("PRAGMA foreign_keys=ON")
        return con

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        meta: Mapping[str, Any],
        steps: Sequence[tuple[int, str, float | None, float | None, str | None]],
    ) -> RunStore:
        """Create a new run database with ``meta`` (JSON-encoded values; ``schema_version``
        and ``conventions`` are filled in when missing) and the schedule's ``steps`` rows
        (``Schedule.step_rows()``). Refuses to touch an existing file."""
        p = Path(path)
        if p.exists():
            raise FileExistsError(
                errno.EEXIST,
                "a run database already exists here; refusing to overwrite it (use "
                "RunStore.open to resume that run, or choose a new file name)",
                str(p),
            )
        for suffix in ("-wal", "-shm", "-journal"):
            stale = Path(str(p) + suffix)
            if stale.exists():
                raise FileExistsError(
                    errno.EEXIST,
                    f"a stale {suffix} file of an earlier database is here; move it away "
                    "before creating a new run with this name",
                    str(stale),
                )
        if not p.parent.exists():
            raise FileNotFoundError(errno.ENOENT, "the directory does not exist", str(p.parent))
        from sicell.schedule import CONVENTIONS  # here: readers of a store need no schedules

        all_meta: dict[str, Any] = {"schema_version": schema.SCHEMA_VERSION}
        all_meta["conventions"] = dict(CONVENTIONS)
        all_meta.update(meta)
        all_meta["schema_version"] = schema.SCHEMA_VERSION
        # Laid out under a private name and linked into place whole: a reader (status, a
        # second terminal, a test waiting for rows) sees no file or a complete run database,
        # never an empty SQLite file; the link is exclusive, so two clients racing for one
        # name cannot both win.
        tmp = p.with_name(f".{p.name}.{os.getpid()}.{id(meta):x}.creating")
        try:
            con = sqlite3.connect(str(tmp), isolation_level=None)
            try:
                con.executescript(schema.DDL + EVENT_REASONS_DDL)
                con.execute("BEGIN IMMEDIATE")
                con.executemany(
                    "INSERT INTO meta(key, value) VALUES (?, ?)",
                    [(str(k), _encode(v)) for k, v in all_meta.items()],
                )
                con.executemany(
                    "INSERT INTO steps(idx, kind, current_a, voltage_v, label) VALUES (?,?,?,?,?)",
                    [
                        (int(i), str(k), _opt(c), _opt(v), (lb if lb else None))
                        for i, k, c, v, lb in steps
                    ],
                )
                con.execute("COMMIT")
            finally:
                con.close()
            _link_exclusive(tmp, p)
        except sqlite3.Error as e:
            if _is_full(e):
                raise StoreFullError(
                    p, f"disk or quota full while creating the run database ({e})"
                ) from e
            raise
        finally:
            for f in (tmp, Path(str(tmp) + "-journal")):
                f.unlink(missing_ok=True)
        try:
            con = cls._connect(p)
        except BaseException:
            p.unlink(missing_ok=True)
            raise
        return cls(p, con)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> RunStore:
        """Reopen an existing run database to resume logging. The file is checked read-only
        first (``schema.check_run_db``): a file that is not a sicell run database of this
        schema version raises ``StoreSchemaError`` and is never written to."""
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(errno.ENOENT, "no run database here", str(p))
        schema.check_run_db_file(p, for_writing=True)
        con = cls._connect(p)
        try:
            con.executescript(EVENT_REASONS_DDL)
        except BaseException:
            con.close()
            raise
        return cls(p, con)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._con.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RunStore({str(self.path)!r})"

    # ---- writing ---------------------------------------------------------------------------
    def add(self, samples: Sequence[SampleRecord], events: Sequence[EventRecord]) -> None:
        """Store a batch in ONE transaction, durable on disk before this returns. Records whose
        seq is already stored are ignored (replays never duplicate). ``we_v`` = voltage +
        the run's reference offset. Raises ``StoreFullError`` when the disk is full (the
        batch is rolled back; earlier records are untouched)."""
        if not samples and not events:
            return
        off = self._offset
        srows = [
            (
                s.seq,
                s.t_s,
                s.voltage_v,
                s.voltage_v + off,
                s.current_a,
                s.charge_ah,
                s.step,
                s.cycle,
                s.range,
                s.flags,
            )
            for s in samples
        ]
        erows = [(e.seq, e.t_s, e.code, e.name, e.step, e.cycle, e.value, e.aux) for e in events]
        rrows = [(e.seq, e.reason) for e in events]
        with self._lock:
            self._check_open()
            con = self._con
            try:
                con.execute("BEGIN IMMEDIATE")
                if srows:
                    con.executemany(
                        "INSERT INTO samples(seq, t_s, voltage_v, we_v, current_a, charge_ah, "
                        "step, cycle, range, flags) VALUES (?,?,?,?,?,?,?,?,?,?) "
                        "ON CONFLICT(seq) DO NOTHING",
                        srows,
                    )
                if erows:
                    con.executemany(
                        "INSERT INTO events(seq, t_s, code, name, step, cycle, value, aux) "
                        "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(seq) DO NOTHING",
                        erows,
                    )
                    con.executemany(
                        "INSERT INTO event_reasons(seq, reason) VALUES (?,?) "
                        "ON CONFLICT(seq) DO NOTHING",
                        rrows,
                    )
                con.execute("COMMIT")
            except sqlite3.Error as e:
                self._rollback()
                if _is_full(e):
                    last = self._last_seq_unlocked()
                    raise StoreFullError(
                        self.path,
                        f"disk or quota full while storing {len(srows)} samples and "
                        f"{len(erows)} events; that batch was rolled back and nothing already "
                        f"stored is lost (last stored seq {last}). Free space and resume: the "
                        f"board still holds the unacknowledged records. ({e})",
                    ) from e
                raise

    def set_meta(self, key: str, value: Any) -> None:
        """Insert or replace one metadata entry (JSON-encoded), durably."""
        with self._lock:
            self._check_open()
            try:
                self._con.execute("BEGIN IMMEDIATE")
                self._con.execute(
                    "INSERT INTO meta(key, value) VALUES (?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (str(key), _encode(value)),
                )
                self._con.execute("COMMIT")
            except sqlite3.Error as e:
                self._rollback()
                if _is_full(e):
                    raise StoreFullError(
                        self.path,
                        f"disk or quota full while setting meta {key!r}; nothing already "
                        f"stored is lost ({e})",
                    ) from e
                raise
            if key == "reference_offset_v":
                self._load_offset()

    # ---- reading ---------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        """All metadata, JSON-decoded."""
        with self._lock:
            self._check_open()
            return schema.read_meta(self._con)

    def last_seq(self) -> int | None:
        """The highest stored sequence number (samples and events), None when empty."""
        with self._lock:
            self._check_open()
            return self._last_seq_unlocked()

    def first_seq(self) -> int | None:
        """The lowest stored sequence number, None when empty."""
        with self._lock:
            self._check_open()
            row = self._con.execute(
                "SELECT min(m) FROM (SELECT min(seq) AS m FROM samples "
                "UNION ALL SELECT min(seq) FROM events)"
            ).fetchone()
            return None if row is None or row[0] is None else int(row[0])

    def seqs(self) -> list[int]:
        """Every stored sequence number, ascending."""
        with self._lock:
            self._check_open()
            return [
                int(r[0])
                for r in self._con.execute(
                    "SELECT seq FROM samples UNION SELECT seq FROM events ORDER BY seq"
                )
            ]

    def missing_seqs(self) -> list[tuple[int, int]]:
        """Gaps between the first and last stored seq, as inclusive (first, last) ranges."""
        with self._lock:
            self._check_open()
            rows = self._con.execute(
                "SELECT prev + 1, seq - 1 FROM ("
                " SELECT seq, lag(seq) OVER (ORDER BY seq) AS prev FROM ("
                "  SELECT seq FROM samples UNION SELECT seq FROM events))"
                " WHERE prev IS NOT NULL AND seq - prev > 1 ORDER BY seq"
            ).fetchall()
            return [(int(a), int(b)) for a, b in rows]

    def count(self) -> tuple[int, int]:
        """(number of samples, number of events)."""
        with self._lock:
            self._check_open()
            ns = self._con.execute("SELECT count(*) FROM samples").fetchone()[0]
            ne = self._con.execute("SELECT count(*) FROM events").fetchone()[0]
            return int(ns), int(ne)

    def events(self) -> list[EventRecord]:
        """All events with their reasons, by seq."""
        with self._lock:
            self._check_open()
            return read_events(self._con)

    def extent(self) -> StoredExtent:
        """Counts, seq range, last test time and run end of what is stored."""
        with self._lock:
            self._check_open()
            return _extent(self._con)

    def samples(self, from_seq: int | None = None) -> list[SampleRecord]:
        """Stored samples by seq (from ``from_seq`` on when given)."""
        with self._lock:
            self._check_open()
            rows = self._con.execute(
                "SELECT seq, t_s, voltage_v, current_a, charge_ah, step, cycle, range, flags "
                "FROM samples WHERE seq >= ? ORDER BY seq",
                (-(2**63) if from_seq is None else int(from_seq),),
            ).fetchall()
        return [
            SampleRecord(
                int(s), float(t), float(v), float(i), float(q), int(st), int(cy), int(rg), int(f)
            )
            for s, t, v, i, q, st, cy, rg, f in rows
        ]

    # ---- internals -------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{self.path}: the run store is closed")

    def _rollback(self) -> None:
        # Called while the error that failed the transaction propagates; SQLite may already
        # have rolled back itself (e.g. after SQLITE_FULL), and a failing ROLLBACK must not
        # hide that error.
        try:
            if self._con.in_transaction:
                self._con.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def _last_seq_unlocked(self) -> int | None:
        row = self._con.execute(
            "SELECT max(m) FROM (SELECT max(seq) AS m FROM samples "
            "UNION ALL SELECT max(seq) FROM events)"
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def _load_offset(self) -> None:
        row = self._con.execute("SELECT value FROM meta WHERE key='reference_offset_v'").fetchone()
        off = 0.0
        if row is not None:
            v = schema.decode_meta(row[0])
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                off = float(v)
        self._offset = off


@dataclass(frozen=True)
class StoredExtent:
    """What a run database holds, in a few numbers."""

    samples: int
    events: int
    first_seq: int | None  # lowest stored seq (samples and events)
    last_seq: int | None  # highest stored seq
    last_t_s: float | None  # latest test time of a sample
    end_seq: int | None  # seq of the last EV_RUN_END


def _extent(con: sqlite3.Connection) -> StoredExtent:
    ns = int(con.execute("SELECT count(*) FROM samples").fetchone()[0])
    ne = int(con.execute("SELECT count(*) FROM events").fetchone()[0])
    lo, hi = con.execute(
        "SELECT min(s), max(s) FROM (SELECT seq AS s FROM samples UNION ALL "
        "SELECT seq AS s FROM events)"
    ).fetchone()
    (t,) = con.execute("SELECT max(t_s) FROM samples").fetchone()
    (end,) = con.execute(
        "SELECT max(seq) FROM events WHERE code = ?", (messages.EV_RUN_END,)
    ).fetchone()
    return StoredExtent(
        samples=ns,
        events=ne,
        first_seq=None if lo is None else int(lo),
        last_seq=None if hi is None else int(hi),
        last_t_s=None if t is None else float(t),
        end_seq=None if end is None else int(end),
    )


def read_extent(path: str | os.PathLike[str]) -> StoredExtent:
    """:meth:`RunStore.extent` of a run database, read-only (safe while a client logs)."""
    con = schema.open_run_db(Path(path))
    try:
        return _extent(con)
    finally:
        con.close()


def read_events(con: sqlite3.Connection) -> list[EventRecord]:
    """Every event of a run database by seq, with its reason (0 where none is stored: a
    database written before the ``event_reasons`` table, or by another writer)."""
    has_reasons = con.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'event_reasons'"
    ).fetchone()
    if has_reasons:
        q = (
            "SELECT e.seq, e.t_s, e.code, e.name, e.step, e.cycle, e.value, e.aux, "
            "coalesce(r.reason, 0) FROM events e LEFT JOIN event_reasons r USING (seq) "
            "ORDER BY e.seq"
        )
    else:
        q = "SELECT seq, t_s, code, name, step, cycle, value, aux, 0 FROM events ORDER BY seq"
    return [
        EventRecord(int(s), float(t), int(c), str(n), int(st), int(cy), int(v), int(a), int(r))
        for s, t, c, n, st, cy, v, a, r in con.execute(q)
    ]


def _opt(x: float | None) -> float | None:
    return None if x is None else float(x)
