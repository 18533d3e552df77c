"""The emulated board's process: the MicroPython interpreter on the staged flash, its pipes,
restarts with back-off, its stderr (logged, and scanned for the virtual time), its control
FIFO, and the log file it shares with the launcher.

A board process that ends with status 0 (its own ``quit`` / ``stop_after_s``) ends the
emulator; one that crashes is restarted like a power cycle, sooner the longer it ran.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from sicell.emulator.hostport import write_some

MAX_RESTART_DELAY_S = 5.0
QUICK_EXIT_S = 2.0  # a board process that ran less than this counts as a quick exit
READ_SIZE = 65536
_ERR_KEEP = 4096  # longest partial stderr line kept for the virtual-time scan
_VTIME_RE = re.compile(rb"^emu: t=([0-9.eE+-]+)")
_STATE_RE = re.compile(rb" run state=([A-Z]+|[0-9]+)(?: cell (.*))?$")
_IDLE_RE = re.compile(rb"^emu: t=\S+ (idle|active): ")
_BOOT_RE = re.compile(rb"^emu: t=\S+ boot \d+ ")
_RESET_RE = re.compile(rb"^emu: t=\S+ reset cause=([A-Z_]+)")
ACTIVE_STATES = frozenset({"RUNNING", "PAUSED", "HOLD", "INTERRUPTED"})  # a run goes on


def restart_delay(quick_exits: int) -> float:
    """Back-off before a restart after ``quick_exits`` quick exits in a row."""
    return min(MAX_RESTART_DELAY_S, 0.1 * 2.0 ** min(quick_exits, 10))


def _history(text: bytes) -> dict[str, float]:
    """``cycles=3 lith_mah=1.2 ...`` as numbers (a garbled field is left out)."""
    out: dict[str, float] = {}
    for part in text.decode("ascii", "replace").split():
        k, _, v = part.partition("=")
        with contextlib.suppress(ValueError):
            out[k] = float(v)
    return out


class VtimeScanner:
    """The board's virtual time, run state and cell history from its ``emu: t=<s> ...``
    stderr lines (world.py: ``run state=NAME cell k=v ...``), fed in any chunks; also its
    boots and the resets other than soft ones (emuboot.py: ``boot N``, ``reset cause=NAME``)."""

    def __init__(self) -> None:
        self.vtime: float | None = None
        self.run_state: str | None = None  # the firmware engine's state, once it ticked
        self.cell_history: dict[str, float] = {}
        self.state_changes = 0
        self.idle = False  # the board waits in wall time (idle.py's 'idle:' line)
        self.boots = 0
        self.hard_resets = 0  # resets other than SOFT_RESET (a chip's USB re-enumerates)
        self.boots_at_hard_reset = 0  # ``boots`` when the last of them was seen
        self._line = bytearray()

    def feed(self, data: bytes) -> None:
        buf = self._line
        buf += data
        if b"\n" in buf:
            lines = buf.split(b"\n")
            for line in lines[:-1]:
                m = _VTIME_RE.match(line)
                if m:
                    with contextlib.suppress(ValueError):  # a garbled number: keep the last
                        self.vtime = float(m.group(1))
                    st = _STATE_RE.search(line)
                    if st:
                        self.run_state = st.group(1).decode()
                        self.state_changes += 1
                        self.idle = False
                        if st.group(2):
                            self.cell_history = _history(st.group(2))
                    idle = _IDLE_RE.match(line)
                    if idle:
                        self.idle = idle.group(1) == b"idle"
                    self._boot_or_reset(line)
            self._line = bytearray(lines[-1][-_ERR_KEEP:])
        elif len(buf) > _ERR_KEEP:
            del buf[:-_ERR_KEEP]

    def _boot_or_reset(self, line: bytes | bytearray) -> None:
        if _BOOT_RE.match(line):
            self.boots += 1
            return
        r = _RESET_RE.match(line)
        if r and r.group(1) != b"SOFT_RESET":
            self.hard_resets += 1
            self.boots_at_hard_reset = self.boots


class BoardLog:
    """``<board>.log``: the board's stderr and the launcher's lines (the previous run's log
    is kept as ``<board>.log.1``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def open(self) -> None:
        if self.path.exists():
            with contextlib.suppress(OSError):  # keeping the old log is a courtesy
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def raw(self, data: bytes) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):  # a full disk must not stop the board
                os.write(self.fd, data)

    def line(self, msg: str) -> None:
        self.raw(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} launcher: {msg}\n".encode())

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class BoardFifo:
    """The board's control FIFO: board-level faults (freeze, brownout, reset, noise, quit)."""

    def __init__(self, path: Path, log: BoardLog) -> None:
        self.path = path
        self.log = log
        self.fd: int | None = None

    def open(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.mkfifo(self.path, 0o600)
        # O_RDWR: opening never blocks and the board's reads never see end-of-file
        self.fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK)

    def send(self, line: str) -> None:
        """One command line to the board; OSError if it cannot take it."""
        if self.fd is None:
            raise OSError("the board control FIFO is not open")
        try:
            os.write(self.fd, line.encode() + b"\n")
        except BlockingIOError:
            raise OSError("the board is not reading its control FIFO (full)") from None
        self.log.line(f"board fault: {line}")

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):  # closing is all that is left to do
                os.close(self.fd)
            self.fd = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the child between fork and exec
    # no prctl (not Linux): the board then outlives a killed launcher until its stdin closes
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the launcher


class BoardProcess:
    """The interpreter process: non-blocking pipes to its stdin/stdout/stderr, exit and
    restart bookkeeping."""

    def __init__(self, log: BoardLog) -> None:
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.stdin: int | None = None  # we write
        self.stdout: int | None = None  # we read
        self.stderr: int | None = None  # we read, log, scan
        self.started_at = 0.0
        self.restart_at: float | None = None
        self.restarts = 0
        self.quick_exits = 0
        self.last_exit: int | None = None
        self.scanner = VtimeScanner()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self, cmd: list[str], env: Mapping[str, str], cwd: Path, now: float) -> None:
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                cmd,
                stdin=in_r,
                stdout=out_w,
                stderr=err_w,
                cwd=cwd,
                env=dict(env),
                close_fds=True,
                start_new_session=True,
                preexec_fn=_set_pdeathsig,
            )
        except BaseException:
            for fd in (in_w, out_r, err_r):
                os.close(fd)
            raise
        finally:
            os.close(in_r)
            os.close(out_w)
            os.close(err_w)
        for fd in (in_w, out_r, err_r):
            os.set_blocking(fd, False)
        self.stdin, self.stdout, self.stderr = in_w, out_r, err_r
        self.started_at = now
        self.log.line(f"board process {self.proc.pid} started: {' '.join(cmd[-3:])}")

    def read_out(self) -> bytes | None:
        """Output of the board (b"": it closed stdout, it ended); None: nothing now."""
        assert self.stdout is not None
        try:
            return os.read(self.stdout, READ_SIZE)
        except BlockingIOError:
            return None

    def read_err(self) -> None:
        """Log what the board wrote to stderr and scan it for the virtual time."""
        assert self.stderr is not None
        try:
            data = os.read(self.stderr, READ_SIZE)
        except BlockingIOError:
            return
        if not data:
            with contextlib.suppress(OSError):  # closing is all that is left to do
                os.close(self.stderr)
            self.stderr = None
            return
        self.log.raw(data)
        self.scanner.feed(data)

    def write_in(self, data: bytes | bytearray) -> int | None:
        """Write to the board's stdin; bytes taken (0: full), None: its reader is gone."""
        assert self.stdin is not None
        return write_some(self.stdin, data)  # EPIPE and friends: the board is going away

    def reap(self) -> int:
        """The board closed stdout: close the pipes, wait for it; its exit status."""
        self._close_pipes()
        code = -1
        if self.proc is not None:
            try:
                code = self.proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait()
        self.proc = None
        self.last_exit = code
        return code

    def schedule_restart(self, now: float) -> float:
        """Plan a restart after a crash; the back-off delay."""
        self.quick_exits = self.quick_exits + 1 if now - self.started_at < QUICK_EXIT_S else 0
        delay = restart_delay(self.quick_exits)
        self.restart_at = now + delay
        return delay

    def restart_due(self, now: float) -> bool:
        """True (once) when a planned restart is due."""
        if self.proc is None and self.restart_at is not None and now >= self.restart_at:
            self.restart_at = None
            self.restarts += 1
            return True
        return False

    def stop(self, fifo: BoardFifo) -> None:
        """Ask the board to quit, then SIGTERM, then SIGKILL its process group."""
        proc = self.proc
        if proc is not None:
            if fifo.fd is not None:
                with contextlib.suppress(OSError):  # the board may be gone already
                    os.write(fifo.fd, b"quit\n")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            self.proc = None
        self._close_pipes()

    def _close_pipes(self) -> None:
        for fd in (self.stdin, self.stdout, self.stderr):
            if fd is not None:
                with contextlib.suppress(OSError):  # closing is all that is left to do
                    os.close(fd)
        self.stdin = self.stdout = self.stderr = None
