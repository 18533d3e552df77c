"""A schedule checked for one board before START, as ``sicell run`` checks it, without starting.

:func:`read_schedule` parses an uploaded TOML (text or bytes; a one-line error naming the
problem), :func:`plan_dict` compiles it against the board's limits, checks the cell's
open-circuit potential against its safety window and lists the steps with the currents as
computed (per-area and C-rate currents resolved), the cutoffs and the estimated run time.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sicell.client import BoardInfo, Status
from sicell.errors import ScheduleError, UsageError
from sicell.session.outcome import has_reference, safety_limits

__all__ = ["MAX_SCHEDULE_BYTES", "plan_dict", "read_schedule"]

MAX_SCHEDULE_BYTES = 256 * 1024


def _one_line(text: str) -> str:
    return "; ".join(ln.strip() for ln in text.splitlines() if ln.strip())


def read_schedule(toml: str | bytes, source: str = "schedule") -> Any:
    """The parsed ``Schedule`` of an uploaded TOML; ScheduleError/UsageError in one line."""
    from sicell.schedule import parse_schedule
    from sicell.schedule.parse import decode_text

    if len(toml) > MAX_SCHEDULE_BYTES:
        raise UsageError(
            f"{source}: {len(toml)} bytes; a schedule may have at most {MAX_SCHEDULE_BYTES}"
        )
    if isinstance(toml, bytes):
        toml = decode_text(toml, source)
    if not isinstance(toml, str):
        raise UsageError(f"{source}: expected the schedule's TOML text")
    if "\x00" in toml:
        raise UsageError(f"{source}: not a text file (it contains NUL bytes); expected TOML")
    try:
        return parse_schedule(toml, source=source)
    except ScheduleError as e:
        if "\n" not in str(e):
            raise
        raise ScheduleError(_one_line(str(e)), step=e.step, label=e.label, key=e.key) from e


def _step(r: Any, offset_v: float, ref: bool) -> dict[str, Any]:
    def vs_li(v: float | None) -> float | None:
        return None if v is None or not ref else v + offset_v

    return {
        "index": r.index,
        "kind": r.kind,
        "label": r.label or None,
        "current_a": r.current_a,
        "hold_v": r.v_set_v,
        "hold_vs_li_v": vs_li(r.v_set_v),
        "cutoff_v": r.cutoff_v,
        "cutoff_vs_li_v": vs_li(r.cutoff_v),
        "charge_ah": r.charge_ah,
        "duration_s": r.duration_s,
        "loop_to": r.loop_target if r.kind == "loop" else None,
        "loop_passes": r.loop_count + 1 if r.kind == "loop" else None,
    }


def plan_dict(sch: Any, info: BoardInfo, status: Status | None, port: str) -> dict[str, Any]:
    """What START would run on the board of ``info``: the same checks ``sicell run`` makes
    (compile against the board's limits; with ``status`` of an idle board, the open-circuit
    potential inside the safety window), raising the same errors."""
    from sicell.schedule import BoardLimits
    from sicell.schedule.resolve import resolve_steps
    from sicell.session.prestart import compile_checked

    limits = BoardLimits.from_info(info.as_dict())
    warnings = list(sch.warnings(limits))
    safety = safety_limits(sch, info)
    if status is None or status.has_run:
        sch.compile(limits)
        if status is not None:
            warnings.append(
                f"the board is {status.state_name} with run {status.run_id:08x}: it starts "
                "nothing until that run ends"
            )
    else:  # what START would check, with the board's state of now
        now = replace(info, state=status.state, run_id=status.run_id)
        compile_checked(sch, now, lambda: status, port)
    ref = sch.reference
    with_ref = has_reference(ref)
    steps = [_step(r, ref.offset_v, with_ref) for r in resolve_steps(sch, limits)]
    est = sch.estimate_duration_s()
    return {
        "schedule": sch.name,
        "description": sch.description,
        "reference": ref.name if with_ref else None,
        "safety_window": safety.window() if safety is not None else None,
        "open_circuit_v": None if status is None else status.v_uv * 1e-6,
        "warnings": warnings,
        "steps": steps,
        "estimate_s": est,
    }
