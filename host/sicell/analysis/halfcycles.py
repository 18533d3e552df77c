"""Half-cycles of a run, as ``sicell.cyclemodel`` defines them, with their samples.

The rule (which steps form a half-cycle, its cycle number, its capacity from the board's
coulomb count) is the cycle model's; this module attaches what the analysis needs: the sample
indices, the capacity at each sample, energies, and the samples' integral as a cross-check
(``crosscheck``). The other analysis modules work on the ``HalfCycle`` objects made here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ..cyclemodel import CycleModel, HalfCycleSpan
from ..protocol import messages as M
from ..rundata import F_OPEN, FloatArray, RunData
from .common import IndexArray, Kind
from .crosscheck import Discrepancy, SkippedStretch, discrepancy, interval_charges

# events that cut the step run they happen in short (the half-cycle is then incomplete)
_CUT_SHORT = frozenset({M.EV_SAFETY, M.EV_STOPPED, M.EV_ERROR})


@dataclass(frozen=True, eq=False)
class HalfCycle:
    """A lithiation or delithiation half-cycle.

    ``idx`` are the indices (into the run's arrays) of its samples with the relay closed, in
    order; ``q_ah`` is the capacity accumulated since the half-cycle start at each of them
    (the board's count: its first point holds the charge of the step's first tick).
    ``board_ah`` is the half-cycle's capacity (the board's count over its steps);
    ``integral_ah`` the samples' integral of current over the same steps (the cross-check),
    ``skipped`` where that integral was not taken. ``cell_wh`` is the energy (cell voltage,
    :func:`energy_curve`) accumulated since the half-cycle start at each point of ``idx``:
    the export's per-sample energies and ``energy_cell_wh`` are the same numbers.
    """

    number: int
    cycle: int
    kind: Kind
    idx: IndexArray
    q_ah: FloatArray
    energy_we_wh: float
    energy_cell_wh: float
    cell_wh: FloatArray
    board_ah: float
    t_start_s: float
    t_end_s: float
    median_abs_current_a: float
    steps: tuple[int, ...]
    complete: bool = True
    integral_ah: float = math.nan
    skipped: tuple[SkippedStretch, ...] = ()

    @property
    def capacity_ah(self) -> float:
        return self.board_ah

    @property
    def sign(self) -> int:
        return 1 if self.kind == "lith" else -1

    @property
    def mean_we_v(self) -> float:
        c = self.capacity_ah
        return self.energy_we_wh / c if c > 0 else math.nan

    @property
    def mean_cell_v(self) -> float:
        c = self.capacity_ah
        return self.energy_cell_wh / c if c > 0 else math.nan

    @property
    def discrepancy(self) -> Discrepancy | None:
        """Board count and samples' integral apart by more than 0.1 % (None: they agree)."""
        if math.isnan(self.integral_ah):
            return None
        return discrepancy(self.cycle, self.kind, self.board_ah, self.integral_ah)


def run_model(run: RunData) -> tuple[CycleModel, FloatArray]:
    """The cycle model fed with the run's samples, and the step charge of each sample it was
    fed: ``charge_ah`` (the board's count), or, for a run without one (data from elsewhere),
    the samples' integral since the start of each step run."""
    cols = (run.step.tolist(), run.cycle.tolist(), run.flags.tolist())
    m = CycleModel(run.step_table()).feed(*cols, run.charge_ah.tolist())
    if run.board_charge or len(run) == 0:
        return m, run.charge_ah
    dq, _ = interval_charges(run, np.asarray(m.run_of_sample(), dtype=np.int64))
    charge = np.empty(len(run), dtype=np.float64)
    for r in m.runs:
        np.cumsum(dq[r.first : r.last + 1], out=charge[r.first : r.last + 1])
    return CycleModel(run.step_table()).feed(*cols, charge.tolist()), charge


def half_cycles(run: RunData) -> list[HalfCycle]:
    """Split a run into half-cycles (``sicell.cyclemodel``'s rule).

    A half-cycle is ``complete`` when its last step ran to its end (its last sample carries
    the step-last flag) and was not cut short by a safety trip, a fault or a stop.
    """
    if len(run) == 0:
        return []
    model, charge = run_model(run)
    run_id = np.asarray(model.run_of_sample(), dtype=np.int64)
    dq, skips = interval_charges(run, run_id)
    run_integral = np.bincount(run_id, weights=dq, minlength=len(model.runs)).astype(np.float64)
    cut = _cut_short(run, run_id)
    is_open = (run.flags & F_OPEN) != 0
    skipped_by_hc: dict[int, list[SkippedStretch]] = {}
    for k, reason in skips:
        r = model.runs[int(run_id[k])]
        if r.half_cycle < 0:
            r = model.runs[int(run_id[k - 1])]
        if r.half_cycle < 0:
            continue
        h = model.half_cycles[r.half_cycle]
        stretch = SkippedStretch(
            float(run.t_s[k - 1]), float(run.t_s[k]), r.step, h.cycle, h.kind, reason
        )
        skipped_by_hc.setdefault(h.number, []).append(stretch)
    return [
        _half_cycle(run, h, charge, is_open, run_integral, cut, skipped_by_hc.get(h.number, []))
        for h in model.half_cycles
    ]


def _cut_short(run: RunData, run_id: NDArray[np.int64]) -> set[int]:
    """Step runs during which a safety trip, a stop or a fault ended the run (a fault is
    followed by the step's end at once; one outside a run cuts nothing)."""
    out: set[int] = set()
    evs = run.events
    for j, e in enumerate(evs):
        if e.code not in _CUT_SHORT:
            continue
        if e.code == M.EV_ERROR and not (j + 1 < len(evs) and evs[j + 1].code == M.EV_STEP_END):
            continue
        k = int(np.searchsorted(run.seq, e.seq)) - 1
        if k >= 0:
            out.add(int(run_id[k]))
    return out


def _half_cycle(
    run: RunData,
    h: HalfCycleSpan,
    charge: FloatArray,
    is_open: NDArray[np.bool_],
    run_integral: FloatArray,
    cut: set[int],
    skipped: list[SkippedStretch],
) -> HalfCycle:
    d = h.direction
    parts: list[IndexArray] = []
    qs: list[FloatArray] = []
    es: list[FloatArray] = []
    e_we = e_cell = integral = 0.0
    for r in h.runs:
        j = np.arange(r.first, r.last + 1)
        j = j[~is_open[j]]
        q = d * charge[j]
        parts.append(j)
        qs.append(r.base_ah + q)
        integral += d * float(run_integral[r.index])
        if j.size:
            e_we += float(energy_curve(run.we_v[j], q)[-1])
            cell = e_cell + energy_curve(run.voltage_v[j], q)
            es.append(cell)
            e_cell = float(cell[-1])
    idx = np.concatenate(parts) if parts else np.zeros(0, dtype=np.intp)
    q_ah = np.concatenate(qs) if qs else np.zeros(0, dtype=np.float64)
    cell_wh = np.concatenate(es) if es else np.zeros(0, dtype=np.float64)
    span = idx if idx.size else np.arange(h.runs[0].first, h.runs[-1].last + 1)
    last = h.runs[-1]
    return HalfCycle(
        number=h.number,
        cycle=h.cycle,
        kind=h.kind,
        idx=idx.astype(np.intp),
        q_ah=q_ah,
        energy_we_wh=e_we,
        energy_cell_wh=e_cell,
        cell_wh=cell_wh,
        board_ah=h.capacity_ah,
        t_start_s=float(run.t_s[span[0]]),
        t_end_s=float(run.t_s[span[-1]]),
        median_abs_current_a=float(np.median(np.abs(run.current_a[idx]))) if idx.size else 0.0,
        steps=h.steps,
        complete=last.ended and last.index not in cut,
        integral_ah=integral,
        skipped=tuple(skipped),
    )


def energy_curve(v: FloatArray, q: FloatArray) -> FloatArray:
    """The one energy rule: ∫ V dQ over a step's points (Wh) with Q the board's count, at each
    point: from no charge to the first point at its potential, then the trapezoid between
    points (points with the relay open are not passed in, so nothing is integrated across
    them)."""
    inc = np.empty(len(v), dtype=np.float64)
    if len(v):
        inc[0] = v[0] * q[0]
        inc[1:] = 0.5 * (v[1:] + v[:-1]) * np.diff(q)
    return np.cumsum(inc)


def half_cycle_of_sample(run: RunData, hcs: Sequence[HalfCycle]) -> NDArray[np.int64]:
    """For each sample of the run, the number of the half-cycle holding it (-1: none; samples
    with the relay open belong to none)."""
    owner = np.full(len(run), -1, dtype=np.int64)
    for h in hcs:
        owner[h.idx] = h.number
    return owner


def select_half_cycles(hcs: Sequence[HalfCycle], cycle: int, kind: Kind) -> list[HalfCycle]:
    """The half-cycles of one kind in one cycle (normally one)."""
    return [h for h in hcs if h.cycle == cycle and h.kind == kind]
