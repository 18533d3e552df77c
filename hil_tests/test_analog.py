"""What the board does to the dummy cell: CC charge against I·t, voltage cutoff overshoot, CV taper
to the end current, rest ended by dV/dt. One schedule run per module on one board (on the
emulator: one fresh ``emu://rc``), each test asserts one number against the rig's tolerance.

Sign (DESIGN §5): positive current lithiates, and drives the dummy's terminal voltage down.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from sicell.protocol import messages as M

from hil_tests.conftest import Target, shutdown_emulator
from hil_tests.harness import Plan, RunOutcome, Sample, run_plan, seq_report, trapz
from hil_tests.rig import Rig

I_CC = 200e-6  # A, CC charge step (settles at -0.25 V on the reference dummy)
T_CC_MIN = 3.0  # s
CHARGE_LSB_AH = 1e-9  # the board's coulomb count is in whole nAh (EV_STEP_END aux, samples)


def cc_seconds(rig: Rig) -> float:
    """The CC step's length: its charge is at least twice the board's count resolution over the
    rig's charge tolerance (1 nAh against 0.5 % needs >= 400 nAh), so rounding alone can never
    fail the check."""
    q_min = 2 * CHARGE_LSB_AH / (rig.tol.charge_pct / 100)
    return max(T_CC_MIN, math.ceil(q_min * 3600 / I_CC))


I_CUT = 400e-6  # A, heads for -0.5 V, cut off at V_CUT
V_CUT = -0.3  # V cell
I_CV_END = 260e-6  # A: the leak holds 240 uA at -0.3 V on the reference dummy
DVDT_END = 20_000  # uV/s

STEPS = {"settle": 0, "cc": 1, "relax": 2, "cutoff": 3, "cv": 4, "end": 5}


RESISTOR_CV_S = 3.0  # s: a CV hold on a resistor ends by its duration (its current is flat)


def profile_plan(rig: Rig) -> Plan:
    """The profile, its set points derived from the rig's load."""
    d = rig.dummy
    if d.kind == "cell":
        pytest.skip(
            "the profile drives the load to -0.3 V and back: not for a real cell (the charge "
            "and calibration checks run on it through the other modules)"
        )
    i_cv_end = I_CV_END
    cv_s = 20.0
    if not d.has_dynamics:
        # a resistor draws V/R at the hold potential for good: an end current below it, so
        # the hold runs its duration and shows how well it holds
        i_cv_end = 0.5 * abs(V_CUT) / d.r_dc_ohm
        cv_s = RESISTOR_CV_S
    elif d.r_dc_ohm < math.inf:
        # end current just above what the dummy's DC path draws at the hold potential
        i_cv_end = max(I_CV_END, abs(V_CUT) / d.r_dc_ohm * 1.08)
    return Plan(
        name="hil-profile",
        tick_ms=10,
        slow_tick_ms=10,
        dt_s=0.05,
        dv_mv=2.0,
        v_min=-1.0,
        v_max=1.0,
        i_max_ma=2.0,
        debounce_s=0.1,
        steps=[
            {"label": "settle", "kind": "rest", "duration_s": 0.5},
            {
                "label": "cc",
                "kind": "cc",
                "current_ua": I_CC * 1e6,
                "duration_s": cc_seconds(rig),
            },
            {
                "label": "relax",
                "kind": "rest",
                "until_dvdt_uv_s": DVDT_END,
                "duration_s": 20.0,
            },
            {
                "label": "cutoff",
                "kind": "cc",
                "current_ua": I_CUT * 1e6,
                "until_v": V_CUT,
                "duration_s": 20.0,
            },
            {
                "label": "cv",
                "kind": "cccv",
                "current_ua": I_CUT * 1e6,
                "hold_v": V_CUT,
                "until_current_ua": round(i_cv_end * 1e6, 1),
                "duration_s": cv_s,
                "record": {"dt_s": 0.02, "dv_mv": 1.0, "di_ua": 2.0},
            },
            {"label": "end", "kind": "rest", "duration_s": 0.5},
        ],
    )


@pytest.fixture(scope="module")
def profile(target: Target, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunOutcome]:
    """The profile schedule run once on a fresh board, stored in a database."""
    db = Path(tmp_path_factory.mktemp("profile")) / "run.db"
    board_id = None
    if target.hardware:
        assert target.port is not None
        port = target.port
    else:
        board_id = target.new_board_id("analog-profile")
        target.started.append(board_id)
        port = target.emu_url(board_id, seed=target.seed + 100)
    try:
        out = run_plan(port, profile_plan(target.rig), db, timeout=180)
        yield out
    finally:
        if board_id is not None:
            shutdown_emulator(board_id)


def _times(samples: list[Sample]) -> list[float]:
    return [s.t_s for s in samples]


def test_profile_ran_complete(profile: RunOutcome) -> None:
    db = profile.db
    end = db.run_end
    assert end is not None, "no EV_RUN_END stored"
    rep = seq_report(db)
    assert not rep.missing and not rep.in_both_tables, rep.text()
    for label, idx in STEPS.items():
        assert db.step_samples(idx), f"no samples of step {idx} ({label})"


def test_cc_charge_matches_i_t(profile: RunOutcome, rig: Rig) -> None:
    db = profile.db
    st = STEPS["cc"]
    ss = db.step_samples(st)
    start = next(e for e in db.events if e.code == M.EV_STEP_START and e.step == st)
    end = db.step_end(st)
    assert end is not None
    t_step = end.t_s - start.t_s
    t_cc = cc_seconds(rig)
    assert abs(t_step - t_cc) < 0.05, f"CC step lasted {t_step:.3f} s, set {t_cc} s"
    q_it = I_CC * t_cc / 3600.0  # Ah
    q_board = end.aux * 1e-9  # EV_STEP_END aux: step charge, nAh
    q_last = ss[-1].q_ah
    q_int = trapz(_times(ss), [s.i for s in ss]) / 3600.0
    # the samples cover first..last point; add the uncovered ends at the set current
    q_int += I_CC * ((ss[0].t_s - start.t_s) + (end.t_s - ss[-1].t_s)) / 3600.0
    tol = rig.tol.charge_pct
    err_board = abs(q_board - q_it) / q_it * 100
    err_last = abs(q_last - q_it) / q_it * 100
    err_int = abs(q_int - q_board) / q_it * 100
    print(
        f"CC {I_CC * 1e6:.0f} uA x {t_cc} s: I*t {q_it * 1e9:.1f} nAh, board {q_board * 1e9:.1f} "
        f"({err_board:.3f} %), last sample {q_last * 1e9:.1f} ({err_last:.3f} %), "
        f"integral of stored I {q_int * 1e9:.1f} ({err_int:.3f} % from board)"
    )
    assert err_board <= tol, f"board coulomb count off I*t by {err_board:.3f} % > {tol} %"
    assert err_last <= tol, f"last stored sample's charge off I*t by {err_last:.3f} % > {tol} %"
    assert err_int <= tol, f"integral of stored current off the board count by {err_int:.3f} %"
    assert all(s.flags & M.F_OPEN == 0 for s in ss), "relay open during a CC step"


def test_cc_charges_the_capacitor_like_the_dummy(profile: RunOutcome, rig: Rig) -> None:
    """The terminal voltage follows the dummy's RC response to I: the charge really went in."""
    d = rig.dummy
    if d.kind != "rc" or d.r_parallel_ohm <= 0:
        pytest.skip("the rig's dummy is not an RC load with a parallel resistor")
    db = profile.db
    ss = db.step_samples(STEPS["cc"])
    start = next(e for e in db.events if e.code == M.EV_STEP_START and e.step == STEPS["cc"])
    settle = db.step_samples(STEPS["settle"])
    u0 = settle[-1].v if settle else d.v0_v
    worst = 0.0
    for s in ss[len(ss) // 4 :]:
        t = s.t_s - start.t_s
        model = -I_CC * d.r_parallel_ohm + (u0 + I_CC * d.r_parallel_ohm) * math.exp(-t / d.tau_s)
        model -= I_CC * d.r_series_ohm
        worst = max(worst, abs(s.v - model) / (I_CC * d.r_dc_ohm) * 100)
    bound = 5.0
    print(f"RC response: worst deviation {worst:.2f} % of I*R_dc")
    assert worst <= bound, f"voltage off the dummy's RC response by {worst:.2f} % > {bound} %"


def test_voltage_cutoff_overshoot(profile: RunOutcome, rig: Rig) -> None:
    """A load that approaches the cutoff (capacitor, cell): the step ends within the rig's
    overshoot. A resistor jumps to -I·R at once: the step must end at its first measurements,
    reporting that value (the overshoot is the load's, not the board's)."""
    db = profile.db
    st = STEPS["cutoff"]
    cut = [e for e in db.events_of(M.EV_CUTOFF) if e.step == st]
    assert cut, f"no EV_CUTOFF in step {st}; events {[(e.name, e.step) for e in db.events]}"
    ev = cut[0]
    aux_mv = abs(ev.aux) * 1e-3
    ss = db.step_samples(st)
    v_min = min(s.v for s in ss)
    stored_mv = max(0.0, (V_CUT - v_min) * 1e3)
    detect_mv = max(0.0, (V_CUT - ev.value * 1e-6) * 1e3)
    bound = rig.tol.cutoff_overshoot_mv
    print(
        f"cutoff {V_CUT} V: EV_CUTOFF at {ev.value * 1e-6:.5f} V, aux overshoot {aux_mv:.3f} mV, "
        f"stored samples reach {v_min:.5f} V ({stored_mv:.3f} mV past)"
    )
    assert ev.value * 1e-6 <= V_CUT + 1e-4, "EV_CUTOFF reported before the cutoff was reached"
    assert abs(aux_mv - detect_mv) < 0.5, "EV_CUTOFF aux disagrees with its own value"
    if rig.dummy.has_dynamics:
        assert aux_mv <= bound, f"EV_CUTOFF overshoot {aux_mv:.3f} mV > {bound} mV"
        assert stored_mv <= bound, f"stored samples go {stored_mv:.3f} mV past the cutoff"
        return
    # a resistor: V = -I·R from the first tick on
    start = next(e for e in db.events if e.code == M.EV_STEP_START and e.step == st)
    plan = profile.plan
    assert plan is not None
    late_s = ev.t_s - start.t_s
    ticks = late_s * 1000.0 / plan.tick_ms
    v_load = -I_CUT * rig.dummy.r_dc_ohm
    tol_v = rig.tol.current_fs_pct_for(0) / 100 * abs(v_load) + bound * 1e-3
    print(
        f"resistor: cutoff after {late_s * 1e3:.0f} ms ({ticks:.1f} ticks) at -I*R {v_load:.4f} V"
    )
    assert ticks <= 5 + rig.tol.debounce_ms / plan.tick_ms, (
        f"the step went on {late_s * 1e3:.0f} ms past a cutoff the load crossed at once"
    )
    assert abs(ev.value * 1e-6 - v_load) <= tol_v, "EV_CUTOFF value is not the load's -I*R"


def test_cv_holds_the_potential(profile: RunOutcome, rig: Rig) -> None:
    """CV: on a capacitor or a cell |I| tapers monotonically to the end current; on a resistor
    it holds V/R. Either way the potential stays within the rig's overshoot of the hold."""
    db = profile.db
    st = STEPS["cv"]
    plan = profile_plan(rig)
    i_end = float(plan.steps[st]["until_current_ua"]) * 1e-6
    cv = [s for s in db.step_samples(st) if s.flags & M.F_CV]
    assert len(cv) >= 5, f"only {len(cv)} CV samples stored"
    mags = [abs(s.i) for s in cv]
    signs = {1 if s.i > 0 else -1 for s in cv if abs(s.i) > 1e-9}
    assert len(signs) == 1, "CV current changed sign (oscillation)"
    if not rig.dummy.has_dynamics:
        # the controller settles (within a DAC step in ~0.6 s on a chip); judge after 1 s
        t0 = cv[0].t_s
        settled = [s for s in cv if s.t_s - t0 >= 1.0]
        assert settled, "the hold ended within 1 s"
        i_load = abs(V_CUT) / rig.dummy.r_dc_ohm
        i_err = max(abs(abs(s.i) - i_load) for s in settled) / i_load * 100
        v_err_mv = max(abs(s.v - V_CUT) for s in settled) * 1e3
        end = db.step_end(st)
        print(
            f"CV at {V_CUT} V on {rig.dummy.r_dc_ohm:g} ohm: |I| within {i_err:.2f} % of V/R "
            f"{i_load * 1e6:.1f} uA, hold error {v_err_mv:.2f} mV, {len(settled)} settled points"
        )
        assert end is not None and end.t_s - t0 >= RESISTOR_CV_S - 0.5, "hold ended early"
        assert v_err_mv <= rig.tol.cutoff_overshoot_mv, f"CV hold strayed {v_err_mv:.2f} mV"
        assert i_err <= 2.0, f"held current {i_err:.2f} % off V/R"
        return
    i0 = mags[0]
    rises = [mags[k + 1] - mags[k] for k in range(len(mags) - 1)]
    worst_rise = max([0.0, *rises])
    ripple = worst_rise / i0 * 100
    last = mags[-1]
    end_err = abs(last - i_end) / i_end * 100
    v_err_mv = max(abs(s.v - V_CUT) for s in cv[1:]) * 1e3
    print(
        f"CV at {V_CUT} V: |I| {i0 * 1e6:.1f} -> {last * 1e6:.1f} uA (end {i_end * 1e6:.1f} uA, "
        f"{end_err:.2f} %), {len(cv)} points, worst rise {ripple:.3f} % of start, "
        f"hold error {v_err_mv:.2f} mV"
    )
    assert ripple <= rig.tol.cv_ripple_pct, (
        f"|I| rose by {ripple:.3f} % of its start (not monotone)"
    )
    assert last <= i_end * (1 + 0.002), "the step ended above its end current"
    assert end_err <= rig.tol.cv_end_current_pct, f"ended {end_err:.2f} % away from the end current"
    assert v_err_mv <= rig.tol.cutoff_overshoot_mv, f"CV hold strayed {v_err_mv:.2f} mV"


def test_rest_ends_on_dvdt(profile: RunOutcome, rig: Rig) -> None:
    db = profile.db
    st = STEPS["relax"]
    ss = db.step_samples(st)
    start = next(e for e in db.events if e.code == M.EV_STEP_START and e.step == st)
    end = db.step_end(st)
    assert end is not None
    dur = end.t_s - start.t_s
    assert dur < 19.0, f"rest ran {dur:.1f} s into its 20 s guard: the dV/dt end never held"
    a, b = ss[-2], ss[-1]
    dvdt = abs(b.v - a.v) / (b.t_s - a.t_s) * 1e6
    bound = DVDT_END * (1 + rig.tol.rest_dvdt_pct / 100)
    print(
        f"rest: ended after {dur:.2f} s at |dV/dt| {dvdt:.0f} uV/s (end {DVDT_END} uV/s), "
        f"bound {bound:.0f}"
    )
    assert dvdt <= bound, f"|dV/dt| at the end {dvdt:.0f} uV/s > {bound:.0f} uV/s"
    assert all(abs(s.i) < 1e-6 for s in ss[1:]), "current flowed during a rest"


def test_profile_board_state(profile: RunOutcome) -> None:
    assert profile.summary.state == M.STATE_NAMES[M.ST_DONE], profile.summary.state
    assert profile.summary.end_reason == "complete"
