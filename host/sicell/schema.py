"""The run database layout: one SQLite file per run, shared by the store (writer) and analysis.

Units in the database are SI (s, V, A, Ah) as floats; the integer wire units (µV, nA, nAh, ms)
are converted once, on the way in (each float is the nearest double to the wire value, so the
integer is recovered exactly by rounding: ``sicell.bdftable``). Sign convention: positive current
lithiates the working electrode (DESIGN.md §5).

Whether a file is a run database is decided in one place, :func:`check_run_db` (read-only): the
store before resuming, the loader before reading, and so report, export and ``run --resume``.
"""

import errno
import json
import sqlite3
from pathlib import Path
from typing import Any

from sicell.errors import StoreSchemaError

SCHEMA_VERSION = 1

DDL = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL            -- JSON-encoded value
);
CREATE TABLE IF NOT EXISTS samples (
    seq        INTEGER PRIMARY KEY, -- board record sequence number (shared with events)
    t_s        REAL    NOT NULL,    -- test time since run start, s
    voltage_v  REAL    NOT NULL,    -- cell voltage (WE - CE), V
    we_v       REAL    NOT NULL,    -- working electrode potential vs Li+/Li, V
    current_a  REAL    NOT NULL,    -- A, + = lithiation
    charge_ah  REAL    NOT NULL,    -- charge passed since step start, Ah (signed)
    step       INTEGER NOT NULL,    -- schedule step index
    cycle      INTEGER NOT NULL,    -- cycle index (starts at 0, +1 at each lithiation after a
                                    -- delithiation)
    range      INTEGER NOT NULL,    -- current range index
    flags      INTEGER NOT NULL     -- protocol SAMPLE flags
);
CREATE TABLE IF NOT EXISTS events (
    seq    INTEGER PRIMARY KEY,
    t_s    REAL    NOT NULL,
    code   INTEGER NOT NULL,
    name   TEXT    NOT NULL,
    step   INTEGER NOT NULL,
    cycle  INTEGER NOT NULL,
    value  INTEGER NOT NULL,
    aux    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS steps (
    idx         INTEGER PRIMARY KEY,
    kind        TEXT    NOT NULL,   -- rest, cc, cv, cccv, ocv, loop
    current_a   REAL,
    voltage_v   REAL,               -- cell volts
    label       TEXT
);
"""

# Meta keys every run carries (values JSON encoded).
META_KEYS = (
    "schema_version",
    "conventions",  # dict: current sign, capacity reset, cycle start
    "reference_electrode",  # name, e.g. "In-Li"
    "reference_offset_v",  # E(counter) vs Li+/Li; we_v = voltage_v + offset
    "area_cm2",
    "mass_mg",  # active mass
    "thickness_um",
    "density_g_cm3",
    "firmware_version",
    "protocol_version",
    "board_id",
    "calibration",
    "schedule_toml",
    "started_at",  # ISO 8601 UTC, whole seconds, written just before START
    "start_unix_ms",  # wall clock at START (ms since 1970, UTC): test time 0 (when known)
    "start_unix_uncertainty_ms",  # half the START request's round trip
    "cell",  # free text / emulator cell name
)


def decode_meta(text: str) -> Any:
    """A meta value as stored (JSON), or the raw text when it is not JSON."""
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def read_meta(con: sqlite3.Connection) -> dict[str, Any]:
    """Every meta key of a run database, values decoded."""
    return {str(k): decode_meta(v) for k, v in con.execute("SELECT key, value FROM meta")}


def connect_readonly(path: Path) -> sqlite3.Connection:
    """Open an SQLite file for reading without ever writing to it (no check that it is a run
    database: :func:`open_run_db` does that)."""
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, "no run database here", str(path))
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        con.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        return con
    except sqlite3.OperationalError:
        # A WAL database without its -shm file in a read-only directory cannot be opened
        # read-only by URI; a plain connection that only SELECTs is equally safe.
        return sqlite3.connect(str(path))


SQLITE_HEADER = b"SQLite format 3\x00"

# The columns every reader relies on, per table (a writer of the documented layout has them).
_SAMPLE_VALUES = {"t_s", "voltage_v", "we_v", "current_a", "charge_ah", "range", "flags"}
REQUIRED_COLUMNS: dict[str, frozenset[str]] = {
    "meta": frozenset({"key", "value"}),
    "samples": frozenset({"seq", "step", "cycle", *_SAMPLE_VALUES}),
    "events": frozenset({"seq", "t_s", "code", "name", "step", "cycle", "value", "aux"}),
    "steps": frozenset({"idx", "kind", "current_a", "voltage_v", "label"}),
}


def not_a_run_db(path: Path, reason: str) -> StoreSchemaError:
    """The one refusal: ``FILE is not a sicell run database (reason)``."""
    return StoreSchemaError(f"{path} is not a sicell run database ({reason})")


def _file_reason(path: Path) -> str | None:
    """Why the file itself cannot be a run database (empty, not SQLite), None when it may be."""
    try:
        with path.open("rb") as fh:
            head = fh.read(len(SQLITE_HEADER))
    except IsADirectoryError:
        return "a directory"
    if not head:
        return "empty file"
    if head != SQLITE_HEADER:
        return "not an SQLite database: damaged, or another kind of file"
    return None


def check_run_db(con: sqlite3.Connection, path: Path, *, for_writing: bool = False) -> int:
    """Check that ``con`` (opened on ``path``) holds a sicell run database this code can read
    (``for_writing``: and append to); return its schema version. Raises ``StoreSchemaError``
    with the reason otherwise. Only reads.

    A database without a ``schema_version`` entry (another writer of the documented layout) is
    read as version 1; appending needs the version this sicell writes."""
    try:
        tables = {
            str(r[0]) for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        if not tables:
            raise not_a_run_db(path, "an SQLite database without tables")
        missing = sorted(set(REQUIRED_COLUMNS) - tables)
        if missing:
            raise not_a_run_db(
                path, f"an SQLite database without sicell's tables {', '.join(missing)}"
            )
        for table, need in REQUIRED_COLUMNS.items():
            cols = {str(r[1]) for r in con.execute(f"PRAGMA table_info({table})")}
            lacking = sorted(need - cols)
            if lacking:
                raise not_a_run_db(path, f"table {table} lacks columns {', '.join(lacking)}")
        row = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    except sqlite3.DatabaseError as e:
        raise not_a_run_db(path, f"damaged: {e}") from e
    version = decode_meta(row[0]) if row is not None else None
    if version is None and not for_writing:
        return SCHEMA_VERSION
    if not isinstance(version, int) or isinstance(version, bool):
        raise not_a_run_db(path, f"schema version {version!r}, this sicell writes {SCHEMA_VERSION}")
    if version > SCHEMA_VERSION:
        raise not_a_run_db(
            path,
            f"schema version {version} is newer than this sicell's {SCHEMA_VERSION}; update sicell",
        )
    if version < 1 or (for_writing and version != SCHEMA_VERSION):
        raise not_a_run_db(path, f"schema version {version}, this sicell writes {SCHEMA_VERSION}")
    return version


def _connect_for_check(path: Path) -> sqlite3.Connection:
    """A read-only connection that leaves no trace: without a ``-wal`` file (no writer has the
    database open) the file is opened immutable, so SQLite creates no ``-wal``/``-shm`` next to
    a file that may be none of ours."""
    if Path(str(path) + "-wal").exists():
        return connect_readonly(path)
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)


def check_run_db_file(path: Path, *, for_writing: bool = False) -> int:
    """Whether the file at ``path`` is a sicell run database (:func:`check_run_db`), checked
    without writing anything; its schema version. ``FileNotFoundError`` when there is no file,
    ``StoreSchemaError`` naming the file and the reason when it is not one."""
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, "no run database here", str(path))
    reason = _file_reason(path)
    if reason is not None:
        raise not_a_run_db(path, reason)
    try:
        con = _connect_for_check(path)
    except sqlite3.DatabaseError as e:
        raise not_a_run_db(path, f"damaged: {e}") from e
    try:
        return check_run_db(con, path, for_writing=for_writing)
    finally:
        con.close()


def open_run_db(path: Path) -> sqlite3.Connection:
    """Open a run database read-only after checking that it is one
    (:func:`check_run_db_file`). Nothing is ever written to the file."""
    check_run_db_file(path)
    try:
        return connect_readonly(path)
    except sqlite3.DatabaseError as e:
        raise not_a_run_db(path, f"damaged: {e}") from e
