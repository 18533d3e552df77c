"""Current accuracy per range after calibration: the calibration routine runs first, then a
schedule sets a current on each range (both polarities) into the dummy, and the settled current
is compared with the set point and with the board's reading, against I = -V / R_dc across the
dummy (V from the calibrated voltage channel). Errors are in % of the range's full scale.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sicell.client import Board

from hil_tests.conftest import Target, shutdown_emulator
from hil_tests.harness import Plan, RunOutcome, mean, run_calibration, run_plan
from hil_tests.rig import Rig

SETTLE_TAUS = 6.0
WINDOW_S = 2.0  # averaged tail of each step
V_WINDOW = 1.9  # V: the schedule's safety window is +-this


@dataclass(frozen=True)
class Point:
    rng: int
    fs_a: float
    i_set: float
    step: int


def plan_points(rig: Rig, ranges_a: tuple[float, ...]) -> list[Point]:
    if not rig.dummy.dc_path:
        pytest.skip(
            f"current accuracy reads I = -V/R across a known resistance; a {rig.dummy.kind} "
            "load has none (use a resistor or an rc dummy with its leak resistor)"
        )
    r_dc = rig.dummy.r_dc_ohm
    v_lim = 0.8 * min(V_WINDOW, rig.compliance_v - 0.5)
    pts: list[Point] = []
    idx = ranges_a if rig.ranges is None else tuple(ranges_a[r] for r in rig.ranges)
    for fs in idx:
        r = ranges_a.index(fs)
        i = rig.tol.current_test_fraction * fs
        if math.isfinite(r_dc):
            i = min(i, v_lim / r_dc)
        for sign in (1, -1):
            pts.append(Point(r, fs, sign * i, len(pts)))
    return pts


def accuracy_plan(rig: Rig, pts: list[Point]) -> Plan:
    settle = max(1.0, SETTLE_TAUS * rig.dummy.tau_s) + WINDOW_S
    return Plan(
        name="hil-accuracy",
        tick_ms=20,
        slow_tick_ms=100,
        dt_s=0.1,
        dv_mv=0.0,
        v_min=-V_WINDOW,
        v_max=V_WINDOW,
        i_max_ma=max(abs(p.i_set) for p in pts) * 1e3 * 1.5,
        debounce_s=0.5,
        steps=[
            {
                "kind": "cc",
                "current_ua": round(p.i_set * 1e6, 3),
                "range": p.rng,
                "duration_s": settle,
            }
            for p in pts
        ],
    )


@pytest.fixture(scope="module")
def accuracy_run(
    target: Target, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[list[Point], RunOutcome]]:
    d = Path(tmp_path_factory.mktemp("accuracy"))
    board_id = None
    if target.hardware:
        assert target.port is not None
        port = target.port
    else:
        board_id = target.new_board_id("accuracy")
        target.started.append(board_id)
        port = target.emu_url(board_id, seed=target.seed + 200)
    try:
        run_calibration(port, target.rig, target.rig.ranges)
        with Board.open(port, hello_timeout=20.0) as b:
            assert b.info is not None
            ranges_a = tuple(r * 1e-9 for r in b.info.ranges_na)
        pts = plan_points(target.rig, ranges_a)
        out = run_plan(port, accuracy_plan(target.rig, pts), d / "run.db", timeout=240)
        yield pts, out
    finally:
        if board_id is not None:
            shutdown_emulator(board_id)


def _ranges(rig: Rig) -> list[int]:
    return list(rig.ranges) if rig.ranges is not None else [0, 1, 2, 3]


@pytest.mark.parametrize("rng", [0, 1, 2, 3], ids=["10uA", "100uA", "1mA", "10mA"])
def test_current_accuracy(rng: int, accuracy_run: tuple[list[Point], RunOutcome], rig: Rig) -> None:
    pts, out = accuracy_run
    mine = [p for p in pts if p.rng == rng]
    if not mine:
        pytest.skip(f"range {rng} is not on this board or not listed in the rig file")
    tol = rig.tol.current_fs_pct_for(rng)
    r_dc = rig.dummy.r_dc_ohm
    worst_set = worst_read = 0.0
    for p in mine:
        ss = out.db.step_samples(p.step)
        assert ss, f"no samples of step {p.step}"
        t_end = ss[-1].t_s
        tail = [s for s in ss if s.t_s >= t_end - WINDOW_S]
        assert len(tail) >= 5, f"only {len(tail)} settled samples in step {p.step}"
        assert all(s.range == rng for s in tail), f"step {p.step} left range {rng}"
        v = mean(s.v for s in tail)
        i_read = mean(s.i for s in tail)
        i_true = -v / r_dc
        e_set = abs(i_true - p.i_set) / p.fs_a * 100
        e_read = abs(i_read - i_true) / p.fs_a * 100
        worst_set = max(worst_set, e_set)
        worst_read = max(worst_read, e_read)
        print(
            f"range {rng} ({p.fs_a * 1e6:g} uA FS): set {p.i_set * 1e6:+.3f} uA, dummy says "
            f"{i_true * 1e6:+.3f} uA ({e_set:.3f} % FS), board reads {i_read * 1e6:+.3f} uA "
            f"({e_read:.3f} % FS); V {v * 1e3:+.3f} mV"
        )
    assert worst_set <= tol, f"set point off by {worst_set:.3f} % FS > {tol} % (range {rng})"
    assert worst_read <= tol, f"reading off by {worst_read:.3f} % FS > {tol} % (range {rng})"
