"""Fixtures shared by the unit tests, and the leak check every test runs under.

* ``leak_check`` (autouse): a test that leaves an emulator, a board process or a port open
  fails (tests/leakcheck.py). Every test process gets its own emulator runtime directory.
* ``rt``: a private emulator runtime directory for one test (``SICELL_RUNTIME_DIR``).
* ``standin`` / ``emu``: launchers running the stand-in board (tests/emuhelp.py), all shut
  down at the end of the test.
* ``fake`` / ``boards``: scripted fake boards (tests/fakeboard.py), closed at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sicell.emulator import launcher
from sicell.emulator.launcher import EmulatorHandle, start_emulator

from tests import leakcheck
from tests.emuhelp import STANDIN, Starter
from tests.fakeboard import FakeBoard


def pytest_configure(config: pytest.Config) -> None:
    leakcheck.install()


def pytest_unconfigure(config: pytest.Config) -> None:
    leakcheck.uninstall()


@pytest.fixture(autouse=True)
def leak_check() -> Iterator[None]:
    yield from leakcheck.check()


@pytest.fixture(autouse=True)
def own_runtime_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every test gets its own runtime directory (``SICELL_RUNTIME_DIR``: port owners,
    emulators), so no test meets another's port owners; ``rt`` replaces it with its own."""
    monkeypatch.setenv("SICELL_RUNTIME_DIR", str(tmp_path_factory.mktemp("rt")))


# ---- emulator launchers ---------------------------------------------------------------------
CHECKOUT = Path(__file__).resolve().parents[1]
_TOOL_DIRS = {".pytest_cache", ".hypothesis", ".mypy_cache", ".ruff_cache", "__pycache__"}


@pytest.fixture(autouse=True)
def checkout_untouched() -> Iterator[None]:
    """A test that leaves a new file in the checkout's top directory fails (a firmware
    scenario run with the checkout as its working directory wrote runstate.json there)."""
    before = {p.name for p in CHECKOUT.iterdir()}
    yield
    new = {p.name for p in CHECKOUT.iterdir()} - before - _TOOL_DIRS
    assert not new, f"the test left {sorted(new)} in {CHECKOUT}: give it a tmp_path as its cwd"


@pytest.fixture
def rt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private runtime directory (registry, sockets, logs) for this test's emulators; the
    boards a test leaves running there on purpose (a port closed, the board kept) are shut
    down at the end."""
    d = tmp_path / "rt"
    d.mkdir()
    monkeypatch.setenv(launcher.RUNTIME_ENV, str(d))
    yield d
    for info in launcher.list_emulators(d):
        EmulatorHandle(info).shutdown(timeout=5)
    assert not launcher.list_emulators(d)


@pytest.fixture
def standin(tmp_path: Path) -> str:
    p = tmp_path / "standin.py"
    p.write_text(STANDIN)
    return str(p)


@pytest.fixture
def emu(rt: Path, standin: str) -> Iterator[Starter]:
    """start_emulator on the stand-in board; every launcher is shut down afterwards."""
    started: list[EmulatorHandle] = []

    def start(cell: str = "rc", **kw: Any) -> EmulatorHandle:
        kw.setdefault("entry", standin)  # entry=None: the real emuboot.py
        kw.setdefault("linger", 60)
        kw.setdefault("timeout", 20)
        h = start_emulator(cell, **kw)
        started.append(h)
        return h

    yield start
    for h in started:
        h.shutdown(timeout=5)
    for h in started:
        assert not h.alive(), f"launcher {h.pid} still running"
        if h.process is not None:
            assert h.process.returncode is not None
    left = launcher.list_emulators(rt)
    for info in left:
        EmulatorHandle(info).shutdown(timeout=5)
    assert not left, f"left-over emulators {left}"


# ---- fake boards ----------------------------------------------------------------------------
@pytest.fixture
def boards() -> Iterator[list[FakeBoard]]:
    """Fake boards a test appends to; all closed at the end."""
    made: list[FakeBoard] = []
    yield made
    for fb in made:
        fb.close()


@pytest.fixture
def fake(boards: list[FakeBoard]) -> Callable[..., FakeBoard]:
    """A factory of fake boards (closed at the end)."""

    def make(**kw: Any) -> FakeBoard:
        fb = FakeBoard(**kw)
        boards.append(fb)
        return fb

    return make
