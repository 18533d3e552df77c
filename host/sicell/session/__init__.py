"""Run sessions: a schedule on a board, streamed into a run database.

``runner`` (the I/O loop, :class:`RunSession`), ``seqbook`` (sequence bookkeeping, pure),
``summary`` (the end-of-run summary and live progress), ``runmeta`` (run metadata), ``many``
(several boards at once) and ``twopoint`` (two-point calibration on a known resistor). The
names callers use are importable from here.
"""

from __future__ import annotations

from sicell.errors import (
    BoardBusyError,
    CalibrationError,
    Detached,
    RunMismatchError,
    SessionError,
    StoreFull,
)
from sicell.session.many import SessionResult, run_many
from sicell.session.options import SessionOptions
from sicell.session.runmeta import short_port_name
from sicell.session.runner import RunSession
from sicell.session.seqbook import SeqBook
from sicell.session.summary import CycleCapacity, HalfCycleTracker, RunSummary
from sicell.session.twopoint import TwoPointResult, two_point_calibration

__all__ = [
    "BoardBusyError",
    "CalibrationError",
    "CycleCapacity",
    "Detached",
    "HalfCycleTracker",
    "RunMismatchError",
    "RunSession",
    "RunSummary",
    "SeqBook",
    "SessionError",
    "SessionOptions",
    "SessionResult",
    "StoreFull",
    "TwoPointResult",
    "run_many",
    "short_port_name",
    "two_point_calibration",
]
