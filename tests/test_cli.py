"""The ``sicell`` command through click's CliRunner: runs, errors as one line, boards, status,
stop, calibrate, export, report, emulate, flash (refusals, staging, hashes)."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import os
import threading
import time
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click
import pytest
import serial.tools.list_ports
from click.testing import CliRunner, Result
from sicell import errors
from sicell import flash as flash_mod
from sicell.cli import COMMANDS, cli, main
from sicell.cli import board as cli_board
from sicell.cli import common as cli_common
from sicell.protocol import messages as M

from tests.fakeboard import FAKE_TOML, FakeBoard

ROOT = Path(__file__).resolve().parents[1]
needs_store = pytest.mark.skipif(
    importlib.util.find_spec("sicell.store") is None, reason="sicell.store is not there yet"
)


@pytest.fixture
def sched(tmp_path: Path) -> Path:
    p = tmp_path / "fake.toml"
    p.write_text(FAKE_TOML)
    return p


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _one_error_line(res: Result) -> str:
    assert res.exit_code != 0
    text = res.output.strip()
    assert "Traceback" not in text
    lines = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, text
    return lines[0]


# ---- entry point and help -------------------------------------------------------------------
def test_help_lists_commands() -> None:
    res = _invoke("--help")
    assert res.exit_code == 0
    for cmd in ("run", "boards", "status", "stop", "calibrate", "export", "emulate", "report"):
        assert cmd in res.output
    assert "flash" in res.output


def test_main_entry_version() -> None:
    with pytest.raises(SystemExit) as ei:
        main(["--version"])
    assert ei.value.code == 0


# ---- errors are one line --------------------------------------------------------------------
def test_run_missing_port_one_line(sched: Path) -> None:
    line = _one_error_line(_invoke("run", str(sched), "--port", "/dev/ttyACM_nope"))
    assert "/dev/ttyACM_nope" in line and "no such port" in line


def test_run_missing_schedule(tmp_path: Path) -> None:
    line = _one_error_line(_invoke("run", str(tmp_path / "nope.toml"), "--port", "loop://"))
    assert "no such schedule file" in line


def test_run_needs_schedule_or_resume() -> None:
    line = _one_error_line(_invoke("run", "--port", "loop://"))
    assert "--resume" in line


def test_run_bad_schedule_names_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(FAKE_TOML.replace("current_ua = 100", "curent_ua = 100"))
    line = _one_error_line(_invoke("run", str(bad), "--port", "loop://"))
    assert "curent_ua" in line


def test_no_firmware_one_line(boards: list[FakeBoard]) -> None:
    fb = FakeBoard(garbage=True)
    boards.append(fb)
    path = fb.serve_pty()
    line = _one_error_line(_invoke("status", "--port", path))
    assert f"no sicell firmware on {path}" in line and "sicell flash" in line


def test_autodetect_without_board(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serial.tools.list_ports, "comports", lambda: [])
    line = _one_error_line(_invoke("status"))
    assert "no RP2040 board found" in line


# ---- runs against the fake board -----------------------------------------------------------
@needs_store
def test_run_to_the_end(tmp_path: Path, sched: Path, boards: list[FakeBoard]) -> None:
    fb = FakeBoard(n_samples=250, drop=0.02, seed=5)
    boards.append(fb)
    db = tmp_path / "r.db"
    res = _invoke("run", str(sched), "--port", fb.serve_tcp(), "--db", str(db), "--plain")
    assert res.exit_code == 0, res.output
    assert "stored: 250 samples, 2 events" in res.output
    assert "cycles:" in res.output
    assert "each exactly once" in res.output
    assert db.exists()


@needs_store
def test_run_refuses_existing_db(tmp_path: Path, sched: Path, boards: list[FakeBoard]) -> None:
    fb = FakeBoard()
    boards.append(fb)
    db = tmp_path / "r.db"
    db.write_bytes(b"keep")
    line = _one_error_line(_invoke("run", str(sched), "--port", fb.serve_tcp(), "--db", str(db)))
    assert "exists" in line and "--resume" in line
    assert db.read_bytes() == b"keep"


@needs_store
def test_run_resume_after_detach(tmp_path: Path, sched: Path, boards: list[FakeBoard]) -> None:
    from sicell.schedule import load_schedule
    from sicell.session import Detached, RunSession, SessionOptions

    fb = FakeBoard(n_samples=400, record_interval=0.002)
    boards.append(fb)
    url = fb.serve_tcp()
    db = tmp_path / "r.db"
    s = RunSession.new(load_schedule(sched), url, db, options=SessionOptions(batch_interval_s=0.05))

    def later() -> None:
        while fb.samples_made < 100:
            time.sleep(0.01)
        s.request_stop()

    threading.Thread(target=later, daemon=True).start()
    with pytest.raises(Detached):
        s.run()
    res = _invoke("run", "--resume", str(db), "--port", url, "--plain")
    assert res.exit_code == 0, res.output
    assert "stored: 400 samples, 2 events" in res.output
    assert "reattached" in res.output


@needs_store
def test_run_ctrl_c_during_upload(
    tmp_path: Path, sched: Path, boards: list[FakeBoard], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the schedule uploads: exit 130, a message that nothing started, and no
    database (nor a --resume hint pointing at one)."""
    from sicell.client import Board

    fb = FakeBoard()
    boards.append(fb)
    real = Board.request

    def request(self: Board, t: int, *a: Any, **kw: Any) -> Any:
        if t == M.SCHED_CHUNK:
            raise KeyboardInterrupt
        return real(self, t, *a, **kw)

    monkeypatch.setattr(Board, "request", request)
    db = tmp_path / "r.db"
    res = _invoke("run", str(sched), "--port", fb.serve_tcp(), "--db", str(db), "-q")
    assert res.exit_code == errors.EXIT_INTERRUPTED, res.output
    assert "before the run started" in res.output and "nothing runs" in res.output
    assert "--resume" not in res.output and "keeps running" not in res.output
    assert not db.exists() and fb.state != M.ST_RUNNING


@needs_store
def test_run_several_boards(tmp_path: Path, sched: Path, boards: list[FakeBoard]) -> None:
    urls = []
    for k in range(2):
        fb = FakeBoard(n_samples=100 + k)
        boards.append(fb)
        urls.append(fb.serve_tcp())
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        res = _invoke(
            "run", str(sched), "-p", urls[0], "-p", urls[1], "--board-name", "a",
            "--board-name", "b", "--quiet",
        )  # fmt: skip
    finally:
        os.chdir(cwd)
    assert res.exit_code == 0, res.output
    assert "stored: 100 samples" in res.output and "stored: 101 samples" in res.output
    assert len(list(tmp_path.glob("fake-a-*.db"))) == 1
    assert len(list(tmp_path.glob("fake-b-*.db"))) == 1


def test_run_refuses_busy_board(tmp_path: Path, sched: Path, boards: list[FakeBoard]) -> None:
    fb = FakeBoard(state=M.ST_RUNNING, run_id=0x0BADCAFE)
    boards.append(fb)
    line = _one_error_line(
        _invoke("run", str(sched), "--port", fb.serve_tcp(), "--db", str(tmp_path / "x.db"))
    )
    assert "0badcafe" in line and "sicell stop" in line


# ---- boards, status, stop, calibrate --------------------------------------------------------
def test_boards_lists_rp2040(monkeypatch: pytest.MonkeyPatch) -> None:
    ports = [
        SimpleNamespace(
            device="/dev/ttyACM9", description="Board", vid=0x2E8A, pid=0x0005, serial_number="E66"
        ),
        SimpleNamespace(
            device="/dev/ttyUSB0", description="FTDI", vid=0x0403, pid=0x6001, serial_number=None
        ),
    ]
    monkeypatch.setattr(serial.tools.list_ports, "comports", lambda: ports)
    monkeypatch.setattr(cli_board, "_emulators", lambda: [])
    res = _invoke("boards")
    assert res.exit_code == 0, res.output
    assert "/dev/ttyACM9" in res.output and "RP2040" in res.output
    assert "ttyUSB0" not in res.output
    res = _invoke("boards", "--all")
    assert "ttyUSB0" in res.output


def test_boards_lists_emulators(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serial.tools.list_ports, "comports", lambda: [])
    monkeypatch.setattr(
        cli_board,
        "_emulators",
        lambda: [{"board": "rc-0", "cell": "rc", "seed": 0, "pty": "/dev/pts/77"}],
    )
    res = _invoke("boards")
    assert res.exit_code == 0
    assert "rc-0" in res.output and "emu://rc?board=rc-0" in res.output


def test_status_shows_board(boards: list[FakeBoard]) -> None:
    fb = FakeBoard(state=M.ST_RUNNING, run_id=0x1234)
    boards.append(fb)
    res = _invoke("status", "--port", fb.serve_tcp())
    assert res.exit_code == 0, res.output
    for text in ("fake0001", "running", "00001234", "0.3.1", "records held"):
        assert text in res.output


def test_stop(boards: list[FakeBoard]) -> None:
    fb = FakeBoard()
    boards.append(fb)
    url = fb.serve_tcp()
    res = _invoke("stop", "--port", url, "--yes")
    assert res.exit_code == 0 and "nothing to stop" in res.output
    fb.state = M.ST_RUNNING
    fb.run_id = 77
    res = _invoke("stop", "--port", url, "--yes")
    assert res.exit_code == 0, res.output
    assert "stopped" in res.output
    assert fb.state == M.ST_STOPPED


def test_calibrate_show_and_set(boards: list[FakeBoard]) -> None:
    fb = FakeBoard()
    boards.append(fb)
    url = fb.serve_tcp()
    res = _invoke("calibrate", "--port", url)
    assert res.exit_code == 0, res.output
    assert "setpoint" in res.output and "1.000000" in res.output
    res = _invoke(
        "calibrate", "-p", url, "--range", "2", "--channel", "current", "--offset", "-40",
        "--gain", "1.0002", "--save", "--yes",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert fb.cal[(2, 1)] == (-40, 1_000_200)
    assert "saved" in res.output
    assert any(t == M.CAL_SAVE for t, _, _ in fb.received)
    line = _one_error_line(_invoke("calibrate", "-p", url, "--range", "9"))
    assert "ranges 0..3" in line


# ---- export, report, emulate ----------------------------------------------------------------
@needs_store
def test_export_csv(tmp_path: Path, sched: Path, boards: list[FakeBoard]) -> None:
    fb = FakeBoard(n_samples=60)
    boards.append(fb)
    db = tmp_path / "r.db"
    assert _invoke("run", str(sched), "-p", fb.serve_tcp(), "--db", str(db), "-q").exit_code == 0
    out = tmp_path / "r.csv"
    res = _invoke("export", str(db), "--format", "csv", "--out", str(out))
    assert res.exit_code == 0, res.output
    head = out.read_text().splitlines()[0]
    assert "Voltage / V" in head and "Working Electrode Potential vs Li / V" in head
    assert len(out.read_text().splitlines()) == 61
    # exact decimals of the board's units: never more places than 1 ms, 1 µV, 1 nA, 1 nAh
    places = {"Test Time / s": 3, "Voltage / V": 6, "Current / A": 9, "Step Capacity / Ah": 9}
    with out.open(newline="") as fh:
        for row in csv.DictReader(fh):
            for name, n in places.items():
                assert -Decimal(row[name]).as_tuple().exponent <= n, (name, row[name])
            assert row["Unix Time / s"]  # the session recorded the start time


def test_export_missing_db(tmp_path: Path) -> None:
    res = _invoke("export", str(tmp_path / "nope.db"))
    assert res.exit_code != 0 and "Traceback" not in res.output


def test_emulate_calls_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    launcher: Any = pytest.importorskip("sicell.emulator.launcher")
    seen: dict[str, Any] = {}

    def fake_run(cell: str, **kw: Any) -> int:
        seen.update(kw, cell=cell)
        return 0

    monkeypatch.setattr(launcher, "run_emulator", fake_run)
    res = _invoke("emulate", "thin-porous", "--seed", "3", "--board", "b1", "--linger", "5")
    assert res.exit_code == 0, res.output
    assert seen["cell"] == "thin-porous" and seen["seed"] == 3 and seen["board"] == "b1"
    assert seen["linger"] == 5.0 and seen["realtime"] is False


# ---- flash ----------------------------------------------------------------------------------
def test_flash_refuses_url() -> None:
    line = _one_error_line(_invoke("flash", "--port", "emu://rc"))
    assert "real board" in line


def test_flash_refuses_running_board(boards: list[FakeBoard]) -> None:
    fb = FakeBoard(state=M.ST_RUNNING, run_id=0xFEED)
    boards.append(fb)
    path = fb.serve_pty()
    line = _one_error_line(_invoke("flash", "--port", path))
    assert "0000feed" in line and "--force" in line
    assert not any(t == M.ENTER_REPL for t, _, _ in fb.received)


def test_flash_prepare_sends_enter_repl(boards: list[FakeBoard]) -> None:
    fb = FakeBoard(state=M.ST_RUNNING, run_id=0xFEED)
    boards.append(fb)
    path = fb.serve_pty()
    notes: list[str] = []
    flash_mod.prepare_board(path, force=True, log=notes.append)
    assert any(t == M.ENTER_REPL for t, _, _ in fb.received)
    assert any("--force" in n for n in notes)


def test_flash_prepare_fresh_micropython(boards: list[FakeBoard]) -> None:
    fb = FakeBoard(garbage=True)
    boards.append(fb)
    notes: list[str] = []
    flash_mod.prepare_board(fb.serve_pty(), force=False, log=notes.append)
    assert "no sicell firmware" in notes[0]


def _fake_tree(tmp: Path) -> tuple[Path, Path]:
    fw = tmp / "fw"
    (fw / "drivers").mkdir(parents=True)
    (fw / "main.py").write_text("import engine\n")
    (fw / "engine.py").write_text("def run():\n    return 42\n")
    (fw / "drivers" / "__init__.py").write_text("")
    (fw / "drivers" / "ads1115.py").write_text("ADDR = 0x48\n")
    (fw / "board.json").write_text('{"ranges": 4}\n')
    (fw / "calibration.json").write_text("{}\n")
    (fw / "__pycache__").mkdir()
    (fw / "__pycache__" / "x.pyc").write_bytes(b"\x00")
    proto = tmp / "proto"
    proto.mkdir()
    (proto / "__init__.py").write_text("")
    (proto / "framing.py").write_text("X = 1\n")
    return fw, proto


def test_flash_stage_compiles_and_hashes(tmp_path: Path) -> None:
    fw, proto = _fake_tree(tmp_path)
    out = tmp_path / "stage"
    files = flash_mod.stage(out, compile=True, firmware=fw, protocol=proto)
    remotes = sorted(f.remote for f in files)
    assert remotes == [
        "board.json",
        "drivers/__init__.py",
        "drivers/ads1115.mpy",
        "engine.mpy",
        "main.py",
        "protocol/__init__.py",
        "protocol/framing.mpy",
    ]
    for f in files:
        assert f.sha256 == hashlib.sha256(f.local.read_bytes()).hexdigest()
    mpy = next(f for f in files if f.remote == "engine.mpy").local.read_bytes()
    assert mpy[:2] == b"M\x06"
    src = flash_mod.stage(tmp_path / "src", compile=False, firmware=fw, protocol=proto)
    assert "engine.py" in {f.remote for f in src}


def test_flash_stage_real_firmware(tmp_path: Path) -> None:
    if not (ROOT / "firmware" / "main.py").exists():
        pytest.skip("firmware/main.py is not there yet")
    files = flash_mod.stage(tmp_path, compile=True)
    remotes = {f.remote for f in files}
    assert "main.py" in remotes and "protocol/framing.mpy" in remotes
    assert "calibration.json" not in remotes


def test_flash_deploy_commands_and_hash_check(tmp_path: Path) -> None:
    fw, proto = _fake_tree(tmp_path)
    files = flash_mod.stage(tmp_path / "s", compile=True, firmware=fw, protocol=proto)
    args = flash_mod.deploy_commands(files)
    assert args[0] == "exec"
    assert "'drivers'" in args[1] and "'protocol'" in args[1]
    assert "'engine.py'" in args[1]  # a stale source twin is removed
    cps = [args[i + 3 : i + 5] for i, a in enumerate(args) if a == "+"]
    assert {c[1] for c in cps} == {f":{f.remote}" for f in files}
    good = {f.remote: f.sha256 for f in files}
    assert flash_mod.check_hashes(files, good) == []
    bad = dict(good, **{"engine.mpy": "00"})
    del bad["main.py"]
    assert sorted(flash_mod.check_hashes(files, bad)) == ["engine.mpy", "main.py"]


def test_flash_verify_script_runs_under_micropython(tmp_path: Path) -> None:
    import shutil
    import subprocess

    mp = shutil.which("micropython")
    if mp is None:
        pytest.skip("micropython unix port not installed")
    (tmp_path / "a.txt").write_bytes(b"hello")
    script = flash_mod.VERIFY_SCRIPT.format(paths=["a.txt", "gone.txt"])
    out = subprocess.run(
        [mp, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    assert f"SHA a.txt {hashlib.sha256(b'hello').hexdigest()}" in out
    assert "SHA gone.txt missing" in out


# ---- the one conversion point: errors -> one line and a documented exit code -----------------
@pytest.mark.parametrize(
    ("exc", "code", "text"),
    [
        (errors.ScheduleError("step 2: until_v beyond the window"), errors.EXIT_USAGE, "step 2"),
        (errors.LinkLostError("/dev/ttyACM0: device went away"), errors.EXIT_LINK_LOST, "away"),
        (errors.PortBusyError("/dev/ttyACM0: port is busy"), errors.EXIT_ERROR, "busy"),
        (errors.EmulatorConfigError("emu:// option seed='x'"), errors.EXIT_USAGE, "seed"),
        (FileNotFoundError(2, "No such file or directory", "x.db"), errors.EXIT_ERROR, "x.db"),
        (KeyError("a bug"), errors.EXIT_BUG, "bug in sicell: KeyError"),
        (ValueError("a bug too"), errors.EXIT_BUG, "bug in sicell: ValueError"),
    ],
)
def test_errors_become_one_line_and_their_exit_code(
    monkeypatch: pytest.MonkeyPatch, exc: BaseException, code: int, text: str
) -> None:
    def boom(port: str | None = None) -> None:
        raise exc

    monkeypatch.setattr(cli_common, "resolve_port", boom)
    res = _invoke("pause", "--port", "x")
    line = _one_error_line(res)
    assert res.exit_code == code
    assert text in line


def test_detached_and_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    def detached(port: str | None = None) -> None:
        raise errors.Detached("the board keeps running; reattach with --resume run.db")

    monkeypatch.setattr(cli_common, "resolve_port", detached)
    res = _invoke("pause")
    assert res.exit_code == errors.EXIT_INTERRUPTED
    assert "reattach" in res.output and "error:" not in res.output

    def bug(port: str | None = None) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(cli_common, "resolve_port", bug)
    monkeypatch.setenv("SICELL_DEBUG", "1")
    with pytest.raises(KeyError):  # the traceback, for whoever debugs it
        _invoke("pause")


def test_every_command_in_the_table_loads() -> None:
    ctx = click.Context(cli)
    for name in COMMANDS:
        cmd = cli.get_command(ctx, name)
        assert isinstance(cmd, click.Command) and cmd.name == name
    assert cli.get_command(ctx, "nosuch") is None
