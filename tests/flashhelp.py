"""Helpers for tests of emulated boards in flashed mode (``emu://…?flashed=1``): a board whose
flash directory holds what ``sicell flash`` writes (or nothing), its registry entry, and raw
byte I/O on its pty across re-enumerations."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

from sicell import flash
from sicell.emulator.registry import find_emulator, runtime_dir
from sicell.protocol import framing
from sicell.protocol import messages as M
from sicell.replies import BoardInfo
from sicell.transport import Frame, FrameReader

from tests.emuhelp import open_port


def flash_dir(tmp_path: Path, name: str, *, staged: bool, main_py: str | None = None) -> Path:
    """A board's flash directory: empty (a fresh MicroPython) or the staged firmware, with
    ``main_py`` (source text) as its main.py when given."""
    d = tmp_path / f"flash-{name}"
    d.mkdir()
    if staged:
        flash.stage(d, compile=True)
    if main_py is not None:
        (d / "main.py").write_text(main_py)
    return d


def url(name: str, flash: Path) -> str:
    return f"emu://rc?board={name}&flashed=1&flash={flash}&linger=60"


def registry(board: str) -> dict[str, Any]:
    info = find_emulator(board, runtime_dir())
    assert info is not None, f"emulated board {board} is not running"
    return info


def log_lines(board: str, word: str) -> list[str]:
    """The board's log lines containing ``word``."""
    return [ln for ln in Path(registry(board)["log"]).read_text().splitlines() if word in ln]


def mpremote(dev: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mpremote", "connect", dev, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


HELLO = bytes(
    framing.Encoder().encode(M.HELLO, 7, M.pack(M.HELLO, framing.PROTO_MAJOR, framing.PROTO_MINOR))
)


class Blaster:
    """Writes ``payload`` to a board's pty over and over, reopening it after a hang-up, and
    reads what comes back, until an INFO frame with ``reset_cause`` arrives."""

    def __init__(self, board: str, payload: bytes) -> None:
        self.board = board
        self.payload = payload
        self.fd: int | None = None
        self.pty = ""
        self.heard = bytearray()
        self.reader = FrameReader()
        self.hangups = 0

    def _open(self) -> bool:
        info = registry(self.board)
        if not info.get("pty"):
            return False
        self.pty = str(info["pty"])
        try:
            self.fd = open_port(self.pty)
        except (OSError, termios.error):  # that pty went away since the registry said it:
            return False  # the next one (termios.error: it hung up while being set raw)
        return True

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def step(self) -> list[Frame]:
        """Write the payload once (opening the port if needed) and read what came; the frames."""
        if self.fd is None and not self._open():
            time.sleep(0.005)  # the port is away (re-enumerating): look again shortly
            return []
        assert self.fd is not None
        try:
            os.write(self.fd, self.payload)
            r, _, _ = select.select([self.fd], [], [], 0.005)
            data = os.read(self.fd, 65536) if r else b""
        except BlockingIOError:
            return []
        except OSError:  # the port hung up under us: a re-enumeration
            self.close()
            self.hangups += 1
            return []
        self.heard += data
        return self.reader.feed(data)

    def until_info(self, reset_cause: int, timeout: float) -> bool:
        """True once an INFO frame with ``reset_cause`` arrived (False: ``timeout`` passed)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for fr in self.step():
                if fr.type == M.INFO and BoardInfo.from_payload(fr.payload).reset_cause == (
                    reset_cause
                ):
                    return True
        return False
