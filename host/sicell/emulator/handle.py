"""Starting launchers and holding on to them: ``run_emulator`` (in the foreground, in this
process), ``start_emulator`` (a background launcher process, or the running one of that board
id) and ``EmulatorHandle``.

Both take the options of ``sicell.emulator.options.EmulatorOptions`` as keyword arguments
(or an EmulatorOptions in place of the cell name).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sicell.emulator.control import EmulatorControl
from sicell.emulator.options import AUTO_LINGER, EmulatorOptions, from_keywords
from sicell.emulator.registry import (
    find_emulator,
    pid_alive,
    read_json,
    registry_path,
    runtime_dir,
)
from sicell.errors import (
    ControlError,
    EmulatorBusyError,
    EmulatorConfigError,
    EmulatorError,
    EmulatorStartError,
)

EXIT_CONFIG = 2  # bad options
EXIT_BUSY = 3  # another launcher owns this board id
UNPLUGGED_POLICIES = ("raise", "wait")
_POLL_S = 0.02


def run_emulator(
    cell: str | EmulatorOptions,
    *,
    print_fn: Callable[..., Any] = print,
    detached: bool = False,
    **options: Any,
) -> int:
    """Run an emulated board in the foreground until stopped; returns the exit code.

    Prints the pty path and how to connect. 0 = stopped normally, 2 = bad options,
    3 = this board id already has an emulator, 1 = other failure. The automatic ``linger``
    (-1) means "never" here unless ``detached`` (a launcher ``start_emulator`` started for a
    port: it goes away by the run-aware rule of ``Launcher.linger_end``).
    """
    from sicell.emulator.launcher import Launcher  # the launcher imports this module

    opts = from_keywords(cell, options, start=False)
    if not detached and opts.linger == AUTO_LINGER:
        opts = dataclasses.replace(opts, linger=0.0)
    try:
        launcher = Launcher(opts, print_fn)
    except EmulatorConfigError as e:
        print_fn(f"sicell emulator: {e}")
        return EXIT_CONFIG
    try:
        return launcher.run()
    except EmulatorBusyError as e:
        print_fn(f"sicell emulator: {e}")
        return EXIT_BUSY
    except (EmulatorError, OSError) as e:  # setup failed (flash dir, staging, pty): exit 1
        print_fn(f"sicell emulator: {e}")
        return 1


@dataclass
class EmulatorHandle:
    """A running launcher: its registry entry, and the process when this program started it."""

    info: dict[str, Any]
    process: subprocess.Popen[bytes] | None = None
    runtime: str | None = None

    @property
    def board(self) -> str:
        return str(self.info["board"])

    @property
    def pid(self) -> int:
        return int(self.info["pid"])

    @property
    def pty(self) -> str:
        """Current pty path (re-read from the registry: it changes after a hang-up unplug)."""
        self.refresh()
        return str(self.info["pty"])

    @property
    def started(self) -> bool:
        """True if this handle started the launcher (False: attached to a running one)."""
        return self.process is not None

    @property
    def control(self) -> EmulatorControl:
        return EmulatorControl(str(self.info["control"]))

    def refresh(self) -> dict[str, Any]:
        info = read_json(registry_path(self.board, self._rdir()))
        if info is not None and info.get("pid") == self.info.get("pid"):
            self.info = info
        return self.info

    def _rdir(self) -> Path:
        return Path(self.runtime) if self.runtime else runtime_dir()

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return pid_alive(self.pid)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the launcher to exit; True if it did."""
        end = math.inf if timeout is None else time.monotonic() + timeout
        if self.process is not None:
            try:
                self.process.wait(timeout=timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        while pid_alive(self.pid):
            if time.monotonic() >= end:
                return False
            time.sleep(_POLL_S)
        return True

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop the launcher (control command, then SIGTERM, then SIGKILL) and wait for it."""
        if not self.alive():
            self.wait(0)
            return
        with contextlib.suppress(ControlError):  # unreachable: the signals below stop it
            self.control.shutdown()
        if self.wait(timeout):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        if self.wait(timeout):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.wait(timeout)

    def __enter__(self) -> EmulatorHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _child_env() -> dict[str, str]:
    """Environment of a launcher process: make sure it imports this same sicell."""
    env = dict(os.environ)
    pkg_parent = str(Path(__file__).resolve().parents[2])
    if pkg_parent in (str(Path(p).resolve()) for p in sys.path if p):
        env["PYTHONPATH"] = os.pathsep.join(
            [pkg_parent, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
        )
    return env


def _tail(path: str | Path, n: int = 20) -> str:
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:  # only quoted in an error message
        return "(no log)"
    return "\n".join(lines[-n:])


def check_compatible(info: Mapping[str, Any], wanted: Mapping[str, Any]) -> None:
    """EmulatorConfigError if a running board differs from explicitly requested settings."""
    diffs = [
        f"{k}={info.get(k)!r} (requested {v!r})"
        for k, v in wanted.items()
        if k in info and info.get(k) != v
    ]
    if diffs:
        raise EmulatorConfigError(
            f"board {info.get('board')!r} is already running with {', '.join(diffs)} "
            f"(launcher pid {info.get('pid')}); shut it down first or use another board id"
        )


def _existing(
    opts: EmulatorOptions,
    rdir: Path,
    wanted: Mapping[str, Any],
    *,
    attach: bool,
    wait_replug: bool,
    end: float,
) -> EmulatorHandle | None:
    """A handle to the running launcher of ``opts.board`` (checked, faults applied), or None."""
    board = opts.board or ""
    info = find_emulator(board, rdir)
    while info is not None and not info.get("pty"):
        if not wait_replug or time.monotonic() >= end:
            try:
                left = EmulatorControl(str(info["control"])).status().get("unplugged_s")
            except ControlError:
                left = None
            raise EmulatorError(
                f"emulated board {board!r} is unplugged (hang-up); its port returns "
                + (f"in {left:g} s" if isinstance(left, int | float) else "later")
            )
        time.sleep(_POLL_S)
        info = find_emulator(board, rdir)
    if info is None:
        return None
    if not attach:
        raise EmulatorBusyError(f"board {board!r} already has an emulator (pid {info.get('pid')})")
    check_compatible(info, wanted)
    h = EmulatorHandle(info, None, opts.runtime)
    if opts.faults:
        h.control.faults(**opts.faults)
    return h


def start_emulator(
    cell: str | EmulatorOptions,
    *,
    attach: bool = True,
    check: Mapping[str, Any] | None = None,
    on_unplugged: str = "raise",
    **options: Any,
) -> EmulatorHandle:
    """Start a launcher in the background (own session: it outlives this process).

    If the board id already runs and ``attach`` is true, return a handle to it (``started`` is
    False) after checking that ``check`` (default: cell, seed, realtime) matches, and applying
    ``faults`` to it; with ``attach=False`` raise EmulatorBusyError instead. A running board
    whose pty is closed by a hang-up unplug has no port to open: ``on_unplugged="raise"``
    raises EmulatorError at once (like opening a vanished /dev/ttyACM0), ``"wait"`` waits up to
    ``timeout`` for the replug. Raises EmulatorConfigError on bad options and
    EmulatorStartError when the launcher does not come up within ``timeout`` seconds.
    """
    opts = from_keywords(cell, options, start=True).validated()
    assert opts.board is not None
    rdir = Path(opts.runtime) if opts.runtime else runtime_dir()
    rdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    wanted = (
        dict(check)
        if check is not None
        else {"cell": opts.cell, "seed": opts.seed, "realtime": opts.realtime}
    )
    if on_unplugged not in UNPLUGGED_POLICIES:
        raise EmulatorConfigError(f"on_unplugged must be 'raise' or 'wait', not {on_unplugged!r}")
    timeout = opts.timeout
    end = time.monotonic() + timeout
    wait_replug = on_unplugged == "wait"

    h = _existing(opts, rdir, wanted, attach=attach, wait_replug=wait_replug, end=end)
    if h is not None:
        return h
    log = rdir / f"{opts.board}.launcher.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sicell.emulator", *opts.to_argv(), "--detached"],
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=_child_env(),
            start_new_session=True,
            close_fds=True,
        )
    while True:
        info = read_json(registry_path(opts.board, rdir))
        if info is not None and info.get("pid") == proc.pid and info.get("pty"):
            return EmulatorHandle(info, proc, opts.runtime)
        code = proc.poll()
        if code is not None:
            if code == EXIT_BUSY:
                # lost a race with another starter: attach to the winner once it is ready
                while time.monotonic() < end:
                    h = _existing(
                        opts, rdir, wanted, attach=attach, wait_replug=wait_replug, end=end
                    )
                    if h is not None:
                        return h
                    time.sleep(_POLL_S)
            raise EmulatorStartError(
                f"emulator for board {opts.board!r} exited with status {code} before its port "
                f"was ready; launcher log {log}:\n{_tail(log)}"
            )
        if time.monotonic() >= end:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise EmulatorStartError(
                f"emulator for board {opts.board!r} did not open its port within {timeout:g} s; "
                f"launcher log {log}:\n{_tail(log)}"
            )
        time.sleep(0.01)
