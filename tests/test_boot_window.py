"""The boot window: a host that talks to a board while its firmware boots (after a reset, as a
session reconnecting does) must not kill it, though every HELLO holds 0x03 (Ctrl-C).

The boards run in flashed mode (``emu://…?flashed=1``): as on the chip, 0x03 from the host
raises KeyboardInterrupt in the firmware until it calls ``micropython.kbd_intr(-1)``, and a
firmware that ends sits at the REPL. main.py turns Ctrl-C off and arms the watchdog before
anything slow at boot; the main.py before that fix (commit e0b653f) is shown to die here.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from sicell.client import Board
from sicell.emulator.control import EmulatorControl
from sicell.emulator.handle import EmulatorHandle, start_emulator
from sicell.protocol import messages as M

from tests.emuhelp import wait_for
from tests.flashhelp import HELLO, Blaster, flash_dir, log_lines, registry

ROOT = Path(__file__).resolve().parents[1]
OLD_MAIN_COMMIT = "e0b653f"  # main.py turned Ctrl-C off only after boot()
BOOT_S = 30.0  # bound on a boot with a host talking all through it
PAYLOADS = {
    "hello": HELLO * 4,
    "ctrl-c": b"\x03" * 64 + HELLO,  # a storm of bare Ctrl-C, and a HELLO to see the end
}


def _start(rt: Path, tmp_path: Path, name: str, main_py: str | None = None) -> EmulatorHandle:
    """A flashed board with the staged firmware, booted and idle, nobody talking to it yet."""
    flash = flash_dir(tmp_path, name, staged=True, main_py=main_py)
    h = start_emulator("rc", board=name, flashed=True, flash_dir=str(flash), linger=60)
    wait_for(lambda: h.control.status()["run_state"] == "IDLE", 30, "the firmware ticking")
    return h


def _reset(h: EmulatorHandle, how: str, blaster: Blaster) -> None:
    """Reset the board: ``soft`` by its control channel, with host bytes already waiting;
    ``hard`` by the RESET request (machine.reset(): its port re-enumerates)."""
    if how == "soft":
        wait_for(lambda: blaster.step() is not None and blaster.fd is not None, 10, "the port")
        for _ in range(5):
            blaster.step()  # bytes on their way when it resets
        EmulatorControl(str(h.info["control"])).reset()
    else:
        with Board.open(h.pty, hello_timeout=10.0) as b:
            b.reset()


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
@pytest.mark.parametrize("how", ["soft", "hard"])
def test_a_host_talking_through_the_boot_does_not_kill_the_board(
    rt: Path, tmp_path: Path, how: str, payload: str
) -> None:
    name = f"bw-{how}-{payload}"
    h = _start(rt, tmp_path, name)
    boots = len(log_lines(name, " boot "))
    blaster = Blaster(name, PAYLOADS[payload])
    try:
        _reset(h, how, blaster)
        answered = blaster.until_info(M.RC_SOFT, BOOT_S)
    finally:
        blaster.close()
    ended = log_lines(name, "main ended")
    assert answered and not ended, f"no INFO after the reset; the board: {ended}"
    assert len(log_lines(name, " boot ")) == boots + 1  # one boot: no watchdog reset after it
    if how == "hard":
        assert registry(name)["plugs"] == 2  # its port re-enumerated
    with Board.open(h.pty, hello_timeout=10.0) as b:
        assert b.info is not None and b.info.reset_cause == M.RC_SOFT
        b.ping()


def _old_main() -> str:
    try:
        return subprocess.run(
            ["git", "show", f"{OLD_MAIN_COMMIT}:firmware/main.py"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"needs git and commit {OLD_MAIN_COMMIT} (the main.py before the fix)")


def test_the_main_py_before_the_fix_dies_in_the_boot_window(rt: Path, tmp_path: Path) -> None:
    """The same test on the old main.py: the HELLOs' 0x03 interrupts boot(), main ends, the
    board sits at the REPL (no watchdog armed yet) and never answers."""
    name = "bw-old"
    h = _start(rt, tmp_path, name, main_py=_old_main())
    blaster = Blaster(name, PAYLOADS["hello"])
    try:
        _reset(h, "soft", blaster)
        answered = blaster.until_info(M.RC_SOFT, 5.0)
    finally:
        blaster.close()
    assert not answered
    assert log_lines(name, "main ended (main interrupted (Ctrl-C))")
    assert b"KeyboardInterrupt" in blaster.heard and b">>> " in blaster.heard
