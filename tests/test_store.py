"""Run store: wire → SI records, durability, replay-safety, gaps, metadata, full disk."""

from __future__ import annotations

import errno
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sicell import schema
from sicell.protocol import messages
from sicell.rundata import load_run
from sicell.schedule import CONVENTIONS
from sicell.store import (
    EventRecord,
    RunStore,
    SampleRecord,
    StoredExtent,
    StoreFullError,
    StoreSchemaError,
    read_events,
    read_extent,
)

META = {
    "reference_electrode": "In-Li",
    "reference_offset_v": 0.62,
    "area_cm2": 0.567,
    "mass_mg": 0.119,
    "cell": "thin-porous",
}
STEPS = [
    (0, "cc", 56.7e-6, -0.61, "lith"),
    (1, "rest", None, None, ""),
    (2, "loop", None, None, ""),
]


def sample(seq: int, v: float = -0.1, i: float = 56.7e-6) -> SampleRecord:
    return SampleRecord(seq, seq * 10.0, v, i, seq * 1e-9, 0, 0, 1, 0)


def event(
    seq: int, code: int = messages.EV_STEP_END, reason: int = messages.SE_CUTOFF
) -> EventRecord:
    return EventRecord.from_wire(seq, (seq * 10, 0, code, reason, 0, 0, -610_000, 1234))


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore.create(tmp_path / "run.db", META, STEPS)


# ---- records from the wire -----------------------------------------------------------------


def test_sample_from_wire() -> None:
    payload = messages.pack(messages.SAMPLE, 7200, 250, -610_123, 56_700, 340_000, 3, 12, 1, 0x05)
    rec = SampleRecord.from_wire(41, messages.unpack(messages.SAMPLE, payload))
    assert rec.seq == 41
    assert rec.t_s == pytest.approx(7200.25)
    assert rec.voltage_v == pytest.approx(-0.610123)
    assert rec.current_a == pytest.approx(56.7e-6)
    assert rec.charge_ah == pytest.approx(0.34e-3)
    assert (rec.step, rec.cycle, rec.range, rec.flags) == (3, 12, 1, 0x05)


def test_event_from_wire() -> None:
    payload = messages.pack(
        messages.EVENT, 100, 5, messages.EV_SAFETY, messages.SF_VMAX, 2, 1, 2_100_000, -7
    )
    rec = EventRecord.from_wire(9, messages.unpack(messages.EVENT, payload))
    assert rec == EventRecord(
        9, 100.005, messages.EV_SAFETY, "safety_trip", 2, 1, 2_100_000, -7, messages.SF_VMAX
    )
    unknown = EventRecord.from_wire(10, (0, 0, 99, 0, 0, 0, 0, 0))
    assert unknown.name == "event_99"


# ---- creating and reopening ------------------------------------------------------------------


def test_create_layout_and_pragmas(store: RunStore, tmp_path: Path) -> None:
    assert store._con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._con.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    meta = store.meta()
    assert meta["schema_version"] == schema.SCHEMA_VERSION
    assert meta["conventions"] == CONVENTIONS
    for k, v in META.items():
        assert meta[k] == v
    con = sqlite3.connect(tmp_path / "run.db")
    rows = con.execute("SELECT idx, kind, current_a, voltage_v, label FROM steps").fetchall()
    assert rows == [
        (0, "cc", 56.7e-6, -0.61, "lith"),
        (1, "rest", None, None, None),
        (2, "loop", None, None, None),
    ]
    cols = [r[1] for r in con.execute("PRAGMA table_info(samples)")]
    assert cols == [
        "seq",
        "t_s",
        "voltage_v",
        "we_v",
        "current_a",
        "charge_ah",
        "step",
        "cycle",
        "range",
        "flags",
    ]
    con.close()
    store.close()


def test_create_refuses_existing_file(store: RunStore, tmp_path: Path) -> None:
    store.close()
    with pytest.raises(FileExistsError) as ei:
        RunStore.create(tmp_path / "run.db", META, STEPS)
    msg = str(ei.value)
    assert "run.db" in msg and "refusing to overwrite" in msg and "RunStore.open" in msg
    (tmp_path / "other.txt").write_text("not a database")
    with pytest.raises(FileExistsError):
        RunStore.create(tmp_path / "other.txt", META, STEPS)
    assert (tmp_path / "other.txt").read_text() == "not a database"


def test_open_resumes(store: RunStore, tmp_path: Path) -> None:
    store.add([sample(1), sample(2)], [event(3)])
    store.close()
    with RunStore.open(tmp_path / "run.db") as again:
        assert again.last_seq() == 3
        again.add([sample(2), sample(4, v=0.5)], [])
        assert again.count() == (3, 1)
        we = again._con.execute("SELECT we_v FROM samples WHERE seq=4").fetchone()[0]
        assert we == pytest.approx(1.12)


def test_open_refuses_missing_and_foreign(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        RunStore.open(tmp_path / "nope.db")
    con = sqlite3.connect(tmp_path / "foreign.db")
    con.execute("CREATE TABLE t(x)")
    con.commit()
    con.close()
    with pytest.raises(StoreSchemaError, match="not a sicell run database"):
        RunStore.open(tmp_path / "foreign.db")


# ---- adding ------------------------------------------------------------------------------------


def test_add_converts_and_is_replay_safe(store: RunStore, tmp_path: Path) -> None:
    store.add([sample(i) for i in range(10)], [event(10)])
    store.add([sample(i, v=9.9) for i in range(5, 15)], [event(10, reason=0), event(15)])
    assert store.count() == (15, 2)
    rows = store._con.execute("SELECT seq, voltage_v, we_v FROM samples ORDER BY seq").fetchall()
    # the first copy of a seq wins; a replay never duplicates or overwrites
    assert rows[5] == (5, -0.1, pytest.approx(0.52))
    assert rows[12][1] == 9.9
    assert store.last_seq() == 15
    assert store.first_seq() == 0
    evs = store.events()
    assert [(e.seq, e.name, e.reason) for e in evs] == [
        (10, "step_end", messages.SE_CUTOFF),
        (15, "step_end", messages.SE_CUTOFF),
    ]
    # the analysis loader reads what the store wrote
    store.close()
    run = load_run(tmp_path / "run.db")
    assert len(run) == 15
    assert run.we_v[0] == pytest.approx(-0.1 + 0.62)
    assert run.reference_offset_v == 0.62
    assert run.steps[0].label == "lith"
    assert [e.seq for e in run.events] == [10, 15]


def test_extent(store: RunStore, tmp_path: Path) -> None:
    assert store.extent() == StoredExtent(0, 0, None, None, None, None)
    end = EventRecord.from_wire(9, (90, 0, messages.EV_RUN_END, 0, 0, 0, 1, 0))
    store.add([sample(4), sample(7)], [event(5), end])
    want = StoredExtent(samples=2, events=2, first_seq=4, last_seq=9, last_t_s=70.0, end_seq=9)
    assert store.extent() == want
    assert read_extent(tmp_path / "run.db") == want  # read-only, while the writer is open


def test_odd_directory_names(tmp_path: Path) -> None:
    """``#``, ``?`` and spaces in the path are part of the file name, not of a URI: the
    read-only readers find the run (a naive ``file:`` URI would open a stray empty file)."""
    d = tmp_path / "urit#1 ?x"
    d.mkdir()
    db = d / "run.db"
    with RunStore.create(db, META, STEPS) as s:
        s.add([sample(1), sample(2)], [event(3)])
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert read_extent(db).samples == 2
    assert len(load_run(db)) == 2 and [e.seq for e in load_run(db).events] == [3]
    with RunStore.open(db) as s:
        assert s.count() == (2, 1)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # no stray files


def test_one_event_record_class(store: RunStore, tmp_path: Path) -> None:
    """The analysis loader gives the store's own records, the reason included."""
    store.add([], [event(10)])
    store.close()
    run = load_run(tmp_path / "run.db")
    assert run.events == [event(10)] and type(run.events[0]) is EventRecord


def test_read_events_without_reasons_table(tmp_path: Path) -> None:
    """A database from another writer (schema.DDL only) reads with reason 0."""
    con = sqlite3.connect(tmp_path / "plain.db")
    con.executescript(schema.DDL)
    con.execute("INSERT INTO events VALUES (1, 0.5, 3, 'step_start', 0, 0, 7, 0)")
    con.commit()
    assert read_events(con) == [EventRecord(1, 0.5, 3, "step_start", 0, 0, 7, 0, 0)]
    con.close()


def test_add_is_one_transaction(store: RunStore) -> None:
    store.add([sample(1)], [])
    bad = SampleRecord(3, None, 0.0, 0.0, 0.0, 0, 0, 0, 0)  # type: ignore[arg-type]
    with pytest.raises(sqlite3.IntegrityError):
        store.add([sample(2), bad, sample(4)], [event(5)])
    assert store.seqs() == [1]
    assert store.count() == (1, 0)
    store.add([sample(2)], [])  # the store keeps working
    assert store.seqs() == [1, 2]


def test_add_is_durable_before_it_returns(tmp_path: Path) -> None:
    """A writer that dies right after add() (no close, no checkpoint) loses nothing."""
    db = tmp_path / "crash.db"
    code = f"""
import os
from sicell.store import RunStore, SampleRecord
s = RunStore.create({str(db)!r}, {{"reference_offset_v": 0.62}}, [])
s.add([SampleRecord(i, float(i), 0.1, 1e-6, 0.0, 0, 0, 0, 0) for i in range(500)], [])
os._exit(0)
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    with RunStore.open(db) as s:
        assert s.count() == (500, 0)
        assert s.missing_seqs() == []


def test_gaps(store: RunStore) -> None:
    assert store.last_seq() is None and store.missing_seqs() == [] and store.seqs() == []
    store.add([sample(i) for i in (0, 1, 2, 5, 9)], [event(6), event(10)])
    assert store.missing_seqs() == [(3, 4), (7, 8)]
    assert store.seqs() == [0, 1, 2, 5, 6, 9, 10]
    store.add([sample(3), sample(4), sample(7)], [event(8)])
    assert store.missing_seqs() == []


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(min_value=0, max_value=300), max_size=40), max_size=8))
def test_replays_never_duplicate(batches: list[list[int]]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d, RunStore.create(Path(d) / "r.db", META, []) as s:
        seen: set[int] = set()
        for batch in batches:
            samples = [sample(x) for x in batch if x % 3]
            events = [event(x) for x in batch if x % 3 == 0]
            s.add(samples, events)
            seen.update(batch)
        assert s.seqs() == sorted(seen)
        assert sum(s.count()) == len(seen)
        if seen:
            full = set(range(min(seen), max(seen) + 1))
            missing = {x for a, b in s.missing_seqs() for x in range(a, b + 1)}
            assert missing == full - seen


def test_threads(store: RunStore) -> None:
    def work(base: int) -> None:
        for k in range(20):
            store.add([sample(base + k)], [])

    ts = [threading.Thread(target=work, args=(1000 * n,)) for n in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert store.count() == (80, 0)


def test_meta(store: RunStore) -> None:
    store.set_meta("started_at", "2024-05-01T10:00:00+00:00")
    store.set_meta("calibration", {"ranges": [1, 2]})
    store.set_meta("cell", "thick-dense")
    meta = store.meta()
    assert meta["started_at"] == "2024-05-01T10:00:00+00:00"
    assert meta["calibration"] == {"ranges": [1, 2]}
    assert meta["cell"] == "thick-dense"
    store.set_meta("reference_offset_v", 0.0)
    store.add([sample(1, v=0.3)], [])
    assert store._con.execute("SELECT we_v FROM samples").fetchone()[0] == pytest.approx(0.3)


def test_closed_store(store: RunStore) -> None:
    store.close()
    store.close()
    with pytest.raises(ValueError, match="closed"):
        store.add([sample(1)], [])


# ---- full disk ------------------------------------------------------------------------------


def test_full_disk_keeps_committed_rows(store: RunStore) -> None:
    store.add([sample(i) for i in range(200)], [event(200)])
    before = store._con.execute("SELECT * FROM samples ORDER BY seq").fetchall()
    pages = store._con.execute("PRAGMA page_count").fetchone()[0]
    store._con.execute(f"PRAGMA max_page_count = {pages + 1}")  # forces SQLITE_FULL
    with pytest.raises(StoreFullError) as ei:
        store.add([sample(i) for i in range(201, 20_000)], [event(20_000)])
    err = ei.value
    assert isinstance(err, OSError)
    assert err.errno == errno.ENOSPC
    msg = str(err)
    assert str(store.path) in msg
    assert "full" in msg and "nothing already stored is lost" in msg
    assert "last stored seq 200" in msg
    # everything committed before is intact, nothing of the failed batch is there
    assert store._con.execute("SELECT * FROM samples ORDER BY seq").fetchall() == before
    assert store.count() == (200, 1)
    assert store._con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # once space is back, logging resumes
    store._con.execute("PRAGMA max_page_count = 1073741823")
    store.add([sample(i) for i in range(201, 300)], [])
    assert store.count() == (299, 1)
    assert store.missing_seqs() == []


def test_full_disk_on_set_meta(store: RunStore) -> None:
    pages = store._con.execute("PRAGMA page_count").fetchone()[0]
    store._con.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(StoreFullError, match="nothing already stored is lost"):
        store.set_meta("calibration", "x" * 100_000)
    assert "calibration" not in store.meta()
