"""The one way tests (and benches) run code under the MicroPython unix port.

Every firmware and protocol test that claims "runs on the board" goes through here, with the
heap bounded close to the RP2040's: :func:`run_mp` (a finished process), :func:`run_mp_json`
(its last JSON line, asserting a clean exit), :func:`popen_mp` (a live process to talk to).
``MICROPYPATH`` is always given explicitly (``path``), as the board's flash would hold it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
FW = ROOT / "firmware"
MP_DIR = ROOT / "tests" / "mp"  # the engine/ring/link scenarios and their fake front end
EMU_MP = ROOT / "host" / "sicell" / "emulator" / "mp"  # the emulator's MicroPython side
ENGINE_PATH = (FW, ROOT, MP_DIR)  # firmware modules at top level, protocol/ as a package
HEAP = "192K"


def micropython_cmd() -> list[str]:
    """The command that starts the unix port (the PyPI wrapper script, next to this Python)."""
    exe = Path(sys.executable).with_name("micropython")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("micropython")
    if found:
        return [found]
    return [sys.executable, "-m", "micropython_unix"]


def _available() -> bool:
    try:
        p = subprocess.run(
            [*micropython_cmd(), "-c", "print(1)"], capture_output=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return p.returncode == 0


MICROPYTHON_OK = _available()
needs_mp = pytest.mark.skipif(not MICROPYTHON_OK, reason="micropython unix port not installed")


def mp_env(path: Sequence[Path | str], **extra: str) -> dict[str, str]:
    """This process's environment with ``MICROPYPATH`` = ``path`` (and ``extra`` set)."""
    env = dict(os.environ)
    env["MICROPYPATH"] = os.pathsep.join(str(p) for p in path)
    env.update(extra)
    return env


def mp_argv(script: str | Path, *args: str, heap: str = HEAP) -> list[str]:
    return [*micropython_cmd(), "-X", "heapsize=" + heap, str(script), *args]


def run_mp(
    script: str | Path,
    *args: str,
    path: Sequence[Path | str] | None = None,
    heap: str = HEAP,
    cwd: Path | None = None,
    timeout: float = 300,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
    text: bool = False,
) -> subprocess.CompletedProcess[Any]:
    """Run ``script`` under ``micropython -X heapsize=...`` with MICROPYPATH set to ``path``
    (and ``env`` on top of this process's environment); output as bytes, or str with ``text``.
    Without ``cwd`` it runs in a temporary directory: firmware code writes its files (runstate,
    calibration) where it runs, never into the checkout."""
    with tempfile.TemporaryDirectory(prefix="sicell-mp-") as work:
        return subprocess.run(
            mp_argv(script, *args, heap=heap),
            env={**mp_env(path if path is not None else [ROOT]), **(env or {})},
            cwd=str(cwd or work),
            input=stdin,
            capture_output=True,
            timeout=timeout,
            check=False,
            text=text,
        )


def run_mp_json(
    script: str | Path,
    *args: str,
    path: Sequence[Path | str] = ENGINE_PATH,
    **kw: Any,
) -> Any:
    """Run a scenario (a bare name is looked up in tests/mp) and return the last line of its
    output that is a JSON object; a non-zero exit fails the test with its output."""
    script = Path(script)
    if not script.is_absolute():
        script = MP_DIR / script
    p = run_mp(script, *args, path=path, **kw)
    out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    assert p.returncode == 0, f"{script.name} {args}: exit {p.returncode}\n{out}\n{err}"
    objs = [ln for ln in out.splitlines() if ln.startswith("{")]
    assert objs, f"{script.name} {args}: no JSON line in its output\n{out}\n{err}"
    return json.loads(objs[-1])


def popen_mp(
    script: str | Path,
    *args: str,
    path: Sequence[Path | str],
    heap: str = HEAP,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    text: bool = False,
) -> subprocess.Popen[Any]:
    """A live interpreter on ``script`` with pipes for stdin, stdout and stderr."""
    return subprocess.Popen(
        mp_argv(script, *args, heap=heap),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=str(cwd or ROOT),
        env={**mp_env(path), **(env or {})},
        text=text,
    )
