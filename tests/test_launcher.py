"""Emulator launcher: pty relay, host presence, link faults, control socket, registry.

The board behind the pty is a stand-in MicroPython script (STANDIN) run by the real launcher
under the unix port: it echoes stdin to stdout byte for byte and obeys the control FIFO
(``noise on|off`` start/stop a counter stream, ``brownout N`` writes N bytes of 0xA5,
``freeze N`` stalls, ``reset`` exits with status 1, ``quit`` exits with 0). Every launcher a
test starts is shut down by the ``emu`` fixture.
"""

from __future__ import annotations

import json
import os
import select
import signal
import stat
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sicell.emulator import control as control_mod
from sicell.emulator.cellmodels import canonical_cell
from sicell.emulator.control import ControlError, EmulatorControl
from sicell.emulator.control_server import ControlServer
from sicell.emulator.handle import EXIT_CONFIG, EmulatorHandle, run_emulator, start_emulator
from sicell.emulator.options import BALLAST_KB
from sicell.emulator.registry import (
    find_emulator,
    list_emulators,
    pid_alive,
    symlink_atomic,
    write_json_atomic,
)
from sicell.emulator.relay import PENDING_LIMIT
from sicell.emulator.staging import HEAP_CACHE, firmware_dir, stage_firmware
from sicell.errors import EmulatorBusyError, EmulatorConfigError

from tests.conftest import Starter
from tests.emuhelp import echo, open_port, read_some, wait_for, write_all


def status(h: EmulatorHandle) -> dict[str, Any]:
    return h.control.status()


# ---- staging and options --------------------------------------------------------------------
def test_stage_layout_sources(tmp_path: Path) -> None:
    emu_dir, fw = stage_firmware(tmp_path / "stage", compile=False)
    assert (emu_dir / "emuboot.py").exists() and (emu_dir / "machine.py").exists()
    assert (fw / "protocol" / "__init__.py").exists()
    assert (fw / "protocol" / "framing.py").exists()
    src = firmware_dir()
    for p in src.glob("*.py"):
        assert (fw / p.name).read_bytes() == p.read_bytes()
    assert not (fw / "calibration.json").exists()
    assert not list((tmp_path / "stage").rglob("__pycache__"))


def test_stage_layout_like_the_flasher(tmp_path: Path) -> None:
    """Default staging is what ``sicell flash`` puts on a board: .mpy modules."""
    if not (firmware_dir() / "main.py").exists():
        pytest.skip("firmware/main.py not written yet")
    _, fw = stage_firmware(tmp_path / "stage")
    assert (fw / "main.py").read_bytes() == (firmware_dir() / "main.py").read_bytes()
    assert (fw / "protocol" / "__init__.py").exists()
    assert (fw / "protocol" / "framing.mpy").read_bytes()[:1] == b"M"
    for p in firmware_dir().glob("*.py"):
        if p.name != "main.py":
            assert (fw / (p.stem + ".mpy")).exists() and not (fw / p.name).exists()


def test_bad_cell_name_lists_valid_ones(rt: Path) -> None:
    with pytest.raises(ValueError) as ei:
        start_emulator("porous-medium")
    msg = str(ei.value)
    assert "'porous-medium'" in msg
    for name in ("rc", "resistor", "thin-porous", "thick-dense"):
        assert name in msg
    lines: list[str] = []
    assert run_emulator("nope", print_fn=lines.append) == EXIT_CONFIG
    assert "nope" in lines[0] and "thin-porous" in lines[0]
    assert canonical_cell("porous-thick") == "thick-porous"


def test_bad_board_id(rt: Path) -> None:
    with pytest.raises(EmulatorConfigError, match="bad board id"):
        start_emulator("rc", board="../etc")


# ---- relay ----------------------------------------------------------------------------------
def test_relay_moves_bytes_unchanged_both_ways(emu: Starter) -> None:
    h = emu("rc", board="r1")
    fd = open_port(h.pty)
    try:
        lflag = termios.tcgetattr(fd)[3]
        assert not lflag & (termios.ICANON | termios.ECHO | termios.ISIG), "pty not raw"
        data = bytes(range(256)) * 64  # every byte value, 0x00 and 0x03 included
        got = echo(fd, data)
        assert got == data
        st = status(h)
        assert st["host_attached"] is True
        assert st["bytes_to_board"] == len(data)
        assert st["bytes_to_host"] == len(data)
        assert st["bytes_dropped"] == 0
    finally:
        os.close(fd)


def test_board_sees_config_heap_path_and_flash_dir(emu: Starter, tmp_path: Path) -> None:
    flash = tmp_path / "flash-b2"
    h = emu("thin-porous", seed=5, board="b2", flash_dir=str(flash), noise=False)
    boot = wait_for(lambda: (flash / "standin_boot.json").exists() and flash, what="boot file")
    info = json.loads((boot / "standin_boot.json").read_text())
    assert Path(info["cwd"]).resolve() == flash.resolve()
    assert 190_000 <= info["heap"] <= 210_000  # -X heapsize=200K
    first = Path(info["path"][1])  # [0] is the script's own directory
    assert (first / "machine.py").exists() and (first / "time.py").exists()
    proto = Path(info["path"][2]) / "protocol"
    assert (proto / "framing.mpy").exists() or (proto / "framing.py").exists()
    assert info["cfg"]["cell"] == "thin-porous"
    assert info["cfg"]["seed"] == 5 and info["cfg"]["noise"] is False
    assert info["ctrl"] == h.info["fifo"]
    assert stat.S_ISFIFO(os.stat(info["ctrl"]).st_mode)


def test_real_emuboot_gives_firmware_the_rp2040_heap(emu: Starter, tmp_path: Path) -> None:
    """-X heapsize = 200K budget + the emulator's measured overhead: the firmware's main.py
    finds ~200K free, as on a Pico. main returning ends the board, and with it the launcher."""
    fw = tmp_path / "fw"
    fw.mkdir()
    (fw / "main.py").write_text(
        "import gc\ngc.collect()\n"
        "with open('heap.txt', 'w') as f:\n"
        "    f.write('%d %d' % (gc.mem_free(), gc.mem_alloc()))\n"
    )
    flash = tmp_path / "flash"
    h = emu("thin-porous", board="heap", firmware=str(fw), flash_dir=str(flash), entry=None)
    assert h.wait(20), "board exit (main returned) should end the launcher"
    assert h.process is not None and h.process.returncode == 0
    free, _alloc = map(int, (flash / "heap.txt").read_text().split())
    assert 190_000 <= free <= 210_000, free
    # the overhead counts the ballast the board holds while the firmware boots (world.py)
    assert 40_000 < h.info["heap_overhead"] - BALLAST_KB * 1024 < 200_000
    assert int(h.info["heapsize_arg"]) == 200 * 1024 + h.info["heap_overhead"]


def test_drop_all(emu: Starter) -> None:
    h = emu("rc", board="d1")
    fd = open_port(h.pty)
    try:
        assert echo(fd, b"ping") == b"ping"
        h.control.faults(drop=1.0)
        write_all(fd, b"x" * 2000)
        h.control.brownout(1000)  # the stand-in writes 1000 bytes
        assert read_some(fd, 1, 0.5) == b""
        st = wait_for(
            lambda: (s := status(h))["counters"]["from_board"] >= 1004 and s, what="board output"
        )
        assert st["counters"]["dropped_fault_to_board"] == 2000
        assert st["counters"]["dropped_fault_to_host"] == 1000
        assert st["bytes_dropped"] == 3000
        h.control.clear_faults()
        assert echo(fd, b"back") == b"back"
    finally:
        os.close(fd)


def test_drop_one_percent_statistics(emu: Starter) -> None:
    h = emu("rc", board="d2", seed=7, faults={"drop": 0.01, "direction": "to_host"})
    n = 100_000
    fd = open_port(h.pty)
    try:
        wait_for(lambda: status(h)["host_attached"], what="attach")
        h.control.brownout(n)
        got = bytearray()
        end = time.monotonic() + 20
        while time.monotonic() < end:
            got += read_some(fd, n, 0.3)
            st = status(h)
            if st["counters"]["from_board"] >= n and not st["bytes_pending_to_host"]:
                got += read_some(fd, n, 0.2)
                break
        assert set(got) == {0xA5}
        dropped = n - len(got)
        # binomial(100000, 0.01): mean 1000, sd 31.5
        assert 840 <= dropped <= 1160
        assert dropped == status(h)["counters"]["dropped_fault_to_host"]
    finally:
        os.close(fd)


def test_delay(emu: Starter) -> None:
    h = emu("rc", board="dl", faults={"delay_ms": 150})
    fd = open_port(h.pty)
    try:
        wait_for(lambda: status(h)["host_attached"], what="attach")
        t0 = time.monotonic()
        assert echo(fd, b"hello") == b"hello"
        delayed = time.monotonic() - t0
        assert delayed >= 0.28  # 150 ms each way
        h.control.faults(delay_ms=0)
        t0 = time.monotonic()
        assert echo(fd, b"again") == b"again"
        # the 2 x 150 ms are gone (compared with the delayed echo, so a loaded machine is fine)
        assert time.monotonic() - t0 < delayed - 0.2
    finally:
        os.close(fd)


def test_reattach_gets_new_data_and_detached_output_is_discarded(emu: Starter) -> None:
    h = emu("rc", board="ra")
    fd = open_port(h.pty)
    wait_for(lambda: status(h)["host_attached"], what="attach")
    h.control.noise(True)  # the stand-in streams numbered lines
    first = read_some(fd, 200, 5)
    os.close(fd)  # the host goes away (a real board keeps running)
    last_seen = int(first.split(b"\n")[-2])
    wait_for(lambda: not status(h)["host_attached"], what="detach")
    time.sleep(0.4)
    mid = status(h)
    assert mid["counters"]["discarded_detached"] > 0
    fd = open_port(h.pty)  # a new host
    try:
        data = read_some(fd, 100, 5)
        lines = data.split(b"\n")[1:-1]  # the first may be cut
        assert lines, data
        # nothing written while detached was delivered late: the numbers jump
        assert int(lines[0]) > last_seen + 20
        assert [int(x) for x in lines] == list(range(int(lines[0]), int(lines[0]) + len(lines)))
        assert status(h)["host_sessions"] == 2
    finally:
        h.control.noise(False)
        os.close(fd)


def test_host_slower_than_board_loses_nothing(emu: Starter) -> None:
    h = emu("rc", board="bp")
    n = 400_000
    fd = open_port(h.pty)
    try:
        wait_for(lambda: status(h)["host_attached"], what="attach")
        h.control.brownout(n)  # far more than the relay may buffer
        time.sleep(0.5)  # the host does not read
        st = status(h)
        assert st["bytes_pending_to_host"] <= PENDING_LIMIT + 65536
        assert st["counters"]["from_board"] < n  # the board is back-pressured
        got = read_some(fd, n, 20)
        assert len(got) == n and set(got) == {0xA5}
        assert status(h)["bytes_dropped"] == 0
    finally:
        os.close(fd)


# ---- lifetime and registry ------------------------------------------------------------------
def test_registry_appears_and_disappears(emu: Starter, rt: Path) -> None:
    h = emu("rc", board="reg")
    path = rt / "reg.json"
    info = json.loads(path.read_text())
    for key in ("pid", "pty", "control", "flash_dir", "cell", "board", "link", "fifo", "log"):
        assert key in info
    assert info["pid"] == h.pid and info["cell"] == "rc"
    assert stat.S_ISCHR(os.stat(info["pty"]).st_mode)
    assert os.path.realpath(info["link"]) == info["pty"]
    assert find_emulator("reg") == info
    board_pid = status(h)["board_pid"]
    h.shutdown()
    assert not path.exists()
    assert not Path(info["control"]).exists()
    assert not Path(info["fifo"]).exists()
    assert not os.path.lexists(info["link"])
    assert find_emulator("reg") is None
    assert not pid_alive(board_pid)


def test_registry_files_are_written_atomically_and_other_json_is_left_alone(rt: Path) -> None:
    write_json_atomic(rt / "x.json", {"a": 1})
    write_json_atomic(rt / "x.json", {"a": 2})
    assert json.loads((rt / "x.json").read_text()) == {"a": 2}
    symlink_atomic("/dev/null", rt / "b.tty")
    symlink_atomic("/dev/zero", rt / "b.tty")  # replaces the link in one step
    assert os.readlink(rt / "b.tty") == "/dev/zero"
    assert sorted(p.name for p in rt.iterdir()) == ["b.tty", "x.json"]  # no temp files left
    cache = rt / HEAP_CACHE
    write_json_atomic(cache, {"abc": 123})
    assert list_emulators(rt) == [] and find_emulator("x", rt) is None
    assert cache.exists()  # not a registry entry: never removed as a stale one


def test_stale_registry_entry_is_ignored_and_removed(rt: Path) -> None:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    entry = {"board": "old", "pid": p.pid, "pty": "/dev/pts/999", "control": str(rt / "x.sock")}
    (rt / "old.json").write_text(json.dumps(entry))
    assert find_emulator("old") is None
    assert not (rt / "old.json").exists()


def test_launcher_outlives_the_host_process_that_started_it(rt: Path, standin: str) -> None:
    code = (
        "import os, sys\n"
        "from sicell.emulator import start_emulator\n"
        f"h = start_emulator('rc', board='orphan', entry={standin!r}, linger=60)\n"
        "print(h.pid, flush=True)\n"
        "os._exit(0)\n"  # the host dies without cleaning up
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    pid = int(out.stdout.split()[0])
    try:
        info = wait_for(lambda: find_emulator("orphan"), what="registry")
        assert info["pid"] == pid
        fd = open_port(str(info["pty"]))
        try:
            assert echo(fd, b"still here") == b"still here"
        finally:
            os.close(fd)
    finally:
        EmulatorHandle(find_emulator("orphan") or {"board": "orphan", "pid": pid}).shutdown()
    assert not pid_alive(pid)
    assert not (rt / "orphan.json").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_and_cleans_up(emu: Starter, rt: Path, sig: int) -> None:
    h = emu("rc", board="term")
    board_pid = status(h)["board_pid"]
    os.kill(h.pid, sig)
    assert h.wait(10)
    assert h.process is not None and h.process.returncode == 0
    assert not (rt / "term.json").exists()
    wait_for(lambda: not pid_alive(board_pid), what="board process exit")


def test_linger_without_host(emu: Starter, rt: Path) -> None:
    h = emu("rc", board="ling", linger=1.0)
    fd = open_port(h.pty)
    time.sleep(1.5)  # attached: stays
    assert h.alive()
    os.close(fd)
    assert h.wait(5), "launcher did not exit after linger with no host"
    assert not (rt / "ling.json").exists()


def test_second_launcher_for_same_board_is_refused(emu: Starter, standin: str) -> None:
    h = emu("rc", board="dup")
    with pytest.raises(EmulatorBusyError):
        start_emulator("rc", board="dup", entry=standin, attach=False)
    again = start_emulator("rc", board="dup", entry=standin)  # attach
    assert again.pid == h.pid and not again.started
    with pytest.raises(EmulatorConfigError, match="already running"):
        start_emulator("resistor", board="dup", entry=standin)
    lines: list[str] = []
    assert run_emulator("rc", board="dup", entry=standin, print_fn=lines.append) == 3
    assert "already has an emulator" in lines[-1]
    # the refused launcher left the running one's socket, FIFO and pty link alone
    assert h.control.ping()
    assert Path(h.info["fifo"]).exists() and os.path.realpath(h.info["link"]) == h.info["pty"]
    fd = open_port(h.pty)
    try:
        assert echo(fd, b"intact") == b"intact"
    finally:
        os.close(fd)


def test_run_emulator_foreground(rt: Path, standin: str) -> None:
    lines: list[str] = []
    rc: list[int] = []
    t = threading.Thread(
        target=lambda: rc.append(
            run_emulator("rc", board="fg", entry=standin, linger=30, print_fn=lines.append)
        )
    )
    t.start()
    try:
        info = wait_for(lambda: find_emulator("fg"), what="registry")
        text = "\n".join(lines)
        assert str(info["pty"]) in text and "--port" in text and "emu://rc" in text
        fd = open_port(str(info["pty"]))
        try:
            assert echo(fd, b"fg") == b"fg"
        finally:
            os.close(fd)
        EmulatorControl(str(info["control"])).shutdown()
    finally:
        t.join(10)
    assert rc == [0]
    assert find_emulator("fg") is None


# ---- control channel ------------------------------------------------------------------------
def test_control_commands(emu: Starter) -> None:
    h = emu("rc", board="ctl")
    c = h.control
    assert c.ping()
    st = c.status()
    for key in ("pid", "pty", "bytes_to_host", "bytes_dropped", "host_attached", "uptime_s"):
        assert key in st
    assert st["pid"] == h.pid and st["pty"] == h.info["pty"]
    with pytest.raises(ControlError, match="unknown command"):
        c.request("explode")
    with pytest.raises(ControlError, match="out of range"):
        c.faults(drop=2.0)
    assert c.faults(corrupt=0.5, direction="to_board")["corrupt"] == 0.5
    assert c.faults(drop=0.1)["corrupt"] == 0.5  # fields left out keep their value
    c.clear_faults()
    c.linger(123)
    assert c.status()["linger"] == 123
    # board faults reach the FIFO (the stand-in logs them with a virtual time)
    c.freeze(50)
    c.noise(False)
    log = Path(h.info["log"])
    wait_for(lambda: "ctrl freeze 50" in log.read_text(), what="freeze in board log")
    wait_for(lambda: "ctrl noise off" in log.read_text(), what="noise in board log")
    assert c.status()["vtime_s"] is not None
    # a raw JSON line that is not an object
    import socket

    with socket.socket(socket.AF_UNIX) as s:
        s.connect(h.info["control"])
        s.sendall(b"[1, 2]\n")
        reply = json.loads(s.makefile().readline())
    assert reply["ok"] is False and "cmd" in reply["error"]


def test_reset_restarts_crashed_board(emu: Starter) -> None:
    h = emu("rc", board="rst")
    old = status(h)["board_pid"]
    h.control.reset()  # the stand-in exits with status 1: the launcher power-cycles it
    st = wait_for(lambda: (s := status(h))["restarts"] == 1 and s["board_pid"] and s, 10, "restart")
    assert st["last_exit"] == 1 and st["board_pid"] != old
    fd = open_port(h.pty)
    try:
        assert echo(fd, b"after reset") == b"after reset"
    finally:
        os.close(fd)


def test_unplug_drop_mode(emu: Starter) -> None:
    h = emu("rc", board="upd")
    fd = open_port(h.pty)
    try:
        assert echo(fd, b"a") == b"a"
        h.control.unplug(0.6)
        write_all(fd, b"lost")  # the port stays open; writes vanish
        h.control.brownout(100)
        assert read_some(fd, 1, 0.3) == b""
        assert status(h)["unplug_mode"] == "drop"
        time.sleep(0.4)
        assert echo(fd, b"back") == b"back"
        assert status(h)["counters"]["dropped_unplug"] >= 104
    finally:
        os.close(fd)


def test_unplug_hangup_mode(emu: Starter) -> None:
    h = emu("rc", board="uph")
    old_pty = h.pty
    fd = open_port(old_pty)
    try:
        assert echo(fd, b"a") == b"a"
        h.control.unplug(0.5, mode="hangup")
        r, _, _ = select.select([fd], [], [], 2)
        assert r
        assert os.read(fd, 10) == b""  # hang-up: end of file, like an unplugged ACM device
        with pytest.raises(OSError):
            os.write(fd, b"x")
        assert h.refresh()["pty"] is None
        new_pty = wait_for(lambda: h.refresh()["pty"], 5, "replug")
    finally:
        os.close(fd)
    assert new_pty != old_pty
    assert os.path.realpath(h.info["link"]) == new_pty
    fd = open_port(new_pty)
    try:
        assert echo(fd, b"new port") == b"new port"
    finally:
        os.close(fd)


def test_control_dispatch_table() -> None:
    """Commands go through the table; an unknown one is refused naming the known ones."""
    seen: list[dict[str, object]] = []
    server = ControlServer(
        Path("/nonexistent.sock"),
        {"ping": lambda req: {"pid": 1}, "echo": lambda req: seen.append(dict(req)) or {}},
    )
    assert server.dispatch({"cmd": "ping"}) == {"pid": 1}
    assert server.handle_line(b'{"cmd": "echo", "x": 2}') == {"ok": True}
    assert seen == [{"cmd": "echo", "x": 2}]
    reply = server.handle_line(b'{"cmd": "explode"}')
    assert reply["ok"] is False
    assert "unknown command 'explode'" in reply["error"] and "ping, echo" in reply["error"]
    assert "cmd" in server.handle_line(b"[1, 2]")["error"]
    assert server.handle_line(b"{not json")["ok"] is False


def test_control_client_unreachable(tmp_path: Path) -> None:
    c = control_mod.EmulatorControl(str(tmp_path / "none.sock"), timeout=0.5)
    assert not c.ping()
    with pytest.raises(ControlError, match="not reachable"):
        c.status()


def test_cli_list_and_stop(emu: Starter) -> None:
    h = emu("rc", board="cli")
    out = subprocess.run(
        [sys.executable, "-m", "sicell.emulator", "--list"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "cli" in out.stdout and str(h.pid) in out.stdout
    subprocess.run(
        [sys.executable, "-m", "sicell.emulator", "--stop", "cli"], timeout=30, check=True
    )
    assert h.wait(10)
