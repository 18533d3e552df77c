"""The check before START: the cell's open-circuit potential must lie inside the schedule's
safety window, or the board would trip at its first tick."""

from __future__ import annotations

from sicell.errors import ScheduleError
from sicell.replies import Status
from sicell.session.outcome import SafetyLimits, fmt_potential

__all__ = ["check_open_circuit"]


def check_open_circuit(status: Status, limits: SafetyLimits, port: str) -> None:
    """Refuse (``ScheduleError``, exit 2) when ``status.v_uv`` — what the board measures with no
    run going (relay open) — lies outside ``limits``' window; the message names both."""
    v = status.v_uv
    if limits.v_min_uv <= v <= limits.v_max_uv:
        return
    below = v < limits.v_min_uv
    raise ScheduleError(
        f"{port}: the cell's open-circuit potential {fmt_potential(v * 1e-6, limits.reference)} "
        f"lies {'below' if below else 'above'} the schedule's safety window "
        f"{limits.window()}, so the board would trip at once; nothing was started; expected "
        "the cell inside the window: check the cell and its leads, or move [safety] "
        f"{'v_min' if below else 'v_max'} to include it",
        key="v_min" if below else "v_max",
        value=v * 1e-6,
    )
