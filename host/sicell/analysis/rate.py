"""Rate capability: delithiation capacity against current, and IR-compensated curves."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..rundata import FloatArray, RunData
from .common import DELITH, Potential, per_unit
from .halfcycles import HalfCycle, half_cycles, select_half_cycles
from .resistance import ir_compensate, measured_resistance


@dataclass(frozen=True)
class RatePoint:
    """One delithiation of a rate test (the discharge of the Si anode)."""

    cycle: int
    current_a: float
    current_density_ma_cm2: float | None
    delith_mah: float
    delith_mah_g: float | None
    delith_mah_cm2: float | None


@dataclass(frozen=True)
class RateGroup:
    """Delithiations at one current (within the grouping tolerance), averaged."""

    current_a: float
    current_density_ma_cm2: float | None
    cycles: tuple[int, ...]
    delith_mah: float
    delith_mah_g: float | None
    delith_mah_cm2: float | None


def rate_points(run: RunData, *, hcs: Sequence[HalfCycle] | None = None) -> list[RatePoint]:
    """Delithiation capacity against its current (median |I| of the half-cycle) per cycle."""
    if hcs is None:
        hcs = half_cycles(run)
    area, m_g = run.area_cm2, run.mass_g
    out = []
    for h in hcs:
        if h.kind != DELITH or h.cycle < 1:
            continue
        cap = 1e3 * h.capacity_ah
        i = h.median_abs_current_a
        out.append(
            RatePoint(
                cycle=h.cycle,
                current_a=i,
                current_density_ma_cm2=None if area is None else 1e3 * i / area,
                delith_mah=cap,
                delith_mah_g=per_unit(cap, m_g),
                delith_mah_cm2=per_unit(cap, area),
            )
        )
    return out


def _group_currents(currents: Sequence[float], rel_tol: float) -> list[list[int]]:
    order = sorted(range(len(currents)), key=lambda k: currents[k])
    groups: list[list[int]] = []
    for k in order:
        if groups and currents[k] <= currents[groups[-1][0]] * (1.0 + rel_tol):
            groups[-1].append(k)
        else:
            groups.append([k])
    return groups


def rate_capability(
    run: RunData, *, rel_tol: float = 0.1, hcs: Sequence[HalfCycle] | None = None
) -> list[RateGroup]:
    """Rate-capability summary: delithiation capacity per current density (groups of
    delithiations whose currents agree within ``rel_tol``), sorted by current."""
    pts = rate_points(run, hcs=hcs)
    area = run.area_cm2
    out = []
    for g in _group_currents([p.current_a for p in pts], rel_tol):
        ps = [pts[k] for k in sorted(g, key=lambda k: pts[k].cycle)]
        i = float(np.mean([p.current_a for p in ps]))
        out.append(
            RateGroup(
                current_a=i,
                current_density_ma_cm2=None if area is None else 1e3 * i / area,
                cycles=tuple(p.cycle for p in ps),
                delith_mah=float(np.mean([p.delith_mah for p in ps])),
                delith_mah_g=_mean_opt([p.delith_mah_g for p in ps]),
                delith_mah_cm2=_mean_opt([p.delith_mah_cm2 for p in ps]),
            )
        )
    return out


def _mean_opt(vals: list[float | None]) -> float | None:
    xs = [v for v in vals if v is not None]
    return float(np.mean(xs)) if xs else None


def is_rate_test(run: RunData, *, hcs: Sequence[HalfCycle] | None = None) -> bool:
    """True when the delithiation currents span at least a factor of 2 (several rates)."""
    groups = rate_capability(run, hcs=hcs)
    return len(groups) >= 2 and groups[-1].current_a >= 2.0 * groups[0].current_a


@dataclass(frozen=True)
class RateCurve:
    """A delithiation curve of a rate test: capacity and IR-compensated potential."""

    cycle: int
    current_a: float
    current_density_ma_cm2: float | None
    capacity_mah: FloatArray
    potential_v: FloatArray
    potential_raw_v: FloatArray
    r_ohm: float


def rate_curves(
    run: RunData,
    *,
    r_ohm: float | None = None,
    r_area_ohm_cm2: float | None = None,
    potential: Potential = "we",
    rel_tol: float = 0.1,
    hcs: Sequence[HalfCycle] | None = None,
) -> list[RateCurve]:
    """One IR-compensated delithiation curve per current (the first cycle at that current).

    The resistance is ``r_ohm``, else ``r_area_ohm_cm2`` / area (the paper subtracts the
    electrolyte layer's ~150 Ω·cm²), else the run's median current-interrupt resistance, else 0.
    """
    if hcs is None:
        hcs = half_cycles(run)
    if r_ohm is None and r_area_ohm_cm2 is not None:
        area = run.area_cm2
        if area is None:
            raise ValueError("area unknown: give r_ohm instead of r_area_ohm_cm2")
        r_ohm = r_area_ohm_cm2 / area
    if r_ohm is None:
        r_ohm = measured_resistance(run, hcs=hcs) or 0.0
    col = run.we_v if potential == "we" else run.voltage_v
    groups = rate_capability(run, rel_tol=rel_tol, hcs=hcs)
    out = []
    for g in groups:
        c = g.cycles[0]
        sel = select_half_cycles(hcs, c, DELITH)
        if not sel:
            continue
        h = sel[0]
        raw = col[h.idx]
        out.append(
            RateCurve(
                cycle=c,
                current_a=g.current_a,
                current_density_ma_cm2=g.current_density_ma_cm2,
                capacity_mah=1e3 * h.q_ah,
                potential_v=ir_compensate(raw, run.current_a[h.idx], r_ohm),
                potential_raw_v=raw.copy(),
                r_ohm=r_ohm,
            )
        )
    return out
