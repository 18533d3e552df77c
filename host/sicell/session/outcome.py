"""How a run ended, in one line and one exit code: complete, a safety trip (which limit, its
threshold, the measured value, the step), stopped by a user, or interrupted by a board reset.

The threshold of a trip comes from the run's schedule compiled against the board's limits
(:func:`safety_limits`); the rest from the run's events in the database (EV_SAFETY: reason
``SF_*`` and the measured value; EV_ERROR, EV_STOPPED, EV_INTERRUPTED) and its steps table.
"""

from __future__ import annotations

import shlex
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sicell import schema
from sicell import store as store_mod
from sicell.errors import (
    EXIT_BOARD_RESET,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_STOPPED,
    EXIT_TRIPPED,
    ScheduleError,
)
from sicell.protocol import messages as M
from sicell.protocol import schedule as wire
from sicell.records import EventRecord
from sicell.replies import RESET_CAUSE_NAMES, BoardInfo
from sicell.units import Reference, to_li_v

__all__ = [
    "Outcome",
    "SafetyLimits",
    "describe_trip",
    "fmt_potential",
    "has_reference",
    "run_outcome",
    "safety_limits",
]


@dataclass(frozen=True)
class Outcome:
    """How a run ended: ``kind`` (complete, limit, safety trip, firmware fault, stopped, board
    reset, unknown), the exit code ``sicell run`` gives for it, and one line for the user
    (empty for a plain completion)."""

    kind: str
    exit_code: int
    line: str = ""


@dataclass(frozen=True)
class SafetyLimits:
    """The thresholds the board checks during a run, in wire units (as in the schedule header
    and INFO), and the schedule's reference electrode (None: no reference, cell volts only)."""

    v_min_uv: int
    v_max_uv: int
    i_max_na: int
    temp_max_dc: int | None  # 0.1 °C; None = off
    compliance_uv: int
    reference: Reference | None

    def window(self) -> str:
        """The safety window in cell volts (and vs Li with a reference)."""
        lo, hi = self.v_min_uv * 1e-6, self.v_max_uv * 1e-6
        text = f"{lo:+.4f}…{hi:+.4f} V cell"
        ref = self.reference
        if ref is not None:
            text += f" ({to_li_v(lo, ref):.4f}…{to_li_v(hi, ref):.4f} V vs Li)"
        return text


def has_reference(ref: Reference) -> bool:
    """False for a dummy load's ``electrode = "none"`` (cell volts are the only potentials)."""
    return ref.name.strip().lower() not in ("", "none")


def fmt_potential(v_cell: float, ref: Reference | None) -> str:
    """``v_cell`` in cell volts, and vs Li when there is a reference electrode."""
    text = f"{v_cell:+.4f} V cell"
    if ref is not None:
        text += f" ({to_li_v(v_cell, ref):.4f} V vs Li)"
    return text


def safety_limits(sch: Any, info: BoardInfo | None) -> SafetyLimits | None:
    """The run's thresholds: ``sch`` (a ``Schedule``) compiled against the board of ``info``;
    None when either is missing or the schedule no longer compiles here."""
    if sch is None or info is None:
        return None
    from sicell.schedule import BoardLimits  # a large package: when needed
    from sicell.schedule.compile import header

    try:
        hdr = header(sch, BoardLimits.from_info(info.as_dict()))
    except ScheduleError:
        return None
    _policy, _tick, _slow, _deb, vmin, vmax, imax, tmax = hdr
    ref = sch.reference
    return SafetyLimits(
        v_min_uv=vmin,
        v_max_uv=vmax,
        i_max_na=imax,
        temp_max_dc=None if tmax == wire.TEMP_OFF else tmax,
        compliance_uv=info.compliance_uv,
        reference=ref if has_reference(ref) else None,
    )


def _step(step: int, labels: Mapping[int, str]) -> str:
    label = labels.get(step)
    return f"step {step} ('{label}')" if label else f"step {step}"


def describe_trip(
    ev: EventRecord, limits: SafetyLimits | None, labels: Mapping[int, str] | None = None
) -> str:
    """An EV_SAFETY event in words: the quantity, the measured value, the threshold (when
    ``limits`` are known), the step (index and label) and how long the violation lasted."""
    labels = labels or {}
    ref = limits.reference if limits is not None else None
    code, value = ev.reason, ev.value
    if code in (M.SF_VMIN, M.SF_VMAX):
        low = code == M.SF_VMIN
        what = "V min" if low else "V max"
        measured = fmt_potential(value * 1e-6, ref)
        limit = None
        if limits is not None:
            limit = fmt_potential((limits.v_min_uv if low else limits.v_max_uv) * 1e-6, ref)
        rel = "below" if low else "above"
    elif code == M.SF_IMAX:
        what, rel = "|I| max", "over"
        measured = f"{value * 1e-6:+.4f} mA"
        limit = f"{limits.i_max_na * 1e-6:.4f} mA" if limits is not None else None
    elif code == M.SF_TEMP:
        what, rel = "temperature", "over"
        measured = f"{value / 10:.1f} °C"
        tmax = limits.temp_max_dc if limits is not None else None
        limit = f"{tmax / 10:.1f} °C" if tmax is not None else None
    elif code == M.SF_COMPLIANCE:
        what, rel = "compliance", "at or beyond"
        measured = f"{value * 1e-6:+.4f} V"
        limit = f"±{limits.compliance_uv * 1e-6:.4f} V" if limits is not None else None
    else:
        return f"safety trip (reason {code}, value {value}) in {_step(ev.step, labels)}"
    text = f"safety trip, {what}: measured {measured}"
    text += f", {rel} the limit {limit}," if limit is not None else " (limit not known here)"
    text += f" in {_step(ev.step, labels)}"
    if ev.aux > 0:
        text += f" (beyond it for {ev.aux} ms, the debounce)"
    return text


def _last(events: Sequence[EventRecord], code: int) -> EventRecord | None:
    return next((e for e in reversed(events) if e.code == code), None)


def _read(db: Path) -> tuple[list[EventRecord], dict[int, str]]:
    """The run's events and step labels (empty when the database cannot be read)."""
    try:
        con = schema.connect_readonly(db)
    except (sqlite3.Error, OSError):
        return [], {}
    try:
        events = store_mod.read_events(con)
        rows = con.execute("SELECT idx, label FROM steps").fetchall()
    except sqlite3.Error:
        return [], {}
    finally:
        con.close()
    return events, {int(i): str(lab) for i, lab in rows if lab}


def run_outcome(
    db: Path,
    state: int | None,
    end_code: int | None,
    limits: SafetyLimits | None,
    port: str,
) -> Outcome:
    """How the run of ``db`` ended, from the board's last state and EV_RUN_END reason (when the
    session saw one), with the details from the stored events."""
    events, labels = _read(db)
    if end_code is None:  # a resumed session may not see the EV_RUN_END stored before
        end = _last(events, M.EV_RUN_END)
        end_code = end.reason if end is not None else None
    if end_code == M.RE_SAFETY or state == M.ST_TRIPPED:
        trip = _last(events, M.EV_SAFETY)
        if trip is not None:
            return Outcome("safety trip", EXIT_TRIPPED, describe_trip(trip, limits, labels))
        fault = _last(events, M.EV_ERROR)
        if fault is not None:
            from sicell.replies import fault_text

            return Outcome(
                "firmware fault",
                EXIT_TRIPPED,
                f"firmware fault ended the run: {fault_text(fault.reason, fault.value)} in "
                f"{_step(fault.step, labels)}; the board went safe",
            )
        return Outcome("safety trip", EXIT_TRIPPED, "safety trip (no EV_SAFETY stored)")
    if end_code == M.RE_HOST or state == M.ST_STOPPED:
        ev = _last(events, M.EV_STOPPED)
        where = f" in {_step(ev.step, labels)} at t = {ev.t_s:.1f} s" if ev is not None else ""
        return Outcome("stopped", EXIT_STOPPED, f"stopped by a user (STOP){where}")
    if state == M.ST_INTERRUPTED:
        ev = _last(events, M.EV_INTERRUPTED)
        cause, where = "", ""
        if ev is not None:
            cause = f" ({RESET_CAUSE_NAMES.get(ev.reason, f'cause {ev.reason}')})"
            where = f" in {_step(ev.aux, labels)}"
        p, d = shlex.quote(port), shlex.quote(str(db))
        return Outcome(
            "board reset",
            EXIT_BOARD_RESET,
            f"interrupted by a board reset{cause}{where}; the board waits with the relay open: "
            f"`sicell continue --port {p}` restarts the step (then `sicell run --resume {d} "
            f"--port {p}` logs on), `sicell stop --port {p}` ends the run",
        )
    if end_code == M.RE_LIMIT:
        ev = _last(events, M.EV_LIMIT)
        where = f" in {_step(ev.step, labels)}" if ev is not None else ""
        return Outcome("limit", EXIT_OK, f"ended by a limit with action end{where}")
    if end_code == M.RE_COMPLETE or state == M.ST_DONE:
        return Outcome("complete", EXIT_OK)
    return Outcome("unknown", EXIT_ERROR, "the run's end is not known (no end state seen)")
