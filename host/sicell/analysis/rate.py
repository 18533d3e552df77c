"""Rate capability: delithiation capacity against current, and IR-free curves."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..rundata import FloatArray, RunData
from .common import DELITH, Potential, per_unit
from .halfcycles import HalfCycle, half_cycle_of_sample, half_cycles, select_half_cycles
from .resistance import IrChoice, check_ir_free, has_reference, ir_choices, ir_compensate


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
    """A delithiation curve of a rate test: capacity, IR-free and measured potential.

    ``ir`` is the resistance used and where it comes from (``resistance.ir_choices``);
    ``problems`` say why the IR-free curve is physically impossible (empty: it is not;
    ``resistance.ir_free_problems``) — such a curve over-compensates and is not a result."""

    cycle: int
    current_a: float
    current_density_ma_cm2: float | None
    capacity_mah: FloatArray
    potential_v: FloatArray
    potential_raw_v: FloatArray
    r_ohm: float
    ir: IrChoice
    problems: tuple[str, ...] = ()
    vs_li: bool = True

    @property
    def impossible(self) -> bool:
        return bool(self.problems)


def rate_curves(
    run: RunData,
    *,
    r_ohm: float | None = None,
    r_area_ohm_cm2: float | None = None,
    potential: Potential = "we",
    rel_tol: float = 0.1,
    hcs: Sequence[HalfCycle] | None = None,
) -> list[RateCurve]:
    """One IR-free delithiation curve per current (the first cycle at that current).

    Each curve's resistance follows ``resistance.ir_choices``: ``r_ohm`` (or ``r_area_ohm_cm2``
    / area; the paper subtracts the electrolyte layer's ~150 Ω·cm²) when given, else the
    current interrupt measured at that delithiation's own start, else the schedule's series
    resistance, else none. A curve that comes out physically impossible carries ``problems``.
    ``potential`` "we" is the working electrode's (vs Li+/Li when the run has a reference
    electrode), "cell" the cell voltage.
    """
    if hcs is None:
        hcs = half_cycles(run)
    if r_ohm is None and r_area_ohm_cm2 is not None:
        area = run.area_cm2
        if area is None:
            raise ValueError("area unknown: give r_ohm instead of r_area_ohm_cm2")
        r_ohm = r_area_ohm_cm2 / area
    choice = ir_choices(run, hcs, r_ohm=r_ohm)
    col = run.we_v if potential == "we" else run.voltage_v
    vs_li = potential == "we" and has_reference(run)
    owner = half_cycle_of_sample(run, hcs)
    groups = rate_capability(run, rel_tol=rel_tol, hcs=hcs)
    out = []
    for g in groups:
        c = g.cycles[0]
        sel = select_half_cycles(hcs, c, DELITH)
        if not sel:
            continue
        h = sel[0]
        ir = choice[h.number]
        raw = col[h.idx]
        free = ir_compensate(raw, run.current_a[h.idx], ir.r_ohm)
        problems = check_ir_free(run, h, free, col, vs_li=vs_li, owner=owner)
        out.append(
            RateCurve(
                cycle=c,
                current_a=g.current_a,
                current_density_ma_cm2=g.current_density_ma_cm2,
                capacity_mah=1e3 * h.q_ah,
                potential_v=free,
                potential_raw_v=raw.copy(),
                r_ohm=ir.r_ohm,
                ir=ir,
                problems=tuple(problems),
                vs_li=vs_li,
            )
        )
    return out
