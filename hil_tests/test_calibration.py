"""Calibration round trip (CAL_SET, CAL_SAVE, reset, CAL_GET returns it) and the flashing round
trip where the rig allows it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sicell.client import Board, BoardError, CalEntry
from sicell.protocol import messages as M
from sicell.protocol.framing import PROTO_MAJOR
from sicell.transport import TransportError

from hil_tests.conftest import Dut, Target, shutdown_emulator
from hil_tests.rigguard import (
    CalibrationGuard,
    guarded_calibration,
    read_calibration,
    reopen,
    restore_pending,
)


def _bogus(before: dict[tuple[int, int], CalEntry]) -> dict[tuple[int, int], CalEntry]:
    """Entries unlike any real calibration, inside what the board accepts (gain within 10 %)."""
    return {
        key: CalEntry(
            key[0], key[1], 100 * (key[0] + 1) - 37 * key[1], 1_000_000 + 250 * key[0] - 90
        )
        for key in before
    }


@pytest.fixture
def guard_dir(request: pytest.FixtureRequest) -> Path:
    """Where the rig guard keeps its restore markers (the pytest cache)."""
    return Path(request.config.cache.mkdir("sicell-hil"))


def test_calibration_round_trip(dut: Dut, guard_dir: Path) -> None:
    """CAL_SET, CAL_SAVE, RESET: the board comes back (a real USB port goes away and returns)
    reporting a soft reset, with the saved calibration; the rig's own calibration is put back
    afterwards, whatever happens."""
    board = Board.open(dut.port, hello_timeout=20.0)
    try:
        with guarded_calibration(dut.port, board, guard_dir) as g:
            assert g.before, "the board reports no calibration entries"
            assert g.marker.exists(), "no restore marker written before the change"
            want = _bogus(g.before)
            for e in want.values():
                board.cal_set(e)
            assert read_calibration(board) == want, "CAL_GET does not return what CAL_SET applied"
            board.cal_save()
            board.reset()
            board.close()  # a reset ends the USB link: a new connection, as the host makes one
            board = reopen(dut.port, g.board_id)
            assert board.info is not None
            assert board.info.reset_cause == M.RC_SOFT, board.info.reset_cause_name
            after = read_calibration(board)
            diff = {k: (want[k], after.get(k)) for k in want if after.get(k) != want[k]}
            assert not diff, f"calibration lost across the reset: {diff}"
        assert read_calibration(board) == g.before
        assert not g.marker.exists()
    finally:
        board.close()


@pytest.mark.emulator_only
def test_link_killed_mid_round_trip_leaves_the_calibration(dut: Dut, guard_dir: Path) -> None:
    """The USB link dies after a bogus calibration was saved: the guard reconnects once the
    board is back and restores the calibration exactly."""
    board = Board.open(dut.port, hello_timeout=20.0)
    guard = CalibrationGuard(dut.port, board, guard_dir)
    killed = False
    try:
        for e in _bogus(guard.before).values():
            board.cal_set(e)
        board.cal_save()
        dut.control().unplug(1.0, mode="hangup")
        killed = True
        with pytest.raises((TransportError, BoardError)):
            for _ in range(50):  # the hangup reaches this link within a few requests
                board.cal_get(0, 0)
    finally:
        guard.restore(board)
        board.close()
    assert killed
    assert not guard.marker.exists()
    with reopen(dut.port, guard.board_id) as b:
        assert read_calibration(b) == guard.before


@pytest.mark.emulator_only
def test_an_interrupted_restore_is_finished_by_the_next_run(dut: Dut, guard_dir: Path) -> None:
    """A marker left by a run that died before restoring: the next session's
    ``restore_pending`` puts the calibration back and removes the marker."""
    with Board.open(dut.port, hello_timeout=20.0) as board:
        guard = CalibrationGuard(dut.port, board, guard_dir)
        for e in _bogus(guard.before).values():
            board.cal_set(e)
        board.cal_save()
    said: list[str] = []
    assert restore_pending(dut.port, guard_dir, said.append) == 1  # (the test run "died")
    assert not guard.marker.exists() and said
    with reopen(dut.port, guard.board_id) as b:
        assert read_calibration(b) == guard.before
    assert restore_pending(dut.port, guard_dir, said.append) == 0


def test_calibration_refuses_absurd_values(module_board: Board) -> None:
    """A gain beyond +-10 % of unity or a range the board lacks is NACKed, not applied."""
    board = module_board
    assert board.info is not None
    old = board.cal_get(0, 0)
    for bad in (
        CalEntry(0, 0, 0, 2_000_000),
        CalEntry(0, 0, 0, 0),
        CalEntry(board.info.n_ranges, 0, 0, 1_000_000),
        CalEntry(0, 7, 0, 1_000_000),
    ):
        with pytest.raises(BoardError):
            board.cal_set(bad)
    assert board.cal_get(0, 0) == old
    board.ping()


def _sicell() -> list[str]:
    exe = Path(sys.executable).with_name("sicell")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("sicell")
    return [found] if found else [sys.executable, "-m", "sicell"]


def test_flash_round_trip(target: Target, dut: Dut, tmp_path: Path) -> None:
    """`sicell flash` writes the firmware, the board comes back (its USB port re-enumerates)
    speaking the protocol, reports the version the host ships and a soft reset. On the
    emulator: a fresh ``flashed=1`` board (MicroPython with an empty flash, as out of the box)."""
    port = dut.port
    board_id = None
    if not target.hardware:
        board_id = target.new_board_id("flash")
        target.started.append(board_id)
        port = target.emu_url(board_id, flashed=1)
    elif not target.rig.flash_enabled:
        pytest.skip("flashing is off for this rig ([flash] enabled = false in the rig file)")
    try:
        p = subprocess.run(
            [*_sicell(), "flash", "--port", port],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert p.returncode == 0, f"sicell flash failed:\n{p.stdout[-3000:]}{p.stderr[-3000:]}"
        with Board.open(port, hello_timeout=30.0) as b:
            assert b.info is not None
            assert b.info.proto_major == PROTO_MAJOR
            assert b.info.reset_cause == M.RC_SOFT, b.info.reset_cause_name  # the host asked
            b.ping()
    finally:
        if board_id is not None:
            shutdown_emulator(board_id)


def _micropython() -> list[str]:
    exe = Path(sys.executable).with_name("micropython")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("micropython")
    return [found] if found else [sys.executable, "-m", "micropython_unix"]


def test_flash_image_compiles_and_verifies(target: Target, tmp_path: Path) -> None:
    """Without a board: `sicell flash`'s staging (mpy-cross) and its board-side SHA-256 check
    (the script mpremote runs, here under the unix port in the staged flash image), and a
    damaged file caught by it. (That the staged image boots is what every emulated board in
    this suite does: the launcher stages the firmware with ``sicell.flash.stage``.)"""
    if target.hardware:
        pytest.skip("board-less variant; test_flash_round_trip covers the rig")
    from sicell import flash

    img = tmp_path / "img"
    files = flash.stage(img, compile=True)
    assert any(f.remote.endswith(".mpy") for f in files), "nothing was compiled"
    assert any(f.remote == "main.py" for f in files)
    assert not any(f.remote.endswith("calibration.json") for f in files)

    def board_side_hashes() -> dict[str, str]:
        script = flash.VERIFY_SCRIPT.format(paths=[f.remote for f in files])
        p = subprocess.run(
            [*_micropython(), "-c", script], cwd=img, capture_output=True, text=True, timeout=60
        )
        assert p.returncode == 0, p.stderr
        got = {}
        for line in p.stdout.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "SHA":
                got[parts[1]] = parts[2]
        return got

    assert flash.check_hashes(files, board_side_hashes()) == []
    victim = next(f for f in files if f.remote.endswith(".mpy"))
    data = bytearray(victim.local.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.local.write_bytes(bytes(data))
    assert flash.check_hashes(files, board_side_hashes()) == [victim.remote]
    data[len(data) // 2] ^= 0x01
    victim.local.write_bytes(bytes(data))
