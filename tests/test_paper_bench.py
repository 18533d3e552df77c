"""bench/paper.py: the paper's protocols through the real system, in a short smoke run.

The schedule writing is checked without a board (every film's cycling and rate schedules
compile; the TOML writer round-trips the examples). The smoke run is the bench itself as a
subprocess on a private emulator runtime directory: 2 cycles of the thin porous film with 5 min
rests, and a one-rate test (CC-CV lithiation, 10 mA/cm² IR-corrected delithiation) on a second
board; the printed tables must hold plausible numbers, and no launcher may be left behind.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from sicell.emulator.cellmodels import film_params
from sicell.emulator.handle import EmulatorHandle
from sicell.emulator.registry import list_emulators
from sicell.schedule import parse_schedule
from sicell.schedule.tomlwrite import dump_toml

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "bench" / "paper.py"
SCHEDULES = ROOT / "bench" / "paper_schedules.py"  # the bench's schedule writing
FILMS = ("thin-porous", "thin-dense", "thick-porous", "thick-dense")


def _load(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"_bench_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def schedules() -> Any:
    return _load(SCHEDULES)


# ---- schedules (no board) ---------------------------------------------------------------------
def test_toml_writer_round_trips_the_examples(schedules: Any) -> None:
    for ex in (schedules.CYCLING_TOML, schedules.RATE_TOML):
        doc = tomllib.loads(ex.read_text(encoding="utf-8"))
        assert tomllib.loads(dump_toml(doc, "a header\nof two lines")) == doc


@pytest.mark.parametrize("film", FILMS)
def test_film_schedules_compile_with_the_films_cell(schedules: Any, film: str) -> None:
    p = film_params(film)
    cyc = parse_schedule(schedules.cycling_toml(film, 7, rest_min=5))
    rate = parse_schedule(schedules.rate_toml(film))
    for sch in (cyc, rate):
        sch.compile()
        assert sch.mass_mg == pytest.approx(p["loading_mg_cm2"] * p["area_cm2"])
        assert sch.thickness_um == pytest.approx(p["thickness_um"])
        assert sch.area_cm2 == pytest.approx(0.567)
    doc = tomllib.loads(schedules.cycling_toml(film, 7, rest_min=5))
    loop = [s for s in doc["step"] if s["kind"] == "loop"]
    assert loop and loop[0]["count"] == 7
    assert all(s["duration_min"] == 5 for s in doc["step"] if s["kind"] == "rest")
    # the guards leave room for the film's whole capacity at 0.1 mA/cm2 (twice it)
    guard_h = min(schedules._duration_s(s) for s in doc["step"] if s["kind"] == "cc") / 3600
    assert guard_h >= 2 * p["loading_mg_cm2"] * 3.579 / 0.1 * 0.99
    assert [j for j, _, _ in schedules.rate_cutoffs(schedules.rate_toml(film))] == [
        0.1,
        1.0,
        2.0,
        5.0,
        10.0,
    ]


def test_rate_subset(schedules: Any) -> None:
    text = schedules.rate_toml("thick-porous", [0.1, 10.0], rest_min=2)
    # the paper's 1.2 V vs Li at every rate, IR-corrected: 2.08 V cell measured at 10 mA/cm²,
    # inside the board's ±2.4 V window; the safety window's top 0.1 V above, to 50 mV
    assert [(j, v) for j, v, _ in schedules.rate_cutoffs(text)] == [(0.1, 1.2), (10.0, 1.2)]
    sch = parse_schedule(text)
    assert max(r[3] for r in sch.step_rows() if r[1] == "cc") == pytest.approx(2.08)
    assert tomllib.loads(text)["safety"]["v_max"] == pytest.approx(2.2)
    sch.compile()
    with pytest.raises(ValueError, match="not in"):
        schedules.rate_toml("thin-porous", [3.0])


def test_model_rate_from_the_cell_model_alone(
    schedules: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bench's model column (no board): cells.py with cellruns.py's CV hold."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    model = _load(ROOT / "bench" / "paper_model.py")
    text = schedules.rate_toml("thin-porous", [0.1, 10.0], rest_min=2)
    got = model.model_rate("thin-porous", schedules.rate_cutoffs(text), rest_s=120.0)
    assert set(got) == {0.1, 10.0}
    slow, fast = got[0.1][0], got[10.0][0]
    assert slow > 0 and 0 < fast < slow  # a thin film still loses capacity at 100x the rate


# ---- the smoke run through the emulator -------------------------------------------------------
def _emulator_missing() -> str | None:
    if shutil.which("micropython") is None:
        return "the micropython unix port is not installed"
    for f in ("main.py", "engine.py", "link.py"):
        if not (ROOT / "firmware" / f).exists():
            return f"firmware/{f} is not there yet"
    return None


def _rows(text: str, title: str) -> list[list[str]]:
    """The rows of the printed table whose title line starts with ``title``."""
    lines = text.splitlines()
    start = next(k for k, ln in enumerate(lines) if ln.startswith(title))
    out = []
    for ln in lines[start + 3 :]:
        if not ln.strip():
            break
        out.append([c.strip() for c in ln.split("|")])
    return out


def _num(cell: str) -> float:
    return float(cell.replace("+", ""))


@pytest.mark.skipif(_emulator_missing() is not None, reason=str(_emulator_missing()))
def test_smoke_cycling_and_rate_through_the_system(tmp_path: Path) -> None:
    rt = tmp_path / "rt"
    rt.mkdir()
    env = dict(os.environ, SICELL_RUNTIME_DIR=str(rt))
    out_dir = tmp_path / "out"
    cmd = [
        sys.executable,
        str(PAPER),
        "--films",
        "thin-porous",
        "--cycles",
        "2",
        "--rest-min",
        "5",
        "--rate",
        "--rates",
        "10",
        "--jobs",
        "2",
        "--out",
        str(out_dir),
        "--no-report",
    ]
    try:
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
    finally:
        left = list_emulators(rt)
        for info in left:
            EmulatorHandle(info, runtime=str(rt)).shutdown()
    assert not left, f"launchers left behind: {[i['board'] for i in left]}"
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout

    cyc = {r[1]: r for r in _rows(text, "CYCLING") if r[0] == "thin-porous"}
    first = cyc["cycle 1 delithiation, mAh/g"]
    assert first[2] == "~3000"  # the paper's figure beside ours
    assert 2000 < _num(first[3]) < 4000
    assert 2000 < _num(first[4]) < 4000  # the model alone
    assert 0.4 < _num(cyc["cycle 1 delithiation, mAh/cm²"][3]) < 0.9
    assert 80 < _num(cyc["cycle 1 CE, %"][3]) < 100
    ce = next(r for k, r in cyc.items() if k.startswith("mean CE"))
    assert 80 < _num(ce[3]) < 100
    ret = next(r for k, r in cyc.items() if k.startswith("retention"))
    assert 90 < _num(ret[3]) <= 101
    assert ret[5].startswith("n/c")  # 2 cycles: the 100-cycle figure is not comparable
    assert "SHORTENED RUN: 2 of the paper's 100 cycles" in text

    rate = [r for r in _rows(text, "RATE") if r[0] == "thin-porous"]
    assert [r[1] for r in rate] == ["10"]
    assert 2000 < _num(rate[0][3]) < 4000
    assert rate[0][2] == ">3000 mAh/g"

    speed = {r[1]: r for r in _rows(text, "SPEED")}
    assert set(speed) == {"cycling", "rate"}
    for r in speed.values():
        assert r[2].startswith("done"), r
        assert _num(r[6]) > 0  # the speed column is filled (its size is for the benchmark)
    dbs = sorted(out_dir.glob("*.sqlite"))
    assert len(dbs) == 2

    # the same tables again from the databases alone
    again = subprocess.run(
        [sys.executable, str(PAPER), "--analyse", *map(str, dbs), "--no-model"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    cyc2 = {r[1]: r for r in _rows(again.stdout, "CYCLING") if r[0] == "thin-porous"}
    assert cyc2["cycle 1 delithiation, mAh/g"][3] == first[3]
    assert [r[3] for r in _rows(again.stdout, "RATE")] == [rate[0][3]]
