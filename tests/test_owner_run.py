"""Issue 13's criterion for a port with one opener: while ``sicell run`` logs an emulated board (a
subprocess), 100 rounds of ``sicell status`` + ``pause`` + ``continue`` from a second "terminal"
(click's CliRunner here, and a few rounds as real ``python -m sicell.cli`` processes) all answer
correctly, through the run's control socket; the logging session then reports 0 reconnects, 0
bad frames and 0 records lost (a REPLAY that heals a late record on a loaded machine is the
lossless path, not a fight), every pause and resume is in the database, and the pauses' 0 A
boundaries leave the capacity what the board counted with the relay closed (one lithiation half-
cycle)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sicell.analysis.halfcycles import half_cycles
from sicell.cli import cli
from sicell.client import Board
from sicell.emulator import launcher
from sicell.errors import EXIT_ERROR, EXIT_STOPPED, PortOwnedError
from sicell.owner import RemoteBoard, owner_of
from sicell.protocol import messages as M
from sicell.rundata import load_run

from tests.emuhelp import wait_for
from tests.mputil import needs_mp
from tests.steerhelp import (
    CURRENT_A,
    LINK_CLEAN,
    PROCESS_ROUNDS,
    ROUNDS,
    cli_in_process,
    long_cc_toml,
    steer_rounds,
)

LONG_TOML = long_cc_toml("owner-long", "In-Li")


@pytest.fixture
def url(tmp_path: Path, rt: Path) -> Iterator[str]:
    """A private emulated RC board paced to the wall clock, shut down at the end."""
    board = f"own-{os.getpid()}-{re.sub(r'[^A-Za-z0-9.-]+', '-', tmp_path.name)[-20:]}"
    yield f"emu://rc?board={board}&realtime=1&linger=5"
    info = launcher.find_emulator(board, rt)
    if info is not None:
        launcher.EmulatorHandle(info).shutdown(timeout=10)


def _running(url: str) -> bool:
    remote = RemoteBoard.connect(url)
    if remote is None:
        return False
    with remote:
        return remote.status().state == M.ST_RUNNING


@needs_mp
def test_a_second_terminal_steers_a_logging_run_through_its_owner(tmp_path: Path, url: str) -> None:
    sched = tmp_path / "long.toml"
    sched.write_text(LONG_TOML)
    db = tmp_path / "run.db"
    log = tmp_path / "run.out"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sicell.cli", "run", str(sched), "--port", url],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env={**os.environ, "COLUMNS": "200"},
        )
    try:
        wait_for(lambda: proc.poll() is not None or _running(url), 90, "the run to stream")
        assert proc.poll() is None, log.read_text()
        owner = owner_of(url)
        assert owner is not None and owner.pid == proc.pid and owner.kind == "run"
        # nobody else opens the port: this process is refused, `boards` names the owner
        with pytest.raises(PortOwnedError, match=rf"in use by `sicell run` \(pid {proc.pid},"):
            Board.open(url)
        boards = CliRunner(env={"COLUMNS": "200"}).invoke(cli, ["boards"])
        assert f"sicell run (pid {proc.pid})" in boards.output, boards.output
        calibrate = cli_in_process("calibrate", "--port", url)
        assert calibrate.exit_code == EXIT_ERROR
        assert calibrate.output.count("\n") == 1 and "calibrate after the run ends" in (
            calibrate.output
        )

        answers = steer_rounds(url)
        assert answers == ROUNDS + PROCESS_ROUNDS

        stop = cli_in_process("stop", "--port", url, "--yes")
        assert stop.exit_code == 0, stop.output
        assert re.fullmatch(
            rf"{re.escape(url)}: run [0-9a-f]{{8}} stopped \(board is stopped\)\n", stop.output
        ), stop.output
        assert proc.wait(60) == EXIT_STOPPED, log.read_text()
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
    text = log.read_text()
    assert LINK_CLEAN.search(text), text
    assert "each exactly once" in text, text
    assert owner_of(url) is None  # the claim went with the session

    (db,) = tmp_path.glob("long-*.db")
    run = load_run(db)
    names = [e.name for e in run.events]
    pauses = ROUNDS + PROCESS_ROUNDS
    assert names.count("paused") == pauses and names.count("resumed") == pauses
    assert names.count("stopped") == 1
    # the capacity is the board's count with the relay closed: one lithiation half-cycle, of
    # the set current over the step's time less the pauses
    (hc,) = half_cycles(run)
    assert (hc.kind, hc.cycle) == ("lith", 1)
    t = {n: [e.t_s for e in run.events if e.name == n] for n in ("paused", "resumed")}
    start = next(e.t_s for e in run.events if e.name == "step_start")
    end = next(e.t_s for e in run.events if e.name == "stopped")
    relay_closed_s = (
        end - start - sum(r - p for p, r in zip(t["paused"], t["resumed"], strict=True))
    )
    # (the board counts charge and stamps events on its tick grid: a second of slack)
    off_s = (hc.capacity_ah - CURRENT_A * relay_closed_s / 3600) / (CURRENT_A / 3600)
    assert abs(off_s) < 1.0, f"capacity off by {off_s:.3f} s of current in {relay_closed_s} s"
