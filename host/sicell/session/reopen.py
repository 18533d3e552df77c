"""Reopening a board's port after the link failed: back-off, HELLO, the same run."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from sicell.client import Board
from sicell.errors import (
    BoardError,
    EmulatorConfigError,
    EmulatorError,
    SessionError,
    TransportError,
    VersionMismatchError,
)


def reopen(
    open_board: Callable[[], Board],
    check: Callable[[Board], None],
    *,
    first_error: Exception,
    initial_s: float,
    max_s: float,
    give_up_s: float | None,
    stop: threading.Event,
    port: str,
    hint: str,
) -> Board:
    """Open the board again, waiting ``initial_s`` doubling to ``max_s`` between tries, until
    it answers and ``check`` accepts it (a check that raises closes the board and ends the
    tries). Raises KeyboardInterrupt when ``stop`` is set, SessionError (ending in ``hint``)
    after ``give_up_s``."""
    delay = initial_s
    t0 = time.monotonic()
    last_err = first_error
    while True:
        if stop.is_set():
            raise KeyboardInterrupt
        waited = time.monotonic() - t0
        if give_up_s is not None and waited > give_up_s:
            raise SessionError(
                f"gave up reconnecting to {port} after {waited:.0f} s ({last_err}); {hint}"
            )
        time.sleep(delay)
        delay = min(delay * 2, max_s)
        try:
            board = open_board()
        except (VersionMismatchError, EmulatorConfigError):
            raise  # waiting does not mend these
        except (TransportError, BoardError, EmulatorError) as e:
            # the port is not back yet (or an emulated board is still unplugged)
            last_err = e
            continue
        try:
            check(board)
        except BaseException:
            board.close()
            raise
        return board
