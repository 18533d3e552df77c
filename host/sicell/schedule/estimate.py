"""What a schedule will take and what deserves a second look: a rough run time and warnings
about things that compile (rounding, defaults, recording)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from sicell.errors import ScheduleError
from sicell.protocol import schedule as wire
from sicell.schedule.convert import Resolver
from sicell.schedule.model import BoardLimits, ResolvedStep
from sicell.schedule.resolve import resolve_steps

if TYPE_CHECKING:
    from sicell.schedule.document import Schedule

__all__ = ["GUESS_TAIL_S", "estimate_duration_s", "warnings"]

GUESS_TAIL_S = 3600.0
"""The guess for a phase only a current decay or a dV/dt ends (CV tails, relaxing rests)."""

_LOOP_BUDGET = 2_000_000
"""Steps walked at most (loops multiplied out) before the estimate gives up."""


def estimate_duration_s(sched: Schedule) -> float | None:
    """A rough run time: durations as written, CC steps by charge / current (a full
    half-cycle = 1C × 1 h when only a voltage cutoff ends them, needs mass and capacity),
    CV tails and dV/dt rests guessed at 1 h; loops multiplied out, conditional gotos
    ignored. None when a step cannot be estimated."""
    try:
        resolved = resolve_steps(sched, None)
    except ScheduleError:
        return None
    per = [_estimate_step(r, sched.one_c_a) for r in resolved]
    total = 0.0
    counters: dict[int, int] = {}
    pc = 0
    budget = _LOOP_BUDGET
    while pc < len(resolved):
        budget -= 1
        if budget < 0:
            return None
        r = resolved[pc]
        if r.kind == "loop":
            c = counters.get(pc, 0)
            if c < r.loop_count:
                counters[pc] = c + 1
                pc = r.loop_target
            else:
                counters[pc] = 0
                pc += 1
            continue
        d = per[pc]
        if d is None:
            return None
        total += d
        pc += 1
    return total


def _estimate_step(r: ResolvedStep, one_c: float | None) -> float | None:
    cands: list[float] = []
    if r.duration_s is not None:
        cands.append(r.duration_s)
    if r.current_a is not None and r.charge_ah is not None:
        cands.append(r.charge_ah / abs(r.current_a) * 3600.0)
    if r.kind == "cc" and r.cutoff_v is not None and r.current_a is not None and one_c is not None:
        cands.append(one_c / abs(r.current_a) * 3600.0)
    if r.kind == "cccv" and r.current_a is not None and one_c is not None:
        cands.append(one_c / abs(r.current_a) * 3600.0 + GUESS_TAIL_S)
    if r.kind in ("cv", "rest", "ocv") and not cands:
        cands.append(GUESS_TAIL_S)
    if not cands and any(q != wire.Q_V for q, *_ in r.limits):
        cands.append(GUESS_TAIL_S)
    return min(cands) if cands else None


def warnings(sched: Schedule, limits: BoardLimits) -> list[str]:
    """See ``Schedule.warnings``."""
    out: list[str] = []
    tick_ms = sched.control.tick_ms
    if sched.safety.v_min is None or sched.safety.v_max is None:
        out.append("no [safety] v_min/v_max: the board's hardware window is the only guard")
    if sched.safety.i_max_a is None:
        out.append(f"no [safety] i_max: the top range ({limits.i_max_a * 1e3:g} mA) is used")
    resolver = Resolver(sched, None)
    for st in sched.steps:
        if st.kind != "loop":
            rec = resolver.record(st)
            if not any(rec):
                out.append(
                    f"{st.where()}: every recording criterion is off; only the step's "
                    "first and last points are recorded"
                )
            elif 0 < rec[0] < tick_ms:
                out.append(
                    f"{st.where()}: record dt_s = {rec[0] / 1000:g} s is shorter than the "
                    f"control tick ({tick_ms / 1000:g} s); points come at most once per tick"
                )
        vals: list[tuple[str, float]] = []
        if st.until_dvdt_v_s is not None:
            vals.append((st.dvdt_key or "until_dvdt", st.until_dvdt_v_s))
        for lim in st.limits:
            if lim.quantity == wire.Q_DVDT and isinstance(lim.value, float):
                vals.append((lim.key, lim.value))
        for key, v_s in vals:
            uvs = v_s * 1e6
            r = max(1, math.floor(uvs + 0.5))
            if abs(r - uvs) > 0.05 * uvs:
                out.append(
                    f"{st.where()}: {key} ({uvs:.3g} µV/s = {v_s * 3.6e6:.3g} mV/h) is sent "
                    f"as {r} µV/s ({r * 3.6:.3g} mV/h), the board's resolution"
                )
    return out
