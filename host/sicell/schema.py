"""The run database layout: one SQLite file per run, shared by the store (writer) and analysis.

Units in the database are SI (s, V, A, Ah) as floats; the integer wire units (µV, nA, nAh, ms)
are converted once, on the way in. Sign convention: positive current lithiates the working
electrode (DESIGN.md §5).
"""

import json
import sqlite3
from pathlib import Path
from typing import Any

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
    "started_at",  # ISO 8601 UTC
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
    """Open a run database for reading without ever writing to it."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no run database here")
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        con.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        return con
    except sqlite3.OperationalError:
        # A WAL database without its -shm file in a read-only directory cannot be opened
        # read-only by URI; a plain connection that only SELECTs is equally safe.
        return sqlite3.connect(str(path))
