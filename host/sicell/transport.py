"""Byte transport to a sicell board: open a serial port or URL, find boards, frames in and out.

A *port* is anything pyserial opens: a device path (``/dev/ttyACM0``, ``COM5``) or a URL that
``serial.serial_for_url`` understands (``emu://thin-porous``, ``loop://``, ``socket://``).
Every failure is raised as a :class:`TransportError` subclass with a one-line message that
names the port and says what to do; the CLI prints that line and nothing else.
"""

from __future__ import annotations

import contextlib
import errno
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import serial
import serial.tools.list_ports

from sicell.errors import (
    LinkLostError,
    NoBoardError,
    NoFirmwareError,
    PortBusyError,
    PortNotFoundError,
    PortOpenError,
    TransportError,
    UsageError,
    VersionMismatchError,
)
from sicell.protocol import framing, messages

try:
    import termios

    _TERMIOS_ERRORS: tuple[type[Exception], ...] = (termios.error,)
except ImportError:  # (not on Windows)
    _TERMIOS_ERRORS = ()
PORT_ERRORS: tuple[type[Exception], ...] = (serial.SerialException, OSError, *_TERMIOS_ERRORS)
"""What pyserial raises when the port goes away under it: a USB board that resets or is
unplugged makes tcdrain/tcflush fail with termios.error (not an OSError) on POSIX."""

__all__ = [
    "LinkLostError",
    "NoBoardError",
    "NoFirmwareError",
    "PortBusyError",
    "PortNotFoundError",
    "PortOpenError",
    "TransportError",
    "VersionMismatchError",
]

# Raspberry Pi's USB vendor id, and the product ids RP2040 boards enumerate with.
RPI_VID = 0x2E8A
RP2040_PIDS: dict[int, str] = {
    0x0005: "MicroPython",
    0x000A: "Pico SDK",
}

DEFAULT_BAUD = 115200  # USB CDC ignores it; it matters only for a UART bridge.
READ_CHUNK = 4096


HOST_VERSION = f"{framing.PROTO_MAJOR}.{framing.PROTO_MINOR}"


# ---- discovery ------------------------------------------------------------------------------
@dataclass(frozen=True)
class PortInfo:
    """A serial port the operating system lists, with what we know of it."""

    device: str
    description: str
    vid: int | None
    pid: int | None
    serial_number: str | None

    @property
    def is_rp2040(self) -> bool:
        return self.vid == RPI_VID and self.pid in RP2040_PIDS

    @property
    def kind(self) -> str:
        if self.is_rp2040 and self.pid is not None:
            return f"RP2040 ({RP2040_PIDS[self.pid]})"
        if self.vid is not None and self.pid is not None:
            return f"USB {self.vid:04x}:{self.pid:04x}"
        return "serial"


def list_ports() -> list[PortInfo]:
    """Every serial port the operating system lists, sorted by device name."""
    out = []
    for p in serial.tools.list_ports.comports():
        out.append(
            PortInfo(
                device=str(p.device),
                description=str(p.description or ""),
                vid=p.vid,
                pid=p.pid,
                serial_number=p.serial_number,
            )
        )
    return sorted(out, key=lambda p: p.device)


def list_boards() -> list[PortInfo]:
    """Ports whose USB ids are an RP2040 running MicroPython or the Pico SDK."""
    return [p for p in list_ports() if p.is_rp2040]


def _ports_hint() -> str:
    ports = list_ports()
    if not ports:
        return "no serial ports exist on this machine"
    return "ports that exist: " + ", ".join(f"{p.device} ({p.kind})" for p in ports)


def detect_port() -> str:
    """The device of the one RP2040 board attached; raise NoBoardError for none or several."""
    boards = list_boards()
    if not boards:
        raise NoBoardError(
            "no RP2040 board found (USB 2e8a:0005 or 2e8a:000a); give --port "
            "(a device, or emu://rc for the emulator); " + _ports_hint()
        )
    if len(boards) > 1:
        raise NoBoardError(
            "several RP2040 boards found, choose one with --port: "
            + ", ".join(b.device for b in boards)
        )
    return boards[0].device


def is_url(port: str) -> bool:
    return "://" in port


# ---- opening --------------------------------------------------------------------------------
def open_port(
    port: str,
    *,
    timeout: float = 0.05,
    exclusive: bool = True,
    baudrate: int = DEFAULT_BAUD,
) -> serial.SerialBase:
    """Open ``port`` (a device or a pyserial URL) and translate failures to TransportError.

    The read timeout is short: the reader polls and assembles frames itself. A port another
    live sicell process has claimed (``sicell.owner``) is refused with PortOwnedError: a port
    has one opener.
    """
    from sicell.owner.registry import refuse_owned

    refuse_owned(port)
    kwargs: dict[str, Any] = {"baudrate": baudrate, "timeout": timeout, "write_timeout": 5.0}
    try:
        if is_url(port):
            return serial.serial_for_url(port, **kwargs)
        return serial.Serial(port, exclusive=exclusive, **kwargs)
    except UsageError:
        raise  # a handler of ours (emu://) refused its options, and said so in one line
    except ValueError as e:
        # serial_for_url: unknown scheme, or a handler refusing its arguments.
        raise PortOpenError(f"{port}: {e}") from e
    except PORT_ERRORS as e:
        raise _classify_open_error(port, e) from e


def _classify_open_error(port: str, e: BaseException) -> TransportError:
    code = getattr(e, "errno", None)
    text = str(e)
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO) or "No such file" in text:
        return PortNotFoundError(f"{port}: no such port; {_ports_hint()}")
    if (
        code in (errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK)
        or "exclusively lock" in text
        or "Resource busy" in text
        or "Access is denied" in text  # Windows reports a held COM port this way
    ):
        return PortBusyError(
            f"{port}: port is busy, another program holds it (a terminal, mpremote, a second "
            "sicell?); close it and try again"
        )
    if code in (errno.EACCES, errno.EPERM):
        return PortOpenError(
            f"{port}: permission denied; add yourself to the group that owns it "
            "(dialout or uucp) and log in again"
        )
    # Windows: FileNotFoundError text inside a SerialException without errno.
    if "FileNotFound" in text or "cannot find" in text:
        return PortNotFoundError(f"{port}: no such port; {_ports_hint()}")
    return PortOpenError(f"{port}: cannot open: {text}")


# ---- frames ---------------------------------------------------------------------------------
class Frame(NamedTuple):
    """One good frame: protocol version byte, message type, seq / request id, payload."""

    version: int
    type: int
    seq: int
    payload: bytes

    @property
    def name(self) -> str:
        return messages.NAMES.get(self.type, f"type 0x{self.type:02x}")


class FrameReader:
    """Turns a byte stream into frames with ``protocol.framing.Deframer``; counts bad frames."""

    def __init__(self) -> None:
        self._d = framing.Deframer()
        self.bytes_in = 0
        self.last_error: framing.FrameError | None = None

    @property
    def errors(self) -> int:
        """Frames that failed COBS, length or CRC checks since this reader was made."""
        return int(self._d.errors)

    @property
    def frames(self) -> int:
        return int(self._d.frames)

    def reset(self) -> None:
        """Forget a partial frame (after a reconnect)."""
        self._d.reset()

    def feed(self, data: bytes) -> list[Frame]:
        """Consume ``data``; return every complete good frame it finished."""
        self.bytes_in += len(data)
        out: list[Frame] = []
        d = self._d
        i = 0
        n = len(data)
        while i < n:
            i = d.push(data, i)
            if d.ready:
                out.append(Frame(d.version, d.type, d.seq, bytes(d.payload)))
            elif d.error is not None:
                self.last_error = d.error
        return out


class Link:
    """An open port with framing: ``send`` frames, ``receive`` frames, nothing more.

    Serial failures while in use become :class:`LinkLostError`.
    """

    def __init__(self, ser: serial.SerialBase, name: str) -> None:
        self.ser = ser
        self.name = name
        self.reader = FrameReader()
        self._enc = framing.Encoder()
        self.bytes_out = 0
        self.closed = False

    @classmethod
    def open(cls, port: str, *, exclusive: bool = True) -> Link:
        return cls(open_port(port, exclusive=exclusive), port)

    @property
    def framing_errors(self) -> int:
        return self.reader.errors

    def send(self, msg_type: int, seq: int, payload: bytes = b"") -> None:
        data = bytes(self._enc.encode(msg_type, seq, payload))
        self.write_raw(data)

    def write_raw(self, data: bytes) -> None:
        if self.closed:
            raise LinkLostError(f"{self.name}: port is closed")
        try:
            self.ser.write(data)
            self.ser.flush()
        except PORT_ERRORS as e:
            raise LinkLostError(f"{self.name}: write failed: {e}") from e
        self.bytes_out += len(data)

    def read_raw(self) -> bytes:
        """Whatever bytes arrive within the port's short read timeout (may be empty)."""
        if self.closed:
            raise LinkLostError(f"{self.name}: port is closed")
        try:
            waiting = self.ser.in_waiting
            data = bytes(self.ser.read(min(max(waiting, 1), READ_CHUNK)))
            if data:
                more = self.ser.in_waiting
                if more:
                    data += bytes(self.ser.read(min(more, READ_CHUNK)))
            return data
        except PORT_ERRORS as e:
            raise LinkLostError(f"{self.name}: read failed: {e}") from e
        except (TypeError, AttributeError, ValueError) as e:
            # pyserial's posix reader can trip over a fd closed under it by another thread.
            raise LinkLostError(f"{self.name}: port closed while reading ({e})") from e

    def receive(self, timeout: float) -> list[Frame]:
        """Frames completed by bytes arriving within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            data = self.read_raw()
            frames = self.reader.feed(data) if data else []
            if frames or time.monotonic() >= deadline:
                return frames

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(*PORT_ERRORS):
            self.ser.close()

    def __enter__(self) -> Link:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
