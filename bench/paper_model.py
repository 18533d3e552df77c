"""bench/paper.py's reference column: the cell model alone (``emulator/mp/cells.py`` integrated
in CPython through ``sicell.emulator.cellmodels``; no firmware, no host) on each protocol, so
that a difference from the paper can be told apart as the model's or the system's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import paper_targets as T
from paper_analysis import Metrics, ce_start, lithiated_mah_cm3
from paper_runs import Job, err
from paper_schedules import rate_cutoffs, toml_cycles, toml_rest_s
from sicell.emulator.cellmodels import cells_module, film_params, runs_module

MODEL_DT_S = 10.0


def _cc(cell: Any, i_a: float, v_stop: float, dt: float, r_comp: float, t_max: float) -> float:
    """Constant current until the (IR-compensated) cell voltage crosses v_stop; Ah moved, with
    the crossing interpolated inside the last step (the board checks its cutoffs every 0.1 s
    near a limit; a whole dt of overshoot would blur the small cycle-to-cycle differences)."""
    t = 0.0
    v = cell.voltage(i_a) + i_a * r_comp
    while t < t_max:
        v_prev = v
        cell.advance(i_a, dt)
        t += dt
        v = cell.voltage(i_a) + i_a * r_comp
        if (i_a > 0 and v <= v_stop) or (i_a < 0 and v >= v_stop):
            if v != v_prev:
                t -= dt * min(1.0, max(0.0, (v - v_stop) / (v - v_prev)))
            break
    return abs(i_a) * t / 3600.0


def model_cycling(film: str, cycles: int, rest_s: float, seed: int = 0) -> Metrics:
    """The cycling metrics from cells.py alone (0.1 mA/cm², 0.01–1.2 V vs Li)."""
    p = film_params(film)
    cell = cells_module().make_cell(film, seed)
    off = p["e_ce"]
    i = T.CYCLING.current_density_ma_cm2 * 1e-3 * p["area_cm2"]
    lo, hi = T.CYCLING.v_low_vs_li - off, T.CYCLING.v_high_vs_li - off
    mass_g, area = p["mass_g"], p["area_cm2"]
    ql: list[float] = []
    qd: list[float] = []
    rg: list[float] = []
    for _ in range(cycles):
        ql.append(_cc(cell, i, lo, MODEL_DT_S, 0.0, 1e6))
        cell.advance(0.0, rest_s)
        qd.append(_cc(cell, -i, hi, MODEL_DT_S, 0.0, 1e6))
        cell.advance(0.0, rest_s)
        rg.append(cell.r_grow * area)
    ref = T.CYCLING.reference_cycle if cycles >= T.CYCLING.reference_cycle else 1
    n = cycles
    ret = [qd[k] / qd[ref - 1] for k in range(ref - 1, n)]
    m: Metrics = {
        "first_delith_mah_g": 1e3 * qd[0] / mass_g,
        "first_delith_mah_cm2": 1e3 * qd[0] / area,
        "first_ce_pct": 100.0 * qd[0] / ql[0],
        "last_delith_mah_g": 1e3 * qd[-1] / mass_g,
        "last_delith_mah_cm2": 1e3 * qd[-1] / area,
        "retention_pct": 100.0 * qd[-1] / qd[ref - 1],
        "last_delith_mah_cm3": 1e3 * qd[-1] / area / (p["thickness_um"] * 1e-4),
        "r_lith_growth_ohm_cm2": rg[-1] - rg[ref - 1],
    }
    m["last_delith_mah_cm3_lithiated"] = lithiated_mah_cm3(
        m["last_delith_mah_cm2"], m["last_delith_mah_g"], p
    )
    ce_from = ce_start(ref, list(range(1, n + 1)))
    ces = [qd[k] / ql[k] for k in range(ce_from - 1, n)]
    m["mean_ce_pct"] = 100.0 * sum(ces) / len(ces)
    if len(ret) >= 2:
        xs = list(range(ref, n + 1))
        ys = [100.0 * r for r in ret]
        xm, ym = sum(xs) / len(xs), sum(ys) / len(ys)
        sxx = sum((x - xm) ** 2 for x in xs)
        sxy = sum((x - xm) * (y - ym) for x, y in zip(xs, ys, strict=True))
        m["fade_pct_per_cycle"] = -sxy / sxx
    return m


def model_rate(
    film: str, cutoffs: Sequence[tuple[float, float, bool]], rest_s: float, seed: int = 0
) -> dict[float, tuple[float, float]]:
    """The rate test from cells.py alone: CC-CV lithiation at 0.1 mA/cm² to 0.01 V vs Li held
    to 1 µA/cm², delithiation at each rate to its (IR-corrected with 150 Ω·cm²) cutoff."""
    c, runs = cells_module(), runs_module()
    p = film_params(film)
    cell = c.make_cell(film, seed)
    off, area, mass_g = p["e_ce"], p["area_cm2"], p["mass_g"]
    i_ch = T.RATE.charge_ma_cm2 * 1e-3 * area
    v_hold = T.RATE.hold_v_vs_li - off
    r_comp = T.RATE.ir_ohm_cm2 / area
    out: dict[float, tuple[float, float]] = {}
    for j, until_v, ir in cutoffs:
        _cc(cell, i_ch, v_hold, MODEL_DT_S, 0.0, 1e6)
        runs.run_cv(cell, v_hold, T.RATE.hold_until_ua_cm2 * 1e-6 * area, MODEL_DT_S, 10 * i_ch)
        cell.advance(0.0, rest_s)
        dt = min(MODEL_DT_S, 3.0 / j)
        q = _cc(cell, -j * 1e-3 * area, until_v - off, dt, r_comp if ir else 0.0, 1e6)
        cell.advance(0.0, rest_s)
        out[j] = (1e3 * q / mass_g, 1e3 * q / area)
    return out


@dataclass
class RateModel:
    """The rate test from the cell model alone: with the schedule's cutoffs (what the board
    ran) and with the paper's 1.2 V vs Li at every rate (where the schedule had to differ)."""

    cutoff_v: dict[float, float]  # the schedule's IR-free cutoff vs Li per rate
    schedule: dict[float, tuple[float, float]]
    paper_cutoff: dict[float, tuple[float, float]]


def model_rate_both(film: str, toml_text: str, rest_s: float, seed: int = 0) -> RateModel:
    cut = rate_cutoffs(toml_text)
    paper_cut = [(j, T.CYCLING.v_high_vs_li, True) for j, _, _ in cut]
    return RateModel(
        cutoff_v={j: v for j, v, _ in cut},
        schedule=model_rate(film, cut, rest_s, seed),
        paper_cutoff=model_rate(film, paper_cut, rest_s, seed),
    )


def compute_models(
    jobs: Sequence[Job], seed: int, model_c: dict[str, Metrics], model_r: dict[str, RateModel]
) -> None:
    """The cell model alone on each job's protocol (its cycle count, rests and cutoffs)."""
    for j in jobs:
        try:
            rest_s = toml_rest_s(j.toml)
            if j.protocol == "cycling":
                model_c[j.film] = model_cycling(j.film, toml_cycles(j.toml), rest_s, seed)
            else:
                model_r[j.film] = model_rate_both(j.film, j.toml, rest_s, seed)
        except Exception as e:  # a model failure leaves its column empty; the runs still count
            err(f"[{j.tag}] model alone failed: {type(e).__name__}: {e}")
