"""Synthetic run databases with known answers, for the analysis tests and the benchmark.

Test helper only (not part of the package): builds a ``RunData`` from a list of cycle
specifications with an exactly known capacity per half-cycle, series resistance, hysteresis and
open-circuit potential, and writes it to an SQLite file with the layout in ``sicell.schema``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sicell.rundata import F_STEP_FIRST, F_STEP_LAST, FloatArray, RunData, StepDef
from sicell.schema import DDL, SCHEMA_VERSION

AREA_CM2 = 0.567  # 8.5 mm mask
OFFSET_V = 0.62  # In-Li vs Li+/Li


def si_like_ocv(
    peaks: Sequence[tuple[float, float, float]] = ((0.25, 0.35, 0.03), (0.12, 0.45, 0.02)),
    e_top: float = 1.2,
    e_bottom: float = 0.01,
) -> Callable[[FloatArray], FloatArray]:
    """Equilibrium potential E(x) (V vs Li) of lithiation fraction x ∈ [0, 1] with logistic
    plateaus at the given (E, weight, width) and a linear background, so dx/dE has peaks."""
    e = np.linspace(e_bottom, e_top, 20001)
    w_lin = 1.0 - sum(p[1] for p in peaks)
    x = w_lin * (e_top - e) / (e_top - e_bottom)
    for e0, w, s in peaks:
        x = x + w / (1.0 + np.exp((e - e0) / s))
    x = (x - x[-1]) / (x[0] - x[-1])  # x(e_bottom) = 1, x(e_top) = 0
    xs, es = x[::-1], e[::-1]  # ascending x

    def f(xq: FloatArray) -> FloatArray:
        return np.asarray(np.interp(xq, xs, es), dtype=np.float64)

    return f


def linear_ocv(e0: float = 1.0, slope_v: float = 0.8) -> Callable[[FloatArray], FloatArray]:
    """E(x) = e0 − slope_v·x (so dQ/dV = −Q_total/slope_v on lithiation)."""

    def f(xq: FloatArray) -> FloatArray:
        return np.asarray(e0 - slope_v * np.asarray(xq, dtype=np.float64), dtype=np.float64)

    return f


@dataclass
class CycleSpec:
    """One cycle: rest, CC lithiation, rest, CC delithiation (currents as magnitudes, A)."""

    lith_ah: float
    delith_ah: float
    lith_current_a: float
    delith_current_a: float
    r_ohm: float = 0.0


def build_run(
    cycles: Sequence[CycleSpec],
    *,
    ocv: Callable[[FloatArray], FloatArray] | None = None,
    hysteresis_v: float = 0.0,
    points_per_step: int = 200,
    rest_s: float = 3600.0,
    rest_points: int = 5,
    gap_s: float = 1.0,
    noise_v: float = 0.0,
    seed: int = 0,
    meta: dict[str, Any] | None = None,
    final_rest: bool = True,
    cycle_ocv: Callable[[int], Callable[[FloatArray], FloatArray]] | None = None,
) -> RunData:
    """Samples of the given cycles. The working-electrode potential is
    ``E_eq(x) ∓ (I·R + h/2)`` (− on lithiation, + on delithiation); at rest it is ``E_eq(x)``.
    A current step's samples are evenly spaced from its first to its last point, so its
    capacity is exactly I × (t_last − t_first); its first point comes ``gap_s`` after the
    preceding rest's last point. ``cycle_ocv(k)`` (k from 0) gives each cycle its own E(x)."""
    base_ocv: Callable[[FloatArray], FloatArray] = ocv or si_like_ocv()
    cur_ocv = base_ocv
    rng = np.random.default_rng(seed)
    cols: dict[str, list[FloatArray]] = {k: [] for k in ("t", "we", "i", "q", "step", "cyc", "fl")}
    t_now = 0.0
    x_state = 0.0

    def add(t: FloatArray, we: FloatArray, i: float, q: FloatArray, step: int, cyc: int) -> None:
        n = t.size
        fl = np.zeros(n)
        fl[0] += F_STEP_FIRST
        fl[-1] += F_STEP_LAST
        cols["t"].append(t)
        cols["we"].append(we)
        cols["i"].append(np.full(n, i))
        cols["q"].append(q)
        cols["step"].append(np.full(n, float(step)))
        cols["cyc"].append(np.full(n, float(cyc)))
        cols["fl"].append(fl)

    def rest(step: int, cyc: int) -> None:
        nonlocal t_now
        t = t_now + np.linspace(0.0, rest_s, rest_points)
        e = float(cur_ocv(np.array([x_state]))[0])
        add(t, np.full(rest_points, e), 0.0, np.zeros(rest_points), step, cyc)
        t_now = float(t[-1])

    for k, c in enumerate(cycles):
        cur_ocv = cycle_ocv(k) if cycle_ocv is not None else base_ocv
        # lithiation
        rest(0, k)
        dur = c.lith_ah / c.lith_current_a * 3600.0
        t = t_now + gap_s + np.linspace(0.0, dur, points_per_step)
        q = c.lith_current_a * (t - t[0]) / 3600.0
        x0 = x_state
        x = x0 + q / c.lith_ah * (1.0 - x0) if c.lith_ah > 0 else np.full_like(q, x0)
        we = cur_ocv(x) - (c.lith_current_a * c.r_ohm + hysteresis_v / 2)
        add(t, we, c.lith_current_a, q, 1, k)
        t_now = float(t[-1]) + 0.0
        x_state = float(x[-1])
        # delithiation
        rest(2, k)
        dur = c.delith_ah / c.delith_current_a * 3600.0
        t = t_now + gap_s + np.linspace(0.0, dur, points_per_step)
        q = c.delith_current_a * (t - t[0]) / 3600.0
        x = x_state - q / c.lith_ah if c.lith_ah > 0 else np.full_like(q, x_state)
        we = cur_ocv(x) + (c.delith_current_a * c.r_ohm + hysteresis_v / 2)
        add(t, we, -c.delith_current_a, -q, 3, k)
        t_now = float(t[-1])
        x_state = 0.0  # next lithiation starts from the delithiated state
    if final_rest and cycles:
        rest(0, len(cycles))
    cat = {k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()}
    we = cat["we"]
    if noise_v > 0:
        we = we + rng.normal(0.0, noise_v, we.size)
    m: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "conventions": {
            "current_sign": "positive = lithiation of the working electrode",
            "capacity": "accumulates per half-cycle, resets at each half-cycle start",
            "cycle_start": "lithiation",
        },
        "reference_electrode": "In-Li",
        "reference_offset_v": OFFSET_V,
        "area_cm2": AREA_CM2,
        "mass_mg": 0.21 * AREA_CM2,
        "thickness_um": 1.55,
        "density_g_cm3": 1.5,
        "cell": "synthetic",
    }
    m.update(meta or {})
    i_max = max([max(c.lith_current_a, c.delith_current_a) for c in cycles] or [0.0])
    steps = {
        0: StepDef(0, "rest", None, None, "rest"),
        1: StepDef(1, "cc", i_max, None, "lithiate"),
        2: StepDef(2, "rest", None, None, "rest"),
        3: StepDef(3, "cc", -i_max, None, "delithiate"),
    }
    offset = float(m["reference_offset_v"])
    return RunData.from_arrays(
        cat["t"],
        we - offset,
        cat["i"],
        we_v=we,
        charge_ah=cat["q"],
        step=cat["step"].astype(np.int64),
        cycle=cat["cyc"].astype(np.int64),
        flags=cat["fl"].astype(np.int64),
        steps=steps,
        meta=m,
    )


def fade_cycles(
    n: int,
    *,
    ref_ah: float = 0.30e-3,
    fade_per_cycle: float = 0.0,
    reference_cycle: int = 10,
    ce: float = 0.998,
    current_a: float = 56.7e-6,
    r_ohm: float = 0.0,
    r_growth_ohm: float = 0.0,
) -> list[CycleSpec]:
    """Cycles 1..n with delithiation capacity ref·(1 − fade·(k − reference)) and CE ``ce``."""
    out = []
    for k in range(1, n + 1):
        d = ref_ah * (1.0 - fade_per_cycle * (k - reference_cycle))
        out.append(CycleSpec(d / ce, d, current_a, current_a, r_ohm + r_growth_ohm * (k - 1)))
    return out


def write_synthetic_run(path: str | Path, run: RunData) -> Path:
    """Write ``run`` to a new SQLite run database with the schema of ``sicell.schema``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.exists():
        p.unlink()
    con = sqlite3.connect(str(p))
    try:
        con.executescript(DDL)
        con.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            [(k, json.dumps(v)) for k, v in run.meta.items()],
        )
        con.executemany(
            "INSERT INTO samples (seq, t_s, voltage_v, we_v, current_a, charge_ah, step, cycle, "
            "range, flags) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            zip(
                run.seq.tolist(),
                run.t_s.tolist(),
                run.voltage_v.tolist(),
                run.we_v.tolist(),
                run.current_a.tolist(),
                run.charge_ah.tolist(),
                run.step.tolist(),
                run.cycle.tolist(),
                run.range_idx.tolist(),
                run.flags.tolist(),
                strict=True,
            ),
        )
        con.executemany(
            "INSERT INTO events (seq, t_s, code, name, step, cycle, value, aux) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(e.seq, e.t_s, e.code, e.name, e.step, e.cycle, e.value, e.aux) for e in run.events],
        )
        con.executemany(
            "INSERT INTO steps (idx, kind, current_a, voltage_v, label) VALUES (?, ?, ?, ?, ?)",
            [(s.idx, s.kind, s.current_a, s.voltage_v, s.label) for s in run.steps.values()],
        )
        con.commit()
    finally:
        con.close()
    return p


def export_bdf_csv(run: RunData, path: str | Path) -> Path:
    """The run as a BDF CSV (standard column names; voltage = working-electrode potential
    vs Li so that other tools' dQ/dV is against the same axis)."""
    p = Path(path)
    header = [
        "Test Time / s",
        "Voltage / V",
        "Current / A",
        "Cycle Count / 1",
        "Step Count / 1",
        "Cell Voltage / V",
    ]
    data = np.column_stack(
        [run.t_s, run.we_v, run.current_a, run.cycle + 1, run.step, run.voltage_v]
    )
    np.savetxt(p, data, delimiter=",", header=",".join(header), comments="", fmt="%.17g")
    return p


def schedule_toml(
    *, resistance_ohm_cm2: float | None = None, resistance_ohm: float | None = None
) -> str:
    """A small valid schedule to store as a synthetic run's ``schedule_toml`` metadata: the
    cell's area and, when given, its series resistance (used by an IR-corrected cutoff)."""
    cell = [f"area_cm2 = {AREA_CM2}"]
    if resistance_ohm_cm2 is not None:
        cell.append(f"resistance_ohm_cm2 = {resistance_ohm_cm2}")
    if resistance_ohm is not None:
        cell.append(f"resistance_ohm = {resistance_ohm}")
    ir = "ir_corrected = true\n" if len(cell) > 1 else ""
    return (
        'name = "synthetic"\nvs = "Li"\n\n[cell]\n'
        + "\n".join(cell)
        + '\n\n[[step]]\nkind = "cc"\ndirection = "delithiation"\ncurrent_ua = 56.7\n'
        + f"until_v = 1.2\n{ir}"
    )


def drop_steps(run: RunData, steps: Sequence[int]) -> RunData:
    """``run`` without the samples of the given step indices (e.g. its rests: a run whose
    half-cycles follow each other without a current interrupt)."""
    keep = ~np.isin(run.step, np.asarray(list(steps), dtype=np.int64))
    return RunData.from_arrays(
        run.t_s[keep],
        run.voltage_v[keep],
        run.current_a[keep],
        we_v=run.we_v[keep],
        charge_ah=run.charge_ah[keep],
        step=run.step[keep],
        cycle=run.cycle[keep],
        flags=run.flags[keep],
        steps=run.steps,
        meta=run.meta,
    )
