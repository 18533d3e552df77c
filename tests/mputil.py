"""Running scripts under the MicroPython unix port from pytest.

Every firmware and protocol test that claims "runs on the board" goes through here, with the
heap bounded close to the RP2040's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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


def run_mp(
    script: str | Path,
    *args: str,
    path: list[Path] | None = None,
    heap: str = HEAP,
    cwd: Path | None = None,
    timeout: float = 300,
    stdin: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``script`` under ``micropython -X heapsize=...`` with MICROPYPATH set to ``path``."""
    dirs = path if path is not None else [ROOT]
    env = dict(os.environ)
    env["MICROPYPATH"] = os.pathsep.join(str(p) for p in dirs)
    return subprocess.run(
        [*micropython_cmd(), "-X", "heapsize=" + heap, str(script), *args],
        env=env,
        cwd=str(cwd or ROOT),
        input=stdin,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
