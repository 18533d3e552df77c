"""An idle emulated board costs (next to) no CPU; the launcher's automatic linger follows the
board's run state; the board reports its cell's history.

The CPU test measures the processes' CPU time (utime + stime from /proc) over a window of wall
time and compares it to a generous bound: it never asserts on wall-clock speed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from sicell.emulator.board import VtimeScanner
from sicell.emulator.launcher import Launcher
from sicell.emulator.options import (
    AUTO_LINGER,
    IDLE_LINGER_S,
    RESUME_LINGER_S,
    EmulatorOptions,
)
from sicell.progress import NullDisplay
from sicell.urlhandler.protocol_emu import history_note, parse_url

from tests.emuhelp import open_port, wait_for

WINDOW_S = 4.0  # CPU time is summed over this much wall time
IDLE_CPU_BOUND = 0.05  # fraction of one core, launcher + board together

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_share(pids: list[int]) -> float:
    """CPU seconds the processes used per wall second over WINDOW_S."""
    c0 = sum(_cpu_s(p) for p in pids)
    t0 = time.monotonic()
    time.sleep(WINDOW_S)  # the measurement window itself, not a synchronisation
    c1 = sum(_cpu_s(p) for p in pids)
    return (c1 - c0) / (time.monotonic() - t0)


def test_an_idle_board_waits_in_wall_time(emu: Any) -> None:
    h = emu("thin-porous", entry=None)
    c = h.control
    # the board logged its engine's state: the firmware booted and ticks
    wait_for(lambda: c.status()["run_state"] == "IDLE", timeout=30, what="engine idle")
    wait_for(lambda: c.status()["board_idle"], timeout=30, what="board waiting in wall time")
    pids = [h.pid, int(c.status()["board_pid"])]
    no_host = _cpu_share(pids)
    assert no_host < IDLE_CPU_BOUND, f"idle board without a host used {no_host:.1%} of a core"
    # a host attached but silent: still idle
    fd = open_port(h.pty)
    try:
        wait_for(lambda: c.status()["host_attached"], what="host attached")
        silent_host = _cpu_share(pids)
    finally:
        os.close(fd)
    assert silent_host < IDLE_CPU_BOUND, f"idle board, silent host: {silent_host:.1%}"
    print(f"idle CPU, launcher + board: no host {no_host:.2%}, silent host {silent_host:.2%}")
    assert c.status()["run_state"] == "IDLE"
    assert c.status()["cell_history"]["cycles"] == 0


# a short lithiation and delithiation of the porous film, potentials vs the In-Li counter
FILM_TOML = """
name = "idle-after-run"
vs = "cell"
[reference]
electrode = "In-Li"
[safety]
v_min = -1.9
v_max = 1.9
[recording]
dt_s = 5
dv_mv = 5
[[step]]
kind = "cc"
direction = "lithiation"
current_ua = 20
duration_s = 600
[[step]]
kind = "cc"
direction = "delithiation"
current_ua = 20
duration_s = 300
"""


def test_a_finished_run_leaves_an_idle_board_with_history(tmp_path: Path, rt: Path) -> None:
    from sicell.emulator.handle import EmulatorHandle
    from sicell.emulator.registry import find_emulator
    from sicell.schedule import parse_schedule
    from sicell.session import RunSession

    board = "idle-after-run"
    url = f"emu://thin-porous?board={board}&linger=60"
    try:
        summary = RunSession.new(parse_schedule(FILM_TOML), url, tmp_path / "r.db").run()
        assert summary.state == "done"
        info = find_emulator(board, rt)
        assert info is not None
        h = EmulatorHandle(info)
        c = h.control
        wait_for(lambda: c.status()["run_state"] == "DONE", timeout=10, what="run state DONE")
        # the host's last bytes keep the board racing for idle.QUIET_MS; then it waits
        wait_for(
            lambda: not c.status()["host_attached"] and c.status()["board_idle"],
            timeout=30,
            what="host gone and board waiting in wall time",
        )
        st = c.status()
        hist = st["cell_history"]
        assert hist["lith_mah"] > 0 and hist["delith_mah"] > 0
        assert history_note(st) is not None  # what `sicell run` says on reuse
        share = _cpu_share([h.pid, int(st["board_pid"])])
        print(f"idle CPU after a finished run: {share:.2%}")
        assert share < IDLE_CPU_BOUND, f"board after a finished run used {share:.1%} of a core"
        # the next run on this board says first that its cell is not pristine; fresh=1 resets it
        for query, said in (("", True), ("&fresh=1", False)):
            notes = _Notes()
            RunSession.new(
                parse_schedule(FILM_TOML),
                url + query,
                tmp_path / f"again{len(query)}.db",
                display=notes,
            ).run()
            assert notes.lines, "the run said nothing"
            first = notes.lines[0]
            assert ("has history" in first) is said, (query, first)
            assert ("started on" in first) is not said, (query, first)
    finally:
        info = find_emulator(board, rt)
        if info is not None:
            EmulatorHandle(info).shutdown(timeout=10)


class _Notes(NullDisplay):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def note(self, board: str, text: str) -> None:
        self.lines.append(text)


def _launcher(tmp_path: Path, linger: float) -> Launcher:
    opts = EmulatorOptions(cell="rc", board="linger-test", linger=linger, runtime=str(tmp_path))
    return Launcher(opts, print_fn=lambda *a: None)


def test_auto_linger_follows_the_run(tmp_path: Path) -> None:
    la = _launcher(tmp_path, AUTO_LINGER)
    r, sc = la.relay, la.proc.scanner
    r.last_detach = 1000.0
    assert la.linger_end() == 1000.0 + IDLE_LINGER_S  # no run: a minute after the host left
    for state in ("RUNNING", "PAUSED", "HOLD", "INTERRUPTED"):
        sc.run_state = state
        assert la.linger_end() is None, state  # a run goes on: the board stays
    r.attached = False
    sc.run_state = "RUNNING"
    la._board_state(1500.0)
    sc.run_state = "DONE"
    la._board_state(2000.0)  # the run ended with no host attached: kept for --resume
    assert la.linger_end() == 2000.0 + RESUME_LINGER_S
    r.attach()
    la.unclaimed_since = None  # what _read_host does when a host attaches
    assert la.linger_end() is None
    r.detach(3000.0)
    assert la.linger_end() == 3000.0 + IDLE_LINGER_S
    fixed = _launcher(tmp_path, 7.0)
    fixed.relay.last_detach = 10.0
    fixed.proc.scanner.run_state = "RUNNING"
    assert fixed.linger_end() == 17.0  # an explicit linger holds whatever the board does
    never = _launcher(tmp_path, 0.0)
    assert never.linger_end() is None


def test_scanner_reads_run_state_and_history() -> None:
    s = VtimeScanner()
    s.feed(b"emu: t=1.5 boot 1 cause=PWRON_RESET\nemu: t=2.0 run state=RUN")
    assert s.run_state is None and s.vtime == 1.5
    s.feed(b"NING cell cycles=3 lith_mah=1.25 delith_mah=1.2 cap=0.97\n")
    assert s.run_state == "RUNNING" and s.vtime == 2.0
    assert s.cell_history == {"cycles": 3.0, "lith_mah": 1.25, "delith_mah": 1.2, "cap": 0.97}
    assert not s.idle
    s.feed(b"emu: t=9.0 idle: waiting in wall time\n")
    assert s.idle
    s.feed(b"emu: t=9.5 active: host traffic, virtual time races\n")
    assert not s.idle
    s.feed(b"emu: t=9.6 idle: waiting in wall time\nemu: t=9.7 run state=RUNNING cell cycles=3\n")
    assert not s.idle and s.run_state == "RUNNING"  # a state line: racing until it says idle


def test_fresh_restarts_the_board_and_clears_its_run_state(emu: Any, standin: str) -> None:
    from sicell.emulator.handle import EmulatorHandle
    from sicell.urlhandler.protocol_emu import open_emulator

    first = emu("rc", board="fresh1")
    flash = Path(first.info["flash_dir"])
    (flash / "runstate.json").write_text("{}")
    (flash / "calibration.json").write_text("{}")
    h = open_emulator(parse_url(f"emu://rc?board=fresh1&fresh=1&linger=60&entry={standin}"))
    try:
        assert h.started and h.pid != first.pid
        assert not first.alive()
        assert not (flash / "runstate.json").exists()  # no interrupted run on a fresh board
        assert (flash / "calibration.json").exists()  # the calibration stays
    finally:
        EmulatorHandle(h.info).shutdown(timeout=5)


def test_history_note_and_fresh_option() -> None:
    assert history_note({"cell_history": {"cycles": 0, "lith_mah": 0.0}}) is None
    assert history_note({}) is None
    note = history_note(
        {
            "board": "p1",
            "cell": "thin-porous",
            "cell_history": {"cycles": 3, "lith_mah": 1.5, "delith_mah": 1.4, "cap": 0.98},
        }
    )
    assert note is not None
    assert "board p1 has history: 3 cycle(s)" in note and "fresh=1" in note
    assert parse_url("emu://thin-porous?fresh=1").fresh is True
    assert parse_url("emu://thin-porous").fresh is False
    assert parse_url("emu://thin-porous?linger=-1").linger == AUTO_LINGER
