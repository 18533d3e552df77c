"""The resistance an IR-free curve uses (``analysis.ir_choices``: given, else measured at the
half-cycle's own start, else the schedule's, else none) and the flag on an IR-free curve that
no Si electrode could give (``analysis.ir_free_problems``)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sicell import analysis as an
from sicell.rundata import RunData

from tests.synth_run import (
    AREA_CM2,
    CycleSpec,
    build_run,
    drop_steps,
    linear_ocv,
    schedule_toml,
)

J = 1e-3 * AREA_CM2  # 1 mA/cm² in A
LITH_AH = 0.6e-3 * AREA_CM2
R_EL = 150.0 / AREA_CM2  # the paper's electrolyte layer, 264.6 Ω


def rate_run(
    r_ohm: float = R_EL,
    densities: tuple[float, ...] = (0.1, 10.0),
    *,
    hysteresis_v: float = 0.1,
    meta: dict[str, object] | None = None,
    gap_s: float = 1.0,
) -> RunData:
    """Lithiation at 0.1 mA/cm², delithiation at each density; rests between (so every
    half-cycle starts with a current interrupt). The synthetic hysteresis appears at once when
    the current starts, like a charge-transfer overpotential, so the measured ΔV/ΔI is
    R + (h/2)/I: larger at a small current, as on the emulated film."""
    specs = [CycleSpec(LITH_AH, 0.95 * LITH_AH, 0.1 * J, j * J, r_ohm) for j in densities]
    return build_run(specs, hysteresis_v=hysteresis_v, meta=meta, gap_s=gap_s)


def test_measured_at_each_half_cycles_own_current() -> None:
    run = rate_run()
    hcs = an.half_cycles(run)
    pts = an.current_interrupt(run, hcs=hcs)
    choice = an.ir_choices(run, hcs)
    assert set(choice) == {h.number for h in hcs}
    for h in hcs:
        c = choice[h.number]
        (p,) = [p for p in pts if p.half_cycle == h.number]
        assert c.source == "measured" and c.point == p
        i = h.median_abs_current_a
        assert c.r_ohm == pytest.approx(R_EL + 0.05 / i, rel=1e-9)
        assert c.r_ohm_cm2 == pytest.approx(c.r_ohm * AREA_CM2)
    # not one value for the run: the low-current one is four times the high-current one
    r_delith = [choice[h.number].r_ohm for h in hcs if h.kind == an.DELITH]
    assert r_delith[0] > 4 * r_delith[1]


def test_text_names_value_area_and_source() -> None:
    run = rate_run(hysteresis_v=0.0)
    c = an.ir_choices(run)[1]
    assert c.text() == "IR-free with R = 265 Ω (150 Ω·cm², measured)"
    bare = rate_run(hysteresis_v=0.0, meta={"area_cm2": None, "mass_mg": None})
    assert an.ir_choices(bare)[1].text() == "IR-free with R = 265 Ω (measured)"


def test_schedule_resistance_when_nothing_is_measured() -> None:
    meta = {"schedule_toml": schedule_toml(resistance_ohm_cm2=150)}
    run = drop_steps(rate_run(meta=meta), [0, 2])  # no rests: no current interrupt
    hcs = an.half_cycles(run)
    assert an.current_interrupt(run, hcs=hcs) == []
    choice = an.ir_choices(run, hcs)
    assert {c.source for c in choice.values()} == {"schedule"}
    assert [c.r_ohm for c in choice.values()] == pytest.approx([R_EL] * len(choice))
    assert choice[1].text() == "IR-free with R = 265 Ω (150 Ω·cm², from the schedule)"


def test_a_late_first_sample_is_not_a_measurement() -> None:
    """A boundary whose first current sample comes 5 s after the rest holds polarisation:
    the schedule's value is used instead."""
    meta = {"schedule_toml": schedule_toml(resistance_ohm=200)}
    run = rate_run(meta=meta, gap_s=5.0)
    assert all(p.window_s > an.resistance.MAX_IR_WINDOW_S for p in an.current_interrupt(run))
    choice = an.ir_choices(run)
    assert {(c.source, c.r_ohm) for c in choice.values()} == {("schedule", 200.0)}


def test_no_resistance_anywhere() -> None:
    run = drop_steps(rate_run(), [0, 2])
    choice = an.ir_choices(run)
    assert {(c.source, c.r_ohm) for c in choice.values()} == {("none", 0.0)}
    assert choice[1].text().startswith("not IR-compensated")
    (c0, c1) = an.rate_curves(run)
    np.testing.assert_array_equal(c0.potential_v, c0.potential_raw_v)
    assert c1.ir.source == "none"


def test_given_resistance_wins() -> None:
    meta = {"schedule_toml": schedule_toml(resistance_ohm_cm2=150)}
    choice = an.ir_choices(rate_run(meta=meta), r_ohm=123.0)
    assert {(c.source, c.r_ohm) for c in choice.values()} == {("given", 123.0)}
    curves = an.rate_curves(rate_run(), r_area_ohm_cm2=150.0)
    assert {c.ir.source for c in curves} == {"given"}
    assert curves[0].ir.text() == "IR-free with R = 265 Ω (150 Ω·cm², given)"


def test_schedule_resistance_reading() -> None:
    def run_with(text: object) -> RunData:
        return RunData.from_arrays([0.0], [0.0], [0.0], meta={"schedule_toml": text})

    assert an.schedule_resistance(run_with(schedule_toml(resistance_ohm_cm2=150))) == (
        pytest.approx(R_EL)
    )
    assert an.schedule_resistance(run_with(schedule_toml(resistance_ohm=250))) == 250.0
    assert an.schedule_resistance(run_with(schedule_toml())) is None
    assert an.schedule_resistance(run_with("not [ a schedule")) is None
    assert an.schedule_resistance(run_with(None)) is None


def test_rate_curves_start_at_the_rest_potential_and_are_possible() -> None:
    run = rate_run()
    for c in an.rate_curves(run):
        assert c.ir.source == "measured" and not c.impossible
        # the half-cycle's own ΔV/ΔI takes the whole instantaneous drop away
        assert c.ir.point is not None
        assert c.potential_v[0] == pytest.approx(c.ir.point.v_rest_v + run.reference_offset_v)


def test_over_compensation_is_flagged() -> None:
    """The issue: the run's median current-interrupt value (dominated by the low-current
    boundaries) on the 10 mA/cm² curve puts it below 0 V vs Li and below its rest potential."""
    run = rate_run()
    median = an.measured_resistance(run)
    assert median is not None
    slow, fast = an.rate_curves(run, r_ohm=median)
    assert not slow.impossible
    assert fast.impossible and len(fast.problems) == 2
    below_li, below_ocv = fast.problems
    lo = float(np.min(fast.potential_v))
    assert lo < -1.0
    assert f"reaches {lo:+.3f} V vs Li" in below_li
    assert "below the open-circuit" in below_ocv and "delithiation" in below_ocv


def test_impossibility_rules() -> None:
    v = np.array([0.2, 0.1, 0.3])
    assert an.ir_free_problems("delith", v, vs_li=True, open_circuit_v=0.1) == []
    # below 0 V vs Li, within the tolerance and beyond it
    assert an.ir_free_problems("delith", v - 0.104, vs_li=True) == []
    (p,) = an.ir_free_problems("delith", v - 0.11, vs_li=True)
    assert "-0.010 V vs Li" in p
    # without a reference electrode a negative cell voltage is no violation
    assert an.ir_free_problems("delith", v - 0.5, vs_li=False) == []
    # delithiation under / lithiation over the rest potential before it
    (p,) = an.ir_free_problems("delith", v, vs_li=False, open_circuit_v=0.2)
    assert "100 mV below the open-circuit +0.200 V before the delithiation" in p
    (p,) = an.ir_free_problems("lith", v, vs_li=True, open_circuit_v=0.2)
    assert "100 mV above the open-circuit +0.200 V before the lithiation" in p
    assert an.ir_free_problems("lith", v, vs_li=True, open_circuit_v=0.3) == []
    assert an.ir_free_problems("delith", np.array([np.nan]), vs_li=True) == []


def test_no_reference_uses_the_rest_rule_only() -> None:
    """A dummy load (no reference electrode) goes below 0 V cell; only the rest-potential rule
    can flag its curves."""
    meta = {"reference_electrode": "none", "reference_offset_v": 0.0}
    ocv = linear_ocv(e0=0.2, slope_v=0.6)  # the cell voltage crosses 0 V during lithiation
    run = build_run([CycleSpec(LITH_AH, LITH_AH, 0.1 * J, 0.1 * J, 300.0)], ocv=ocv, meta=meta)
    assert not an.has_reference(run) and float(np.min(run.voltage_v)) < 0
    (c,) = an.rate_curves(run, r_ohm=300.0)
    assert not c.vs_li and not c.impossible
    assert float(np.min(c.potential_v)) < -0.3  # drawn below 0 V: fine for cell volts
    # the same curve vs Li+/Li would be impossible
    with_ref = build_run([CycleSpec(LITH_AH, LITH_AH, 0.1 * J, 0.1 * J, 300.0)], ocv=ocv)
    (c_li,) = an.rate_curves(with_ref, r_ohm=300.0)
    assert c_li.vs_li and c_li.impossible and "vs Li" in c_li.problems[0]
    (bad,) = an.rate_curves(run, r_ohm=2000.0)
    assert bad.problems and all("vs Li" not in p for p in bad.problems)


@settings(max_examples=30, deadline=None)
@given(
    r_ohm=st.floats(min_value=1.0, max_value=2000.0),
    hyst=st.floats(min_value=0.0, max_value=0.2),
    j_fast=st.floats(min_value=0.2, max_value=10.0),
)
def test_measured_choice_never_impossible(r_ohm: float, hyst: float, j_fast: float) -> None:
    """Compensating each half-cycle with its own current interrupt never gives an impossible
    curve on a synthetic Si run, whatever the resistance, hysteresis and current."""
    run = rate_run(r_ohm, (0.1, j_fast), hysteresis_v=hyst)
    for c in an.rate_curves(run):
        assert c.ir.source == "measured"
        assert not c.impossible, c.problems
