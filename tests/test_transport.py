"""Transport: opening ports and URLs, the errors a user sees, board detection, framing reader."""

from __future__ import annotations

import fcntl
import os
import tty
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import serial
from sicell import transport
from sicell.protocol import framing, messages
from sicell.transport import (
    Link,
    NoBoardError,
    PortBusyError,
    PortNotFoundError,
    PortOpenError,
    TransportError,
    open_port,
)


@pytest.fixture
def pty_path() -> Iterator[str]:
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        yield os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


def _fake_ports(monkeypatch: pytest.MonkeyPatch, ports: list[dict[str, Any]]) -> None:
    objs = [
        SimpleNamespace(
            device=p["device"],
            description=p.get("description", ""),
            vid=p.get("vid"),
            pid=p.get("pid"),
            serial_number=p.get("serial_number"),
        )
        for p in ports
    ]
    monkeypatch.setattr(serial.tools.list_ports, "comports", lambda: objs)


def test_missing_port_names_it_and_lists_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_ports(monkeypatch, [{"device": "/dev/ttyUSB7", "vid": 0x0403, "pid": 0x6001}])
    with pytest.raises(PortNotFoundError) as ei:
        open_port("/dev/ttyACM_does_not_exist")
    msg = str(ei.value)
    assert "/dev/ttyACM_does_not_exist" in msg
    assert "no such port" in msg
    assert "/dev/ttyUSB7" in msg
    assert "\n" not in msg


def test_missing_port_with_no_ports_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_ports(monkeypatch, [])
    with pytest.raises(PortNotFoundError, match="no serial ports exist"):
        open_port("/dev/ttyACM_nothing")


def test_busy_port_exclusive_lock(pty_path: str) -> None:
    first = open_port(pty_path)
    try:
        with pytest.raises(PortBusyError) as ei:
            open_port(pty_path)
        msg = str(ei.value)
        assert pty_path in msg
        assert "another program holds it" in msg
    finally:
        first.close()
    # once released, it opens
    open_port(pty_path).close()


def test_busy_port_foreign_flock(pty_path: str) -> None:
    fd = os.open(pty_path, os.O_RDWR | os.O_NOCTTY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        with pytest.raises(PortBusyError, match="another program holds it"):
            open_port(pty_path)
    finally:
        os.close(fd)


def test_unknown_url_scheme() -> None:
    with pytest.raises(PortOpenError, match="nosuch://x"):
        open_port("nosuch://x")


def test_transport_errors_share_a_base() -> None:
    for cls in (PortNotFoundError, PortBusyError, PortOpenError, NoBoardError):
        assert issubclass(cls, TransportError)


def test_loop_url_round_trips_frames() -> None:
    with Link.open("loop://") as link:
        link.send(messages.PING, 77, messages.pack(messages.PING, 5))
        link.send(messages.STATUS_REQ, 78)
        frames = []
        for _ in range(20):
            frames += link.receive(0.05)
            if len(frames) == 2:
                break
        assert [(f.type, f.seq) for f in frames] == [(messages.PING, 77), (messages.STATUS_REQ, 78)]
        assert frames[0].name == "PING"
        assert frames[0].version == framing.VERSION_BYTE
        assert link.framing_errors == 0


def test_link_counts_framing_errors_on_loop() -> None:
    with Link.open("loop://") as link:
        good = framing.encode_frame(messages.PING, 1, messages.pack(messages.PING, 9))
        bad = bytearray(good)
        bad[4] ^= 0x55  # corrupt a byte inside the frame → CRC (or COBS) error
        link.write_raw(bytes(bad) + good)
        frames = link.receive(0.3)
        assert [f.seq for f in frames] == [1]
        assert link.framing_errors == 1


def test_detect_port_finds_rp2040(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_ports(
        monkeypatch,
        [
            {"device": "/dev/ttyS0"},
            {"device": "/dev/ttyACM3", "vid": 0x2E8A, "pid": 0x0005, "description": "Board"},
            {"device": "/dev/ttyUSB0", "vid": 0x0403, "pid": 0x6001},
        ],
    )
    boards = transport.list_boards()
    assert [b.device for b in boards] == ["/dev/ttyACM3"]
    assert boards[0].kind == "RP2040 (MicroPython)"
    assert transport.detect_port() == "/dev/ttyACM3"


def test_detect_port_pico_sdk_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_ports(monkeypatch, [{"device": "COM7", "vid": 0x2E8A, "pid": 0x000A}])
    assert transport.detect_port() == "COM7"
    assert transport.list_boards()[0].kind == "RP2040 (Pico SDK)"


def test_detect_port_none_or_many(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_ports(monkeypatch, [{"device": "/dev/ttyUSB0", "vid": 0x0403, "pid": 0x6001}])
    with pytest.raises(NoBoardError, match=r"no RP2040 board found.*ttyUSB0"):
        transport.detect_port()
    _fake_ports(
        monkeypatch,
        [
            {"device": "/dev/ttyACM0", "vid": 0x2E8A, "pid": 0x0005},
            {"device": "/dev/ttyACM1", "vid": 0x2E8A, "pid": 0x000A},
        ],
    )
    with pytest.raises(NoBoardError, match=r"several.*ttyACM0, /dev/ttyACM1"):
        transport.detect_port()


def test_read_after_close_is_link_lost() -> None:
    link = Link.open("loop://")
    link.close()
    with pytest.raises(transport.LinkLostError):
        link.receive(0.01)
    with pytest.raises(transport.LinkLostError):
        link.send(messages.PING, 1, messages.pack(messages.PING, 0))


def test_pty_hangup_is_link_lost() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    link = Link.open(path)
    os.close(slave)
    os.close(master)  # the other side goes away: reads fail with EIO
    with pytest.raises(transport.LinkLostError, match=path):
        for _ in range(20):
            link.receive(0.05)
    link.close()


def test_a_port_gone_under_a_write_is_a_lost_link() -> None:
    """A USB board that resets re-enumerates: pyserial's flush (tcdrain) then raises
    termios.error, which is no OSError; the link still reports LinkLostError, never a trace."""
    termios = pytest.importorskip("termios")

    class Gone:
        in_waiting = 0

        def write(self, data: bytes) -> int:
            return len(data)

        def flush(self) -> None:
            raise termios.error(5, "Input/output error")

        def close(self) -> None:
            raise termios.error(5, "Input/output error")

    link = transport.Link(Gone(), "/dev/ttyACM9")  # type: ignore[arg-type]
    with pytest.raises(transport.LinkLostError, match="ttyACM9: write failed"):
        link.send(messages.PING, 1, messages.pack(messages.PING, 7))
    link.close()  # closing a port that is gone says nothing
    assert link.closed
