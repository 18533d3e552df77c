"""What the service shows of one board: the board dict of the API and the dashboard.

A board's worker gives its run session a :class:`BoardDisplay`, which keeps the session's
latest :class:`~sicell.progress.Progress`; :func:`board_dict` turns that (or, between runs,
the board's STATUS) into the JSON-able dict the API serves, with the dashboard's ``mode``
(the colour) and the badges. A board is known by the id its INFO gives;
:func:`provisional_id` tells it before the first HELLO.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sicell.errors import UsageError
from sicell.progress import Progress
from sicell.replies import Status

__all__ = [
    "MODES",
    "BoardDisplay",
    "RunRef",
    "board_dict",
    "emulated_board_id",
    "mode_of",
    "progress_of_dict",
    "provisional_id",
]

MODES = (
    "idle",
    "CC",
    "CV",
    "rest",
    "OCV",
    "paused",
    "held",
    "done",
    "stopped",
    "tripped",
    "interrupted",
    "offline",
)
_STATE_MODES = {
    "paused": "paused",
    "hold": "held",
    "done": "done",
    "stopped": "stopped",
    "tripped": "tripped",
    "interrupted": "interrupted",
}
_KIND_MODES = {"cc": "CC", "cv": "CV", "rest": "rest", "ocv": "OCV"}


def mode_of(online: bool, state: str, step_kind: str | None, cv_phase: bool = False) -> str:
    """The dashboard's mode of a board: offline, its state, or in a running step the kind."""
    if not online:
        return "offline"
    if state in _STATE_MODES:
        return _STATE_MODES[state]
    if state != "running":
        return "idle"
    kind = (step_kind or "").lower()
    if kind == "cccv":
        return "CV" if cv_phase else "CC"
    return _KIND_MODES.get(kind, "rest")


@dataclass(frozen=True)
class RunRef:
    """The run a board's worker logs (or logged last)."""

    name: str
    run_id: int
    db: Path
    schedule: str
    started_at: str | None
    reference: bool  # the schedule has a reference electrode (E vs Li is meaningful)
    active: bool = True

    def as_dict(self, rel_db: str) -> dict[str, Any]:
        return {
            "name": self.name,
            "run_id": f"{self.run_id:08x}",
            "db": rel_db,
            "schedule": self.schedule,
            "started_at": self.started_at,
            "active": self.active,
        }


class BoardDisplay:
    """A :class:`~sicell.progress.Display` that keeps the latest progress and note of one
    board's session and calls ``on_change`` after each (from the session's thread)."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        self._on_change = on_change
        self._lock = threading.Lock()
        self.progress: Progress | None = None
        self.message: str | None = None

    def update(self, p: Progress) -> None:
        with self._lock:
            self.progress = p
        self._on_change()

    def note(self, board: str, text: str) -> None:
        with self._lock:
            self.message = text
        self._on_change()

    def reset(self) -> None:
        with self._lock:
            self.progress = None
            self.message = None

    def __enter__(self) -> BoardDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def progress_from_status(board: str, st: Status) -> Progress:
    """A board between runs, as far as STATUS tells."""
    v = st.v_uv * 1e-6
    return Progress(
        board=board,
        state=st.state_name,
        voltage_v=v,
        current_a=st.i_na * 1e-9,
        elapsed_s=st.t_s if st.run_id else None,
    )


def _opt_round(x: float | None, nd: int) -> float | None:
    return None if x is None else round(x, nd)


def board_dict(
    *,
    board_id: str,
    alias: str | None,
    port: str,
    online: bool,
    progress: Progress | None,
    run: RunRef | None,
    rel_db: str,
    last_record_age_s: float | None,
    badges: Sequence[tuple[str, str]],
    message: str | None,
    cv_phase: bool = False,
) -> dict[str, Any]:
    """The API's board dict (see :mod:`sicell.service`)."""
    p = progress if progress is not None else Progress(board=board_id, state="unknown")
    state = p.state if online else "offline"
    we = p.we_v if (run is not None and run.reference) else None
    return {
        "board_id": board_id,
        "alias": alias,
        "port": port,
        "online": online,
        "mode": mode_of(online, p.state, p.step_kind, cv_phase),
        "state": state,
        "run": run.as_dict(rel_db) if run is not None else None,
        "step": p.step,
        "step_kind": p.step_kind,
        "cycle": p.cycle,
        "voltage_v": p.voltage_v,
        "we_v": we,
        "current_a": p.current_a,
        "half_cycle_ah": p.half_cycle_ah,
        "elapsed_s": p.elapsed_s,
        "eta_s": p.eta_s,
        "samples": p.samples,
        "last_seq": p.last_seq,
        "last_record_age_s": _opt_round(last_record_age_s, 1),
        "badges": [{"kind": k, "text": t} for k, t in badges],
        "message": message,
    }


def progress_of_dict(d: dict[str, Any]) -> Progress:
    """A board dict as a :class:`Progress` (what ``sicell run`` shows as a service's client)."""
    p = Progress(board=str(d.get("board_id", "?")), state=str(d.get("state", "unknown")))
    kw: dict[str, Any] = {
        k: d.get(k)
        for k in (
            "step",
            "step_kind",
            "cycle",
            "voltage_v",
            "we_v",
            "current_a",
            "half_cycle_ah",
            "elapsed_s",
            "eta_s",
        )
    }
    kw["samples"] = int(d.get("samples") or 0)
    kw["last_seq"] = int(d.get("last_seq") or 0)
    return replace(p, **kw)


def emulated_board_id(name: str) -> str:
    """The board id an emulated board of id ``name`` reports in INFO (its ``unique_id``: the
    name when it is 16 hex digits, else the name's 64-bit FNV-1a hash)."""
    if len(name) == 16 and all(c in "0123456789abcdefABCDEF" for c in name):
        return name.lower()
    h = 0xCBF29CE484222325
    for c in name.encode():
        h = ((h ^ c) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h.to_bytes(8, "little").hex()


def provisional_id(port: str) -> tuple[str, str | None]:
    """(the board's id before its first HELLO, another name it is known by): an emulated
    board's INFO id and its URL's board id; a USB device's serial number; else the port."""
    if port.lower().startswith("emu://"):
        from sicell.urlhandler.protocol_emu import parse_url

        try:
            name = str(parse_url(port).validated().board)
        except UsageError:
            return port, None
        return emulated_board_id(name), name
    from sicell.transport import list_ports

    real = os.path.realpath(port)
    for p in list_ports():
        if p.serial_number and os.path.realpath(p.device) == real:
            return p.serial_number.lower(), None
    return port, None
