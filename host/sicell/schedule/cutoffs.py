"""A CC cutoff on the side its step starts from would end the step at once: refused.

The host cannot know the cell's potential, but it knows bounds on where a step starts from the
steps before it, along every path the schedule can take (each loop is followed through twice,
so the first pass and the passes after a jump back are both seen):

* a lithiation (current > 0) moves the potential down, so it ends at or above its cutoff (cc
  ``until_v``) or its hold potential (cccv): the next step starts at or above that value; a
  delithiation the other way round;
* a CV hold leaves the cell at its hold potential;
* a rest or OCV lets the cell relax away from where the last current drove it (up after a
  lithiation, down after a delithiation), so it keeps the bound on that side only; after a CV
  hold, neither;
* a step reached by a limit's ``goto`` may start anywhere.

A lithiation cutoff above a known upper bound of the start, or a delithiation cutoff below a
known lower bound, holds at the first tick (a cutoff equal to the bound is let through: the
cell sits near it, and noise decides). Values are compared as the board compares
them: measured cell volts (an ``ir_corrected`` cutoff shifted by I·R), which only makes the
check more lenient (the measured start lies I·R further on the step's side).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sicell.protocol import schedule as wire
from sicell.schedule.model import ResolvedStep
from sicell.schedule.readers import err, step_kw
from sicell.units import Reference, to_li_v, v_to_uv

if TYPE_CHECKING:
    from sicell.schedule.document import Schedule

__all__ = ["check_cutoff_sides"]

_MAX_VISITS = 4096  # steps followed in all (deeply nested loops: what was seen is checked)


@dataclass(frozen=True)
class _Bound:
    v: float  # cell volts
    step: int  # the step that set it


@dataclass(frozen=True)
class _Start:
    """What is known about the potential where the next step starts."""

    lo: _Bound | None = None
    hi: _Bound | None = None
    last_dir: int = 0  # +1 after a lithiation, -1 after a delithiation, 0 unknown / after CV


def check_cutoff_sides(sched: Schedule, steps: Sequence[ResolvedStep]) -> None:
    """Refuse a ``cc`` step whose ``until_v`` lies on the side the step starts from (see the
    module docstring), naming the step, its value and the step that bounds the start."""
    targets = {lim[4] for s in steps for lim in s.limits if lim[2] == wire.A_GOTO}
    jumps = {s.index: min(s.loop_count, 1) for s in steps if s.kind == "loop"}
    left = dict(jumps)
    start = _Start()
    i = visits = 0
    while 0 <= i < len(steps) and visits < _MAX_VISITS:
        visits += 1
        s = steps[i]
        if i in targets:
            start = _Start()
        if s.kind == "loop":
            if left[i] > 0:
                left[i] -= 1
                i = s.loop_target
            else:
                left[i] = jumps[i]
                i += 1
            continue
        _check(sched, s, start)
        start = _after(s, start)
        i += 1


def _check(sched: Schedule, s: ResolvedStep, start: _Start) -> None:
    if s.kind != "cc" or s.cutoff_v is None or s.current_a is None:
        return
    lith = s.current_a > 0
    b = start.hi if lith else start.lo
    if b is None:
        return
    cut, at = v_to_uv(s.cutoff_v), v_to_uv(b.v)  # as the board compares: whole µV
    if cut <= at if lith else cut >= at:
        return
    st = sched.steps[s.index]
    assert st.until_v is not None
    ref = sched.reference
    measured = f" (measured cutoff {s.cutoff_v:+.4f} V cell)" if st.ir_corrected else ""
    prev = sched.steps[b.step]
    how = "hold potential" if prev.kind in ("cv", "cccv") else "cutoff"
    whose = f"the {how} of step {prev.index}" + (f" ('{prev.label}')" if prev.label else "")
    if lith:
        side, bound, moves, other = "above", "no higher", "down and ends at V ≤", "below"
    else:
        side, bound, moves, other = "below", "no lower", "up and ends at V ≥", "above"
    raise err(
        st.where(),
        f"cutoff {st.until_v.describe(ref)}{measured} is {side} where the step starts "
        f"({bound} than {_fmt(b.v, ref)}, {whose}); a {'de' if not lith else ''}lithiation "
        f"moves the potential {moves} until_v, so the step would end at once; expected a "
        f"cutoff {other} {_fmt(b.v, ref)} (typed on the wrong side?)",
        **step_kw(st, st.until_v.key, st.until_v.value),
    )


def _after(s: ResolvedStep, start: _Start) -> _Start:
    """What is known where the step after ``s`` starts."""
    if s.kind in ("rest", "ocv"):
        if start.last_dir > 0:
            return _Start(lo=start.lo, last_dir=1)
        if start.last_dir < 0:
            return _Start(hi=start.hi, last_dir=-1)
        return _Start()
    if s.kind == "cv":
        assert s.v_set_v is not None
        b = _Bound(s.v_set_v, s.index)
        return _Start(lo=b, hi=b)
    if s.current_a is None:
        return _Start()
    end_v = s.v_set_v if s.kind == "cccv" else s.cutoff_v
    reached = None if end_v is None else _Bound(end_v, s.index)
    if s.current_a > 0:
        return _Start(lo=reached, hi=start.hi, last_dir=1)
    return _Start(lo=start.lo, hi=reached, last_dir=-1)


def _fmt(v_cell: float, ref: Reference) -> str:
    return f"{v_cell:+.4f} V cell ({to_li_v(v_cell, ref):.4f} V vs Li)"
