"""``emu://`` pyserial URL handler: open, attach, options, errors, owner, reopen after hang-up.

Most tests run the stand-in board of test_launcher (an echo script under the unix port); the
last one talks to the real firmware (HELLO -> INFO) once firmware/main.py exists.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import serial
import sicell  # noqa: F401  (registers the emu:// handler package)
from sicell.emulator.registry import find_emulator, pid_alive
from sicell.emulator.staging import firmware_dir
from sicell.protocol import framing, messages
from sicell.urlhandler.protocol_emu import parse_url

from tests.emuhelp import STANDIN, wait_for


@pytest.fixture
def url(tmp_path: Path, rt: Path) -> str:
    """``emu://rc?entry=<stand-in>`` (more options are appended with ``&``)."""
    p = tmp_path / "standin.py"
    p.write_text(STANDIN)
    return f"emu://rc?entry={quote(str(p))}"


def echo(port: serial.SerialBase, data: bytes) -> bytes:
    port.write(data)
    return bytes(port.read(len(data)))


def test_open_talk_close_keeps_board(url: str) -> None:
    port = serial.serial_for_url(url + "&board=u1&seed=3", timeout=2)
    try:
        assert isinstance(port, serial.Serial) and port.is_open
        assert port.port.startswith("emu://")
        info = port.emulator_info
        assert info["board"] == "u1" and info["cell"] == "rc" and info["seed"] == 3
        assert port.portstr == info["pty"]
        assert echo(port, bytes(range(256))) == bytes(range(256))
        assert port.emulator is not None
        st = port.emulator.status()
        assert st["host_attached"] and st["bytes_to_host"] == 256
    finally:
        port.close()
    # closing the port is unplugging the cable: the board keeps running
    again = find_emulator("u1")
    assert again is not None and again["pid"] == info["pid"]


def test_second_open_attaches_to_same_process(url: str) -> None:
    a = serial.serial_for_url(url + "&board=u2", timeout=2)
    try:
        b = serial.serial_for_url("emu://rc?board=u2", timeout=2)  # no entry: same board anyway
        try:
            assert b.emulator_info["pid"] == a.emulator_info["pid"]
            assert b.emulator_info["pty"] == a.emulator_info["pty"]
        finally:
            b.close()
        assert echo(a, b"still mine") == b"still mine"
    finally:
        a.close()


def test_default_board_id_is_cell_and_seed(url: str) -> None:
    with serial.serial_for_url(url + "&seed=4", timeout=2) as port:
        assert port.emulator_info["board"] == "rc-4"


def test_bad_cell_name(rt: Path) -> None:
    with pytest.raises(serial.SerialException) as ei:
        serial.serial_for_url("emu://porous-medium", timeout=1)
    msg = str(ei.value)
    assert "'porous-medium'" in msg and "thin-porous" in msg and "resistor" in msg
    assert isinstance(ei.value, ValueError)
    assert not list(rt.glob("*.json"))  # nothing was started


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("colour=red", "unknown emu:// option 'colour'"),
        ("seed=abc", "seed='abc' is not an integer"),
        ("realtime=maybe", "realtime='maybe' is not a boolean"),
        ("drop=lots", "drop='lots' is not a number"),
        ("direction=up", "direction='up'"),
    ],
)
def test_bad_options(rt: Path, query: str, needle: str) -> None:
    with pytest.raises(serial.SerialException, match="options seed, board") as ei:
        serial.serial_for_url(f"emu://rc?{query}")
    assert needle in str(ei.value)


def test_out_of_range_fault(url: str) -> None:
    with pytest.raises(ValueError, match="out of range"):
        serial.serial_for_url(url + "&drop=1.5")


def test_parse_url() -> None:
    s = parse_url("emu://porous-thick?seed=2&board=b&realtime=1&drop=0.01&cell.fade=0.001")
    assert s.cell == "thick-porous" and s.seed == 2 and s.board == "b" and s.realtime
    assert s.faults == {"drop": 0.01} and s.cell_overrides == {"fade": 0.001}
    assert {"seed", "board", "realtime", "drop", "cell_overrides"} <= s.given
    assert parse_url("emu:///rc").cell == "rc"


def test_parse_url_accepts_every_spelling_in_use() -> None:
    """The forms hil_tests, benches and users write: rig dummies as cell.<param>, booleans as
    words, keys in any case."""
    s = parse_url(
        "emu://rc?seed=1&board=x&owner=1&linger=5&drop=0.01&cell.r_series=100"
        "&cell.c_farad=0.002&cell.r_parallel=1e%2B06&cell.v0=0.3&timeout=20"
    )
    assert (s.seed, s.board, s.owner, s.linger, s.timeout) == (1, "x", True, 5.0, 20.0)
    assert s.faults == {"drop": 0.01}
    assert s.cell_overrides == {"r_series": 100.0, "c_farad": 0.002, "r_parallel": 1e6, "v0": 0.3}
    assert parse_url("emu://resistor?cell.r_ohm=47").cell_overrides == {"r_ohm": 47.0}
    t = parse_url(
        "emu://dummy?SEED=2&Realtime=yes&noise=off&mpy=false&max_dt=0.5&flash=/tmp/f"
        "&delay_ms=20&direction=to_host&corrupt=0.1&duplicate=0&heapsize=180K&owner=on"
    )
    assert (t.cell, t.seed, t.realtime, t.noise, t.mpy, t.owner) == (
        "rc",
        2,
        True,
        False,
        False,
        True,
    )
    assert (t.max_dt_s, t.flash_dir, t.heapsize) == (0.5, "/tmp/f", "180K")
    assert t.faults == {"delay_ms": 20.0, "direction": "to_host", "corrupt": 0.1, "duplicate": 0.0}
    assert {"flash_dir", "max_dt_s", "faults", "delay_ms", "direction"} <= t.given
    with pytest.raises(ValueError, match="empty cell parameter"):
        parse_url("emu://rc?cell.=1")
    with pytest.raises(ValueError, match="runtime"):  # not a URL option (the env var is)
        parse_url("emu://rc?runtime=/tmp")


def test_mismatching_running_board_is_an_error(url: str) -> None:
    with serial.serial_for_url(url + "&board=u3", timeout=2) as port:
        with pytest.raises(serial.SerialException, match="already running"):
            serial.serial_for_url("emu://resistor?board=u3")
        with pytest.raises(serial.SerialException, match="seed=0"):
            serial.serial_for_url("emu://rc?board=u3&seed=9")
        assert echo(port, b"ok") == b"ok"


def test_faults_in_url_apply_to_running_board(url: str) -> None:
    with serial.serial_for_url(url + "&board=u4", timeout=2) as port:
        second = serial.serial_for_url("emu://rc?board=u4&drop=1&linger=77", timeout=0.3)
        second.close()
        assert port.emulator is not None
        st = port.emulator.status()
        assert st["faults"]["drop"] == 1.0 and st["linger"] == 77
        port.write(b"gone")
        assert port.read(4) == b""


def test_owner_close_ends_emulator(url: str, rt: Path) -> None:
    port = serial.serial_for_url(url + "&board=u5&owner=1", timeout=2)
    pid = port.emulator_info["pid"]
    assert echo(port, b"x") == b"x"
    port.close()
    assert find_emulator("u5") is None
    assert not pid_alive(pid)
    assert not (rt / "u5.json").exists()


def test_explicit_shutdown(url: str) -> None:
    port = serial.serial_for_url(url + "&board=u6", timeout=0.5)
    assert port.emulator is not None
    port.emulator.shutdown()
    wait_for(lambda: find_emulator("u6") is None, what="emulator exit")
    with pytest.raises(serial.SerialException):
        for _ in range(20):  # the port hangs up
            port.read(1)
    port.close()


def test_do_not_open(url: str, rt: Path) -> None:
    port = serial.serial_for_url(url + "&board=u7", do_not_open=True)
    assert port.emulator is None and not port.is_open
    assert not (rt / "u7.json").exists()
    port.open()
    try:
        assert port.emulator is not None and echo(port, b"late") == b"late"
    finally:
        port.close()


def test_reopen_after_hangup_unplug_finds_new_pty(url: str) -> None:
    port = serial.serial_for_url(url + "&board=u8", timeout=0.5)
    try:
        assert port.emulator is not None
        port.emulator.unplug(0.6, mode="hangup")
        with pytest.raises(serial.SerialException):
            for _ in range(20):
                port.read(1)
        port.close()
        with pytest.raises(serial.SerialException, match="unplugged"):
            port.open()
        time.sleep(0.8)
        port.open()  # a new pty (it may reuse the number: the old one was closed first)
        ctl = port.emulator
        assert ctl is not None
        wait_for(lambda: ctl.status()["host_attached"], what="attach")
        assert echo(port, b"replugged") == b"replugged"
    finally:
        port.close()


def test_startup_failure_is_reported(url: str, tmp_path: Path) -> None:
    not_a_dir = tmp_path / "flash-file"
    not_a_dir.write_text("")
    with pytest.raises(serial.SerialException, match="exited with status 1") as ei:
        serial.serial_for_url(url + f"&board=u9&flash={quote(str(not_a_dir))}")
    assert "flash-file" in str(ei.value)  # the launcher's own message is quoted
    with pytest.raises(ValueError, match=r"has no main\.py"):
        serial.serial_for_url(url + f"&board=u9&firmware={quote(str(tmp_path))}")


# ---- the real firmware ----------------------------------------------------------------------
def _hello_info(port: serial.SerialBase, timeout: float = 20.0) -> tuple[Any, ...]:
    payload = messages.pack(messages.HELLO, framing.PROTO_MAJOR, framing.PROTO_MINOR)
    port.write(framing.encode_frame(messages.HELLO, 1, payload))
    d = framing.Deframer()
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        data = port.read(4096)
        i = 0
        while i < len(data):
            i = d.push(data, i)
            if d.ready and d.type == messages.INFO:
                return tuple(messages.unpack(messages.INFO, bytes(d.payload)))
    raise AssertionError("no INFO frame from the firmware")


@pytest.mark.skipif(
    not (firmware_dir() / "main.py").exists(), reason="firmware/main.py not written yet"
)
def test_real_firmware_hello_info(rt: Path) -> None:
    port = serial.serial_for_url("emu://rc?board=fw1&seed=3&owner=1", timeout=0.2)
    try:
        info = dict(zip(messages.LAYOUTS[messages.INFO][1], _hello_info(port), strict=True))
        assert info["proto_major"] == framing.PROTO_MAJOR
        assert info["caps"] & messages.CAP_EMULATOR
        assert info["n_ranges"] == 4
        assert info["state"] == messages.ST_IDLE
        assert port.emulator is not None
        st = port.emulator.status()
        assert st["bytes_from_board"] > 0 and st["restarts"] == 0
    finally:
        port.close()
    assert find_emulator("fw1") is None
