"""Where running launchers are found: the runtime directory, each board's files in it, the
registry entry ``<board>.json`` of a live launcher, and atomic writes of files other
processes read."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sicell.errors import EmulatorBusyError

RUNTIME_ENV = "SICELL_RUNTIME_DIR"
REGISTRY_VERSION = 1
_SOCK_PATH_MAX = 100  # bytes; AF_UNIX paths are limited to ~108


def runtime_dir() -> Path:
    """``$SICELL_RUNTIME_DIR`` or ``/tmp/sicell-<uid>/emu`` (created, mode 0700)."""
    env = os.environ.get(RUNTIME_ENV)
    d = Path(env) if env else Path(tempfile.gettempdir()) / f"sicell-{os.getuid()}" / "emu"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d


def registry_path(board: str, rdir: Path | None = None) -> Path:
    return (rdir or runtime_dir()) / f"{board}.json"


@dataclass(frozen=True)
class BoardFiles:
    """The files of one board's launcher in the runtime directory."""

    registry: Path  # <board>.json: the registry entry (written last, removed first)
    lock: Path  # flock'ed while the launcher runs: one launcher per board id
    link: Path  # <board>.tty: stable symlink to the current pty
    fifo: Path  # the board's control FIFO (board faults)
    log: Path  # the board's stderr and the launcher's own lines
    stage: Path  # the staged firmware and emulator modules
    socket: Path  # the control socket
    flash: Path  # the board's flash directory (cwd of the board process)

    @classmethod
    def of(cls, rdir: Path, board: str, flash_dir: str | None = None) -> BoardFiles:
        sock = rdir / f"{board}.sock"
        if len(str(sock).encode()) >= _SOCK_PATH_MAX:
            short = Path(tempfile.gettempdir()) / f"sicell-{os.getuid()}-sock"
            short.mkdir(mode=0o700, exist_ok=True)
            sock = short / f"{abs(hash(str(sock))) % 10**12}.sock"
        return cls(
            registry=registry_path(board, rdir),
            lock=rdir / f"{board}.lock",
            link=rdir / f"{board}.tty",
            fifo=rdir / f"{board}.fifo",
            log=rdir / f"{board}.log",
            stage=rdir / f"{board}.stage",
            socket=sock,
            flash=Path(flash_dir) if flash_dir else rdir / "flash" / board,
        )


def lock_board(files: BoardFiles, board: str) -> int:
    """Take the board's lock (an fd to close on exit); EmulatorBusyError if another launcher
    holds it."""
    fd = os.open(files.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        other = read_json(files.registry) or {}
        raise EmulatorBusyError(
            f"board {board!r} already has an emulator (pid {other.get('pid', '?')}, "
            f"port {other.get('pty', '?')}); attach to it or pick another board id"
        ) from None
    return fd


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            st = f.read()
    except OSError:  # no /proc: the kill above is all we know
        return True
    return st[st.rfind(b")") + 2 : st.rfind(b")") + 3] != b"Z"


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None if missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):  # missing, unreadable or half-written by an old writer
        return None
    return data if isinstance(data, dict) else None


def _temp_beside(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON so that a reader sees the old file or the new one, never part."""
    tmp = _temp_beside(path)
    try:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # the original error is the one to report
            tmp.unlink()
        raise


def symlink_atomic(target: str, link: Path) -> None:
    """Point ``link`` at ``target``, replacing an existing link in one step."""
    tmp = _temp_beside(link)
    try:
        tmp.unlink()
        os.symlink(target, tmp)
        os.replace(tmp, link)
    except BaseException:
        with contextlib.suppress(OSError):  # the original error is the one to report
            tmp.unlink()
        raise


def find_emulator(board: str, rdir: Path | None = None) -> dict[str, Any] | None:
    """Registry entry of the live launcher for ``board``, or None.

    A stale entry (its process gone, or its control socket not answering) is removed.
    """
    path = registry_path(board, rdir)
    info = read_json(path)
    if info is None or info.get("board") != board:
        return None  # not a registry entry (e.g. the heap-overhead cache): leave it alone
    pid = info.get("pid")
    ok = isinstance(pid, int) and pid_alive(pid)
    if ok:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(2.0)
                s.connect(str(info.get("control", "")))
        except OSError:  # no socket, or nobody accepting: a stale entry
            ok = False
    if not ok:
        # only remove it if nobody replaced it meanwhile
        if read_json(path) == info:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        return None
    return info


def list_emulators(rdir: Path | None = None) -> list[dict[str, Any]]:
    """Registry entries of every live launcher in the runtime directory."""
    d = rdir or runtime_dir()
    out = []
    for p in sorted(d.glob("*.json")):
        info = find_emulator(p.stem, d)
        if info is not None:
            out.append(info)
    return out
