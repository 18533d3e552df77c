"""Resolved schedule → the wire blob of ``protocol/schedule.py``: the header (safety window,
current ceiling, debounce, temperature, tick periods, host-loss policy) and one record per
step, then the board's own validation on the result."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from sicell.errors import ScheduleError
from sicell.protocol import schedule as wire
from sicell.schedule.convert import safety_window
from sicell.schedule.cutoffs import check_cutoff_sides
from sicell.schedule.model import (
    TICK_COST_FACTOR,
    BoardLimits,
    ResolvedStep,
    WireLimit,
    min_tick_ms,
)
from sicell.schedule.readers import err
from sicell.schedule.resolve import resolve_steps
from sicell.schedule.vocabulary import KIND_CODES, U16
from sicell.units import a_to_na, s_to_ms, v_to_uv

if TYPE_CHECKING:
    from sicell.schedule.document import Schedule

__all__ = ["check_tick_cost", "compile_schedule", "header"]

WireHeader = tuple[int, int, int, int, int, int, int, int]
WireStep = tuple[int, int, int, int, int, int, int, int, int, int, int]


def compile_schedule(sched: Schedule, limits: BoardLimits) -> bytes:
    """See ``Schedule.compile``."""
    if not sched.steps:
        raise ScheduleError(f"{sched.source}: no [[step]] entries; expected at least one")
    if len(sched.steps) > wire.MAX_STEPS:
        raise ScheduleError(
            f"{sched.source}: {len(sched.steps)} steps; expected at most {wire.MAX_STEPS} "
            "(use loops to repeat blocks)"
        )
    check_tick_cost(sched, limits)
    hdr = header(sched, limits)
    resolved = resolve_steps(sched, limits)
    check_cutoff_sides(sched, resolved)
    steps = [_wire_step(r) for r in resolved]
    blob: bytes = wire.encode(hdr, steps)
    # the board's own validation, so a blob that would be NACKed never leaves the host
    try:
        wire.decode(
            blob,
            n_ranges=len(limits.ranges_a),
            hw_v_min=v_to_uv(limits.v_min_v),
            hw_v_max=v_to_uv(limits.v_max_v),
            hw_i_max=a_to_na(limits.i_max_a),
        )
    except wire.ScheduleError as e:  # pragma: no cover - the checks above come first
        lab = ""
        if 0 <= e.step < len(sched.steps) and sched.steps[e.step].label:
            lab = f" ('{sched.steps[e.step].label}')"
        raise ScheduleError(
            f"{sched.source}: board validation failed{lab}: {e}",
            step=e.step if e.step >= 0 else None,
        ) from e
    return blob


def check_tick_cost(sched: Schedule, limits: BoardLimits) -> None:
    """Refuse a control tick shorter than ``TICK_COST_FACTOR`` times what a tick costs the board
    (``limits.tick_cost_us``; None: not checked), naming both figures."""
    cost = limits.tick_cost_us
    if cost is None:
        return
    tick = sched.control.tick_ms
    if tick * 1000 < TICK_COST_FACTOR * cost:
        raise err(
            "[control]",
            f"tick_ms = {tick} is below {TICK_COST_FACTOR} × the {cost / 1000:.1f} ms a control "
            f"tick costs this board ({limits.tick_cost_source}), so ticks would overrun; "
            f"expected tick_ms ≥ {min_tick_ms(cost)}",
            key="tick_ms",
            value=tick,
        )


def _wire_step(r: ResolvedStep) -> tuple[WireStep, list[WireLimit]]:
    i_na = a_to_na(r.current_a) if r.current_a is not None else 0
    v_uv = v_to_uv(r.v_set_v) if r.v_set_v is not None else 0
    fields: WireStep = (
        KIND_CODES[r.kind],
        r.range,
        r.flags,
        i_na,
        v_uv,
        r.loop_target,
        r.loop_count,
        *r.record,
    )
    return fields, list(r.limits)


def header(sched: Schedule, limits: BoardLimits) -> WireHeader:
    """The wire header: (policy, tick_ms, slow_tick_ms, debounce_ms, v_min µV, v_max µV,
    i_max nA, temp_max 0.1 °C), checked against ``limits``."""
    ref = sched.reference
    sf = sched.safety
    vmin, vmax = safety_window(sched, limits)
    where = "[safety]"
    for p, v in ((sf.v_min, vmin), (sf.v_max, vmax)):
        if p is not None and not (limits.v_min_v <= v <= limits.v_max_v):
            raise err(
                where,
                f"{p.describe(ref)} is outside the hardware window "
                f"{limits.v_min_v:+.3f}…{limits.v_max_v:+.3f} V cell; expected a value "
                "inside it",
                key=p.key,
                value=p.value,
            )
    if vmin >= vmax:
        raise err(
            where,
            f"v_min ({vmin:+.4f} V cell) is not below v_max ({vmax:+.4f} V cell); expected "
            "v_min < v_max",
            key="v_min",
            value=vmin,
        )
    imax = sf.i_max_a if sf.i_max_a is not None else limits.i_max_a
    if imax > limits.i_max_a * (1 + 1e-9):
        raise err(
            where,
            f"{sf.i_max_key} gives {imax * 1e3:g} mA, over the board's top range of "
            f"{limits.i_max_a * 1e3:g} mA; expected at most that",
            key=sf.i_max_key,
            value=imax,
        )
    imax_na = a_to_na(imax)
    if imax_na < 1:
        raise err(where, "i_max rounds to 0 nA; expected > 0", key=sf.i_max_key, value=imax)
    deb = s_to_ms(sf.debounce_s)
    if not 0 <= deb <= U16:
        raise err(
            where,
            f"debounce_s = {sf.debounce_s:g} is outside 0…65.535 s",
            key="debounce_s",
            value=sf.debounce_s,
        )
    if sf.temp_max_c is None:
        tmax = wire.TEMP_OFF
    else:
        tmax = math.floor(sf.temp_max_c * 10 + 0.5)
        if not -32768 <= tmax < wire.TEMP_OFF:
            raise err(
                where,
                f"temp_max_c = {sf.temp_max_c:g} is outside −3276.8…3276.6 °C",
                key="temp_max_c",
                value=sf.temp_max_c,
            )
    ctl = sched.control
    policy = wire.P_DECIMATE if ctl.host_loss == "decimate" else wire.P_HOLD
    return (
        policy,
        ctl.tick_ms,
        ctl.slow_tick_ms,
        deb,
        v_to_uv(vmin),
        v_to_uv(vmax),
        imax_na,
        tmax,
    )
