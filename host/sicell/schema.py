"""The run database layout: one SQLite file per run, shared by the store (writer) and analysis.

Units in the database are SI (s, V, A, Ah) as floats; the integer wire units (µV, nA, nAh, ms)
are converted once, on the way in. Sign convention: positive current lithiates the working
electrode (DESIGN.md §5).
"""

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
