"""Calibration round trip (CAL_SET, CAL_SAVE, reset, CAL_GET returns it) and the flashing round
trip where the rig allows it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sicell.client import Board, BoardError, CalEntry
from sicell.protocol import messages as M
from sicell.protocol.framing import PROTO_MAJOR

from hil_tests.conftest import Dut, Target

CHANNELS = (0, 1, 2)  # voltage reading, current reading, current set point (firmware/calibration)


def _entries(board: Board) -> dict[tuple[int, int], CalEntry]:
    assert board.info is not None
    out = {}
    for r in range(board.info.n_ranges):
        for ch in CHANNELS:
            try:
                out[(r, ch)] = board.cal_get(r, ch)
            except BoardError as e:
                if ch == 2 and e.code in (M.E_RANGE, M.E_LENGTH):
                    continue  # a firmware with two channels per range
                raise
    return out


def _reopen_after_reset(board: Board, timeout: float = 30.0) -> None:
    """Soft-reset the board and handshake again on the same port."""
    board.reset()
    end = time.monotonic() + timeout
    while True:
        try:
            board.hello(timeout=3.0)
            return
        except Exception:
            if time.monotonic() > end:
                raise
            time.sleep(0.2)


def test_calibration_round_trip(module_board: Board) -> None:
    board = module_board
    before = _entries(board)
    assert before, "the board reports no calibration entries"
    want = {
        key: CalEntry(
            key[0], key[1], 100 * (key[0] + 1) - 37 * key[1], 1_000_000 + 250 * key[0] - 90
        )
        for key in before
    }
    try:
        for e in want.values():
            board.cal_set(e)
        applied = _entries(board)
        assert applied == want, "CAL_GET does not return what CAL_SET applied"
        board.cal_save()
        _reopen_after_reset(board)
        assert board.info is not None
        assert board.info.reset_cause == M.RC_SOFT, board.info.reset_cause_name
        after = _entries(board)
        diff = {k: (want[k], after.get(k)) for k in want if after.get(k) != want[k]}
        assert not diff, f"calibration lost across the reset: {diff}"
    finally:
        # leave the board as it was (a real rig keeps its calibration)
        for e in before.values():
            board.cal_set(e)
        board.cal_save()
    assert _entries(board) == before


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
    """`sicell flash` writes the firmware, the board comes back speaking the protocol and
    reports the version the host ships."""
    if not target.hardware:
        pytest.skip(
            "flashing needs a real board (the emulator runs the firmware tree directly); "
            "run with --port and [flash] enabled = true in the rig file"
        )
    if not target.rig.flash_enabled:
        pytest.skip("flashing is off for this rig ([flash] enabled = false in the rig file)")
    p = subprocess.run(
        [*_sicell(), "flash", "--port", dut.port],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, f"sicell flash failed:\n{p.stdout[-3000:]}{p.stderr[-3000:]}"
    with Board.open(dut.port, hello_timeout=30.0) as b:
        assert b.info is not None
        assert b.info.proto_major == PROTO_MAJOR
        b.ping()


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
