"""dQ/dV (differential capacity) curves of half-cycles."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..rundata import F_CV, FloatArray, RunData
from .common import DELITH, LITH, Kind, Normalize, Potential
from .halfcycles import HalfCycle, half_cycles, select_half_cycles
from .smoothing import level_filter, moving_average, savgol_smooth


@dataclass(frozen=True)
class DqdvCurve:
    """dQ/dV of one half-cycle against the potential (``we``: working electrode vs Li+/Li).

    Lithiation curves are negative (Q grows while the potential falls), delithiation curves
    positive. ``unit`` names the y unit (mAh/V, or per g or cm² when normalised)."""

    cycle: int
    kind: Kind
    potential_v: FloatArray
    dqdv: FloatArray
    unit: str
    min_dv_v: float
    smoothing: str


def _norm_factor(run: RunData, normalize: Normalize) -> tuple[float, str]:
    if normalize in ("auto", "mass") and run.mass_g is not None:
        return 1e3 / run.mass_g, "mAh g⁻¹ V⁻¹"
    if normalize == "mass":
        raise ValueError("mass unknown: cannot normalise per gram")
    if normalize in ("auto", "area") and run.area_cm2 is not None:
        return 1e3 / run.area_cm2, "mAh cm⁻² V⁻¹"
    if normalize == "area":
        raise ValueError("area unknown: cannot normalise per cm²")
    return 1e3, "mAh V⁻¹"


def dqdv(
    run: RunData,
    cycle: int,
    kind: Kind,
    *,
    min_dv_v: float = 0.005,
    smooth: Literal["none", "savgol", "moving"] = "none",
    window: int = 7,
    polyorder: int = 2,
    normalize: Normalize = "auto",
    potential: Potential = "we",
    exclude_cv: bool = True,
    hcs: Sequence[HalfCycle] | None = None,
) -> DqdvCurve:
    """dQ/dV of one half-cycle.

    Points are level-filtered (kept ≥ ``min_dv_v`` apart in potential), the derivative is the
    finite difference between consecutive kept points placed at their mid-potential, then
    optionally smoothed (Savitzky–Golay or moving average over ``window`` points). Samples in
    the CV phase (flag) carry capacity at constant potential and are dropped by default.
    """
    if hcs is None:
        hcs = half_cycles(run)
    sel = select_half_cycles(hcs, cycle, kind)
    factor, unit = _norm_factor(run, normalize)
    col = run.we_v if potential == "we" else run.voltage_v
    if not sel:
        empty = np.zeros(0, dtype=np.float64)
        return DqdvCurve(cycle, kind, empty, empty.copy(), unit, min_dv_v, smooth)
    # Join the half-cycle's pieces (normally one) with continuous capacity.
    vs: list[FloatArray] = []
    qs: list[FloatArray] = []
    offset = 0.0
    for h in sel:
        keep = np.ones(h.idx.size, dtype=np.bool_)
        if exclude_cv:
            keep &= (run.flags[h.idx] & F_CV) == 0
        vs.append(col[h.idx][keep])
        qs.append(h.q_ah[keep] + offset)
        offset += h.capacity_ah
    v = np.concatenate(vs)
    q = np.concatenate(qs)
    k = level_filter(v, min_dv_v)
    vk, qk = v[k], q[k]
    if vk.size < 2:
        empty = np.zeros(0, dtype=np.float64)
        return DqdvCurve(cycle, kind, empty, empty.copy(), unit, min_dv_v, smooth)
    x = 0.5 * (vk[1:] + vk[:-1])
    y = np.diff(qk) / np.diff(vk) * factor
    if smooth == "savgol":
        y = savgol_smooth(y, window, polyorder)
    elif smooth == "moving":
        y = moving_average(y, window)
    label = smooth if smooth == "none" else f"{smooth}({window})"
    return DqdvCurve(cycle, kind, x, y, unit, min_dv_v, label)


def dqdv_curves(
    run: RunData,
    cycles: Iterable[int],
    kinds: Sequence[Kind] = (LITH, DELITH),
    **kwargs: Any,
) -> list[DqdvCurve]:
    """``dqdv`` for each present (cycle, kind)."""
    hcs = kwargs.pop("hcs", None) or half_cycles(run)
    present = {(h.cycle, h.kind) for h in hcs}
    return [dqdv(run, c, k, hcs=hcs, **kwargs) for c in cycles for k in kinds if (c, k) in present]


def default_dqdv_cycles(
    available: Iterable[int], wanted: Sequence[int] = (20, 40, 60, 80, 100)
) -> list[int]:
    """Cycles 20/40/60/80/100 that are present; for a shorter run, up to five cycles spread
    evenly over what is there (first and last included)."""
    have = sorted(set(available))
    chosen = [c for c in wanted if c in have]
    if chosen or not have:
        return chosen
    if len(have) <= 5:
        return have
    pick = np.unique(np.round(np.linspace(0, len(have) - 1, 5)).astype(np.int64))
    return [have[int(i)] for i in pick]
