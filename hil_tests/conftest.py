"""The HIL suite's options and fixtures: one suite, the emulator by default, a board on request.

    pytest hil_tests                                         # emulator (emu://rc), rig-emulator
    pytest hil_tests --port /dev/ttyACM0 --rig my-rig.toml   # a real board on a rig

On the emulator every test gets a fresh board (``emu://rc?seed=..&board=<unique>&owner=1``)
that is shut down at its end; a session finalizer shuts down any emulator this run started
that is still alive, so no emulator process outlives ``pytest``. On hardware every test gets
the same port, and the board is left idle (any run stopped) after each test.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from hil_tests.rig import EMULATOR_RIGS, Rig, RigError, load_rig
from tests import leakcheck

EMU_LINGER_S = 120  # an emulator without a host for this long exits by itself


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("sicell-hil", "sicell hardware-in-the-loop suite (hil_tests/)")
    g.addoption(
        "--port",
        default=None,
        help="serial port of a real board (/dev/ttyACM0, COM5) or any pyserial URL; "
        "default: a fresh emulator per test (emu://rc)",
    )
    g.addoption(
        "--rig",
        default=None,
        help="rig file describing the dummy load and tolerances (default on the emulator: "
        "each of hil_tests/rig-emulator*.toml in turn; format: hil_tests/rig-example.toml)",
    )
    g.addoption(
        "--emu-seed",
        type=int,
        default=1,
        help="base seed of the emulated boards (each test adds its own offset)",
    )


def pytest_configure(config: pytest.Config) -> None:
    # the markers are declared in pyproject.toml; declare them again for a run from elsewhere
    config.addinivalue_line(
        "markers", "emulator_only: needs an emulator fault hook; skipped on real hardware"
    )
    config.addinivalue_line("markers", "slow: long emulator runs")
    leakcheck.install()


def pytest_unconfigure(config: pytest.Config) -> None:
    leakcheck.uninstall()


@pytest.fixture(autouse=True)
def leak_check() -> Iterator[None]:
    """A test that leaves an emulator, a board process or a port open fails (tests/leakcheck)."""
    yield from leakcheck.check()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Without --rig, the emulator runs every rig-dependent test once per emulator rig (the RC
    dummy and the resistor): each test meets each load kind it makes sense for."""
    if "target" not in metafunc.fixturenames:
        return
    given = metafunc.config.getoption("--rig")
    rigs = [given] if given or _on_hardware(metafunc.config) else [str(p) for p in EMULATOR_RIGS]
    ids = [Path(r).stem.replace("rig-", "") if r else "rig" for r in rigs]
    metafunc.parametrize("target", rigs, indirect=True, scope="session", ids=ids)


def _on_hardware(config: pytest.Config) -> bool:
    port = config.getoption("--port", default=None)
    return bool(port) and not str(port).startswith("emu://")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not _on_hardware(config):
        return
    skip = pytest.mark.skip(
        reason="needs an emulator fault hook (link faults, unplug, freeze, brown-out); "
        f"running on the real board at {config.getoption('--port')}"
    )
    for item in items:
        if "emulator_only" in item.keywords:
            item.add_marker(skip)


# ---- the target: emulator or a real board ---------------------------------------------------


@dataclass
class Target:
    """Where the suite runs: ``hardware`` with ``port``, or the emulator."""

    hardware: bool
    port: str | None
    rig: Rig
    seed: int
    run_tag: str
    started: list[str] = field(default_factory=list)  # emulator board ids this run started
    _n: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def new_board_id(self, label: str) -> str:
        safe = "".join(c if c.isalnum() else "-" for c in label)[:24].strip("-")
        return f"hil-{self.run_tag}-{next(self._n)}-{safe}"

    def emu_url(
        self,
        board_id: str,
        *,
        seed: int | None = None,
        owner: bool = False,
        **query: Any,
    ) -> str:
        """``emu://`` URL of an emulated board wired to the rig's dummy.

        ``owner=1`` makes closing the port shut the emulator down: right for a test that opens
        the board once, wrong for a ``RunSession`` (it closes and reopens the port to
        reconnect). Without it the fixture shuts the board down at the end of the test, and
        ``linger`` ends a board left without a host even if pytest itself is killed.
        """
        q: dict[str, Any] = {
            "seed": self.seed if seed is None else seed,
            "board": board_id,
            "linger": EMU_LINGER_S,
        }
        q.update(self.rig.dummy.emu_query())
        if owner:
            q["owner"] = 1
        q.update(query)
        return f"emu://{self.rig.dummy.emu_cell}?" + urlencode(q)


@pytest.fixture(scope="session")
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    cfg = request.config
    port = cfg.getoption("--port")
    rig_path = getattr(request, "param", None) or cfg.getoption("--rig")
    hardware = _on_hardware(cfg)
    if hardware and not rig_path:
        pytest.exit(
            "--port names a real board: give its rig file with --rig (see "
            "hil_tests/rig-example.toml)",
            returncode=4,
        )
    try:
        rig = load_rig(rig_path)
    except RigError as e:
        pytest.exit(str(e), returncode=4)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw")
    if hardware and port:
        # a restore an earlier run left undone (killed mid-test) is finished before any test
        from hil_tests.rigguard import restore_pending

        reporter = cfg.pluginmanager.get_plugin("terminalreporter")
        restore_pending(
            port,
            Path(cfg.cache.mkdir("sicell-hil")),
            lambda line: reporter.write_line(line) if reporter else None,
        )
    kind = rig.dummy.kind  # one tag per rig: its boards never share an id (or a flash)
    tag = f"{os.getpid() % 100000}{worker.replace('gw', 'w')}{kind}"
    t = Target(hardware, port if hardware else None, rig, int(cfg.getoption("--emu-seed")), tag)
    yield t
    if not hardware:
        _shutdown_leftovers(t)


@pytest.fixture(scope="session")
def rig(target: Target) -> Rig:
    return target.rig


def emulator_control(board_id: str) -> Any:
    """Control client of the running emulator ``board_id`` (faults, unplug, freeze, ...)."""
    from sicell.emulator import EmulatorControl, find_emulator

    info = find_emulator(board_id)
    if info is None:
        raise AssertionError(f"emulator {board_id} is not running")
    return EmulatorControl(str(info["control"]))


def shutdown_emulator(board_id: str, timeout: float = 10.0) -> None:
    """Shut the emulator ``board_id`` down and wait until its launcher is gone."""
    from sicell.emulator import ControlError, find_emulator

    info = find_emulator(board_id)
    if info is None:
        return
    from sicell.emulator import EmulatorControl

    with contextlib.suppress(ControlError):
        EmulatorControl(str(info["control"])).shutdown()
    pid = info.get("pid")
    end = time.monotonic() + timeout
    while isinstance(pid, int) and time.monotonic() < end:
        if not _alive(pid):
            return
        time.sleep(0.02)
    if isinstance(pid, int):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, 9)
        _alive(pid)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs; reaps it when it is our exited child (emu:// starts launchers
    from this process, and nobody else waits for them)."""
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            st = f.read()
    except OSError:
        return False
    return st[st.rfind(b")") + 2 : st.rfind(b")") + 3] not in (b"Z", b"X")


def _shutdown_leftovers(t: Target) -> None:
    from sicell.emulator import list_emulators

    prefix = f"hil-{t.run_tag}-"
    for info in list_emulators():
        board = str(info.get("board", ""))
        if board.startswith(prefix):
            shutdown_emulator(board)


@dataclass
class Dut:
    """The device under test for one test: its port, and on the emulator its board id."""

    port: str  # for RunSession / `sicell run`: closing it leaves the board running
    board_id: str | None
    target: Target
    owner_port: str = ""  # closing this one shuts the emulator down (direct Board tests)

    @property
    def emulated(self) -> bool:
        return self.board_id is not None

    def control(self) -> Any:
        if self.board_id is None:
            pytest.skip("needs the emulator's control channel")
        return emulator_control(self.board_id)

    def start(self) -> None:
        """On the emulator: start the board now (the first open of the URL starts it)."""
        if self.board_id is None:
            return
        from sicell.client import Board

        with Board.open(self.port, hello_timeout=20.0):
            pass


@contextlib.contextmanager
def make_dut(target: Target, label: str) -> Iterator[Dut]:
    """A device under test: a fresh emulated board (shut down at the end), or the rig's port
    (left idle at the end)."""
    if target.hardware:
        assert target.port is not None
        try:
            yield Dut(target.port, None, target, target.port)
        finally:
            _leave_idle(target.port)
        return
    board_id = target.new_board_id(label)
    seed = target.seed + len(target.started)
    target.started.append(board_id)
    try:
        yield Dut(
            target.emu_url(board_id, seed=seed),
            board_id,
            target,
            target.emu_url(board_id, seed=seed, owner=True),
        )
    finally:
        shutdown_emulator(board_id)


@contextlib.contextmanager
def open_board(dut: Dut) -> Iterator[Any]:
    """A handshaken ``sicell.client.Board`` on ``dut`` (closing it ends an emulated board)."""
    from sicell.client import Board

    b = Board.open(dut.owner_port, hello_timeout=20.0)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def dut(target: Target, request: pytest.FixtureRequest) -> Iterator[Dut]:
    """A connected board for one test: a fresh emulator, or the rig's port."""
    with make_dut(target, request.node.name) as d:
        yield d


@pytest.fixture
def board(dut: Dut) -> Iterator[Any]:
    """A handshaken ``sicell.client.Board`` on the test's device."""
    with open_board(dut) as b:
        yield b


@pytest.fixture(scope="module")
def module_board(target: Target, request: pytest.FixtureRequest) -> Iterator[Any]:
    """One board for a whole module (tests that leave the board as they found it)."""
    with make_dut(target, request.module.__name__.rsplit(".", 1)[-1]) as d, open_board(d) as b:
        yield b


def _leave_idle(port: str) -> None:
    from sicell.client import Board, BoardError
    from sicell.transport import TransportError

    with contextlib.suppress(TransportError, BoardError), Board.open(port) as b:
        st = b.status()
        if st.has_run:
            b.stop()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "run.db"
