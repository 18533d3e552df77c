"""bench/paper.py's analysis of a run database (``sicell.analysis``): the figures the paper
quotes, per cycling run and per rate test."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import paper_targets as T
from sicell import analysis as an
from sicell.emulator.cellmodels import film_params
from sicell.rundata import load_run

D_SI_DENSE = 2.3  # g/cm³ (DESIGN §6)
Q_LI15SI4 = 3579.0  # mAh/g, for the lithiated volume

Metrics = dict[str, Any]
RateResult = dict[float, tuple[float | None, float | None]]


def lithiated_mah_cm3(mah_cm2: float | None, mah_g: float | None, p: Mapping[str, Any]) -> Any:
    """Capacity over the lithiated film's volume (dense-Si volume × (1 + 3 q / 3579)), the
    basis under which the paper's porous figure (1900 mAh/cm³) and its 2.19 mAh/cm² agree."""
    if mah_cm2 is None or mah_g is None:
        return None
    v_lit = p["loading_mg_cm2"] * 1e-3 / D_SI_DENSE * (1.0 + 3.0 * mah_g / Q_LI15SI4)
    return mah_cm2 / max(v_lit, p["thickness_um"] * 1e-4)


def ce_start(ref: int, cycles: Sequence[int]) -> int:
    """First cycle of the mean CE: the reference cycle (10) when the run reached it, else the
    second cycle (the first one's irreversible loss left out), else the only one."""
    if ref > cycles[0] or len(cycles) < 2:
        return ref
    return cycles[1]


def analyse_cycling(db: Path, film: str) -> Metrics:
    run = load_run(db)
    hcs = an.half_cycles(run)
    tab = an.cycle_table(run, reference_cycle=T.CYCLING.reference_cycle, hcs=hcs)
    m: Metrics = {"cycles": len(tab.rows), "notes": list(tab.notes)}
    if not tab.rows:
        return m
    area = run.area_cm2 or 1.0
    first, last = tab.rows[0], tab.rows[-1]
    ref = tab.reference_cycle if tab.reference_cycle is not None else first.cycle
    m.update(
        first_cycle=first.cycle,
        last_cycle=last.cycle,
        reference_cycle=ref,
        first_delith_mah_g=first.delith_mah_g,
        first_delith_mah_cm2=first.delith_mah_cm2,
        first_ce_pct=100.0 * first.ce,
        last_delith_mah_g=last.delith_mah_g,
        last_delith_mah_cm2=last.delith_mah_cm2,
        retention_pct=None if last.retention is None else 100.0 * last.retention,
        fade_pct_per_cycle=tab.fade_pct_per_cycle,
        last_delith_mah_cm3=last.delith_mah_cm3,
        last_delith_mah_cm3_lithiated=lithiated_mah_cm3(
            last.delith_mah_cm2, last.delith_mah_g, film_params(film)
        ),
    )
    ce_from = ce_start(ref, [r.cycle for r in tab.rows])
    ces = [r.ce for r in tab.rows if r.cycle >= ce_from]
    m["mean_ce_pct"] = 100.0 * sum(ces) / len(ces) if ces else None
    m["mean_ce_span"] = (ce_from, last.cycle)
    # dQ/dV peaks, tracked cycle by cycle from the reference cycle to the last
    if last.cycle > ref:
        try:
            rows = an.peak_table(run, range(ref, last.cycle + 1), hcs=hcs)
            d = an.peak_drift(rows)
        except Exception as e:  # analysis trouble is a finding (a table note), not a crash
            m["notes"].append(f"dQ/dV peaks: {type(e).__name__}: {e}")
            d = None
        if d is not None:
            m.update(
                peak_lith_drift_mv=d.lith_mv,
                peak_delith_drift_mv=d.delith_mv,
                peak_separation_growth_mv=d.separation_mv,
                peak_span=(d.first_cycle, d.last_cycle),
            )
            pr = {r.cycle: r for r in rows}
            p0, p1 = pr.get(d.first_cycle), pr.get(d.last_cycle)
            if p0 is not None and p1 is not None:
                m["peaks"] = (p0.lith_v, p0.delith_v, p1.lith_v, p1.delith_v)
    # current interrupt at the rest -> current boundaries
    r_ref = tab.row(ref)
    for kind in ("lith", "delith"):
        r0 = getattr(r_ref, f"r_{kind}_ohm") if r_ref is not None else None
        r1 = getattr(last, f"r_{kind}_ohm")
        if r0 is not None and r1 is not None:
            m[f"r_{kind}_ohm_cm2"] = (r0 * area, r1 * area)
            m[f"r_{kind}_growth_ohm_cm2"] = (r1 - r0) * area
    return m


def analyse_rate(db: Path) -> RateResult:
    """Delithiation capacity (mAh/g, mAh/cm²) per current density (mA/cm²)."""
    run = load_run(db)
    out: RateResult = {}
    for g in an.rate_capability(run):
        j = g.current_density_ma_cm2
        if j is None:
            continue
        nominal = min(T.RATE.discharge_ma_cm2, key=lambda x: abs(math.log(j / x)))
        out[nominal] = (g.delith_mah_g, g.delith_mah_cm2)
    return out
