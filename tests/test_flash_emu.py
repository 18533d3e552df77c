"""``sicell flash`` end to end on emulated boards in flashed mode (``emu://…?flashed=1``): the
board boots what its flash directory holds and serves MicroPython's REPL to mpremote, and a
hard reset re-enumerates its port, as a chip on USB does.

A fresh board (no firmware), one already running sicell, one mid-run (refused without
--force), a file damaged between copy and verify (caught); mpremote's own commands on the
emulated REPL; Ctrl-C in the raw REPL.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sicell import flash, reenumerate
from sicell.cli import cli
from sicell.client import Board, new_run_id
from sicell.emulator.registry import list_emulators
from sicell.protocol import framing
from sicell.protocol import messages as M
from sicell.transport import open_port

from tests.emuhelp import wait_for
from tests.fakeboard import sched_blob
from tests.flashhelp import HELLO, flash_dir, log_lines, mpremote, registry, url


def _flash(*args: str) -> Result:
    return CliRunner().invoke(cli, ["flash", *args], catch_exceptions=False)


def _error(res: Result) -> str:
    assert res.exit_code == 1, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.output
    return lines[0]


def _holds_firmware(flash_d: Path, tmp_path: Path) -> None:
    """The flash directory holds exactly what ``sicell flash`` stages, byte for byte."""
    want = flash.stage(tmp_path / "want", compile=True)
    for f in want:
        got = flash_d / f.remote
        assert hashlib.sha256(got.read_bytes()).hexdigest() == f.sha256, f.remote


def test_fresh_board_is_flashed_and_comes_back(rt: Path, tmp_path: Path) -> None:
    fd = flash_dir(tmp_path, "fresh", staged=False)
    u = url("fresh", fd)
    t0 = time.monotonic()
    res = _flash("--port", u)
    took = time.monotonic() - t0
    assert res.exit_code == 0, res.output
    out = res.output
    assert "no sicell firmware answers" in out and "verified SHA-256 of" in out
    assert "sicell firmware 0.1.0 answers" in out, out
    _holds_firmware(fd, tmp_path)
    info = registry("fresh")
    assert info["plugs"] == 2  # the reset re-enumerated its port once
    with Board.open(u, hello_timeout=10.0) as b:
        assert b.info is not None and b.info.reset_cause == M.RC_SOFT  # machine.reset()
        assert b.info.board_id in out
    print(f"flash of a fresh emulated board: {took:.1f} s")


def test_board_running_sicell_is_flashed_again(rt: Path, tmp_path: Path) -> None:
    fd = flash_dir(tmp_path, "again", staged=True)
    u = url("again", fd)
    with Board.open(u, hello_timeout=20.0) as b:
        assert b.info is not None
        board_id = b.info.board_id
    t0 = time.monotonic()
    res = _flash("--port", u)
    took = time.monotonic() - t0
    assert res.exit_code == 0, res.output
    assert f"board {board_id}, firmware 0.1.0, idle; asking it to leave binary mode" in res.output
    assert f"answers (board {board_id})" in res.output
    _holds_firmware(fd, tmp_path)
    assert log_lines("again", "main ended (main returned): REPL")  # ENTER_REPL
    print(f"flash of an emulated board running sicell: {took:.1f} s")


def test_board_mid_run_is_refused_without_force(rt: Path, tmp_path: Path) -> None:
    fd = flash_dir(tmp_path, "busy", staged=True)
    u = url("busy", fd)
    run_id = new_run_id()
    with Board.open(u, hello_timeout=20.0) as b:
        b.upload_schedule(sched_blob(3))
        b.start(run_id)
    line = _error(_flash("--port", u))
    assert f"{run_id:08x}" in line and "--force" in line
    with Board.open(u, hello_timeout=10.0) as b:
        st = b.status()
        assert st.state == M.ST_RUNNING and st.run_id == run_id  # untouched
    assert registry("busy")["plugs"] == 1
    res = _flash("--port", u, "--force")
    assert res.exit_code == 0, res.output
    assert "stopping it (--force)" in res.output
    with Board.open(u, hello_timeout=10.0) as b:
        assert b.info is not None
        # the run is over, not interrupted: its STOP reached flash before the board left for
        # the REPL (the boot after the flash finds no active run and loads the schedule)
        assert b.info.state in (M.ST_IDLE, M.ST_LOADED), b.info.state_name


def test_file_damaged_in_transfer_is_caught(
    rt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fd = flash_dir(tmp_path, "damaged", staged=False)
    u = url("damaged", fd)
    hashes = flash.board_hashes

    def damage_then_hash(port: str, remotes: list[str]) -> dict[str, str]:
        victim = fd / "engine.mpy"  # the copy on the board, between copy and verify
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0x20
        victim.write_bytes(bytes(data))
        return hashes(port, remotes)

    monkeypatch.setattr(flash, "board_hashes", damage_then_hash)
    line = _error(_flash("--port", u))
    assert "1 files differ on the board after copying (engine.mpy)" in line
    assert registry("damaged")["plugs"] == 1  # not reset


def test_emulated_board_without_its_own_flash_is_refused(rt: Path) -> None:
    line = _error(_flash("--port", "emu://rc?board=pkg"))
    assert "real board" in line and "flashed=1" in line
    assert not list_emulators(rt)  # refused before starting one


def test_mpremote_commands_on_a_fresh_board(rt: Path, tmp_path: Path) -> None:
    fd = flash_dir(tmp_path, "mpr", staged=False)
    with Board.open(url("mpr", fd), hello_timeout=0.5, handshake=False):
        pass  # starts the board
    dev = registry("mpr")["pty"]
    p = mpremote(dev, "exec", "print(6 * 7)")
    assert p.returncode == 0 and p.stdout.strip() == "42", p.stderr
    src = tmp_path / "blob.bin"
    src.write_bytes(bytes(range(256)) * 9 + b"\x03\x04\x01\x02")  # control bytes in the data
    p = mpremote(dev, "fs", "cp", str(src), ":blob.bin", "+", "fs", "ls", "+", "fs", "sha256sum",
                 ":blob.bin")  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert (fd / "blob.bin").read_bytes() == src.read_bytes()
    assert "blob.bin" in p.stdout
    assert hashlib.sha256(src.read_bytes()).hexdigest() in p.stdout
    p = mpremote(dev, "soft-reset")
    assert p.returncode == 0, p.stderr
    assert registry("mpr")["plugs"] == 1  # a soft reset keeps the port
    p = mpremote(dev, "reset")  # machine.reset() 100 ms after mpremote is gone
    assert p.returncode == 0, p.stderr
    wait_for(lambda: registry("mpr")["plugs"] == 2 and registry("mpr")["pty"], 10, "replug")
    assert log_lines("mpr", "reset cause=WDT_RESET (machine.reset())")  # as on the RP2040
    p = mpremote(registry("mpr")["pty"], "exec", "import machine; print(machine.reset_cause())")
    assert p.returncode == 0 and p.stdout.strip() == "5", p.stderr  # mpremote's soft reset


def test_ctrl_c_interrupts_code_in_the_raw_repl(rt: Path, tmp_path: Path) -> None:
    fd = flash_dir(tmp_path, "ctrlc", staged=False)
    with Board.open(url("ctrlc", fd), hello_timeout=0.5, handshake=False):
        pass
    ser = open_port(registry("ctrlc")["pty"], timeout=0.05)

    def read_until(end: bytes, timeout: float = 10.0) -> bytes:
        got = b""
        limit = time.monotonic() + timeout
        while not got.endswith(end) and time.monotonic() < limit:
            got += ser.read(1)
        assert got.endswith(end), got
        return got

    try:
        ser.write(b"\r\x03\x01")
        read_until(b"raw REPL; CTRL-B to exit\r\n>")
        ser.write(b"import time\nwhile True:\n time.sleep_ms(10)\n\x04")
        read_until(b"OK")
        ser.write(b"\x03")  # the loop sleeps: the clock is where the emulator looks
        out = read_until(b"\x04>")
        assert b"KeyboardInterrupt" in out
        ser.write(b"print('still', 1)\x04")
        assert b"still 1" in read_until(b"\x04>")
        ser.write(b"\x02")
        read_until(b">>> ")
        ser.write(b"x = 6 * 7\r")
        read_until(b">>> ")
        ser.write(b"x\r")
        assert read_until(b">>> ").endswith(b"x\r\n42\n>>> ")
    finally:
        ser.close()


def test_a_hello_during_the_reset_command_interrupts_it(rt: Path, tmp_path: Path) -> None:
    """The flash race the old flash.py ran into: ``mpremote reset`` runs
    ``time.sleep_ms(100); machine.reset()`` in the raw REPL, with Ctrl-C on; a HELLO sent
    meanwhile (it holds 0x03) interrupts it and the board stays in the REPL (here with a longer
    sleep, so the HELLO lands in it for sure)."""
    fd = flash_dir(tmp_path, "race", staged=False)
    with Board.open(url("race", fd), hello_timeout=0.5, handshake=False):
        pass
    dev = registry("race")["pty"]
    p = mpremote(dev, "exec", "--no-follow", "import time, machine; time.sleep_ms(3000); "
                 "machine.reset()")  # fmt: skip
    assert p.returncode == 0, p.stderr
    ser = open_port(dev, timeout=0.05)
    try:
        ser.write(HELLO)
        got = b""
        end = time.monotonic() + 10
        while b"KeyboardInterrupt" not in got and time.monotonic() < end:
            got += ser.read(256)
    finally:
        ser.close()
    assert b"KeyboardInterrupt" in got, got
    assert registry("race")["plugs"] == 1  # no reset happened
    assert not log_lines("race", "(machine.reset())")


def test_enter_repl_stops_the_watchdog(rt: Path, tmp_path: Path) -> None:
    """ENTER_REPL: main.py clears the watchdog's enable bit (machine.mem32, modelled for a
    flashed board), so the REPL is not reset under mpremote; on the RP2040 a soft reset (as
    mpremote's) leaves a running watchdog running."""
    fd = flash_dir(tmp_path, "wdt", staged=True)
    with Board.open(url("wdt", fd), hello_timeout=20.0) as b:
        assert b.info is not None and b.info.caps & M.CAP_WDT
        b.enter_repl()
    p = mpremote(registry("wdt")["pty"], "exec", "import machine; print(machine.mem32[0x40058000])")
    assert p.returncode == 0 and p.stdout.strip() == "0", (p.stdout, p.stderr)


def test_a_board_that_does_not_reset_is_reported_in_one_line(
    rt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No HELLO goes to a board whose port never went away (it may still be in the REPL)."""
    fd = flash_dir(tmp_path, "noreset", staged=False)
    monkeypatch.setattr(flash, "RESET_SCRIPT", "print('not resetting')")
    monkeypatch.setattr(reenumerate, "GONE_TIMEOUT_S", 1.0)
    line = _error(_flash("--port", url("noreset", fd)))
    assert "the board did not reset: its port was still the same 1 s after the reset" in line
    assert registry("noreset")["plugs"] == 1


def test_a_stop_right_before_the_repl_reaches_flash(rt: Path, tmp_path: Path) -> None:
    """STOP and ENTER_REPL in one write (read in one poll): the board saves the stopped run
    before it leaves for the REPL, so its next boot finds no run to call interrupted."""
    fd = flash_dir(tmp_path, "stoprepl", staged=True)
    u = url("stoprepl", fd)
    with Board.open(u, hello_timeout=20.0) as b:
        b.upload_schedule(sched_blob(3))
        b.start(new_run_id())
        enc = framing.Encoder()
        b.link.write_raw(
            bytes(enc.encode(M.STOP, 0x7001, b"")) + bytes(enc.encode(M.ENTER_REPL, 0x7002, b""))
        )
        wait_for(lambda: log_lines("stoprepl", "main ended"), 10, "the board in its REPL")
    dev = registry("stoprepl")["pty"]
    p = mpremote(dev, "soft-reset")  # main.py boots again
    assert p.returncode == 0, p.stderr
    with Board.open(u, hello_timeout=20.0) as b:
        assert b.info is not None
        assert b.info.state != M.ST_INTERRUPTED, b.info.state_name
