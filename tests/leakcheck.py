"""Fail a test that leaves an emulator, a board process or a serial port (pty) behind.

Like python-can's test conftest, which fails a test that leaves a virtual bus open: a leaked
launcher keeps a CPU core busy and a board id taken, and a leaked port makes the next test's
open fail or, worse, two programs share one board. Every process a test starts inherits the
session's ``SICELL_TEST_TOKEN`` (set by :func:`install`), also through ``sicell`` subprocesses
and ``emu://`` URLs, so a leftover is found wherever it was started from. A leftover gets
``GRACE_S`` to finish what it was asked to do (an ``owner=1`` emulator shuts down after its
port closes), then is killed and the test fails naming it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

TOKEN_ENV = "SICELL_TEST_TOKEN"
RUNTIME_ENV = "SICELL_RUNTIME_DIR"  # the launcher's registry folder (sicell.emulator)
GRACE_S = 15.0
_PORT_PREFIXES = ("/dev/pts/", "/dev/ptmx", "/dev/ttyACM", "/dev/ttyUSB")
_made_runtime: list[str] = []


def install() -> None:
    """Once per test process: a token for the processes it starts and a private runtime
    directory, so tests never meet (or leave) emulators of a user or of another worker."""
    if os.environ.get(TOKEN_ENV, "").startswith(f"{os.getpid()}-"):
        return  # both test folders' conftests call this
    os.environ[TOKEN_ENV] = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    d = tempfile.mkdtemp(prefix="sicell-test-rt-")
    _made_runtime.append(d)
    os.environ[RUNTIME_ENV] = d


def uninstall() -> None:
    for d in _made_runtime:
        shutil.rmtree(d, ignore_errors=True)
    _made_runtime.clear()


@dataclass(frozen=True)
class Proc:
    pid: int
    start: int  # start time in clock ticks: a pid reused later is another process
    cmd: str

    def __str__(self) -> str:
        return f"pid {self.pid}: {self.cmd[:160]}"


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) of ``pid``, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            st = f.read()
    except OSError:
        return None
    rest = st[st.rfind(b")") + 2 :].split()
    return rest[0].decode(), int(rest[1]), int(rest[19])


def processes(token: str | None = None) -> set[Proc]:
    """Live (not zombie) processes other than this one whose environment carries ``token``."""
    token = token or os.environ.get(TOKEN_ENV, "")
    if not token:
        return set()
    needle = f"{TOKEN_ENV}={token}\0".encode()
    me = os.getpid()
    found: set[Proc] = set()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        pid = int(name)
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read()
            if needle not in env + b"\0":
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # gone meanwhile, or not ours to read: not a leak of ours
            continue
        st = _stat(pid)
        if st is None:
            continue
        if st[0] in ("Z", "X"):
            _reap(pid, st[1])
            continue
        found.add(Proc(pid, st[2], cmd))
    return found


def _reap(pid: int, ppid: int) -> None:
    if ppid == os.getpid():
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def _alive(p: Proc) -> bool:
    st = _stat(p.pid)
    if st is None or st[2] != p.start:
        return False
    if st[0] in ("Z", "X"):
        _reap(p.pid, st[1])
        return False
    return True


def port_fds() -> dict[int, str]:
    """This process's open file descriptors on a serial port: a pseudo-terminal (an emulated
    board, the fake board) or a USB CDC / serial adapter (a real board)."""
    out: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target.startswith(_PORT_PREFIXES):
            out[int(name)] = target
    return out


def _kill(procs: set[Proc]) -> None:
    for p in procs:
        if _alive(p):
            with contextlib.suppress(OSError):
                os.kill(p.pid, signal.SIGKILL)
    end = time.monotonic() + 5.0
    while any(_alive(p) for p in procs) and time.monotonic() < end:
        time.sleep(0.02)


def check() -> Iterator[None]:
    """The body of an autouse fixture: snapshot, run the test, then fail on leftovers."""
    procs_before = processes()
    fds_before = port_fds()
    yield
    problems: list[str] = []
    new = processes() - procs_before
    end = time.monotonic() + GRACE_S
    while new and time.monotonic() < end:
        time.sleep(0.05)
        new = {p for p in new if _alive(p)}
    if new:
        _kill(new)
        problems += [f"left a process running ({p})" for p in sorted(new, key=lambda p: p.pid)]
    fds = {fd: t for fd, t in port_fds().items() if fds_before.get(fd) != t}
    # not closed here: the object that owns the descriptor would later close a reused number
    problems += [f"left a port open (fd {fd} on {t})" for fd, t in sorted(fds.items())]
    if problems:
        raise AssertionError("test leaked: " + "; ".join(problems))
