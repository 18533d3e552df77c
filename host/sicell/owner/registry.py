"""Who owns a port: one claim per port, held by a lock that dies with its process.

A port (a device, an ``emu://`` board, a URL) has at most one opener. The process that opens it
for a long time (``sicell run``, ``sicell serve``) first :func:`claim`\\ s it: an exclusive
``flock`` on ``<stem>.lock`` in the owners directory, held as long as the claim (the kernel
drops it when the process dies, however it dies), and an owner file ``<stem>.json`` (written
atomically) saying who holds it and where its control socket is. Any other process asks
:func:`owner_of` before it opens a port; the transport refuses an owned port
(:class:`~sicell.errors.PortOwnedError`), and the CLI talks to the owner's socket instead.

Claims are re-entrant within a process (a service claims a port, then its run session claims
it again): the outer claim's kind and handler stay until the last claim is closed.

The owners directory is ``owners/`` in the runtime directory: ``$SICELL_RUNTIME_DIR``, else
``$XDG_RUNTIME_DIR/sicell``, else ``<tmp>/sicell-<uid>`` (mode 0700). Every process that shares
ports must see the same one (a systemd unit sets the same variables as the login shell).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import hashlib
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sicell.emulator.registry import pid_alive, read_json, write_json_atomic
from sicell.errors import PortOwnedError, UsageError

RUNTIME_ENV = "SICELL_RUNTIME_DIR"
KINDS = ("run", "serve")
_SOCK_PATH_MAX = 100  # bytes; AF_UNIX paths are limited to ~108
_CLAIM_RETRY_S = 0.25  # a prober holds a shared lock for microseconds; retry past it
_OWNER_FILE_WAIT_S = 0.5  # a claimer writes its owner file right after taking the lock

Handler = Callable[[str, dict[str, Any]], dict[str, Any]]


def runtime_dir() -> Path:
    """The runtime directory (created, mode 0700)."""
    env = os.environ.get(RUNTIME_ENV)
    if env:
        d = Path(env)
    elif os.environ.get("XDG_RUNTIME_DIR"):
        d = Path(os.environ["XDG_RUNTIME_DIR"]) / "sicell"
    else:
        d = Path(tempfile.gettempdir()) / f"sicell-{os.getuid()}"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d


def owners_dir() -> Path:
    d = runtime_dir() / "owners"
    d.mkdir(exist_ok=True, mode=0o700)
    return d


# ---- port keys ------------------------------------------------------------------------------
def port_key(port: str) -> str:
    """The canonical name of the board behind ``port``: ``emu:<board id>`` for an ``emu://``
    URL (its options do not matter) or the pty of a running emulator, the real path of a
    device (a symlink names its target), ``loop:<pid>`` for ``loop://`` (private to a process),
    else the URL itself."""
    p = port.strip()
    scheme = p.split("://", 1)[0].lower() if "://" in p else ""
    if scheme == "emu":
        return _emu_key(p)
    if scheme == "loop":
        return f"loop:{os.getpid()}"
    if scheme == "spy":  # pyserial's spy://<port>: the port it wraps
        inner = p.split("://", 1)[1].split("?", 1)[0]
        return port_key(inner) if inner else p
    if scheme:
        return p
    real = os.path.realpath(p)
    return _emulator_of_pty(real) or real


def _emu_key(url: str) -> str:
    from sicell.emulator.options import default_board_id
    from sicell.urlhandler.protocol_emu import parse_url

    try:
        spec = parse_url(url)
    except UsageError:
        return url  # a bad URL: the open fails and says why; no board to key by
    return f"emu:{spec.board or default_board_id(spec.cell, spec.seed)}"


def _emulator_of_pty(real: str) -> str | None:
    """``emu:<board>`` when ``real`` is the pty of a running emulator (its registry entry)."""
    if not real.startswith("/dev/pts/"):
        return None
    from sicell.emulator.registry import find_emulator
    from sicell.emulator.registry import runtime_dir as emu_dir

    d = emu_dir()
    for p in sorted(d.glob("*.json")):
        entry = read_json(p)
        if entry is None or entry.get("board") != p.stem:
            continue
        pty = entry.get("pty")
        if isinstance(pty, str) and os.path.realpath(pty) == real and find_emulator(p.stem, d):
            return f"emu:{p.stem}"
    return None


def key_stem(key: str) -> str:
    """A file name for ``key``: readable, and distinct for distinct keys (a hash)."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", key).strip("-.")[-40:]
    return f"{readable}-{digest}" if readable else digest


@dataclass(frozen=True)
class OwnerFiles:
    lock: Path
    info: Path
    socket: Path

    @classmethod
    def of(cls, key: str) -> OwnerFiles:
        d = owners_dir()
        stem = key_stem(key)
        sock = d / f"{stem}.sock"
        if len(str(sock).encode()) >= _SOCK_PATH_MAX:
            short = Path(tempfile.gettempdir()) / f"sicell-{os.getuid()}-sock"
            short.mkdir(mode=0o700, exist_ok=True)
            tag = hashlib.sha256(str(sock).encode()).hexdigest()[:16]
            sock = short / f"{tag}.sock"
        return cls(lock=d / f"{stem}.lock", info=d / f"{stem}.json", socket=sock)


# ---- owner information ----------------------------------------------------------------------
@dataclass(frozen=True)
class OwnerInfo:
    """What an owner file says."""

    pid: int
    kind: str  # "run" or "serve"
    port: str
    key: str
    socket: str
    started: str  # local time, ISO 8601 to the second
    board_id: str | None = None
    argv: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OwnerInfo:
        pid = d.get("pid")
        argv = d.get("argv")
        return cls(
            pid=pid if isinstance(pid, int) else 0,
            kind=str(d.get("kind", "?")),
            port=str(d.get("port", "?")),
            key=str(d.get("key", "?")),
            socket=str(d.get("socket", "")),
            started=str(d.get("started", "?")),
            board_id=d.get("board_id") if isinstance(d.get("board_id"), str) else None,
            argv=[str(a) for a in argv] if isinstance(argv, list) else [],
        )

    @property
    def command(self) -> str:
        return f"sicell {self.kind}"

    def since(self) -> str:
        """``pid 123, since 2024-05-01 12:00:03``."""
        return f"pid {self.pid or 'unknown'}, since {self.started.replace('T', ' ')}"

    def describe(self) -> str:
        """``sicell run (pid 123, since 2024-05-01 12:00:03)``."""
        return f"{self.command} ({self.since()})"

    def refusal(self, port: str) -> str:
        """The one line an opener of ``port`` is told."""
        return (
            f"{port} is in use by `{self.command}` ({self.since()}); a port has one opener: "
            "`sicell status`, `pause`, `continue` and `stop` go through that process, "
            "anything else waits until it ends"
        )


def _unknown_owner(port: str, key: str, files: OwnerFiles) -> OwnerInfo:
    return OwnerInfo(pid=0, kind="?", port=port, key=key, socket=str(files.socket), started="?")


# ---- claims ---------------------------------------------------------------------------------
@dataclass
class _Held:
    key: str
    fd: int
    files: OwnerFiles
    info: OwnerInfo
    pid: int
    count: int = 1
    server: Any = None  # owner.server.ControlServer


_lock = threading.RLock()
_held: dict[str, _Held] = {}


def _here(key: str) -> _Held | None:
    h = _held.get(key)
    return h if h is not None and h.pid == os.getpid() else None  # (not a forked child's)


class Claim:
    """This process's hold on a port; :meth:`close` (or the process ending) lets it go."""

    def __init__(self, held: _Held) -> None:
        self._held = held
        self.closed = False

    @property
    def info(self) -> OwnerInfo:
        return self._held.info

    @property
    def key(self) -> str:
        return self._held.key

    def update(self, *, board_id: str | None = None) -> None:
        """Record what became known after the claim (the board id, after HELLO)."""
        with _lock:
            if self.closed:
                return
            h = self._held
            h.info = OwnerInfo(**{**asdict(h.info), "board_id": board_id})
            write_json_atomic(h.files.info, asdict(h.info))

    def close(self) -> None:
        with _lock:
            if self.closed:
                return
            self.closed = True
            h = self._held
            h.count -= 1
            if h.count > 0:
                return
            _held.pop(h.key, None)
            with contextlib.suppress(FileNotFoundError):
                h.files.info.unlink()
            os.close(h.fd)  # releases the flock
        if h.server is not None:
            h.server.close()  # (removes its socket file only if it is still its own)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def claim(port: str, kind: str, handler: Handler, board_id: str | None = None) -> Claim:
    """Claim ``port`` for this process; PortOwnedError if another live process holds it.

    ``handler(op, args) -> dict`` answers requests on the control socket (``owner.server``).
    Re-entrant: a port this process holds is claimed again (the outer claim's kind and
    handler stay).
    """
    if kind not in KINDS:
        raise ValueError(f"claim kind {kind!r}; expected one of {KINDS}")
    from sicell.owner.server import ControlServer

    key = port_key(port)
    with _lock:
        h = _here(key)
        if h is not None:
            h.count += 1
            return Claim(h)
        files = OwnerFiles.of(key)
        fd = _lock_exclusive(port, key, files)
        try:
            info = OwnerInfo(
                pid=os.getpid(),
                kind=kind,
                port=port,
                key=key,
                socket=str(files.socket),
                started=_dt.datetime.now().isoformat(timespec="seconds"),
                board_id=board_id,
                argv=list(sys.argv),
            )
            server = ControlServer(files.socket, handler)
            server.start()
            try:
                write_json_atomic(files.info, asdict(info))
            except BaseException:
                server.close()
                raise
        except BaseException:
            os.close(fd)
            raise
        h = _held[key] = _Held(key, fd, files, info, os.getpid(), server=server)
        return Claim(h)


def _lock_exclusive(port: str, key: str, files: OwnerFiles) -> int:
    fd = os.open(files.lock, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + _CLAIM_RETRY_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() < deadline:
                time.sleep(0.01)  # an owner_of() probe holds a shared lock for microseconds
                continue
        os.close(fd)
        other = _read_owner(files) or _unknown_owner(port, key, files)
        raise PortOwnedError(other.refusal(port))


def _read_owner(files: OwnerFiles) -> OwnerInfo | None:
    d = read_json(files.info)
    return OwnerInfo.from_dict(d) if d is not None else None


def held_here(port: str) -> bool:
    """Whether this process holds a claim on ``port``."""
    with _lock:
        return _here(port_key(port)) is not None


def owner_of(port: str) -> OwnerInfo | None:
    """The live owner of ``port`` (this process's own claim included), or None.

    An owner file left by a process that died is removed here.
    """
    key = port_key(port)
    with _lock:
        h = _here(key)
        if h is not None:
            return h.info
    return _other_owner(port, key)


def _other_owner(port: str, key: str) -> OwnerInfo | None:
    files = OwnerFiles.of(key)
    try:
        fd = os.open(files.lock, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _wait_owner_file(port, key, files)
        # nobody holds it: what an owner left is stale (no claimer can lock meanwhile)
        stale = _read_owner(files)
        with contextlib.suppress(FileNotFoundError):
            files.info.unlink()
        if stale is not None and stale.socket:
            _remove_socket(Path(stale.socket))
        return None
    finally:
        os.close(fd)


def _wait_owner_file(port: str, key: str, files: OwnerFiles) -> OwnerInfo:
    deadline = time.monotonic() + _OWNER_FILE_WAIT_S
    while True:
        info = _read_owner(files)
        if info is not None and pid_alive(info.pid):
            return info
        if time.monotonic() >= deadline:
            return info or _unknown_owner(port, key, files)
        time.sleep(0.01)  # the claimer writes its file right after locking


def _remove_socket(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as e:  # someone else's file in a shared directory: leave it
        if e.errno not in (errno.EACCES, errno.EPERM):
            raise


def refuse_owned(port: str) -> None:
    """PortOwnedError if another process owns ``port`` (the one opener asks this)."""
    key = port_key(port)
    with _lock:
        if _here(key) is not None:
            return
    other = _other_owner(port, key)
    if other is not None:
        raise PortOwnedError(other.refusal(port))
