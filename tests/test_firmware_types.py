"""firmware/ type-checks against the MicroPython rp2 (RPI_PICO) stubs: non-strict mypy with a
custom typeshed whose stdlib is the stubs' own (micropython-stdlib-stubs, the reduced typeshed
the stub packages build on) plus the board's modules (machine, micropython, time, select, gc,
rp2, ...), so ``time.ticks_ms`` exists and CPython-only names do not. Skipped when the stubs
(the ``test`` extra) are not installed."""

from __future__ import annotations

import importlib.metadata as md
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOARD_STUBS = "micropython-rp2-rpi-pico-stubs"
STDLIB_STUBS = "micropython-stdlib-stubs"


def _dist(name: str) -> md.Distribution | None:
    try:
        return md.distribution(name)
    except md.PackageNotFoundError:
        return None


def _pyi(dist: md.Distribution) -> list[tuple[str, Path]]:
    # (path inside the distribution, file) of every stub it installed
    files = dist.files or []
    return [(str(p), Path(str(dist.locate_file(p)))) for p in files if p.suffix == ".pyi"]


def build_typeshed(dest: Path) -> Path:
    """A typeshed directory for ``mypy --custom-typeshed-dir``: stdlib/ from the stdlib stubs
    (with their VERSIONS), the board's modules and their helper package _mpy_shed added to it
    (and to VERSIONS), stubs/mypy-extensions as mypy wants."""
    board = _dist(BOARD_STUBS)
    stdlib = _dist(STDLIB_STUBS)
    assert board is not None and stdlib is not None
    lib = dest / "stdlib"
    added: set[str] = set()
    for rel, src in _pyi(stdlib):
        if rel.startswith("stdlib/") or rel.startswith("stubs/"):
            out = dest / rel
        else:  # _mpy_shed/...
            out = lib / rel
            added.add(rel.split("/")[0])
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, out)
    for rel, src in _pyi(board):
        out = lib / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, out)
        added.add(rel.split("/")[0].removesuffix(".pyi"))
    versions_src = next(src for rel, src in _pyi(stdlib) if rel == "stdlib/_typeshed/__init__.pyi")
    versions = (versions_src.parents[1] / "VERSIONS").read_text(encoding="utf-8")
    listed = {ln.split(":")[0].strip() for ln in versions.splitlines() if ":" in ln}
    extra = "".join(m + ": 3.0-\n" for m in sorted(added - listed))
    (lib / "VERSIONS").write_text(versions + extra, encoding="utf-8")
    return dest


needs_stubs = pytest.mark.skipif(
    _dist(BOARD_STUBS) is None or _dist(STDLIB_STUBS) is None,
    reason=BOARD_STUBS + " not installed (pip install -e '.[test]')",
)


@needs_stubs
def test_firmware_type_checks_against_the_rp2_stubs(tmp_path: Path) -> None:
    ts = build_typeshed(tmp_path / "typeshed")
    assert (ts / "stdlib" / "machine.pyi").exists() and (ts / "stdlib" / "VERSIONS").exists()
    ini = tmp_path / "mypy.ini"
    ini.write_text("[mypy]\n", encoding="utf-8")  # non-strict: not the host's strict config
    files = sorted(str(p) for p in (ROOT / "firmware").rglob("*.py"))
    cmd = [
        sys.executable,
        "-m",
        "mypy",
        "--config-file",
        str(ini),
        "--custom-typeshed-dir",
        str(ts),
        "--python-version",
        "3.11",
        "--cache-dir",
        str(tmp_path / "cache"),
        *files,
    ]
    env = dict(os.environ, MYPYPATH=str(ROOT))  # protocol/ as a package
    p = subprocess.run(cmd, cwd=str(ROOT), env=env, capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "no issues found in %d source files" % len(files) in p.stdout


@needs_stubs
def test_the_stubs_know_the_board(tmp_path: Path) -> None:
    # the check is against the board's modules: CPython-only names fail, MicroPython ones pass
    ts = build_typeshed(tmp_path / "typeshed")
    src = tmp_path / "probe.py"
    src.write_text(
        "import time\nimport machine\n"
        "a: int = time.ticks_diff(time.ticks_ms(), 0)\n"
        "w = machine.WDT(timeout=1000)\n"
        "b = time.perf_counter()\n",
        encoding="utf-8",
    )
    ini = tmp_path / "mypy.ini"
    ini.write_text("[mypy]\n", encoding="utf-8")
    cmd = [sys.executable, "-m", "mypy", "--config-file", str(ini)]
    cmd += ["--custom-typeshed-dir", str(ts), "--cache-dir", str(tmp_path / "c"), str(src)]
    p = subprocess.run(cmd, cwd=str(tmp_path), capture_output=True, text=True, check=False)
    errors = [ln for ln in p.stdout.splitlines() if ": error:" in ln]
    assert len(errors) == 1 and "perf_counter" in errors[0], p.stdout
