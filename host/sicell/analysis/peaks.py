"""Peaks of dQ/dV curves, the per-cycle peak table and peak drift."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..rundata import FloatArray, RunData
from .common import DELITH, LITH, IndexArray, Kind
from .differential import DqdvCurve, dqdv_curves
from .halfcycles import half_cycles


def _parabolic_vertex(x: FloatArray, y: FloatArray, i: int) -> tuple[float, float]:
    """Refine the extremum at ``i`` by the parabola through its neighbours."""
    if i <= 0 or i >= x.size - 1:
        return float(x[i]), float(y[i])
    xs, ys = x[i - 1 : i + 2], y[i - 1 : i + 2]
    try:
        a, b, c = np.polyfit(xs - xs[1], ys, 2)
    except (np.linalg.LinAlgError, ValueError):
        return float(x[i]), float(y[i])
    if a == 0:
        return float(x[i]), float(y[i])
    dx = -b / (2 * a)
    if not (xs[0] - xs[1] <= dx <= xs[2] - xs[1]):
        return float(x[i]), float(y[i])
    return float(xs[1] + dx), float(a * dx * dx + b * dx + c)


def _fit_vertex(
    x: FloatArray,
    y: FloatArray,
    i: int,
    level: float,
    bounds: tuple[int, int] | None = None,
) -> tuple[float, float]:
    """Refine the extremum at ``i`` from the contiguous points around it (within ``bounds``,
    the valleys towards neighbouring peaks) whose magnitude is at least ``level`` × the
    extremum's: a Gaussian fitted by weighted least squares to ln|y| (a parabola, weights y²,
    Guo's method), which uses the whole peak top and so is robust to point-to-point noise.
    Falls back to the three-point parabola when fewer than five points qualify or the fit has
    no maximum inside the region."""
    s = y if y[i] > 0 else -y  # > 0 on the peak's side
    thr = level * s[i]
    b_lo, b_hi = bounds if bounds is not None else (0, s.size - 1)
    lo = i
    while lo > b_lo and s[lo - 1] >= thr:
        lo -= 1
    hi = i
    while hi < b_hi and s[hi + 1] >= thr:
        hi += 1
    if hi - lo + 1 >= 5:
        xs = x[lo : hi + 1] - x[i]
        ys = s[lo : hi + 1]
        a, b, c = np.polyfit(xs, np.log(ys), 2, w=ys)  # polyfit weights multiply residuals
        if a < 0:
            dx = -b / (2 * a)
            if min(xs[0], xs[-1]) <= dx <= max(xs[0], xs[-1]):
                height = float(np.exp(a * dx * dx + b * dx + c))
                return float(x[i] + dx), height if y[i] > 0 else -height
    return _parabolic_vertex(x, y, i)


def _prominences(s: FloatArray, idx: IndexArray) -> FloatArray:
    """Topographic prominence of the maxima ``idx`` of ``s`` (height above the higher of the
    two lowest points between the peak and the nearest higher point on each side)."""
    out = np.empty(idx.size, dtype=np.float64)
    for k, i in enumerate(idx.tolist()):
        h = s[i]
        higher_l = np.flatnonzero(s[:i] > h)
        lo = int(higher_l[-1]) if higher_l.size else 0
        higher_r = np.flatnonzero(s[i + 1 :] > h)
        hi = i + 1 + int(higher_r[0]) if higher_r.size else s.size - 1
        out[k] = h - max(float(np.min(s[lo : i + 1])), float(np.min(s[i : hi + 1])))
    return out


def find_peaks(
    curve: DqdvCurve, *, min_prominence: float = 0.1, fit_level: float = 0.5
) -> list[tuple[float, float]]:
    """The half-cycle's dQ/dV peaks as (potential V, height), largest |height| first.

    Peaks are the interior extrema with the half-cycle's sign (minima for lithiation, maxima
    for delithiation) whose prominence is at least ``min_prominence`` × the largest |dQ/dV|
    (noise ripples on a flank are not peaks). Each is refined by a Gaussian fitted to the
    points of its top above ``fit_level`` × its height (weighted least squares on ln|y|), which
    uses the whole top and so resists point-to-point noise; ``fit_level`` 0 refines by the
    three-point parabola only."""
    x, y = curve.potential_v, curve.dqdv
    if y.size < 3:
        return []
    s = y if curve.kind == DELITH else -y
    top = float(np.max(s))
    if top <= 0:
        return []
    cand = np.flatnonzero((s[1:-1] >= s[:-2]) & (s[1:-1] >= s[2:]) & (s[1:-1] > 0)) + 1
    if cand.size == 0:
        return []
    cand = cand[_prominences(s, cand) >= min_prominence * top]
    # Each peak's region ends at the valley towards its neighbouring peaks.
    pos = cand.tolist()
    out: list[tuple[float, float, float]] = []
    for k, i in enumerate(pos):
        lo = pos[k - 1] + int(np.argmin(s[pos[k - 1] : i + 1])) if k > 0 else 0
        hi = i + int(np.argmin(s[i : pos[k + 1] + 1])) if k + 1 < len(pos) else s.size - 1
        if 0 < fit_level < 1:
            v, h = _fit_vertex(x, y, i, fit_level, (lo, hi))
        else:
            v, h = _parabolic_vertex(x, y, i)
        out.append((float(s[i]), v, h))
    out.sort(key=lambda t: -t[0])
    return [(v, h) for _, v, h in out]


def main_peak(curve: DqdvCurve, *, fit_level: float = 0.5) -> tuple[float, float] | None:
    """(potential V, height) of the largest dQ/dV peak of the half-cycle (``find_peaks``);
    None when the curve has no interior peak."""
    pk = find_peaks(curve, fit_level=fit_level)
    return pk[0] if pk else None


@dataclass(frozen=True)
class PeakRow:
    """Main dQ/dV peaks of one cycle: potentials in V (of the curves' potential, vs Li+/Li for
    the working electrode), heights in ``unit`` (the curves' dQ/dV unit, e.g. mAh g⁻¹ V⁻¹)."""

    cycle: int
    lith_v: float | None
    lith_height: float | None
    delith_v: float | None
    delith_height: float | None
    unit: str = ""

    @property
    def separation_mv(self) -> float | None:
        if self.lith_v is None or self.delith_v is None:
            return None
        return 1e3 * (self.delith_v - self.lith_v)


@dataclass(frozen=True)
class PeakDrift:
    """Drift of the (tracked) peaks in mV, positive = moved up in potential; ``separation_mv``
    is the growth of the delith − lith gap. Each is taken between the first and the last
    selected cycle in which that peak was found (``*_span``; normally ``first_cycle`` and
    ``last_cycle``, shorter when a peak moved past the cut-off)."""

    first_cycle: int
    last_cycle: int
    lith_mv: float | None
    delith_mv: float | None
    separation_mv: float | None
    lith_span: tuple[int, int] | None = None
    delith_span: tuple[int, int] | None = None
    separation_span: tuple[int, int] | None = None


def peak_table(
    run: RunData,
    cycles: Iterable[int],
    *,
    track: bool = True,
    max_jump_v: float = 0.06,
    **kwargs: Any,
) -> list[PeakRow]:
    """Lithiation and delithiation dQ/dV peaks for each present cycle (``dqdv`` keyword
    arguments pass through; default light Savitzky–Golay smoothing): ``peak_rows`` of
    ``dqdv_curves``."""
    kwargs.setdefault("smooth", "savgol")
    hcs = kwargs.pop("hcs", None) or half_cycles(run)
    present = {h.cycle for h in hcs}
    wanted = list(dict.fromkeys(c for c in cycles if c in present))
    curves = dqdv_curves(run, wanted, hcs=hcs, **kwargs)
    return peak_rows(curves, track=track, max_jump_v=max_jump_v)


def peak_rows(
    curves: Iterable[DqdvCurve], *, track: bool = True, max_jump_v: float = 0.06
) -> list[PeakRow]:
    """The peak table of dQ/dV curves: one row per cycle, in the order the cycles first
    appear. Plots mark exactly these points, so the table and the figure show one thing.

    The first cycle's peaks are its largest ones. With ``track`` (default), each later cycle
    reports the peak nearest to the previous cycle's, so the drift follows one peak even when
    two of similar height swap rank as the film ages (a-Si has two of each); when none lies
    within ``max_jump_v`` of it (the peak moved past the cut-off) that peak is None for the
    cycle. Without ``track`` every cycle reports its largest peak. A peak's (V, height) is the
    fitted top (``find_peaks``), which may sit a little off the plotted points."""
    by_cycle: dict[int, dict[Kind, DqdvCurve]] = {}
    for curve in curves:
        by_cycle.setdefault(curve.cycle, {})[curve.kind] = curve
    rows: list[PeakRow] = []
    prev: dict[Kind, float | None] = {LITH: None, DELITH: None}
    for c, kinds in by_cycle.items():
        found: dict[Kind, tuple[float, float] | None] = {}
        for kind in (LITH, DELITH):
            cv = kinds.get(kind)
            pks = find_peaks(cv) if cv is not None else []
            p0 = prev[kind]
            if not pks:
                found[kind] = None
            elif track and p0 is not None:
                near = min(pks, key=lambda p: abs(p[0] - p0))
                found[kind] = near if abs(near[0] - p0) <= max_jump_v else None
            else:
                found[kind] = pks[0]
            pk = found[kind]
            if pk is not None:
                prev[kind] = pk[0]
        lp, dp = found[LITH], found[DELITH]
        rows.append(
            PeakRow(
                cycle=c,
                lith_v=None if lp is None else lp[0],
                lith_height=None if lp is None else lp[1],
                delith_v=None if dp is None else dp[0],
                delith_height=None if dp is None else dp[1],
                unit=next(iter(kinds.values())).unit,
            )
        )
    return rows


def peak_drift(rows: Sequence[PeakRow]) -> PeakDrift | None:
    """Peak drift over a ``peak_table``: last minus first cycle where each peak is known."""
    if len(rows) < 2:
        return None

    def span(vals: list[tuple[int, float | None]]) -> tuple[float | None, tuple[int, int] | None]:
        known = [(c, v) for c, v in vals if v is not None]
        if len(known) < 2:
            return None, None
        (c0, v0), (c1, v1) = known[0], known[-1]
        return v1 - v0, (c0, c1)

    lith, lith_span = span([(r.cycle, r.lith_v) for r in rows])
    delith, delith_span = span([(r.cycle, r.delith_v) for r in rows])
    sep, sep_span = span([(r.cycle, r.separation_mv) for r in rows])
    return PeakDrift(
        first_cycle=rows[0].cycle,
        last_cycle=rows[-1].cycle,
        lith_mv=None if lith is None else 1e3 * lith,
        delith_mv=None if delith is None else 1e3 * delith,
        separation_mv=sep,
        lith_span=lith_span,
        delith_span=delith_span,
        separation_span=sep_span,
    )
