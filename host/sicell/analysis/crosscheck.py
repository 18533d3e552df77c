"""The samples' integral of current: the cross-check of the board's coulomb count.

Capacities come from the board (``sicell.cyclemodel``); this module integrates the recorded
current the way the board counts it, so the two can be compared. Between two samples of one
step run:

* both with the relay closed: the trapezoid of the two currents;
* the relay opened at the later one (pause, hold, stop, trip): the earlier current, held until
  the relay opened; the relay closed again after the earlier one (resume): the later current,
  which the source drove from the moment the relay closed;
* both with the relay open: nothing flows, nothing is integrated (a *relay-open* stretch).

The interval from the last sample of one step to the first of the next (one control tick) is
integrated with the later current, as the board does. Nothing is integrated across a stretch
where records are missing (decimated by the board, lost by the host), across a pause, hold,
board reset, trip or stop that left no relay-open sample (databases of older firmware), or
across a gap longer than the step's recording interval allows; each such stretch is reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..protocol import messages as M
from ..rundata import F_GAP, F_OPEN, F_STEP_FIRST, F_STEP_LAST, FloatArray, IntArray, RunData
from .common import Kind

# The board counts whole nAh per step; a half-cycle's count and integral agreeing within 0.1 %
# (or 2 nAh) is a pass.
REL_TOL = 1e-3
ABS_TOL_AH = 2e-9

# Events that stop the integration when no relay-open sample marks them, with the reason given.
BREAKS: dict[int, str] = {
    M.EV_PAUSED: "paused",
    M.EV_RESUMED: "paused",
    M.EV_HOST_LOSS: "held (host away)",
    M.EV_INTERRUPTED: "board reset",
    M.EV_SAFETY: "safety trip",
    M.EV_STOPPED: "stopped",
    M.EV_ERROR: "firmware fault",
}
RELAY_OPEN = "relay open"
MISSING = "records missing"
GAP = "gap longer than the recording interval"


def allowed_gap_s(dt_s: float | None) -> float:
    """Longest interval between two samples of a step recording every ``dt_s`` (the board
    records at the tick that reaches it; a late tick is allowed for)."""
    if dt_s is None or dt_s <= 0:
        return math.inf
    return dt_s + max(2.0, 0.05 * dt_s)


@dataclass(frozen=True)
class SkippedStretch:
    """Where the samples' integral was not taken, inside a half-cycle."""

    t_start_s: float
    t_end_s: float
    step: int
    cycle: int
    kind: Kind
    reason: str

    @property
    def duration_s(self) -> float:
        return self.t_end_s - self.t_start_s

    def text(self) -> str:
        return (
            f"cycle {self.cycle} {_KIND_WORD[self.kind]}, step {self.step}: {self.reason} "
            f"for {self.duration_s:.1f} s (t = {self.t_start_s:.1f}–{self.t_end_s:.1f} s)"
        )


@dataclass(frozen=True)
class Discrepancy:
    """A half-cycle whose board count and samples' integral differ beyond the tolerance."""

    cycle: int
    kind: Kind
    board_ah: float
    integral_ah: float

    @property
    def rel(self) -> float:
        """(integral − board) / board (inf when the board counted nothing)."""
        if self.board_ah == 0:
            return math.inf
        return (self.integral_ah - self.board_ah) / abs(self.board_ah)

    def text(self) -> str:
        rel = "" if math.isinf(self.rel) else f" ({100.0 * self.rel:+.3f} %)"
        return (
            f"cycle {self.cycle} {_KIND_WORD[self.kind]}: the board counted "
            f"{1e3 * self.board_ah:.6g} mAh, the samples' integral gives "
            f"{1e3 * self.integral_ah:.6g} mAh{rel}"
        )


_KIND_WORD = {"lith": "lithiation", "delith": "delithiation"}


def discrepancy(cycle: int, kind: Kind, board_ah: float, integral_ah: float) -> Discrepancy | None:
    """A :class:`Discrepancy` when the two differ by more than 0.1 % (and 2 nAh), else None."""
    if abs(integral_ah - board_ah) <= max(REL_TOL * abs(board_ah), ABS_TOL_AH):
        return None
    return Discrepancy(cycle, kind, board_ah, integral_ah)


def _between(seqs: IntArray, lo: IntArray, hi: IntArray) -> IntArray:
    """How many of the sorted ``seqs`` lie strictly between ``lo`` and ``hi`` (element-wise)."""
    return np.asarray(
        np.searchsorted(seqs, hi, side="left") - np.searchsorted(seqs, lo, side="right"),
        dtype=np.int64,
    )


def interval_charges(run: RunData, run_id: IntArray) -> tuple[FloatArray, list[tuple[int, str]]]:
    """The charge (Ah, signed) the samples' integral puts on the interval that ends at each
    sample (0 for a step run's first sample unless the step-start interval counts), and the
    intervals not integrated across as (index of the sample ending it, reason).

    ``run_id`` gives each sample's step run (``sicell.cyclemodel``)."""
    n = len(run)
    out = np.zeros(n, dtype=np.float64)
    if n < 2:
        return out, []
    t, i, fl, seq = run.t_s, run.current_a, run.flags, run.seq
    dt = np.diff(t)
    is_open = (fl & F_OPEN) != 0
    oa, ob = is_open[:-1], is_open[1:]
    same = run_id[1:] == run_id[:-1]
    ev_seq = np.array([e.seq for e in run.events], dtype=np.int64)
    brk = [e for e in run.events if e.code in BREAKS]
    brk_seq = np.array([e.seq for e in brk], dtype=np.int64)
    lo, hi = seq[:-1], seq[1:]
    missing = ((hi - lo - 1) > _between(ev_seq, lo, hi)) | ((fl[1:] & F_GAP) != 0)
    n_brk = _between(brk_seq, lo, hi)
    dt_of = {k: allowed_gap_s(v) for k, v in run.record_dt_s.items()}
    allowed = np.array([dt_of.get(int(s), math.inf) for s in run.step[1:]], dtype=np.float64)
    too_long = dt > allowed

    closed = ~oa & ~ob
    val = np.where(closed, 0.5 * (i[:-1] + i[1:]), np.where(oa, i[1:], i[:-1])) * dt
    val = np.where(oa & ob, 0.0, val)
    ok = same & ~missing & ~too_long & ~(closed & (n_brk > 0))
    # the step-start interval (one control tick), integrated with the new step's current
    start = (
        ~same
        & ((fl[:-1] & F_STEP_LAST) != 0)
        & ((fl[1:] & F_STEP_FIRST) != 0)
        & ~missing
        & ~too_long
        & (n_brk == 0)
    )
    if run.board_charge:
        out[1:] = np.where(ok, val, 0.0) + np.where(start, i[1:] * dt, 0.0)
    else:
        out[1:] = np.where(ok, val, 0.0)  # data from elsewhere: samples only
    out /= 3600.0

    skipped: list[tuple[int, str]] = []
    bad = np.flatnonzero(same & (~ok | (oa & ob)))
    first_brk = np.searchsorted(brk_seq, lo, side="right")
    for k in bad.tolist():
        if oa[k] and ob[k]:
            reason = RELAY_OPEN
        elif missing[k]:
            reason = MISSING
        elif closed[k] and n_brk[k] > 0:
            reason = BREAKS[brk[int(first_brk[k])].code]
        else:
            reason = GAP
        skipped.append((k + 1, reason))
    # a reset or fault between two step runs: the charge after the last sample is unknown
    lost = [e for e in brk if e.code in (M.EV_INTERRUPTED, M.EV_ERROR)]
    lost_seq = np.array([e.seq for e in lost], dtype=np.int64)
    first_lost = np.searchsorted(lost_seq, lo, side="right")
    for k in np.flatnonzero(~same & (_between(lost_seq, lo, hi) > 0)).tolist():
        skipped.append((k + 1, BREAKS[lost[int(first_lost[k])].code]))
    skipped.sort()
    return out, skipped
