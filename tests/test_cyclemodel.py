"""The cycle model (``sicell.cyclemodel``) and the samples' integral (``analysis.crosscheck``)
on generated runs: step executions of every kind with pauses, holds, board resets, a safety
trip, CV steps whose current crosses zero, records missing and gaps longer than the recording
interval. The generator plays the board: it counts each step's charge the way the firmware
does and records what a host would store.

Properties: a half-cycle's capacity is the sum of the board's step charges of its steps (signed
by its direction) in the analysis and in the live model fed one sample at a time; cycles count
from 1 and go up by one at each lithiation start; the samples' integral never runs across a
relay-open stretch, missing records, a reset or a gap longer than the step's recording
interval, and says where it did not.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sicell import analysis as an
from sicell.cyclemodel import CycleModel, step_direction
from sicell.protocol import messages as M
from sicell.rundata import RunData, StepDef
from sicell.store import EventRecord, event_name

DT_S = 10.0  # every step records at least every 10 s
# the steps a generated schedule has: (kind, set current A)
POOL = [
    ("rest", None),
    ("ocv", None),
    ("cc", 1e-4),
    ("cc", -1e-4),
    ("cccv", 2e-4),
    ("cccv", -2e-4),
    ("cv", None),
]
STEPS = {k: StepDef(k, kind, cur, None, kind) for k, (kind, cur) in enumerate(POOL)}


@dataclass
class Exec:
    """One step execution the generator wrote: its direction, the board's charge at its last
    sample, the integral the analysis should find, its last sample, the stretches expected."""

    step: int
    direction: int = 0
    charge: float = 0.0
    integral: float = 0.0
    last: int = -1
    set_current: bool = False
    board_cycle: int = 0
    reasons: set[str] = field(default_factory=set)


class Board:
    """Writes samples and events as the firmware would, counting charge its way."""

    def __init__(self) -> None:
        self.t = 0.0
        self.seq = 0
        self.cols: dict[str, list[float]] = {
            k: [] for k in ("t", "i", "q", "step", "cyc", "fl", "seq")
        }
        self.events: list[EventRecord] = []
        self.last_i = 0.0
        self.last_open = True
        self.last_flags = 0
        self.q = 0.0

    def sample(self, ex: Exec, i: float, flags: int, *, board_only: bool = False) -> None:
        """A sample at self.t; ``board_only``: the interval before it is counted by the board
        but not by the samples' integral (the previous samples are missing, or a reset)."""
        is_open = bool(flags & M.F_OPEN)
        n = len(self.cols["t"])
        dt = self.t - self.cols["t"][-1] if n else 0.0
        if flags & M.F_STEP_FIRST:
            self.q = 0.0
            # the first tick of a step: counted with the current at its end
            dq = i * dt / 3600.0 if n else 0.0
            first_of_run = True
        else:
            first_of_run = False
            if self.last_open and is_open:
                dq = 0.0
            elif is_open:
                dq = self.last_i * dt / 3600.0
            elif self.last_open:
                dq = i * dt / 3600.0
            else:
                dq = 0.5 * (i + self.last_i) * dt / 3600.0
        self.q += dq
        if not board_only and n and not (first_of_run and not self.last_flags & M.F_STEP_LAST):
            ex.integral += dq
        for k, v in (
            ("t", self.t),
            ("i", 0.0 if is_open else i),
            ("q", self.q),
            ("step", ex.step),
            ("cyc", ex.board_cycle),
            ("fl", flags),
            ("seq", self.seq),
        ):
            self.cols[k].append(v)
        self.seq += 1
        self.last_i = 0.0 if is_open else i
        self.last_open = is_open
        self.last_flags = flags
        ex.charge = self.q
        ex.last = n

    def event(self, code: int, ex: Exec, reason: int = 0, aux: int = 0) -> None:
        self.events.append(
            EventRecord(
                self.seq, self.t, code, event_name(code), ex.step, ex.board_cycle, 0, aux, reason
            )
        )
        self.seq += 1


@st.composite
def runs(draw: st.DrawFn) -> tuple[RunData, list[Exec]]:
    b = Board()
    execs: list[Exec] = []
    n = draw(st.integers(1, 10))
    board_cycle, prev_dir = 0, 0
    trip_at = draw(st.integers(0, n)) if draw(st.booleans()) else -1
    for k in range(n):
        step = draw(st.integers(0, len(POOL) - 1))
        kind, cur = POOL[step]
        d_set = step_direction(kind, cur)
        if kind == "cv":
            currents = draw(
                st.lists(st.sampled_from([-3e-5, -1e-5, 0.0, 1e-5, 2e-5]), min_size=1, max_size=6)
            )
        else:
            currents = [cur or 0.0] * draw(st.integers(1, 6))
        q_sign = np.sign(sum(currents)) if d_set is None else d_set
        d_board = int(q_sign) if d_set is None else d_set
        new_cycle = d_set not in (None, 0) and draw(st.integers(0, 4)) == 0
        if new_cycle or (d_board > 0 and prev_dir < 0):
            board_cycle += 1
        if d_board:
            prev_dir = d_board
        ex = Exec(step, board_cycle=board_cycle, set_current=d_set not in (None, 0))
        execs.append(ex)
        b.event(M.EV_STEP_START, ex)
        is_open = M.F_OPEN if kind == "ocv" else 0
        reset_at = draw(st.integers(1, 6)) if draw(st.integers(0, 5)) == 0 else -1
        tripping = k == trip_at
        for j, i in enumerate(currents):
            b.t += draw(st.floats(0.1, DT_S))
            first = M.F_STEP_FIRST if j == 0 else 0
            b.sample(ex, i, first | is_open)
            extra = draw(st.integers(0, 9)) if kind in ("cc", "cccv", "cv") else 0
            if extra in (1, 2):  # PAUSE (or a host-loss hold) and RESUME
                b.t += draw(st.floats(0.0, DT_S))
                b.sample(ex, 0.0, M.F_OPEN)
                b.event(M.EV_PAUSED if extra == 1 else M.EV_HOST_LOSS, ex)
                b.t += draw(st.floats(0.0, 1e5))
                b.sample(ex, 0.0, M.F_OPEN)
                b.event(M.EV_RESUMED, ex)
                ex.reasons.add("relay open")
            elif extra == 3 and kind != "cv":  # records decimated away: the board counted on
                for _ in range(draw(st.integers(1, 3))):
                    b.t += draw(st.floats(0.1, DT_S))
                    b.seq += 1  # a record the host never got
                b.t += draw(st.floats(0.1, DT_S))
                b.sample(ex, i, M.F_GAP, board_only=True)  # the next one carries the gap flag
                ex.reasons.add("records missing")
            elif extra == 4 and kind != "cv":  # a gap longer than the recording interval
                b.t += DT_S * 3
                b.sample(ex, i, 0, board_only=True)
                ex.reasons.add("gap longer than the recording interval")
            if j + 1 == reset_at and not tripping:
                # a watchdog reset: the step is cut without its end, then runs again from 0
                b.event(M.EV_INTERRUPTED, ex, reason=1)
                b.t += draw(st.floats(1.0, 100.0))
                b.event(M.EV_RESUMED, ex)
                ex = Exec(step, board_cycle=board_cycle, set_current=ex.set_current)
                ex.reasons = {"board reset"}
                execs.append(ex)
                b.event(M.EV_STEP_START, ex)
                b.t += draw(st.floats(0.1, DT_S))
                b.sample(ex, i, M.F_STEP_FIRST | is_open, board_only=True)
        if tripping:
            b.t += 0.05
            b.sample(ex, currents[-1], M.F_STEP_LAST | is_open)
            b.event(M.EV_SAFETY, ex, reason=M.SF_VMIN)
            b.sample(ex, 0.0, M.F_OPEN)
            b.event(M.EV_STEP_END, ex, reason=M.SE_ABORT, aux=round(b.q * 1e9))
            b.event(M.EV_RUN_END, ex, reason=M.RE_SAFETY)
            break
        b.t += draw(st.floats(0.05, 1.0))
        b.sample(ex, currents[-1], M.F_STEP_LAST | is_open)
        b.event(M.EV_STEP_END, ex, reason=M.SE_TIME, aux=round(b.q * 1e9))
    for ex in execs:
        d = step_direction(POOL[ex.step][0], POOL[ex.step][1])
        ex.direction = d if d is not None else (1 if ex.charge > 0 else -1 if ex.charge < 0 else 0)
    c = b.cols
    run = RunData.from_arrays(
        c["t"],
        np.zeros(len(c["t"])),
        c["i"],
        charge_ah=c["q"],
        step=np.asarray(c["step"], dtype=np.int64),
        cycle=np.asarray(c["cyc"], dtype=np.int64),
        flags=np.asarray(c["fl"], dtype=np.int64),
        seq=np.asarray(c["seq"], dtype=np.int64),
        steps=STEPS,
        events=b.events,
    )
    run.record_dt_s = dict.fromkeys(STEPS, DT_S)
    return run, execs


@dataclass
class Want:
    cycle: int
    kind: str
    capacity: float
    integral: float
    last: int
    reasons: set[str]


def expected(execs: list[Exec]) -> list[Want]:
    out: list[Want] = []
    prev: Exec | None = None
    last_dir = 0
    n_lith = 0
    for ex in execs:
        d = ex.direction
        if d == 0:
            continue
        forced = (
            prev is not None
            and prev.set_current
            and ex.set_current
            and ex.board_cycle > prev.board_cycle
        )
        if d != last_dir or forced or not out:
            n_lith += d > 0
            out.append(Want(n_lith, "lith" if d > 0 else "delith", 0.0, 0.0, -1, set()))
        w = out[-1]
        w.capacity += d * ex.charge
        w.integral += d * ex.integral
        w.last = ex.last
        w.reasons |= ex.reasons
        prev, last_dir = ex, d
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs())
def test_half_cycles_are_the_board_count(data: tuple[RunData, list[Exec]]) -> None:
    run, execs = data
    want = expected(execs)
    for w in want:
        for r in w.reasons:
            event(r)
    if any(e.name == "safety_trip" for e in run.events):
        event("trip")
    cv = run.current_a[run.step == 6]
    if (cv > 0).any() and (cv < 0).any():
        event("CV through zero")
    if len({(w.cycle, w.kind) for w in want}) < len(want):
        event("forced new cycle")
    hcs = an.half_cycles(run)
    assert [(h.cycle, h.kind) for h in hcs] == [(w.cycle, w.kind) for w in want]
    for h, w in zip(hcs, want, strict=True):
        # the capacity is the board's step charges, signed: never an integral across a pause
        assert h.capacity_ah == pytest.approx(w.capacity, rel=1e-12, abs=1e-18)
        # the samples' integral covers exactly the intervals it may
        assert h.integral_ah == pytest.approx(w.integral, rel=1e-9, abs=1e-15)
        got = {s.reason for s in h.skipped}
        assert w.reasons - {"board reset"} <= got, (w.reasons, got)
        if "board reset" in w.reasons:
            assert "board reset" in got
        # no sample with the relay open is one of the half-cycle's points
        assert not np.any(run.flags[h.idx] & M.F_OPEN)
    # the live model, one sample at a time, shows the same capacity and cycle at each
    # half-cycle's last sample
    m = CycleModel(run.step_table())
    at: dict[int, tuple[int, float]] = {}
    for k in range(len(run)):
        m.add(int(run.step[k]), int(run.cycle[k]), int(run.flags[k]), float(run.charge_ah[k]))
        at[k] = (m.cycle, m.half_cycle_ah)
    for w in want:
        assert at[w.last][0] == w.cycle
        assert at[w.last][1] == pytest.approx(w.capacity, rel=1e-12, abs=1e-18)
    # cycles: from 1, up by one at each lithiation start, never down
    m.finish()
    cyc = [r.cycle for r in m.runs]
    assert cyc == sorted(cyc)
    lith_starts = {h.runs[0].index for h in m.half_cycles if h.direction > 0}
    for j in range(1, len(cyc)):
        assert cyc[j] - cyc[j - 1] == (1 if j in lith_starts else 0)
    lith = [h.cycle for h in hcs if h.kind == "lith"]
    assert lith == list(range(1, len(lith) + 1))
