"""A new run up to START: the checks, the upload and the run's metadata.

:func:`compile_checked` is what may be asked without changing anything on the board (the board
free, the schedule compiled against its limits, the cell's open-circuit potential inside the
schedule's safety window); :func:`prepare` adds the upload, the calibration read-back and a
new run id. START and the database are the session's (:mod:`sicell.session.runner`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sicell.client import Board, BoardInfo, Status, new_run_id
from sicell.errors import BoardBusyError
from sicell.session import runmeta
from sicell.session.opencircuit import check_open_circuit
from sicell.session.outcome import safety_limits


def refuse_busy(info: BoardInfo, port: str) -> None:
    """BoardBusyError when the board already runs (or holds) an experiment."""
    if info.has_run:
        raise BoardBusyError(
            f"{port} is {info.state_name} with run {info.run_id:08x}; stop it with "
            f"`sicell stop --port {port}` or reattach with `sicell run --resume RUN.db "
            f"--port {port}`"
        )


def compile_checked(sch: Any, info: BoardInfo, status: Callable[[], Status], port: str) -> bytes:
    """The schedule's wire bytes for this board, after the checks before START (``status``
    is asked only once the schedule compiled)."""
    from sicell.schedule import BoardLimits  # imported when needed: a large package

    refuse_busy(info, port)
    blob: bytes = sch.compile(BoardLimits.from_info(info.as_dict()))
    limits = safety_limits(sch, info)
    if limits is not None:  # (it is: the schedule compiled against this board)
        check_open_circuit(status(), limits, port)
    return blob


@dataclass(frozen=True)
class Prepared:
    """A schedule on the board, verified, not started."""

    blob: bytes
    run_id: int
    meta: dict[str, Any]


def prepare(
    board: Board, sch: Any, info: BoardInfo, *, port: str, name: str, extra: dict[str, Any]
) -> Prepared:
    """Check, upload and verify ``sch``; read the calibration; the new run's id and meta."""
    blob = compile_checked(sch, info, board.status, port)
    board.upload_schedule(blob)
    calibration = [c.as_dict() for c in board.calibration()]
    run_id = new_run_id()
    meta = runmeta.new_run_meta(
        sch, info, blob, calibration, run_id=run_id, port=port, board_name=name, extra=extra
    )
    return Prepared(blob, run_id, meta)
