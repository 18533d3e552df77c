"""Emulator launcher: run the unmodified firmware under the MicroPython unix port behind a pty.

One launcher process per emulated board. It

* stages the firmware the way the board's flash holds it and starts the interpreter on it
  (``staging.py``; the board process and its restarts: ``board.py``);
* owns a pseudo-terminal (``hostport.py``) and relays bytes between its master side and the
  interpreter's stdin/stdout (``relay.py``: link faults, delays, host presence, back-pressure);
* forwards board-level faults (freeze, brown-out, reset, noise) to the board's control FIFO;
* answers JSON-line commands on a Unix socket (``control_server.py``; ``control.py`` is the
  client);
* records itself in a registry file ``<runtime dir>/<board>.json`` while it runs
  (``registry.py``).

Unplug (control ``unplug``): in ``drop`` mode the relay discards everything both ways for N
seconds while the host's port stays open (``relay.py``); in ``hangup`` mode the launcher also
closes the pty, as a real unplug looks to the host, and opens a new one after N seconds
(``hostport.py``); the registry, the ``.tty`` symlink and ``status`` show the new path.
Re-enumeration: a board in flashed mode (``flashed``) that resets other than softly
(machine.reset(), watchdog, brown-out: its ``reset cause=`` line) gets the same hang-up, which
ends when it logs its next boot, as a chip's USB port goes away and comes back; the registry's
``plugs`` counts the ptys made, so a host can tell a new one from the old under the same name.

Lifetime. The launcher keeps running when its host dies, so a restarted host can reattach. It
exits on the control command ``shutdown``, on SIGTERM/SIGINT, when the board process ends by
itself with status 0 (its own ``quit`` / ``stop_after_s``), or for want of a host
(``linger_end``): after ``linger`` seconds with no host attached (0 = never), or with the
automatic linger (-1, the default of a board started for a port): never while a run goes on
(running, paused, held, interrupted: the firmware's state, which the board logs), an hour after
a run ended with no host attached (so ``sicell run --resume`` still finds its records), else a
minute after the host left. A board run in the foreground (``sicell emulate``) stays. A board
process that crashes (non-zero status) is restarted with back-off, like a power cycle;
``status`` counts ``restarts``.

This module also re-exports the names tests and benches import from it.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import shutil
import signal
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sicell.emulator.board import ACTIVE_STATES, BoardFifo, BoardLog, BoardProcess
from sicell.emulator.cellmodels import canonical_cell, cell_names
from sicell.emulator.control_server import ControlServer, Handler
from sicell.emulator.faults import DIRECTIONS, FaultConfig, FaultInjector
from sicell.emulator.handle import EXIT_CONFIG, EmulatorHandle, run_emulator, start_emulator
from sicell.emulator.hostport import ATTACH_POLL_S, HostPort
from sicell.emulator.options import (
    AUTO_LINGER,
    DEFAULT_LINGER_S,
    HEAPSIZE,
    IDLE_LINGER_S,
    RESUME_LINGER_S,
    START_TIMEOUT_S,
    EmulatorOptions,
    heap_bytes,
)
from sicell.emulator.registry import (
    REGISTRY_VERSION,
    RUNTIME_ENV,
    BoardFiles,
    find_emulator,
    list_emulators,
    lock_board,
    pid_alive,
    read_json,
    runtime_dir,
    write_json_atomic,
)
from sicell.emulator.relay import PENDING_LIMIT, Relay
from sicell.emulator.staging import (
    board_env,
    emulator_heap_overhead,
    firmware_dir,
    interpreter_cmd,
    mp_dir,
    stage_firmware,
)
from sicell.errors import EmulatorBusyError, EmulatorConfigError

_pid_alive = pid_alive  # the names tests and benches import from here
_interpreter_cmd = interpreter_cmd

__all__ = [
    "DEFAULT_LINGER_S",
    "DIRECTIONS",
    "EXIT_CONFIG",
    "HEAPSIZE",
    "PENDING_LIMIT",
    "RUNTIME_ENV",
    "START_TIMEOUT_S",
    "EmulatorBusyError",
    "EmulatorConfigError",
    "EmulatorHandle",
    "EmulatorOptions",
    "FaultConfig",
    "FaultInjector",
    "Launcher",
    "_interpreter_cmd",
    "_pid_alive",
    "canonical_cell",
    "cell_names",
    "emulator_heap_overhead",
    "find_emulator",
    "firmware_dir",
    "heap_bytes",
    "list_emulators",
    "mp_dir",
    "run_emulator",
    "runtime_dir",
    "stage_firmware",
    "start_emulator",
]

_IN, _OUT = select.POLLIN, select.POLLOUT
_GONE = select.POLLHUP | select.POLLERR
_WRITE_CHUNK = 65536
_HANGUP_CHECK_S = 0.05  # attached, both directions blocked: how often to look for a hang-up
REENUMERATE_MAX_S = 10.0  # a re-enumeration's hang-up ends at the next boot, or after this


class Launcher:
    """The relay and control server of one emulated board (runs in the launcher process)."""

    def __init__(self, opts: EmulatorOptions, print_fn: Callable[..., Any] = print) -> None:
        self.o = opts.validated()
        assert self.o.board is not None
        self.board: str = self.o.board
        self.print = print_fn
        self.rdir = Path(self.o.runtime) if self.o.runtime else runtime_dir()
        self.rdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.files = BoardFiles.of(self.rdir, self.board, self.o.flash_dir)
        self.log = BoardLog(self.files.log)
        self.relay = Relay(self.o.seed, self.o.faults)
        self.port = HostPort(self.files.link)
        self.proc = BoardProcess(self.log)
        self.fifo = BoardFifo(self.files.fifo, self.log)
        self.server = ControlServer(self.files.socket, self._handlers())
        self.linger = self.o.linger
        self.heap_overhead = 0
        self.heap_arg = self.o.heapsize
        self.lock_fd: int | None = None
        self.wake: tuple[int, int] | None = None  # self-pipe: signals wake the poll loop
        self.t0 = 0.0
        self.stop_reason: str | None = None
        self.unclaimed_since: float | None = None  # a run ended while no host was attached
        self._seen_state: str | None = None
        self._hard_resets = 0  # the board's resets other than soft ones, seen so far
        self._replug_after_boot: int | None = None  # re-enumerating: replug after this boot

    # -- control commands ----------------------------------------------------------------------
    def _handlers(self) -> dict[str, Handler]:
        return {
            "status": lambda req: self.status(),
            "ping": lambda req: {"pid": os.getpid()},
            "faults": self._cmd_faults,
            "unplug": self._cmd_unplug,
            "replug": self._cmd_replug,
            "freeze": self._cmd_board_fault,
            "brownout": self._cmd_board_fault,
            "reset": self._cmd_reset,
            "noise": self._cmd_noise,
            "linger": self._cmd_linger,
            "shutdown": self._cmd_shutdown,
        }

    def command(self, req: Mapping[str, Any]) -> dict[str, Any]:
        """Execute one control request (also used in-process); returns the reply fields."""
        return self.server.dispatch(req)

    def _cmd_faults(self, req: Mapping[str, Any]) -> dict[str, Any]:
        faults = self.relay.set_faults({k: v for k, v in req.items() if k != "cmd"})
        self.log.line(f"link faults {faults}")
        return {"faults": faults}

    def _cmd_unplug(self, req: Mapping[str, Any]) -> dict[str, Any]:
        seconds = float(req.get("seconds", 1.0))
        mode = str(req.get("mode", "drop"))
        self._unplug(time.monotonic(), seconds, mode)
        self.log.line(f"unplug ({mode}) for {seconds} s")
        return {"unplugged_s": seconds, "mode": mode}

    def _unplug(self, now: float, seconds: float, mode: str) -> None:
        self.relay.unplug(now, seconds, mode)
        if mode == "hangup" and self.port.master is not None:
            self.port.close()
            self.relay.detach(now)
            self._write_registry()

    def _cmd_replug(self, req: Mapping[str, Any]) -> dict[str, Any]:
        now = time.monotonic()
        self.relay.replug(now)
        self._replug_if_due(now)
        return {"pty": self.port.path}

    def _cmd_board_fault(self, req: Mapping[str, Any]) -> dict[str, Any]:
        cmd = str(req["cmd"])
        ms = int(req.get("ms", 0))
        if not (0 < ms <= 86_400_000):
            raise ValueError(f"{cmd} ms must be in (0, 86400000], not {ms}")
        self.fifo.send(f"{cmd} {ms}")
        return {cmd: ms}

    def _cmd_reset(self, req: Mapping[str, Any]) -> dict[str, Any]:
        self.fifo.send("reset")
        return {}

    def _cmd_noise(self, req: Mapping[str, Any]) -> dict[str, Any]:
        on = req.get("on", True)
        if not isinstance(on, bool):
            raise ValueError(f"noise 'on' must be true or false, not {on!r}")
        self.fifo.send("noise on" if on else "noise off")
        return {"noise": on}

    def _cmd_linger(self, req: Mapping[str, Any]) -> dict[str, Any]:
        s = float(req.get("seconds", DEFAULT_LINGER_S))
        if not (math.isfinite(s) and (s >= 0 or s == AUTO_LINGER)):
            raise ValueError(f"linger must be >= 0 seconds or -1 (auto), not {s}")
        self.linger = s
        self._write_registry()
        return {"linger": s}

    def _cmd_shutdown(self, req: Mapping[str, Any]) -> dict[str, Any]:
        self.stop_reason = "shutdown command"
        return {"pid": os.getpid()}

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "pid": os.getpid(),
            "board_pid": self.proc.pid,
            "board": self.board,
            "cell": self.o.cell,
            "seed": self.o.seed,
            "pty": self.port.path,
            "link": str(self.files.link),
            "uptime_s": round(now - self.t0, 3),
            "vtime_s": self.proc.scanner.vtime,
            **self.relay.status(now),
            "linger": self.linger,
            "run_state": self.proc.scanner.run_state,
            "board_idle": self.proc.scanner.idle,
            "cell_history": dict(self.proc.scanner.cell_history),
            "restarts": self.proc.restarts,
            "last_exit": self.proc.last_exit,
            "flashed": self.o.flashed,
            "plugs": self.port.opens,
        }

    # -- registry and board --------------------------------------------------------------------
    def _write_registry(self) -> None:
        f = self.files
        write_json_atomic(
            f.registry,
            {
                "version": REGISTRY_VERSION,
                "board": self.board,
                "pid": os.getpid(),
                "pty": self.port.path,
                "link": str(f.link),
                "control": str(f.socket),
                "fifo": str(f.fifo),
                "flash_dir": str(f.flash),
                "log": str(f.log),
                "cell": self.o.cell,
                "seed": self.o.seed,
                "realtime": self.o.realtime,
                "noise": self.o.noise,
                "cell_overrides": self.o.cell_overrides,
                "linger": self.linger,
                "entry": self.o.entry,
                "mpy": self.o.mpy,
                "flashed": self.o.flashed,
                "plugs": self.port.opens,
                "heap_budget": self.o.heapsize,
                "heap_overhead": self.heap_overhead,
                "heapsize_arg": self.heap_arg,
                "started": time.time(),
            },
        )

    def _start_board(self, now: float) -> None:
        emu, fwd = self.files.stage / "emu", self.files.stage / "fw"
        cfg = self.files.stage / "config.json"
        write_json_atomic(cfg, self.o.board_config())
        cmd = interpreter_cmd(self.heap_arg, self.o.entry or str(emu / "emuboot.py"))
        # flashed: the firmware is what the flash directory (the board's cwd) holds
        env = board_env(emu, Path(".") if self.o.flashed else fwd, cfg, self.files.fifo, self.board)
        self.proc.start(cmd, env, self.files.flash, now)
        self.relay.board_started()

    def _board_ended(self) -> None:
        """The interpreter closed stdout: reap it, then quit or schedule a restart."""
        code = self.proc.reap()
        self.relay.board_stopped()
        if self.stop_reason is not None:
            return
        if code == 0:
            self.log.line("board process exited with status 0: emulator ends")
            self.print(f"board {self.board}: the emulated board ended (status 0)")
            self.stop_reason = "board exited"
            return
        delay = self.proc.schedule_restart(time.monotonic())
        self.log.line(f"board process exited with status {code}; restart in {delay:.1f} s")
        self.print(
            f"board {self.board}: board process exited with status {code}, restarting in "
            f"{delay:.1f} s (log: {self.files.log})"
        )

    # -- I/O -------------------------------------------------------------------------------------
    def _read_host(self, now: float) -> None:
        """Read from the host; also detects attach (a host holds the slave) and detach."""
        present, data = self.port.read()
        if not present:
            if self.relay.attached:
                self._detach(now)
            else:
                self.port.next_attach_check = now + ATTACH_POLL_S
            return
        if not self.relay.attached:
            self.relay.attach()
            self.unclaimed_since = None
            self.log.line(f"host attached on {self.port.path}")
        if data:
            self.relay.from_host(data, now)

    def _detach(self, now: float) -> None:
        if self.relay.detach(now):
            self.log.line("host detached")
        self.port.flush()
        self.port.next_attach_check = now + ATTACH_POLL_S

    def _write_host(self, now: float) -> None:
        n = self.port.write(self.relay.host.ready[:_WRITE_CHUNK])
        if n is None:
            self._detach(now)
        else:
            self.relay.host_sent(n)

    def _write_board(self) -> None:
        n = self.proc.write_in(self.relay.board.ready[:_WRITE_CHUNK])
        if n is None:
            self.relay.board_write_failed()
        else:
            self.relay.board_sent(n)

    def _read_board(self, now: float) -> None:
        data = self.proc.read_out()
        if data == b"":
            self._board_ended()
        elif data:
            self.relay.from_board(data, now)

    def _replug_if_due(self, now: float) -> None:
        if self.port.master is None and not self.relay.unplugged(now) and self.stop_reason is None:
            self.port.open()
            self._write_registry()
            self.log.line(f"replugged on {self.port.path}")

    # -- main loop -------------------------------------------------------------------------------
    def _interest(self, now: float) -> tuple[dict[int, int], float]:
        """The fds to poll with their masks, and when to wake up without I/O."""
        r, p = self.relay, self.proc
        want: dict[int, int] = {}
        for fd, mask in (
            (p.stdout, _IN if r.want_board_output() else 0),
            (p.stderr, _IN),
            (p.stdin, _OUT if r.board.ready else 0),
            (self.wake[0] if self.wake else None, _IN),
            *self.server.watch(),
        ):
            if fd is not None and mask:
                want[fd] = mask
        deadline = r.deadline(now)
        if self.port.master is not None:
            if r.attached:
                m = (_IN if r.want_host_input() else 0) | (_OUT if r.host.ready else 0)
                if m:
                    want[self.port.master] = m
                else:  # still notice a hang-up while both directions are blocked
                    deadline = min(deadline, now + _HANGUP_CHECK_S)
            else:
                deadline = min(deadline, self.port.next_attach_check)
        if p.restart_at is not None:
            deadline = min(deadline, p.restart_at)
        linger_end = self.linger_end()
        if linger_end is not None:
            if now >= linger_end:
                self.stop_reason = f"no host for {now - r.last_detach:.0f} s (linger)"
            deadline = min(deadline, linger_end)
        return want, deadline

    def linger_end(self) -> float | None:
        """When to exit for want of a host (None: not now; see Lifetime above)."""
        r = self.relay
        if self.linger != AUTO_LINGER:
            return r.linger_end(self.linger)
        if r.attached or self.proc.scanner.run_state in ACTIVE_STATES:
            return None
        if self.unclaimed_since is not None:
            return max(r.last_detach, self.unclaimed_since) + RESUME_LINGER_S
        return r.last_detach + IDLE_LINGER_S

    def _reenumerate(self, now: float) -> None:
        """Flashed mode: a reset other than a soft one hangs the pty up until the next boot."""
        sc = self.proc.scanner
        if sc.hard_resets != self._hard_resets:
            self._hard_resets = sc.hard_resets
            if self.o.flashed:
                self._unplug(now, REENUMERATE_MAX_S, "hangup")
                self._replug_after_boot = sc.boots_at_hard_reset
                self.log.line("board reset: its port re-enumerates")
        if self._replug_after_boot is not None and sc.boots > self._replug_after_boot:
            self._replug_after_boot = None
            self.relay.replug(now)
            self._replug_if_due(now)

    def _board_state(self, now: float) -> None:
        """Follow the run state the board logged: a run ending with no host is unclaimed."""
        st = self.proc.scanner.run_state
        if st == self._seen_state:
            return
        was, self._seen_state = self._seen_state, st
        if was in ACTIVE_STATES and st not in ACTIVE_STATES and not self.relay.attached:
            self.unclaimed_since = now
            self.log.line(f"run ended ({st}) with no host attached: kept for --resume")

    def _on_event(self, fd: int, ev: int, now: float) -> None:
        if self.wake is not None and fd == self.wake[0]:
            with contextlib.suppress(BlockingIOError):  # drained already
                os.read(fd, 512)
        elif fd == self.port.master:
            if ev & (_IN | _GONE):
                self._read_host(now)
            if ev & _OUT and self.port.master is not None and self.relay.attached:
                self._write_host(now)
        elif fd == self.proc.stdout:
            self._read_board(now)
        elif fd == self.proc.stderr:
            self.proc.read_err()
            self._board_state(now)
            self._reenumerate(now)
        elif fd == self.proc.stdin:
            if ev & _OUT:
                self._write_board()
            else:  # POLLERR: the board's stdin reader is gone
                self.relay.board_write_failed()
        else:
            self.server.on_event(fd, ev)

    def loop(self) -> None:
        poller = select.poll()
        registered: dict[int, int] = {}
        while self.stop_reason is None:
            now = time.monotonic()
            self.relay.release(now)
            self._replug_if_due(now)
            if self.proc.restart_due(now):
                self._start_board(now)
            want, deadline = self._interest(now)
            if self.stop_reason is not None:
                break
            for fd in [fd for fd in registered if fd not in want]:
                poller.unregister(fd)
                del registered[fd]
            for fd, mask in want.items():
                if registered.get(fd) != mask:
                    if fd in registered:
                        poller.modify(fd, mask)
                    else:
                        poller.register(fd, mask)
                    registered[fd] = mask
            timeout = None if deadline == math.inf else math.ceil(max(0, (deadline - now) * 1e3))
            try:
                events = poller.poll(timeout)
            except InterruptedError:
                continue
            now = time.monotonic()
            for fd, ev in events:
                self._on_event(fd, ev, now)
            master = self.port.master
            if master is None:
                continue
            if not self.relay.attached and time.monotonic() >= self.port.next_attach_check:
                self._read_host(time.monotonic())  # detached: look for a new opener
            elif self.relay.attached and master not in registered and self.port.hung_up():
                self._read_host(time.monotonic())

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stop_reason = signal.Signals(signum).name

    # -- lifetime --------------------------------------------------------------------------------
    def setup(self) -> None:
        """Open everything (the board lock is already held); the registry entry comes last."""
        self.log.open()
        self.files.flash.mkdir(parents=True, exist_ok=True)
        fw = Path(self.o.firmware) if self.o.firmware else None
        stage_firmware(self.files.stage, fw, self.o.mpy)
        if self.o.entry is None:
            self.heap_overhead = emulator_heap_overhead(
                self.files.stage / "emu", self.o.board_config(), self.rdir
            )
            self.heap_arg = str(heap_bytes(self.o.heapsize) + self.heap_overhead)
        self.fifo.open()
        self.port.open()
        self.server.open()
        self.t0 = self.relay.last_detach = time.monotonic()
        self._start_board(self.t0)
        self._write_registry()
        self.log.line(
            f"board {self.board} cell {self.o.cell} seed {self.o.seed} on {self.port.path}"
        )

    def teardown(self) -> None:
        self.proc.stop(self.fifo)
        self.fifo.close()
        if self.wake is not None:
            for fd in self.wake:
                os.close(fd)
            self.wake = None
        self.server.close()
        self.port.close()  # an attached host sees a hang-up
        info = read_json(self.files.registry)
        if info is not None and info.get("pid") == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                self.files.registry.unlink()
        shutil.rmtree(self.files.stage, ignore_errors=True)
        self.log.line(f"stopped ({self.stop_reason})")
        self.log.close()
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None

    def run(self) -> int:
        """Take the board lock, set up, relay until stopped, tear down; the exit code.

        Raises EmulatorBusyError (before touching anything) when another launcher owns the
        board id.
        """
        self.lock_fd = lock_board(self.files, self.board)
        old: dict[int, Any] = {}
        old_wakeup = -1
        try:
            r, w = os.pipe()
            self.wake = (r, w)
            os.set_blocking(r, False)
            os.set_blocking(w, False)
            if threading.current_thread() is threading.main_thread():
                for sig in (signal.SIGTERM, signal.SIGINT):
                    old[sig] = signal.signal(sig, self._on_signal)
                old_wakeup = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
            self.setup()
            if self.stop_reason is None:
                self._announce()
                self.loop()
            self.print(f"sicell emulator {self.board}: stopped ({self.stop_reason})")
            return 0
        finally:
            if old:
                signal.set_wakeup_fd(old_wakeup)
                for signum, handler in old.items():
                    signal.signal(signum, handler)
            self.teardown()

    def _announce(self) -> None:
        o = self.o
        url = f"emu://{o.cell}?board={self.board}"
        if o.seed:
            url += f"&seed={o.seed}"
        linger = {0: "never", AUTO_LINGER: "auto"}.get(self.linger, f"{self.linger:g} s")
        self.print(
            f"sicell emulator: board {self.board} (cell {o.cell}, seed {o.seed}"
            f"{', realtime' if o.realtime else ''}), launcher pid {os.getpid()}\n"
            f"  port:    {self.port.path}   (stable link: {self.files.link})\n"
            f"  connect: sicell run SCHEDULE --port {self.port.path}\n"
            f"      or:  sicell run SCHEDULE --port '{url}'\n"
            f"  control: {self.files.socket}\n"
            f"  flash:   {self.files.flash}\n"
            f"  log:     {self.files.log}\n"
            f"  stops on Ctrl-C, SIGTERM, the 'shutdown' control command, or without a host "
            f"(linger {linger})",
        )
