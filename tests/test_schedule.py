"""Schedules: TOML vocabulary → compiled blob → the board's decoder, conversions, refusals."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sicell import schema
from sicell.protocol import schedule as wire
from sicell.schedule import (
    DEFAULT_LIMITS,
    REFERENCES,
    BoardLimits,
    Reference,
    Schedule,
    ScheduleValidationError,
    load_schedule,
    parse_schedule,
    to_cell_v,
    to_li_v,
)
from sicell.units import v_to_uv

EXAMPLES = Path(__file__).resolve().parents[1] / "host" / "sicell" / "examples"
IN_LI = REFERENCES["In-Li"]
AREA = 0.567

HEAD = """
vs = "Li"
[cell]
area_cm2 = 0.567
loading_mg_cm2 = 0.21
capacity_mah_g = 3579
[reference]
electrode = "In-Li"
"""


def decode(blob: bytes, limits: BoardLimits = DEFAULT_LIMITS) -> tuple[Any, Any]:
    return wire.decode(
        blob,
        n_ranges=len(limits.ranges_a),
        hw_v_min=round(limits.v_min_v * 1e6),
        hw_v_max=round(limits.v_max_v * 1e6),
        hw_i_max=round(limits.i_max_a * 1e9),
    )


def compile_text(text: str, limits: BoardLimits = DEFAULT_LIMITS) -> tuple[Any, Any]:
    return decode(parse_schedule(text).compile(limits), limits)


# ---- references and conversion -----------------------------------------------------------


def test_references_builtin() -> None:
    assert REFERENCES["In-Li"] == Reference("In-Li", 0.62)
    assert REFERENCES["Li"] == Reference("Li", 0.0)
    assert to_cell_v(0.01, IN_LI) == pytest.approx(-0.61)
    assert to_cell_v(1.2, IN_LI) == pytest.approx(0.58)
    assert to_li_v(-0.61, IN_LI) == pytest.approx(0.01)


@given(st.floats(min_value=0.01, max_value=1.2))
def test_vs_li_round_trip_in_li(e: float) -> None:
    cell = to_cell_v(e, IN_LI)
    assert -0.61 - 1e-12 <= cell <= 0.58 + 1e-12
    assert to_li_v(cell, IN_LI) == pytest.approx(e, abs=1e-12)


@given(st.floats(min_value=-0.61, max_value=0.58))
def test_cell_round_trip_in_li(v: float) -> None:
    e = to_li_v(v, IN_LI)
    assert 0.01 - 1e-12 <= e <= 1.2 + 1e-12
    assert to_cell_v(e, IN_LI) == pytest.approx(v, abs=1e-12)


@given(st.floats(min_value=0.01, max_value=1.2))
def test_vs_li_round_trip_through_the_blob(e: float) -> None:
    """A cutoff written vs Li reaches the board as cell µV and converts back to within 1 µV."""
    text = (
        HEAD
        + f"""
[[step]]
kind = "cc"
current_ua = 50
direction = "lithiation"
until_v = {e!r}
"""
    )
    _, steps = compile_text(text)
    (q, op, _act, val, _tgt) = steps[0][1][0]
    assert (q, op) == (wire.Q_V, wire.OP_LE)
    assert abs(val - (e - 0.62) * 1e6) <= 0.5 + 1e-6
    assert to_li_v(val * 1e-6, IN_LI) == pytest.approx(e, abs=1e-6)


def test_board_limits_from_info() -> None:
    info = {
        "v_min_uv": -1_500_000,
        "v_max_uv": 1_800_000,
        "compliance_uv": 4_000_000,
        "ranges_na": [10_000, 100_000, 1_000_000],
        "n_ranges": 3,
    }
    lim = BoardLimits.from_info(info)
    assert lim.v_min_v == pytest.approx(-1.5)
    assert lim.v_max_v == pytest.approx(1.8)
    assert lim.compliance_v == pytest.approx(4.0)
    assert lim.ranges_a == pytest.approx((1e-5, 1e-4, 1e-3))
    assert DEFAULT_LIMITS.ranges_a == (10e-6, 100e-6, 1e-3, 10e-3)
    assert (DEFAULT_LIMITS.v_min_v, DEFAULT_LIMITS.v_max_v) == (-2.4, 2.4)  # firmware/board.json
    assert DEFAULT_LIMITS.compliance_v == 4.5


# ---- examples ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["paper-cycling", "paper-rate", "rc-check"])
def test_examples_compile(name: str) -> None:
    sched = load_schedule(EXAMPLES / f"{name}.toml")
    _, steps = decode(sched.compile())
    assert len(steps) == len(sched.step_rows())
    assert sched.name == name
    assert sched.estimate_duration_s() is not None
    meta = sched.metadata()
    assert set(meta) <= set(schema.META_KEYS)
    assert meta["schedule_toml"] == (EXAMPLES / f"{name}.toml").read_text()


def test_examples_are_package_data() -> None:
    names = {p.name for p in resources.files("sicell").joinpath("examples").iterdir()}
    assert {"paper-cycling.toml", "paper-rate.toml", "rc-check.toml"} <= names


def test_paper_cycling_values() -> None:
    sched = load_schedule(EXAMPLES / "paper-cycling.toml")
    assert sched.area_cm2 == pytest.approx(0.567)
    assert sched.mass_mg == pytest.approx(0.21 * 0.567)
    header, steps = decode(sched.compile())
    policy, tick, slow, deb, vmin, vmax, imax, tmax = header
    assert policy == wire.P_DECIMATE
    assert (vmin, vmax) == (-720_000, 1_980_000)
    assert (tick, slow, deb, imax, tmax) == (100, 1000, 1000, 200_000, wire.TEMP_OFF)
    kinds = [s[0][0] for s in steps]
    assert kinds == [wire.K_OCV, wire.K_CC, wire.K_REST, wire.K_CC, wire.K_REST, wire.K_LOOP]
    lith, delith, loop = steps[1], steps[3], steps[5]
    assert lith[0][3] == 56_700  # 0.1 mA/cm² × 0.567 cm², nA, + = lithiation
    assert delith[0][3] == -56_700
    assert (wire.Q_V, wire.OP_LE, wire.A_NEXT, -610_000, 0) in lith[1]
    assert (wire.Q_V, wire.OP_GE, wire.A_NEXT, 580_000, 0) in delith[1]
    assert steps[2][1] == [(wire.Q_TIME, wire.OP_GE, wire.A_NEXT, 3_600_000, 0)]
    assert loop[0][5:7] == (1, 99)  # back to "lith", 99 more times = 100 cycles
    rec = lith[0][7:]
    assert rec == (120_000, 5_000, 0, 0)
    meta = sched.metadata()
    assert meta["reference_electrode"] == "In-Li"
    assert meta["reference_offset_v"] == 0.62
    assert meta["conventions"]["current_sign"].startswith("positive current = lithiation")
    # a few hundred points per 6 h half-cycle from the time criterion alone
    assert 100 <= 6 * 3600 / (rec[0] / 1000) <= 600


def test_paper_rate_values() -> None:
    sched = load_schedule(EXAMPLES / "paper-rate.toml")
    _, steps = decode(sched.compile())
    cccv = [s for s in steps if s[0][0] == wire.K_CCCV]
    assert len(cccv) == 5
    for s in cccv:
        assert s[0][3] == 56_700 and s[0][4] == -610_000
        assert (wire.Q_ABS_I, wire.OP_LE, wire.A_NEXT, 567, 0) in s[1]  # 1 µA/cm²
    delith = [s for s in steps if s[0][0] == wire.K_CC]
    assert [s[0][3] for s in delith] == [-56_700, -567_000, -1_134_000, -2_835_000, -5_670_000]
    # IR-corrected cutoffs: 1.2 V vs Li (+0.58 V cell) plus |I| × 150 Ω·cm² / 0.567 cm², the
    # 10 mA/cm² one too (2.08 V cell: inside the board's ±2.4 V window)
    cutoffs = [lim[3] for s in delith for lim in s[1] if lim[0] == wire.Q_V]
    assert cutoffs == [595_000, 730_000, 880_000, 1_330_000, 2_080_000]
    for s in delith:
        # recording: a few hundred points per half-cycle (0.6 mAh/cm² at that current)
        t_half = 0.6 / (abs(s[0][3]) * 1e-6 / AREA) * 3600
        assert 100 <= t_half / (s[0][7] / 1000) <= 600


def test_rc_check_is_short() -> None:
    sched = load_schedule(EXAMPLES / "rc-check.toml")
    eta = sched.estimate_duration_s()
    assert eta is not None and 60 <= eta <= 600
    assert sched.reference.offset_v == 0.0


# ---- hypothesis round trip ---------------------------------------------------------------


@dataclass
class Gen:
    """A generated step: its TOML and what the board must receive."""

    toml: str
    kind: int
    i_a: float | None  # expected signed current, A
    v_v: float | None  # expected v_set, cell V
    limits: list[tuple[int, int, float]]  # (quantity, op, value in wire units, unrounded)
    record: tuple[float, float, float, float] | None  # dt ms, dv µV, di nA, dq nAh (unrounded)
    cut_v: float | None = None  # a cc step's cutoff, cell V


_num = st.floats(min_value=0.001, max_value=9.0, allow_nan=False).map(lambda x: round(x, 4))


@st.composite
def current(draw: Any) -> tuple[str, float]:
    """(TOML lines, |I| in A)."""
    form = draw(st.sampled_from(["ua", "ma", "density_ma", "density_ua", "c_rate"]))
    if form == "ua":
        v = draw(st.floats(min_value=0.5, max_value=9000).map(lambda x: round(x, 3)))
        return f"current_ua = {v!r}", v * 1e-6
    if form == "ma":
        v = draw(st.floats(min_value=0.001, max_value=9.5).map(lambda x: round(x, 5)))
        return f"current_ma = {v!r}", v * 1e-3
    if form == "density_ma":
        v = draw(st.floats(min_value=0.001, max_value=15).map(lambda x: round(x, 4)))
        return f"current_density_ma_cm2 = {v!r}", v * 1e-3 * AREA
    if form == "density_ua":
        v = draw(st.floats(min_value=1, max_value=15000).map(lambda x: round(x, 2)))
        return f"current_density_ua_cm2 = {v!r}", v * 1e-6 * AREA
    v = draw(st.floats(min_value=0.01, max_value=20).map(lambda x: round(x, 3)))
    return f"c_rate = {v!r}", v * 0.21 * AREA * 1e-3 * 3579 * 1e-3


@st.composite
def potential(draw: Any, key: str) -> tuple[str, float]:
    """(TOML lines, cell volts)."""
    if draw(st.booleans()):
        e = draw(st.floats(min_value=-1.3, max_value=2.5).map(lambda x: round(x, 6)))
        return f'{key} = {e!r}\nvs = "Li"', e - 0.62
    v = draw(st.floats(min_value=-1.9, max_value=1.9).map(lambda x: round(x, 6)))
    return f'{key} = {v!r}\nvs = "cell"', v


@st.composite
def step(draw: Any) -> Gen:
    kind = draw(st.sampled_from(["rest", "ocv", "cc", "cv", "cccv"]))
    lines = [f'kind = "{kind}"']
    i_a = v_v = None
    limits: list[tuple[int, int, float]] = []
    if kind in ("cc", "cccv"):
        text, mag = draw(current())
        lines.append(text)
        sign = draw(st.sampled_from([1, -1]))
        lines.append(f'direction = "{"lithiation" if sign > 0 else "delithiation"}"')
        i_a = sign * mag
    if kind in ("cv", "cccv"):
        text, v_v = draw(potential("hold_v"))
        lines.append(text)
        ua = draw(st.floats(min_value=0.01, max_value=5).map(lambda x: round(x, 4)))
        if i_a is not None:
            ua = min(ua, abs(i_a) * 1e6 / 2)
        lines.append(f"until_current_ua = {ua!r}")
        limits.append((wire.Q_ABS_I, wire.OP_LE, ua * 1e3))
    if kind == "cc":
        assert i_a is not None
        text, cut = draw(potential("until_v"))
        lines.append(text)
        limits.insert(0, (wire.Q_V, wire.OP_LE if i_a > 0 else wire.OP_GE, cut * 1e6))
    else:
        cut = None
    dur = draw(st.one_of(st.none(), st.sampled_from(["duration_s", "duration_min", "duration_h"])))
    if dur is not None or kind in ("rest", "ocv"):
        dur = dur or "duration_s"
        val = draw(st.floats(min_value=0.01, max_value=500).map(lambda x: round(x, 3)))
        lines.append(f"{dur} = {val!r}")
        scale = {"duration_s": 1, "duration_min": 60, "duration_h": 3600}[dur]
        pos = 1 if kind == "cc" else 0
        limits.insert(pos, (wire.Q_TIME, wire.OP_GE, val * scale * 1e3))
    record = None
    if draw(st.booleans()):
        dt = draw(st.floats(min_value=0, max_value=1000).map(lambda x: round(x, 3)))
        dv = draw(st.floats(min_value=0, max_value=100).map(lambda x: round(x, 3)))
        di = draw(st.floats(min_value=0, max_value=1000).map(lambda x: round(x, 3)))
        dq = draw(st.floats(min_value=0, max_value=1000).map(lambda x: round(x, 3)))
        lines.append(
            f"record = {{ dt_s = {dt!r}, dv_mv = {dv!r}, di_ua = {di!r}, dq_uah = {dq!r} }}"
        )
        record = (dt * 1e3, dv * 1e3, di * 1e3, dq * 1e3)
    kinds = {"rest": wire.K_REST, "ocv": wire.K_OCV, "cc": wire.K_CC, "cv": wire.K_CV}
    return Gen("\n".join(lines), kinds.get(kind, wire.K_CCCV), i_a, v_v, limits, record, cut)


def _ends_at_once(gens: list[Gen], loop: bool) -> int | None:
    """Reference model of the cutoff-side rule (docs/schedule.md): the first cc step, in run
    order (the block twice when it loops), whose cutoff lies beyond a bound on where it starts.
    Bounds, µV: after a lithiation the cell is at or above its cutoff/hold, after a
    delithiation at or below; a CV leaves it at its hold; a rest keeps the bound on the side the
    last current came from."""
    lo: int | None = None
    hi: int | None = None
    last = 0
    for k, g in [*enumerate(gens)] * (2 if loop else 1):
        if g.kind in (wire.K_REST, wire.K_OCV):
            lo, hi = (lo if last > 0 else None), (hi if last < 0 else None)
            continue
        if g.kind == wire.K_CV:
            assert g.v_v is not None
            lo = hi = v_to_uv(g.v_v)
            last = 0
            continue
        assert g.i_a is not None
        end_v = g.cut_v if g.kind == wire.K_CC else g.v_v
        assert end_v is not None
        end = v_to_uv(end_v)
        if g.kind == wire.K_CC and (
            (g.i_a > 0 and hi is not None and end > hi)
            or (g.i_a < 0 and lo is not None and end < lo)
        ):
            return k
        if g.i_a > 0:
            lo, last = end, 1
        else:
            hi, last = end, -1
    return None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step(), min_size=1, max_size=12), st.integers(min_value=2, max_value=500))
def test_round_trip_toml_compile_decode(gens: list[Gen], count: int) -> None:
    text = HEAD + "[recording]\ndt_s = 30\ndv_mv = 2\ndi_ua = 1\ndq_uah = 0.5\n"
    for g in gens:
        text += "\n[[step]]\n" + g.toml + "\n"
    loop = len(gens) >= 2
    if loop:
        text = text.replace("[[step]]\n", '[[step]]\nlabel = "first"\n', 1)
        text += f'\n[[step]]\nkind = "loop"\nto = "first"\ncount = {count}\n'
    sched = parse_schedule(text)
    refused = _ends_at_once(gens, loop)
    if refused is not None:  # a cutoff on the side its step starts from
        with pytest.raises(ScheduleValidationError, match="would end at once") as ei:
            sched.compile()
        assert ei.value.step == refused
        return
    _, steps = decode(sched.compile())
    assert len(steps) == len(gens) + loop
    rows = sched.step_rows()
    for idx, (g, (fields, limits)) in enumerate(zip(gens, steps, strict=False)):
        kind, _rng, _flags, i_na, v_uv, _lt, _lc, rdt, rdv, rdi, rdq = fields
        assert kind == g.kind
        if g.i_a is not None:
            assert abs(i_na - g.i_a * 1e9) <= 0.5 + 1e-6, (g.toml, i_na)
            assert rows[idx][2] == pytest.approx(i_na * 1e-9, abs=1e-15)
        else:
            assert i_na == 0
        if g.v_v is not None:
            assert abs(v_uv - g.v_v * 1e6) <= 0.5 + 1e-6, (g.toml, v_uv)
            assert rows[idx][3] == pytest.approx(v_uv * 1e-6, abs=1e-12)
        assert len(limits) == len(g.limits)
        for (q, op, act, val, _t), (eq, eop, evalue) in zip(limits, g.limits, strict=True):
            assert (q, op, act) == (eq, eop, wire.A_NEXT)
            assert abs(val - evalue) <= 0.5 + 1e-6, (g.toml, val, evalue)
        expected_rec = g.record or (30e3, 2e3, 1e3, 0.5e3)
        for got, exp in zip((rdt, rdv, rdi, rdq), expected_rec, strict=True):
            assert abs(got - exp) <= 0.5 + 1e-6
    if loop:
        lf = steps[-1][0]
        assert (lf[0], lf[5], lf[6]) == (wire.K_LOOP, 0, count - 1)


# ---- one-liners --------------------------------------------------------------------------


def _blob(text: str) -> bytes:
    return parse_schedule(HEAD + text).compile()


@pytest.mark.parametrize(
    ("one_liner", "table"),
    [
        ('step = "Rest for 1 hour"', 'kind = "rest"\nduration_h = 1'),
        ('step = "OCV for 10 min"', 'kind = "ocv"\nduration_min = 10'),
        (
            'step = "Rest for 2 h or until dV/dt < 7.2 mV/h"',
            'kind = "rest"\nduration_h = 2\nuntil_dvdt_mv_h = 7.2',
        ),
        (
            'step = "Lithiate at 0.1 mA/cm2 until 0.01 V vs Li"',
            'kind = "cc"\ndirection = "lithiation"\ncurrent_density_ma_cm2 = 0.1\nuntil_v = 0.01',
        ),
        (
            'step = "Delithiate at C/10 until 1.2 V vs Li or 20 h"',
            'kind = "cc"\ndirection = "delithiation"\nc_rate = 0.1\nuntil_v = 1.2\nduration_h = 20',
        ),
        (
            'step = "Lithiate at 56.7 uA for 30 min"',
            'kind = "cc"\ncurrent_ua = 56.7\nduration_min = 30',
        ),
        (
            'step = "Lithiate at 0.1 mA/cm2 until 0.01 V vs Li, then hold until 1 uA/cm2"',
            'kind = "cccv"\ncurrent_density_ma_cm2 = 0.1\nhold_v = 0.01\n'
            "until_current_density_ua_cm2 = 1",
        ),
        (
            'step = "Hold at -0.61 V vs cell until 1 µA/cm2 or 5 h"',
            'kind = "cv"\nhold_v = -0.61\nvs = "cell"\nuntil_current_ua = 0.567\nduration_h = 5',
        ),
        (
            'step = "Delithiate at 0.5 mA until 0.3 mAh"',
            'kind = "cc"\ncurrent_ma = -0.5\nuntil_charge_mah = 0.3',
        ),
    ],
)
def test_one_liners_match_tables(one_liner: str, table: str) -> None:
    a = _blob(f"[[step]]\n{one_liner}\n")
    b = _blob(f"[[step]]\n{table}\n")
    assert decode(a) == decode(b)


def test_one_liner_with_label_and_record() -> None:
    text = (
        '[[step]]\nlabel = "lith"\nstep = "Lithiate at 0.1 mA/cm2 until 0.01 V vs Li"\n'
        "record = { dt_s = 10 }\n"
    )
    sched = parse_schedule(HEAD + text)
    ((idx, kind, i_a, v, label),) = sched.step_rows()
    assert (idx, kind, label) == (0, "cc", "lith")
    assert i_a == pytest.approx(56.7e-6) and v == pytest.approx(-0.61)
    _, steps = decode(sched.compile())
    assert steps[0][0][7] == 10_000


def test_charge_discharge_need_charge_means() -> None:
    with pytest.raises(ScheduleValidationError) as ei:
        parse_schedule(HEAD + '[[step]]\nstep = "Discharge at 0.1 mA/cm2 until 0.01 V vs Li"\n')
    msg = str(ei.value)
    assert "step 0" in msg and "'discharge' is ambiguous" in msg and "charge_means" in msg
    text = 'charge_means = "delithiation"\n' + HEAD
    text += '[[step]]\nstep = "Discharge at 0.1 mA/cm2 until 0.01 V vs Li"\n'
    _, steps = decode(parse_schedule(text).compile())
    assert steps[0][0][3] == 56_700  # discharge of the half cell = lithiation


# ---- refusals ----------------------------------------------------------------------------

CC_LITH = '[[step]]\nlabel = "lith"\nkind = "cc"\ndirection = "lithiation"\n'


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        (  # cutoff outside the hardware window
            CC_LITH + "current_ua = 50\nuntil_v = 3.1\n",
            ["step 0 ('lith', cc)", "until_v = 3.1 V vs Li", "+2.4800 V cell", "hardware window"],
        ),
        (  # hold outside the safety window
            '[safety]\nv_min = 0.0\nv_max = 1.5\n[[step]]\nlabel = "hold"\nkind = "cv"\n'
            "hold_v = -0.05\nuntil_current_ua = 1\n",
            ["step 0 ('hold', cv)", "hold_v = -0.05 V vs Li", "safety window", "expected"],
        ),
        (  # cutoff on the safety window's edge
            "[safety]\nv_min = 0.01\nv_max = 1.5\n" + CC_LITH + "current_ua = 50\nuntil_v = 0.01\n",
            ["step 0 ('lith', cc)", "until_v = 0.01", "not strictly inside the safety window"],
        ),
        (  # current over the top range
            CC_LITH + "current_ma = 20\nuntil_v = 0.01\n",
            ["step 0 ('lith', cc)", "current_ma = 20", "top range of 10 mA"],
        ),
        (  # current over the safety i_max
            "[safety]\ni_max_ma = 0.05\n" + CC_LITH + "current_ma = 0.1\nuntil_v = 0.01\n",
            ["step 0 ('lith', cc)", "current_ma = 0.1", "safety limit i_max of 0.05 mA"],
        ),
        (  # series drop beyond compliance
            "[cell]\nresistance_ohm = 1000\n[safety]\nv_min=-1.5\nv_max=1.5\nvs='cell'\n"
            + CC_LITH
            + "current_ma = 4\nuntil_v = 0.01\n",
            ["step 0 ('lith', cc)", "1000 Ω", "drops 4.000 V", "compliance of 4.500 V"],
        ),
        (  # goto an unknown label
            CC_LITH + "current_ua = 50\nuntil_v = 0.01\n[[step.limit]]\nv = 0.5\nop = '>='\n"
            "goto = 'nowhere'\n",
            ["step 0 ('lith', cc) limit 0", "goto = 'nowhere' names no step", "'lith'"],
        ),
        (  # loop to an unknown label
            CC_LITH + "current_ua = 50\nuntil_v = 0.01\n[[step]]\nkind = 'loop'\nto = 'lth'\n"
            "count = 3\n",
            ["step 1 (loop)", "to = 'lth' names no step", "['lith']"],
        ),
        (  # loop forward
            '[[step]]\nkind = "loop"\nlabel="l"\nto = "end"\ncount = 2\n'
            '[[step]]\nlabel = "end"\nkind = "rest"\nduration_s = 1\n',
            ["step 0 ('l', loop)", "not before the loop", "loops jump backwards"],
        ),
        (  # a density without an area
            CC_LITH + "current_density_ma_cm2 = 0.1\nuntil_v = 0.01\n",
            ["step 0 ('lith', cc)", "current_density_ma_cm2 = 0.1", "[cell] area_cm2"],
        ),
        (  # a C-rate without a mass
            "[cell]\ncapacity_mah_g = 3579\n" + CC_LITH + "c_rate = 0.1\nuntil_v = 0.01\n",
            ["step 0 ('lith', cc)", "c_rate = 0.1", "mass_mg"],
        ),
        (  # a C-rate without a capacity
            "[cell]\nmass_mg = 0.12\n" + CC_LITH + "c_rate = 'C/10'\nuntil_v = 0.01\n",
            ["step 0 ('lith', cc)", "c_rate = 'C/10'", "capacity_mah_g"],
        ),
        (  # a step that never ends
            CC_LITH + "current_ua = 50\n",
            ["step 0 ('lith', cc)", "no end condition"],
        ),
        (  # CC-CV whose hold never ends
            '[[step]]\nlabel="x"\nkind = "cccv"\ncurrent_ua = 50\nhold_v = 0.01\n',
            ["step 0 ('x', cccv)", "hold phase never ends"],
        ),
        (  # end current above the set current
            '[[step]]\nlabel="x"\nkind = "cccv"\ncurrent_ua = 50\nhold_v = 0.01\n'
            "until_current_ua = 60\n",
            ["step 0 ('x', cccv)", "until_current_ua = 60", "not below the set current"],
        ),
        (  # too many limits
            CC_LITH + "current_ua = 50\nuntil_v = 0.01\nduration_h = 1\nuntil_charge_mah = 1\n"
            "[[step.limit]]\nv = 0.5\nop = '<='\n[[step.limit]]\ntemp_c = 40\nop = '>='\n",
            ["step 0 ('lith', cc)", "5 end conditions and limits", "at most 4"],
        ),
        (  # |dV/dt| below the wire resolution
            '[[step]]\nlabel="r"\nkind = "rest"\nuntil_dvdt_mv_h = 1\n',
            ["step 0 ('r', rest)", "until_dvdt_mv_h", "rounds to 0"],
        ),
        (  # explicit range too small
            CC_LITH + "current_ua = 50\nuntil_v = 0.01\nrange = 0\n",
            ["step 0 ('lith', cc)", "range = 0", "full scale of 10 µA"],
        ),
        (  # safety ceiling above the hardware
            "[safety]\ni_max_ma = 50\n" + CC_LITH + "current_ua = 50\nuntil_v = 0.01\n",
            ["[safety]", "i_max_ma", "50 mA", "top range of 10 mA"],
        ),
        (  # inverted safety window
            "[safety]\nv_min = 1.0\nv_max = 0.5\n" + CC_LITH + "current_ua = 50\nuntil_v = 0.8\n",
            ["[safety]", "v_min", "not below v_max"],
        ),
        (  # a duration too long for the 32-bit ms field
            '[[step]]\nlabel="r"\nkind = "rest"\nduration_h = 1000\n',
            ["step 0 ('r', rest)", "duration", "596.5 h"],
        ),
    ],
)
def test_impossible_schedules_name_step_and_value(text: str, needles: list[str]) -> None:
    full = 'vs = "Li"\n' + text if "vs" not in text.split("\n")[0] else text
    if "[cell]" not in full:
        full = full.replace('vs = "Li"\n', 'vs = "Li"\n[reference]\nelectrode = "In-Li"\n', 1)
    with pytest.raises(ScheduleValidationError) as ei:
        parse_schedule(full).compile()
    msg = str(ei.value)
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        (  # a typo never silently drops a cutoff
            CC_LITH + "current_ua = 50\nuntill_v = 0.01\n",
            ["step 0", "'untill_v'", "did you mean 'until_v'"],
        ),
        (  # a potential without a reference
            CC_LITH.replace('label = "lith"\n', "") + "current_ua = 50\nuntil_v = 0.01\n",
            ["step 0 (cc)", "until_v = 0.01", 'vs = "Li" or vs = "cell"'],
        ),
        (  # a sign against the direction
            CC_LITH + 'current_ua = -50\nuntil_v = 0.01\nvs = "Li"\n',
            ["step 0 ('lith', cc)", "current_ua = -50", "contradicts"],
        ),
        (  # duplicate labels
            CC_LITH
            + 'current_ua = 50\nvs="cell"\nuntil_v = 0.01\n'
            + CC_LITH
            + 'current_ua = 50\nvs="cell"\nuntil_v = 0.01\n',
            ["step 1 ('lith', cc)", "already used by step 0"],
        ),
        (  # until_v on a rest
            '[[step]]\nkind = "rest"\nuntil_v = 0.5\nvs = "cell"\n',
            ["step 0 (rest)", "until_v", "[[step.limit]]"],
        ),
        (  # loop count 1
            '[[step]]\nlabel="a"\nkind="rest"\nduration_s=1\n[[step]]\nkind="loop"\nto="a"\n'
            "count=1\n",
            ["step 1 (loop)", "count = 1", "2…"],
        ),
        (  # unknown kind
            '[[step]]\nkind = "gcpl"\n',
            ["step 0", "kind = 'gcpl'", "rest, cc, cv, cccv, ocv, loop"],
        ),
        (  # unknown reference without an offset
            '[reference]\nelectrode = "Na"\n',
            ["[reference]", "'Na'", "offset_v"],
        ),
    ],
)
def test_parse_errors_name_step_and_value(text: str, needles: list[str]) -> None:
    with pytest.raises(ScheduleValidationError) as ei:
        parse_schedule(text).compile()
    msg = str(ei.value)
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"


def test_error_attributes() -> None:
    text = HEAD + CC_LITH + "current_ma = 20\nuntil_v = 0.01\n"
    with pytest.raises(ScheduleValidationError) as ei:
        parse_schedule(text).compile()
    err = ei.value
    assert (err.step, err.label, err.key, err.value) == (0, "lith", "current_ma", 20)
    assert isinstance(err, ValueError)


def test_board_limits_change_the_verdict() -> None:
    text = HEAD + CC_LITH + "current_ma = 5\nuntil_v = 0.01\n"
    parse_schedule(text).compile()
    small = BoardLimits(-2.0, 2.0, 4.5, (10e-6, 100e-6, 1e-3))
    with pytest.raises(ScheduleValidationError, match="top range of 1 mA"):
        parse_schedule(text).compile(small)
    narrow = BoardLimits(-0.5, 0.5, 4.5, DEFAULT_LIMITS.ranges_a)
    with pytest.raises(ScheduleValidationError, match=r"hardware window -0\.500…\+0\.500"):
        parse_schedule(text).compile(narrow)


# ---- other behaviour ---------------------------------------------------------------------


def test_ranges_default_and_override() -> None:
    text = HEAD + CC_LITH + "current_ua = 56.7\nuntil_v = 0.01\n"
    text += '[[step]]\nkind = "cv"\nhold_v = 0.01\nuntil_current_ua = 1\n'
    text += CC_LITH.replace('"lith"', '"l2"') + 'current_ua = 5\nuntil_v = 0.01\nrange = "auto"\n'
    text += CC_LITH.replace('"lith"', '"l3"') + "current_ua = 5\nuntil_v = 0.01\nrange = 2\n"
    _, steps = decode(parse_schedule(text).compile())
    assert [s[0][1] for s in steps] == [wire.RANGE_AUTO] * 3 + [2]


def test_conditional_limits_and_nested_loops() -> None:
    text = (
        HEAD
        + """
[[step]]
label = "outer"
kind = "rest"
duration_s = 10

[[step]]
label = "inner"
kind = "cc"
current_ua = 50
direction = "delithiation"
until_v = 1.2
new_cycle = true

[[step.limit]]
v = 0.9
op = ">="
goto = "relax"

[[step.limit]]
abs_current_ua = 100
op = ">"
action = "end"

[[step]]
kind = "loop"
to = "inner"
repeat = 2

[[step]]
label = "relax"
kind = "rest"
duration_min = 1

[[step.limit]]
dvdt_uv_s = 2
op = "<="

[[step]]
kind = "loop"
to = "outer"
count = 3
"""
    )
    sched = parse_schedule(text)
    _, steps = decode(sched.compile())
    inner = steps[1]
    assert inner[0][2] == wire.SF_NEW_CYCLE
    assert inner[1] == [
        (wire.Q_V, wire.OP_GE, wire.A_NEXT, 580_000, 0),
        (wire.Q_V, wire.OP_GE, wire.A_GOTO, 280_000, 3),
        (wire.Q_ABS_I, wire.OP_GE, wire.A_END, 100_000, 0),
    ]
    assert steps[2][0][5:7] == (1, 2)
    assert steps[3][1][1] == (wire.Q_DVDT, wire.OP_LE, wire.A_NEXT, 2, 0)
    assert steps[4][0][5:7] == (0, 2)


def test_estimate_duration_multiplies_loops() -> None:
    text = (
        HEAD
        + """
[[step]]
label = "a"
kind = "rest"
duration_s = 10
[[step]]
label = "b"
kind = "cc"
current_ua = 100
direction = "lithiation"
until_charge_uah = 10
[[step]]
kind = "loop"
to = "b"
count = 3
[[step]]
kind = "loop"
to = "a"
count = 2
"""
    )
    eta = parse_schedule(text).estimate_duration_s()
    assert eta == pytest.approx(2 * (10 + 3 * 360))


def test_metadata_and_mass_from_loading() -> None:
    sched = parse_schedule(
        '[cell]\nname = "x"\narea_cm2 = 0.5\nloading_mg_cm2 = 0.2\nthickness_um = 1\n'
        'density_g_cm3 = 2.3\n[reference]\nelectrode = "Li"\n'
        '[[step]]\nkind = "rest"\nduration_s = 1\n'
    )
    meta = sched.metadata()
    assert meta["mass_mg"] == pytest.approx(0.1)
    assert meta["reference_electrode"] == "Li" and meta["reference_offset_v"] == 0.0
    assert meta["cell"] == "x"
    assert set(meta) <= set(schema.META_KEYS)


def test_custom_reference_offset() -> None:
    sched = parse_schedule(
        '[reference]\nelectrode = "LTO"\noffset_v = 1.55\n'
        '[[step]]\nkind = "cv"\nhold_v = 1.0\nvs = "Li"\nuntil_current_ua = 1\n'
    )
    assert sched.reference == Reference("LTO", 1.55)
    _, steps = decode(sched.compile())
    assert steps[0][0][4] == -550_000


def test_schedule_is_a_dataclass_with_source() -> None:
    text = (EXAMPLES / "rc-check.toml").read_text()
    sched = parse_schedule(text, source="rc.toml")
    assert isinstance(sched, Schedule)
    assert sched.source_text == text
    assert math.isclose(sched.resistance_ohm or 0, 250)


def test_step_rows_and_estimate_do_not_need_board_limits() -> None:
    """An over-limit schedule still yields step rows (compile is the gate)."""
    text = HEAD + CC_LITH + "current_ma = 20\nuntil_v = 3.0\nrange = 7\n"
    sched = parse_schedule(text)
    assert sched.step_rows() == [(0, "cc", 0.02, 2.38, "lith")]
    with pytest.raises(ScheduleValidationError):
        sched.compile()


def test_warnings() -> None:
    text = HEAD + "[recording]\ndt_s = 0\ndv_mv = 0\n[control]\ntick_ms = 500\n"
    text += '[[step]]\nlabel = "r"\nkind = "rest"\nuntil_dvdt_mv_h = 5\n'
    text += '[[step]]\nlabel = "q"\nkind = "rest"\nduration_s = 5\nrecord = { dt_s = 0.1 }\n'
    ws = parse_schedule(text).warnings()
    joined = "\n".join(ws)
    assert "no [safety] v_min/v_max" in joined and "no [safety] i_max" in joined
    assert "step 0 ('r', rest): every recording criterion is off" in joined
    assert "step 0 ('r', rest): until_dvdt_mv_h (1.39 µV/s = 5 mV/h) is sent as 1 µV/s" in joined
    assert "step 1 ('q', rest): record dt_s = 0.1 s is shorter than the control tick" in joined
    for name in ("paper-cycling", "paper-rate", "rc-check"):
        assert load_schedule(EXAMPLES / f"{name}.toml").warnings() == []


def test_ir_corrected_cutoff() -> None:
    head = HEAD.replace("[cell]\n", "[cell]\nresistance_ohm = 1000\n")
    lith = head + CC_LITH + "current_ua = 100\nuntil_v = 0.01\nir_corrected = true\n"
    _, steps = compile_text(lith)
    assert steps[0][1] == [(wire.Q_V, wire.OP_LE, wire.A_NEXT, -710_000, 0)]  # -0.61 - 0.1 V
    delith = lith.replace('"lithiation"', '"delithiation"').replace("0.01", "1.2")
    _, steps = compile_text(delith)
    assert steps[0][1] == [(wire.Q_V, wire.OP_GE, wire.A_NEXT, 680_000, 0)]  # 0.58 + 0.1 V
    assert parse_schedule(delith).step_rows()[0][3] == pytest.approx(0.68)
    with pytest.raises(ScheduleValidationError) as ei:
        parse_schedule(delith.replace("current_ua = 100", "current_ua = 1900")).compile()
    msg = str(ei.value)
    for needle in (
        "step 0 ('lith', cc)",
        "until_v = 1.2 V vs Li",
        "I·R = -1.9 mA × 1000 Ω",
        "measured cutoff +2.4800 V cell",
        "hardware window",
    ):
        assert needle in msg, msg
    with pytest.raises(ScheduleValidationError, match="needs the series resistance"):
        parse_schedule(
            HEAD + CC_LITH + "current_ua = 1\nuntil_v = 0.01\nir_corrected = true\n"
        ).compile()
    with pytest.raises(ScheduleValidationError, match="ir_corrected applies to the until_v"):
        parse_schedule(HEAD + '[[step]]\nkind = "rest"\nduration_s = 1\nir_corrected = true\n')


def test_schedule_dataclasses_are_built_by_keyword() -> None:
    """Every spec and resolved-step dataclass takes keywords only (``BoardLimits`` and
    ``Reference`` keep their short positional form)."""
    from sicell.schedule import model

    classes = [
        model.Potential,
        model.CurrentValue,
        model.ChargeValue,
        model.RecordSpec,
        model.LimitSpec,
        model.StepSpec,
        model.SafetySpec,
        model.ControlSpec,
        model.ResolvedStep,
        Schedule,
    ]
    for cls in classes:
        assert all(f.kw_only for f in dataclasses.fields(cls)), cls.__name__
    with pytest.raises(TypeError):
        model.RecordSpec(1.0)  # type: ignore[misc]
