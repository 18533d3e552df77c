"""Sessions: every record exactly once in the database, ACK never ahead of the disk.

First against the scripted fake board (faults on demand: drops, duplicates, reordering, unplug,
a host that goes away and comes back), then end to end against the emulator running the real
firmware (``emu://rc``), through the Python API and the ``sicell`` command.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sicell import schema
from sicell.emulator import launcher
from sicell.protocol import messages as M
from sicell.schedule import parse_schedule
from sicell.session import (
    BoardBusyError,
    Detached,
    RunMismatchError,
    RunSession,
    SessionOptions,
    StoreFull,
    run_many,
)

from tests.fakeboard import FAKE_TOML, FakeBoard

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("sicell.store") is None,
    reason="sicell.store (the run database writer) is not there yet",
)


FAST = SessionOptions(
    batch_records=50,
    batch_interval_s=0.05,
    gap_wait_s=0.1,
    replay_retry_s=0.3,
    status_interval_s=0.3,
    reconnect_initial_s=0.05,
    reconnect_max_s=0.3,
    reconnect_give_up_s=20.0,
    hello_timeout_s=2.0,
    request_timeout_s=0.5,
)


def _db_seqs(db: Path) -> tuple[list[int], list[int]]:
    con = schema.connect_readonly(db)
    try:
        s = [r[0] for r in con.execute("SELECT seq FROM samples ORDER BY seq")]
        e = [r[0] for r in con.execute("SELECT seq FROM events ORDER BY seq")]
    finally:
        con.close()
    return s, e


def _all_seqs(db: Path) -> list[int]:
    s, e = _db_seqs(db)
    return sorted(s + e)


class AckSpy:
    """Checks, as each ACK reaches the board, that the database already holds what it covers."""

    def __init__(self, db: Path, first_seq: int = 1) -> None:
        self.db = db
        self.first_seq = first_seq
        self.violations: list[str] = []
        self.checked = 0

    def __call__(self, seq: int) -> None:
        if not self.db.exists():
            self.violations.append(f"ACK {seq} before the database exists")
            return
        con = schema.connect_readonly(self.db)
        try:
            n = 0
            for table in ("samples", "events"):
                n += con.execute(
                    f"SELECT COUNT(*) FROM {table} WHERE seq BETWEEN ? AND ?",
                    (self.first_seq, seq),
                ).fetchone()[0]
        finally:
            con.close()
        self.checked += 1
        if n != seq - self.first_seq + 1:
            self.violations.append(f"ACK {seq} but only {n} records stored")


def _fake_with_spy(db: Path, **kw: Any) -> tuple[FakeBoard, AckSpy, str]:
    fb = FakeBoard(**kw)
    spy = AckSpy(db, kw.get("first_seq", 1))
    fb.ack_hook = spy
    return fb, spy, fb.serve_tcp()


def _expect_complete(db: Path, n_samples: int, first_seq: int = 1) -> None:
    s, e = _db_seqs(db)
    allseq = sorted(s + e)
    assert len(allseq) == len(set(allseq)), "duplicate seq in the database"
    assert allseq == list(range(first_seq, first_seq + n_samples + 2))
    assert len(s) == n_samples
    assert len(e) == 2  # run start, run end


# ---- fake board -----------------------------------------------------------------------------
def test_clean_run_every_seq_once(tmp_path: Path, boards: list[FakeBoard]) -> None:
    db = tmp_path / "run.db"
    fb, spy, url = _fake_with_spy(db, n_samples=400)
    boards.append(fb)
    s = RunSession.new(parse_schedule(FAKE_TOML), url, db, options=FAST)
    summary = s.run()
    _expect_complete(db, 400)
    assert summary.samples == 400 and summary.events == 2
    assert summary.state == "done" and summary.end_reason == "complete"
    assert not spy.violations and spy.checked > 0
    assert fb.acked == 402  # everything freed on the board
    # the vs-Li column is the cell voltage plus the In-Li offset
    con = sqlite3.connect(db)
    rows = con.execute("SELECT voltage_v, we_v FROM samples").fetchall()
    con.close()
    assert all(abs(we - v - 0.62) < 1e-9 for v, we in rows)


def test_first_seq_anywhere(tmp_path: Path, boards: list[FakeBoard]) -> None:
    """The board's seq counter need not start at 1 (it may continue across runs)."""
    db = tmp_path / "run.db"
    fb, spy, url = _fake_with_spy(db, n_samples=120, first_seq=70_000)
    boards.append(fb)
    RunSession.new(parse_schedule(FAKE_TOML), url, db, options=FAST).run()
    _expect_complete(db, 120, first_seq=70_000)
    assert not spy.violations


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_drops_duplicates_reordering(tmp_path: Path, boards: list[FakeBoard], seed: int) -> None:
    db = tmp_path / "run.db"
    fb, spy, url = _fake_with_spy(db, n_samples=600, drop=0.05, dup=0.05, reorder=0.05, seed=seed)
    boards.append(fb)
    summary = RunSession.new(parse_schedule(FAKE_TOML), url, db, options=FAST).run()
    _expect_complete(db, 600)
    assert summary.replays > 0
    assert not spy.violations


def test_unplug_and_reconnect(tmp_path: Path, boards: list[FakeBoard]) -> None:
    db = tmp_path / "run.db"
    fb, spy, url = _fake_with_spy(db, n_samples=800, record_interval=0.002)
    boards.append(fb)
    s = RunSession.new(parse_schedule(FAKE_TOML), url, db, options=FAST)

    def unplug_twice() -> None:
        for k in (1, 2):
            while fb.connections < k or fb.samples_made < 200 * k:
                time.sleep(0.01)
            fb.unplug()
            time.sleep(0.3)  # records keep coming while nobody listens

    th = threading.Thread(target=unplug_twice, daemon=True)
    th.start()
    summary = s.run()
    th.join(5)
    _expect_complete(db, 800)
    assert summary.reconnects >= 2
    assert fb.connections >= 3
    assert not spy.violations


def test_host_restart_resumes_without_loss(tmp_path: Path, boards: list[FakeBoard]) -> None:
    db = tmp_path / "run.db"
    fb, spy, url = _fake_with_spy(db, n_samples=600, record_interval=0.002)
    boards.append(fb)
    first = RunSession.new(parse_schedule(FAKE_TOML), url, db, options=FAST)

    def detach() -> None:
        while fb.samples_made < 150:
            time.sleep(0.01)
        first.request_stop()

    threading.Thread(target=detach, daemon=True).start()
    with pytest.raises(Detached, match="--resume"):
        first.run()
    stored_before = len(_all_seqs(db))
    assert 0 < stored_before < 602
    time.sleep(0.3)  # the board runs on alone
    second = RunSession.resume(db, url, options=FAST)
    summary = second.run()
    _expect_complete(db, 600)
    assert summary.samples == 600
    assert not spy.violations


def test_resume_in_a_directory_with_uri_characters(tmp_path: Path, boards: list[FakeBoard]) -> None:
    """``#``, ``?`` and a space in the folder name: the run is counted and resumed from the
    right file, and no stray file appears next to it."""
    d = tmp_path / "urit#1 ?x"
    d.mkdir()
    db = d / "run.db"
    fb = FakeBoard(n_samples=300, record_interval=0.002)
    boards.append(fb)
    url = fb.serve_tcp()
    first = RunSession.new(parse_schedule(FAKE_TOML), url, db, options=FAST)

    def detach() -> None:
        while fb.samples_made < 100:
            time.sleep(0.01)
        first.request_stop()

    threading.Thread(target=detach, daemon=True).start()
    with pytest.raises(Detached):
        first.run()
    stored = len(_all_seqs(db))
    assert stored > 0
    second = RunSession.resume(db, url, options=FAST)
    summary = second.run()
    _expect_complete(db, 300)
    assert summary.samples == 300 and summary.events == 2  # those stored before count too
    assert summary.first_seq == 1 and summary.last_seq == 302
    assert sorted(p.name for p in tmp_path.iterdir()) == ["urit#1 ?x"]
    assert sorted(p.name for p in d.iterdir() if not p.name.startswith("run.db")) == []


def test_refuses_board_with_a_run(tmp_path: Path, boards: list[FakeBoard]) -> None:
    fb = FakeBoard(state=M.ST_RUNNING, run_id=0xABCDEF01)
    boards.append(fb)
    url = fb.serve_tcp()
    with pytest.raises(BoardBusyError, match="abcdef01"):
        RunSession.new(parse_schedule(FAKE_TOML), url, tmp_path / "x.db", options=FAST).run()
    assert not (tmp_path / "x.db").exists()


def test_resume_checks_run_id(tmp_path: Path, boards: list[FakeBoard]) -> None:
    db = tmp_path / "run.db"
    fb = FakeBoard(n_samples=50)
    boards.append(fb)
    RunSession.new(parse_schedule(FAKE_TOML), fb.serve_tcp(), db, options=FAST).run()
    other = FakeBoard(state=M.ST_RUNNING, run_id=0x12345678)
    boards.append(other)
    with pytest.raises(RunMismatchError, match="12345678"):
        RunSession.resume(db, other.serve_tcp(), options=FAST).run()


def test_existing_db_not_overwritten(tmp_path: Path, boards: list[FakeBoard]) -> None:
    db = tmp_path / "run.db"
    db.write_bytes(b"precious")
    fb = FakeBoard()
    boards.append(fb)
    from sicell.session import SessionError

    with pytest.raises(SessionError, match="exists"):
        RunSession.new(parse_schedule(FAKE_TOML), fb.serve_tcp(), db, options=FAST).run()
    assert db.read_bytes() == b"precious"


# ---- Ctrl-C: the message says what is true -------------------------------------------------
def _interrupt_on(
    monkeypatch: pytest.MonkeyPatch, msg_type: int, *, after: bool = False
) -> list[int]:
    """Raise KeyboardInterrupt (as a Ctrl-C would) at the first request of ``msg_type``: before
    it goes out, or once the board has answered it (``after``). Returns the types requested."""
    from sicell.client import Board

    seen: list[int] = []
    real_request, real_start = Board.request, Board.start

    def request(self: Board, t: int, *a: Any, **kw: Any) -> Any:
        seen.append(t)
        if t == msg_type and not after:
            raise KeyboardInterrupt
        return real_request(self, t, *a, **kw)

    def start(self: Board, run_id: int) -> None:
        seen.append(M.START)
        if msg_type == M.START and not after:
            raise KeyboardInterrupt
        real_start(self, run_id)
        if msg_type == M.START:
            raise KeyboardInterrupt

    monkeypatch.setattr(Board, "request", request)
    monkeypatch.setattr(Board, "start", start)
    return seen


@pytest.mark.parametrize("when", ["SCHED_CHUNK", "START"])
def test_ctrl_c_before_start_leaves_nothing(
    tmp_path: Path, boards: list[FakeBoard], monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """Ctrl-C during the upload, or while START is about to go out: nothing runs, the new
    database is gone, and the message does not send the user to a file that does not exist."""
    db = tmp_path / "run.db"
    fb = FakeBoard(n_samples=100)
    boards.append(fb)
    url = fb.serve_tcp()
    seen = _interrupt_on(monkeypatch, getattr(M, when))
    with pytest.raises(Detached) as ei:
        RunSession.new(parse_schedule(FAKE_TOML), url, db, options=FAST).run()
    text = str(ei.value)
    assert "before the run started" in text and "nothing runs" in text
    assert "keeps running" not in text and "--resume" not in text
    assert ei.value.exit_code == 130
    assert getattr(M, when) in seen
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no database, no journal
    assert fb.state != M.ST_RUNNING and not any(t == M.START for t, _, _ in fb.received)


def test_stop_requested_during_upload_does_not_start(
    tmp_path: Path, boards: list[FakeBoard]
) -> None:
    """``request_stop`` (Ctrl-C with several boards) before START: the run is not started."""
    db = tmp_path / "run.db"
    fb = FakeBoard(n_samples=50)
    boards.append(fb)
    s = RunSession.new(parse_schedule(FAKE_TOML), fb.serve_tcp(), db, options=FAST)
    s.request_stop()
    with pytest.raises(Detached, match="before the run started"):
        s.run()
    assert not db.exists() and fb.state != M.ST_RUNNING


def test_ctrl_c_after_start_keeps_the_run(
    tmp_path: Path, boards: list[FakeBoard], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C the moment the board took START: the run goes on, the database stays, and the
    message's --resume picks it up with every record."""
    db = tmp_path / "run.db"
    fb = FakeBoard(n_samples=200, record_interval=0.002)
    boards.append(fb)
    url = fb.serve_tcp()
    _interrupt_on(monkeypatch, M.START, after=True)
    with pytest.raises(Detached) as ei:
        RunSession.new(parse_schedule(FAKE_TOML), url, db, options=FAST).run()
    text = str(ei.value)
    assert "keeps running" in text and f"--resume {db}" in text
    assert db.exists() and fb.state in (M.ST_RUNNING, M.ST_DONE)
    monkeypatch.undo()
    summary = RunSession.resume(db, url, options=FAST).run()
    _expect_complete(db, 200)
    assert summary.samples == 200


def test_ctrl_c_during_start_when_the_board_cannot_say(
    tmp_path: Path, boards: list[FakeBoard], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C during START and no answer to the STATUS that would settle it: the database
    stays and the message says that it is not known whether the run started."""
    from sicell.client import Board
    from sicell.errors import BoardTimeoutError

    db = tmp_path / "run.db"
    fb = FakeBoard(n_samples=50)
    boards.append(fb)
    url = fb.serve_tcp()
    seen = _interrupt_on(monkeypatch, M.START, after=True)
    real_status = Board.status

    def status(self: Board) -> Any:
        if M.START in seen:  # (before it: the open-circuit check)
            raise BoardTimeoutError("no STATUS reply")
        return real_status(self)

    monkeypatch.setattr(Board, "status", status)
    with pytest.raises(Detached) as ei:
        RunSession.new(parse_schedule(FAKE_TOML), url, db, options=FAST).run()
    text = str(ei.value)
    assert "not known" in text and f"--resume {db}" in text and f"delete {db}" in text
    assert db.exists()


def test_start_time_is_recorded(tmp_path: Path, boards: list[FakeBoard]) -> None:
    """The wall clock at START goes into the metadata (the export's Unix Time origin)."""
    db = tmp_path / "run.db"
    fb = FakeBoard(n_samples=20)
    boards.append(fb)
    before = time.time()
    RunSession.new(parse_schedule(FAKE_TOML), fb.serve_tcp(), db, options=FAST).run()
    after = time.time()
    con = schema.connect_readonly(db)
    meta = schema.read_meta(con)
    con.close()
    assert before * 1000 - 1 <= meta["start_unix_ms"] <= after * 1000 + 1
    assert 0 <= meta["start_unix_uncertainty_ms"] <= (after - before) * 1000 + 1


def test_store_full_stops_acking(
    tmp_path: Path, boards: list[FakeBoard], monkeypatch: pytest.MonkeyPatch
) -> None:
    store_mod: Any = importlib.import_module("sicell.store")

    db = tmp_path / "run.db"
    fb, spy, url = _fake_with_spy(db, n_samples=2000, record_interval=0.001)
    boards.append(fb)
    real_add = store_mod.RunStore.add
    calls = {"n": 0}

    def add(self: Any, samples: Any, events: Any) -> Any:
        calls["n"] += 1
        if calls["n"] >= 4:
            raise store_mod.StoreFullError(db, "database or disk is full")
        return real_add(self, samples, events)

    monkeypatch.setattr(store_mod.RunStore, "add", add)
    with pytest.raises(StoreFull, match="disk full") as ei:
        RunSession.new(parse_schedule(FAKE_TOML), url, db, options=FAST).run()
    assert "--resume" in str(ei.value)
    seqs = _all_seqs(db)
    assert seqs == list(range(1, len(seqs) + 1))  # a clean prefix, nothing half-written
    assert fb.acked == seqs[-1]  # never ACKed what was not stored
    assert not spy.violations
    assert fb.state == M.ST_RUNNING or fb.state == M.ST_DONE  # the board carries on


def test_lost_records_are_reported(tmp_path: Path, boards: list[FakeBoard]) -> None:
    db = tmp_path / "run.db"
    fb = FakeBoard(n_samples=300, lose=(100, 119))
    boards.append(fb)
    summary = RunSession.new(parse_schedule(FAKE_TOML), fb.serve_tcp(), db, options=FAST).run()
    seqs = _all_seqs(db)
    assert len(seqs) == len(set(seqs))
    missing = set(range(1, 303)) - set(seqs)
    assert set(range(100, 120)) <= missing
    assert len(missing) == summary.lost_seqs
    assert seqs[-1] == 302  # the run end arrived and was stored


def test_run_many_boards(tmp_path: Path, boards: list[FakeBoard]) -> None:
    sessions = []
    for k in range(3):
        fb = FakeBoard(n_samples=200 + 50 * k, drop=0.02, seed=k)
        boards.append(fb)
        sessions.append(
            RunSession.new(
                parse_schedule(FAKE_TOML),
                fb.serve_tcp(),
                tmp_path / f"b{k}.db",
                name=f"b{k}",
                options=FAST,
            )
        )
    results = run_many(sessions)
    for k, r in enumerate(results):
        assert r.error is None, r.error
        assert r.summary is not None
        _expect_complete(tmp_path / f"b{k}.db", 200 + 50 * k)


def test_summary_lines_account_for_every_missing_seq(tmp_path: Path) -> None:
    from sicell.session import RunSummary

    base = {"db_path": tmp_path / "r.db", "board": "b", "run_id": 1, "state": "done"}
    rest = {"end_reason": None, "samples": 10, "events": 2, "first_seq": 1, "last_seq": 20}
    clean = RunSummary(**base, **rest, elapsed_s=5.0)
    assert "each exactly once" in "\n".join(clean.lines())
    odd = RunSummary(
        **base,
        **rest,
        elapsed_s=5.0,
        decimated=3,
        lost_seqs=1,
        reset_skipped=4,
        cycles_error="ValueError: no samples",
    )
    text = "\n".join(odd.lines())
    assert "8 missing" in text and "1 records lost" in text
    assert "decimated by the board while no host listened: 3 records" in text
    assert "skipped at board resets: 4 seqs" in text
    assert "cycle table not available: ValueError: no samples" in text


# ---- emulator end to end --------------------------------------------------------------------
def _emulator_missing() -> str | None:
    if importlib.util.find_spec("sicell.emulator.launcher") is None:
        return "the emulator launcher (sicell.emulator.launcher) is not there yet"
    if importlib.util.find_spec("sicell.urlhandler.protocol_emu") is None:
        return "the emu:// URL handler is not there yet"
    for f in ("main.py", "engine.py", "link.py"):
        if not (ROOT / "firmware" / f).exists():
            return f"firmware/{f} is not there yet"
    if shutil.which("micropython") is None:
        return "the micropython unix port is not installed"
    if not (ROOT / "host/sicell/examples/rc-check.toml").exists():
        return "host/sicell/examples/rc-check.toml is not there yet"
    return None


emulator = pytest.mark.skipif(
    _emulator_missing() is not None, reason=str(_emulator_missing() or "")
)

RC_SHORT = ROOT / "host/sicell/examples/rc-check.toml"


@pytest.fixture
def emu_url(tmp_path: Path, rt: Path) -> Iterator[str]:
    """A private emulated RC board (own runtime directory and id), shut down at the end."""
    tag = re.sub(r"[^A-Za-z0-9.-]+", "-", tmp_path.name)[-24:]
    board = f"e2e-{os.getpid()}-{tag}"
    yield f"emu://rc?board={board}&linger=5"
    info = launcher.find_emulator(board, rt)
    if info is not None:
        launcher.EmulatorHandle(info).shutdown(timeout=10)


# A short schedule on the RC load with potentials given vs Li (In-Li counter, 0.62 V): the
# lithiation cutoff at 0.52 V vs Li is -0.10 V of cell voltage (the load settles at -0.125 V).
SHORT_TOML = """
name = "e2e-short"
vs = "Li"
[reference]
electrode = "In-Li"
[safety]
v_min = -0.3
v_max = 1.6
[recording]
dt_s = 0.5
dv_mv = 5
[[step]]
kind = "rest"
duration_s = 3
[[step]]
label = "lith"
kind = "cc"
direction = "lithiation"
current_ua = 100
until_v = 0.52
duration_s = 20
[[step]]
kind = "cc"
direction = "delithiation"
current_ua = 100
duration_s = 4
"""


@emulator
def test_emulator_run_every_seq_once(tmp_path: Path, emu_url: str) -> None:
    db = tmp_path / "rc.db"
    sch = parse_schedule(SHORT_TOML)
    summary = RunSession.new(sch, emu_url, db).run()
    seqs = _all_seqs(db)
    assert seqs, "nothing stored"
    assert len(seqs) == len(set(seqs))
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert summary.samples > 0
    assert summary.state in ("done", "tripped", "stopped")
    con = sqlite3.connect(db)
    off = float(con.execute("SELECT value FROM meta WHERE key='reference_offset_v'").fetchone()[0])
    rows = con.execute("SELECT voltage_v, we_v FROM samples").fetchall()
    meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
    con.close()
    assert off == pytest.approx(0.62)
    assert all(abs(we - (v + off)) < 1e-9 for v, we in rows)
    # the cutoff written vs Li ends the lithiation step where it says, in both columns
    con = sqlite3.connect(db)
    last = con.execute(
        "SELECT voltage_v, we_v FROM samples WHERE step = 1 ORDER BY seq DESC LIMIT 1"
    ).fetchone()
    ends = con.execute("SELECT name FROM events WHERE name = 'run_end'").fetchall()
    con.close()
    assert last is not None and len(ends) == 1
    assert last[1] == pytest.approx(0.52, abs=0.01)
    assert last[0] == pytest.approx(-0.10, abs=0.01)
    for k in ("firmware_version", "protocol_version", "board_id", "calibration", "run_id"):
        assert k in meta


@emulator
def test_cli_runner_emulator(tmp_path: Path, emu_url: str) -> None:
    from click.testing import CliRunner
    from sicell.cli import cli

    sched = tmp_path / "short.toml"
    sched.write_text(SHORT_TOML)
    db = tmp_path / "short.db"
    res = CliRunner().invoke(cli, ["run", str(sched), "--port", emu_url, "--db", str(db)])
    assert res.exit_code == 0, res.output
    assert "samples" in res.output and "each exactly once" in res.output
    seqs = _all_seqs(db)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


@emulator
def test_cli_run_subprocess(tmp_path: Path, emu_url: str) -> None:
    db = tmp_path / "cli.db"
    exe = shutil.which("sicell") or ""
    cmd = [exe] if exe else [sys.executable, "-m", "sicell.cli"]
    env = dict(os.environ)
    proc = subprocess.run(
        [*cmd, "run", str(RC_SHORT), "--port", emu_url, "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=540,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "samples" in proc.stdout
    assert "Traceback" not in proc.stderr
    seqs = _all_seqs(db)
    assert seqs and len(seqs) == len(set(seqs))


# A longer run (about 45 min of virtual time, seconds of real time) to hit with faults.
LONG_TOML = """
name = "e2e-long"
vs = "cell"
[reference]
electrode = "In-Li"
[safety]
v_min = -0.9
v_max = 0.9
[recording]
dt_s = 1
dv_mv = 5
[[step]]
label = "lith"
kind = "cc"
direction = "lithiation"
current_ua = 100
duration_s = 30
[[step]]
kind = "rest"
duration_s = 30
[[step]]
kind = "cc"
direction = "delithiation"
current_ua = 100
duration_s = 30
[[step]]
kind = "loop"
to = "lith"
count = 30
"""

E2E_OPTS = SessionOptions(
    batch_interval_s=0.1,
    status_interval_s=0.5,
    gap_wait_s=0.3,
    replay_retry_s=1.0,
    reconnect_initial_s=0.1,
    reconnect_max_s=1.0,
    reconnect_give_up_s=60.0,
)


def _rows(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        return len(_all_seqs(db))
    except sqlite3.Error:
        return 0


def _wait_rows(db: Path, n: int, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while _rows(db) < n:
        assert time.monotonic() < end, f"fewer than {n} rows after {timeout} s"
        time.sleep(0.02)


def _check_complete_run(db: Path, decimated: int = 0) -> list[int]:
    """Every seq at most once; every missing one decimated by the board (the next stored
    sample carries F_GAP) or recorded as lost, and counted as such; the run's start and end
    stored."""
    seqs = _all_seqs(db)
    assert len(seqs) == len(set(seqs)), "duplicate seq"
    missing = sorted(set(range(seqs[0], seqs[-1] + 1)) - set(seqs))
    assert len(missing) == decimated, f"{len(missing)} missing, {decimated} decimated"
    con = sqlite3.connect(db)
    flags = dict(con.execute("SELECT seq, flags FROM samples").fetchall())
    names = [r[0] for r in con.execute("SELECT name FROM events ORDER BY seq")]
    lost_meta = con.execute("SELECT value FROM meta WHERE key = 'lost_seqs'").fetchone()
    con.close()
    # seqs the link dropped and the board's ring no longer held when the host asked again:
    # sent once, so no gap flag, but recorded as lost in the run's metadata
    lost = {k for a, b in json.loads(lost_meta[0]) for k in range(a, b + 1)} if lost_meta else set()
    for s in missing:
        if s in lost:
            continue
        nxt = next(k for k in range(s + 1, seqs[-1] + 1) if k in flags)
        assert flags[nxt] & M.F_GAP, f"seq {s} missing without a gap flag on the next sample"
    assert names[0] == "run_start" and names[-1] == "run_end"
    return seqs


@emulator
def test_emulator_unplug_hangup_reconnects(tmp_path: Path, emu_url: str) -> None:
    db = tmp_path / "long.db"
    s = RunSession.new(parse_schedule(LONG_TOML), emu_url, db, options=E2E_OPTS)
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["summary"] = s.run()
        except BaseException as e:
            box["error"] = e

    th = threading.Thread(target=work, daemon=True)
    th.start()
    _wait_rows(db, 200)
    board = s.board
    assert board is not None
    board.link.ser.emulator.unplug(1.0, mode="hangup")
    th.join(300)
    assert not th.is_alive()
    assert "error" not in box, box.get("error")
    summary = box["summary"]
    assert summary.reconnects >= 1
    assert summary.state == "done"
    # a decimated seq at the head of the board's buffer answers REPLAY with E_SEQ_GONE
    _check_complete_run(db, summary.decimated + summary.lost_seqs)


@emulator
def test_emulator_host_restart_resume(tmp_path: Path, emu_url: str) -> None:
    from click.testing import CliRunner
    from sicell.cli import cli

    db = tmp_path / "long.db"
    s = RunSession.new(parse_schedule(LONG_TOML), emu_url, db, options=E2E_OPTS)

    def detach_later() -> None:
        _wait_rows(db, 150)
        s.request_stop()

    threading.Thread(target=detach_later, daemon=True).start()
    with pytest.raises(Detached):
        s.run()
    before = _rows(db)
    time.sleep(0.5)  # the board runs on, unobserved
    res = CliRunner().invoke(cli, ["run", "--resume", str(db), "--port", emu_url, "--plain"])
    assert res.exit_code == 0, res.output
    con = sqlite3.connect(db)
    meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
    con.close()
    gone = json.loads(meta.get("lost_seqs", "[]"))
    n_gone = int(meta.get("decimated_records", 0)) + sum(b - a + 1 for a, b in gone)
    seqs = _check_complete_run(db, n_gone)
    assert len(seqs) > before
    assert "reattached" in res.output


@emulator
def test_emulator_lossy_link(tmp_path: Path, emu_url: str) -> None:
    db = tmp_path / "lossy.db"
    url = emu_url + "&drop=0.0005&corrupt=0.0005&duplicate=0.0005&direction=to_host"
    sch = parse_schedule(LONG_TOML.replace("count = 30", "count = 8"))
    summary = RunSession.new(sch, url, db, options=E2E_OPTS).run()
    _check_complete_run(db, summary.decimated + summary.lost_seqs)
    assert summary.framing_errors > 0
    assert summary.replays > 0


# ---- how a run ends: the exit code and the one line that says why ----------------------------
TRIP_TOML = """
name = "e2e-trip"
vs = "cell"
[reference]
electrode = "none"                # the RC dummy: cell volts only
offset_v = 0.0
[safety]
v_min = -0.1                      # the load heads for -0.125 V at +100 uA
v_max = 1.0
i_max_ma = 1.0
debounce_s = 0.2
[recording]
dt_s = 0.5
[[step]]
kind = "rest"
duration_s = 2
[[step]]
label = "down"
kind = "cc"
direction = "lithiation"
current_ua = 100
duration_s = 30
[[step]]
kind = "rest"
duration_s = 2
"""


def _board_id(url: str) -> str:
    return url.split("board=", 1)[1].split("&", 1)[0]


@emulator
def test_exit_code_safety_trip_names_the_limit(tmp_path: Path, emu_url: str) -> None:
    """`sicell run` as a process: a trip exits 3 and the summary names limit, values, step."""
    sched = tmp_path / "trip.toml"
    sched.write_text(TRIP_TOML)
    db = tmp_path / "trip.db"
    exe = shutil.which("sicell") or ""
    cmd = [exe] if exe else [sys.executable, "-m", "sicell.cli"]
    proc = subprocess.run(
        [*cmd, "run", str(sched), "--port", emu_url, "--db", str(db), "-q"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].endswith(": tripped (safety trip)")
    m = re.fullmatch(
        r"safety trip, V min: measured (-0\.\d{4}) V cell, below the limit -0\.1000 V cell, in "
        r"step 1 \('down'\) \(beyond it for (\d+) ms, the debounce\)",
        lines[1],
    )
    assert m is not None, lines[1]
    assert float(m.group(1)) < -0.1 and int(m.group(2)) >= 200
    con = sqlite3.connect(db)
    value = con.execute("SELECT value FROM events WHERE name = 'safety_trip'").fetchone()[0]
    con.close()
    assert f"{value * 1e-6:+.4f}" == m.group(1)


@emulator
def test_exit_code_stopped_by_a_user(
    tmp_path: Path, emu_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """STOP from the session's own thread (between two polls, so no race with the link): the
    run ends stopped, and `sicell run` exits 4."""
    from click.testing import CliRunner
    from sicell.cli import cli
    from sicell.client import Status

    class StopsItsBoard(RunSession):
        stop_sent = False

        def _update_display(self, st: Status | None, *, final: bool = False) -> None:
            super()._update_display(st, final=final)
            if self.samples >= 30 and self.board is not None and not self.stop_sent:
                self.stop_sent = True
                self.board.stop()

    monkeypatch.setattr("sicell.cli.run.RunSession", StopsItsBoard)
    sched = tmp_path / "long.toml"
    sched.write_text(LONG_TOML)
    db = tmp_path / "stop.db"
    res = CliRunner().invoke(cli, ["run", str(sched), "--port", emu_url, "--db", str(db), "-q"])
    assert res.exit_code == 4, res.output
    lines = res.output.splitlines()
    assert any(ln.endswith(": stopped (stopped by host)") for ln in lines), res.output
    assert any(re.fullmatch(r"stopped by a user \(STOP\) in step \d( \('lith'\))? at t = "
                            r"\d+\.\d s", ln) for ln in lines), res.output  # fmt: skip
    _check_complete_run(db)


@emulator
def test_exit_code_board_reset(tmp_path: Path, emu_url: str, rt: Path) -> None:
    """The emulator's `reset` control in the middle of a run: the run is interrupted, the
    session ends once everything is stored, and `sicell run` exits 5 saying what to do."""
    from click.testing import CliRunner
    from sicell.cli import cli

    sched = tmp_path / "long.toml"
    sched.write_text(LONG_TOML)
    db = tmp_path / "reset.db"

    def reset_later() -> None:
        _wait_rows(db, 100)
        info = launcher.find_emulator(_board_id(emu_url), rt)
        assert info is not None
        launcher.EmulatorHandle(info).control.reset()

    th = threading.Thread(target=reset_later, daemon=True)
    th.start()
    res = CliRunner().invoke(cli, ["run", str(sched), "--port", emu_url, "--db", str(db), "-q"])
    th.join(10)
    assert res.exit_code == 5, res.output
    line = next(ln for ln in res.output.splitlines() if ln.startswith("interrupted by"))
    assert re.match(r"interrupted by a board reset \(soft reset\) in step \d", line), line
    assert "the board waits with the relay open: `sicell continue --port " in line
    assert f"sicell run --resume {db} --port " in line


@emulator
def test_refused_when_the_open_circuit_potential_is_outside_the_window(
    tmp_path: Path, emu_url: str
) -> None:
    """The RC dummy rests near 0 V cell (0.62 V vs Li with In-Li): a window of 0.7-1.5 V vs Li
    does not hold it, so nothing is uploaded or started, with exit 2."""
    from click.testing import CliRunner
    from sicell.cli import cli
    from sicell.client import Board

    text = SHORT_TOML.replace("v_min = -0.3\nv_max = 1.6", "v_min = 0.7\nv_max = 1.5")
    text = text.replace("until_v = 0.52", "until_v = 0.8")
    sched = tmp_path / "window.toml"
    sched.write_text(text)
    db = tmp_path / "never.db"
    res = CliRunner().invoke(cli, ["run", str(sched), "--port", emu_url, "--db", str(db)])
    assert res.exit_code == 2, res.output
    errs = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(errs) == 1, res.output
    m = re.search(
        r"open-circuit potential ([-+]0\.0\d{3}) V cell \((0\.6\d{3}) V vs Li\) lies below the "
        r"schedule's safety window \+0\.0800…\+0\.8800 V cell \(0\.7000…1\.5000 V vs Li\)",
        errs[0],
    )
    assert m is not None, errs[0]
    assert float(m.group(2)) == pytest.approx(float(m.group(1)) + 0.62, abs=2e-4)
    assert "nothing was started" in errs[0]
    assert not db.exists()
    with Board.open(emu_url) as b:
        assert b.status().state == M.ST_IDLE  # no schedule was even uploaded
