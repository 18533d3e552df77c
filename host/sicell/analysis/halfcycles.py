"""Half-cycle detection: split a run's samples into lithiation and delithiation half-cycles.

The other analysis modules work on the ``HalfCycle`` objects made here (and the two lookups
below), so the rule that splits a run lives in this module only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ..rundata import F_STEP_LAST, FloatArray, RunData
from .common import DEFAULT_REST_CURRENT_A, DELITH, LITH, IndexArray, Kind


@dataclass(frozen=True, eq=False)
class HalfCycle:
    """A lithiation or delithiation half-cycle.

    ``idx`` are the sample indices (into the run's arrays) in order; ``q_ah`` is the capacity
    accumulated since the half-cycle start at each of those samples (≥ 0, starts at 0).
    """

    number: int
    cycle: int
    kind: Kind
    idx: IndexArray
    q_ah: FloatArray
    energy_we_wh: float
    energy_cell_wh: float
    board_ah: float
    t_start_s: float
    t_end_s: float
    median_abs_current_a: float
    steps: tuple[int, ...]
    complete: bool = True

    @property
    def capacity_ah(self) -> float:
        return float(self.q_ah[-1]) if self.q_ah.size else 0.0

    @property
    def sign(self) -> int:
        return 1 if self.kind == LITH else -1

    @property
    def mean_we_v(self) -> float:
        c = self.capacity_ah
        return self.energy_we_wh / c if c > 0 else math.nan

    @property
    def mean_cell_v(self) -> float:
        c = self.capacity_ah
        return self.energy_cell_wh / c if c > 0 else math.nan


def half_cycles(run: RunData, *, rest_current_a: float = DEFAULT_REST_CURRENT_A) -> list[HalfCycle]:
    """Split a run into half-cycles.

    A half-cycle is a sequence of non-rest samples of one current sign; a new one starts when
    the sign changes or the database cycle column changes (rests in between do not split it,
    so GITT pulses of one sign accumulate). It is ``complete`` when a sample follows it in the
    log or its last sample carries the step-last flag (a run still logging ends in an
    incomplete one). Capacity is the trapezoid of current over time
    between consecutive samples that both belong to the half-cycle and are adjacent in the log.
    """
    n = len(run)
    if n == 0:
        return []
    rest = run.rest_mask(rest_current_a)
    sign = np.sign(run.current_a).astype(np.int64)
    sign[rest] = 0
    a = np.flatnonzero(sign != 0)
    if a.size == 0:
        return []
    sa = sign[a]
    ca = run.cycle[a]
    new = np.ones(a.size, dtype=np.bool_)
    new[1:] = (sa[1:] != sa[:-1]) | (ca[1:] != ca[:-1])
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], a.size)

    t = run.t_s[a]
    cur = run.current_a[a]
    dt = np.diff(t)
    valid = (~new[1:]) & (np.diff(a) == 1)
    dq = np.where(valid, 0.5 * (cur[1:] + cur[:-1]) * dt, 0.0) / 3600.0
    p_we = run.we_v[a] * cur
    p_cell = run.voltage_v[a] * cur
    de_we = np.where(valid, 0.5 * (p_we[1:] + p_we[:-1]) * dt, 0.0) / 3600.0
    de_cell = np.where(valid, 0.5 * (p_cell[1:] + p_cell[:-1]) * dt, 0.0) / 3600.0

    step_a = run.step[a]
    cyc_a = run.cycle[a]
    charge_a = run.charge_ah[a]

    out: list[HalfCycle] = []
    n_lith = 0
    for k, (s, e) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        sgn = int(sa[s])
        kind: Kind = LITH if sgn > 0 else DELITH
        if kind == LITH:
            n_lith += 1
        q = np.empty(e - s, dtype=np.float64)
        q[0] = 0.0
        np.cumsum(dq[s : e - 1], out=q[1:])
        q *= sgn
        # Board charge: the step's charge since step start at the last sample of each run of
        # samples of one (step, cycle) inside the half-cycle.
        st = step_a[s:e]
        cy = cyc_a[s:e]
        last = np.flatnonzero(np.append((st[1:] != st[:-1]) | (cy[1:] != cy[:-1]), True))
        board = float(np.sum(np.abs(charge_a[s:e][last])))
        out.append(
            HalfCycle(
                number=k,
                cycle=n_lith,
                kind=kind,
                idx=a[s:e],
                q_ah=q,
                energy_we_wh=sgn * float(np.sum(de_we[s : e - 1])),
                energy_cell_wh=sgn * float(np.sum(de_cell[s : e - 1])),
                board_ah=board,
                t_start_s=float(t[s]),
                t_end_s=float(t[e - 1]),
                median_abs_current_a=float(np.median(np.abs(cur[s:e]))),
                steps=tuple(dict.fromkeys(st.tolist())),
                complete=bool(a[e - 1] < n - 1 or (int(run.flags[a[e - 1]]) & F_STEP_LAST) != 0),
            )
        )
    return out


def half_cycle_of_sample(run: RunData, hcs: Sequence[HalfCycle]) -> NDArray[np.int64]:
    """For each sample of the run, the number of the half-cycle holding it (-1: none)."""
    owner = np.full(len(run), -1, dtype=np.int64)
    for h in hcs:
        owner[h.idx] = h.number
    return owner


def select_half_cycles(hcs: Sequence[HalfCycle], cycle: int, kind: Kind) -> list[HalfCycle]:
    """The half-cycles of one kind in one cycle (normally one)."""
    return [h for h in hcs if h.cycle == cycle and h.kind == kind]
