"""After a board reset: wait for its port to go away and come back, the same board (maybe under
another device name), then open it and handshake.

A USB board re-enumerates when it resets (machine.reset(), the watchdog, power): its serial
device disappears and a new one appears, usually under the same name, sometimes under another
(``/dev/ttyACM0`` then ``/dev/ttyACM1``). An emulated board in flashed mode
(``emu://<cell>?flashed=1``) does the same with its pty; its registry entry counts the ptys it
made (``plugs``), so a new one is told from the old under the same name. Nothing is sent to the
board before its port went away: until then it may still sit in a REPL finishing the command
that resets it, where a sicell frame (a HELLO holds 0x03, Ctrl-C) would drive the REPL.

Use: ``before = snapshot(port)`` before asking for the reset, then
``reopen_after_reset(port, before, board_id)``: the open, handshaken Board. A bound passed
raises BoardTimeoutError (a TransportError) saying what was waited for.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sicell.client import Board
from sicell.errors import (
    BoardTimeoutError,
    EmulatorConfigError,
    NoFirmwareError,
    PortBusyError,
    TransportError,
)
from sicell.transport import Link, is_url, list_boards

GONE_TIMEOUT_S = 10.0  # the reset is asked for: its port goes within this
BACK_TIMEOUT_S = 60.0  # ... and a board answers HELLO within this (boot ~1 s, enumeration)
HELLO_TIMEOUT_S = 3.0  # one handshake attempt on a port that came back
POLL_S = 0.02

Log = Callable[[str], None]


_Emu = tuple[str, Path]  # an emulated board: its id and its runtime directory


def _emulated(port: str) -> _Emu | None:
    """The emulated board ``port`` names: an ``emu://`` URL (running or not), or the pty or
    ``.tty`` link of a running one; None for anything else."""
    from sicell.emulator.registry import list_emulators, runtime_dir

    if port.lower().startswith("emu://"):
        from sicell.urlhandler.protocol_emu import parse_url

        try:
            opts = parse_url(port).validated()
        except EmulatorConfigError:
            return None
        return str(opts.board), Path(opts.runtime) if opts.runtime else runtime_dir()
    if is_url(port):
        return None
    real = os.path.realpath(port)
    rdir = runtime_dir()
    for info in list_emulators(rdir):
        if real in {os.path.realpath(str(info.get(k) or "")) for k in ("pty", "link")}:
            return str(info["board"]), rdir
    return None


def _registry(emu: _Emu) -> dict[str, Any] | None:
    from sicell.emulator.registry import find_emulator

    return find_emulator(*emu)


def emulator_of(port: str) -> dict[str, Any] | None:
    """The registry entry of the running emulated board ``port`` names, or None."""
    emu = _emulated(port)
    return _registry(emu) if emu is not None else None


def _incarnation(port: str, emu: _Emu | None) -> Hashable | None:
    if emu is not None:
        info = _registry(emu)
        return (info.get("pid"), info.get("plugs")) if info and info.get("pty") else None
    if is_url(port):
        raise TransportError(f"{port}: cannot tell when this kind of port resets")
    try:
        st = os.stat(port)
    except OSError:
        return None
    return (st.st_rdev, st.st_ino)


def incarnation(port: str) -> Hashable | None:
    """What tells this port's current device from the one before a re-enumeration (None: it
    is gone): an emulated board's launcher and pty count, else the device's inode."""
    return _incarnation(port, _emulated(port))


@dataclass(frozen=True)
class Snapshot:
    """A port (the emulated board it names, if any) and the RP2040 devices around it, before
    a reset."""

    port: str
    own: Hashable | None
    others: Mapping[str, Hashable | None] = field(default_factory=dict)
    emu: _Emu | None = None

    def now(self) -> Hashable | None:
        """The port's incarnation now."""
        return _incarnation(self.port, self.emu)

    def device(self) -> str:
        """What to open: an emulated board's current pty (no URL side effects), else the port."""
        info = _registry(self.emu) if self.emu is not None else None
        return str(info["pty"]) if info is not None and info.get("pty") else self.port


def snapshot(port: str) -> Snapshot:
    emu = _emulated(port)
    others = {}
    if emu is None and not is_url(port):
        others = {p.device: incarnation(p.device) for p in list_boards()}
    return Snapshot(port, _incarnation(port, emu), others, emu)


def wait_gone(before: Snapshot, timeout: float = GONE_TIMEOUT_S) -> None:
    """Until ``before.port`` went away or was replaced; BoardTimeoutError after ``timeout``."""
    end = time.monotonic() + timeout
    while before.now() == before.own:
        if time.monotonic() >= end:
            raise BoardTimeoutError(
                f"{before.port}: the board did not reset: its port was still the same "
                f"{timeout:g} s after the reset was asked for"
            )
        time.sleep(POLL_S)


def _candidates(before: Snapshot) -> list[tuple[str, Hashable]]:
    """Ports that appeared since ``before`` (the port itself first): (device, incarnation)."""
    out = []
    own = before.now()
    if own is not None and own != before.own:
        out.append((before.device(), own))
    if before.emu is None and not is_url(before.port):
        for p in list_boards():
            inc = incarnation(p.device)
            if p.device != before.port and inc is not None and inc != before.others.get(p.device):
                out.append((p.device, inc))
    return out


def _handshake(dev: str) -> tuple[Board | None, str, bool]:
    """(the handshaken board or None, why not, whether to try this device again)."""
    try:
        link = Link.open(dev)
    except PortBusyError as e:  # udev or a modem manager may hold a new port a moment
        return None, str(e), True
    except TransportError as e:  # gone again, or not ready
        return None, str(e), True
    board = Board(link)
    try:
        board.hello(timeout=HELLO_TIMEOUT_S)
    except NoFirmwareError as e:
        heard = link.reader.bytes_in > 0
        link.close()
        # silent: still booting, ask again; something answered but not sicell: a REPL, leave it
        return None, str(e), not heard
    except TransportError as e:
        link.close()
        return None, str(e), True
    return board, "", False


def wait_back(
    before: Snapshot,
    board_id: str | None = None,
    timeout: float = BACK_TIMEOUT_S,
    log: Log | None = None,
) -> Board:
    """The board, handshaken, once a port that appeared since ``before`` answers HELLO (as
    ``board_id`` when given); BoardTimeoutError after ``timeout``."""
    end = time.monotonic() + timeout
    done: set[Hashable] = set()
    last = "no port came back"
    while time.monotonic() < end:
        for dev, inc in _candidates(before):
            if inc in done:
                continue
            board, why, again = _handshake(dev)
            if board is None:
                last = why
                if not again:
                    done.add(inc)
                continue
            assert board.info is not None
            if board_id is None or board.info.board_id == board_id:
                if log is not None and before.emu is None and dev != before.port:
                    log(f"{before.port}: the board came back as {dev}")
                return board
            last = f"{dev} answers as board {board.info.board_id}, not {board_id}"
            board.close()
            done.add(inc)
        time.sleep(POLL_S)
    who = f"board {board_id}" if board_id else "the board"
    raise BoardTimeoutError(
        f"{before.port}: {who} did not come back within {timeout:g} s of its port going away "
        f"(waited for a port to reappear and answer HELLO; last: {last})"
    )


def reopen_after_reset(
    port: str,
    before: Snapshot,
    board_id: str | None = None,
    *,
    gone_timeout: float = GONE_TIMEOUT_S,
    timeout: float = BACK_TIMEOUT_S,
    log: Log | None = None,
) -> Board:
    """``wait_gone`` then ``wait_back``: the reset board, open and handshaken."""
    assert before.port == port
    wait_gone(before, gone_timeout)
    return wait_back(before, board_id, timeout, log)


def reconnect(port: str, board_id: str | None = None, timeout: float = BACK_TIMEOUT_S) -> Board:
    """The board on ``port`` (as ``board_id`` when given), handshaken, once it answers again
    after a link failure whose cause is unknown (an unplug, a reset the caller did not ask for):
    HELLO on that port only, never on others (another device there may sit in a REPL, which a
    HELLO's 0x03 would drive). BoardTimeoutError after ``timeout``; a different board on the
    port is not taken (BoardTimeoutError naming it)."""
    end = time.monotonic() + timeout
    last = "the port did not answer"
    while time.monotonic() < end:
        board, why, again = _handshake(port)
        if board is not None:
            assert board.info is not None
            if board_id is None or board.info.board_id == board_id:
                return board
            board.close()
            raise BoardTimeoutError(
                f"{port}: now answers as board {board.info.board_id}, not {board_id}"
            )
        last = why
        if not again:
            break
        time.sleep(0.2)
    who = f"board {board_id}" if board_id else "the board"
    raise BoardTimeoutError(f"{port}: {who} did not answer again within {timeout:g} s ({last})")
