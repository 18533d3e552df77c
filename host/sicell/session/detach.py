"""What a session that stops watching (Ctrl-C, ``request_stop``) tells the user."""

from __future__ import annotations

from pathlib import Path

from sicell.errors import Detached


def detached(started: bool | None, run_id: int, port: str, db_path: Path) -> Detached:
    """The Detached error for a session interrupted before START (``started`` False: nothing
    runs, the new database is gone), during it (None: not known) or after it (True: the board
    keeps running)."""
    resume = f"`sicell run --resume {db_path} --port {port}`"
    if started is False:
        return Detached(
            f"interrupted before the run started: nothing runs on {port} and no run "
            f"database was left behind ({db_path} does not exist)"
        )
    if started is None:
        return Detached(
            f"interrupted while starting run {run_id:08x} on {port}; whether the "
            f"board started it is not known (`sicell status --port {port}` tells): "
            f"if it runs, reattach with {resume}, otherwise delete {db_path}"
        )
    return Detached(
        f"detached from run {run_id:08x} on {port}; the board keeps running "
        f"and holds unstored records; reattach with {resume}"
    )
