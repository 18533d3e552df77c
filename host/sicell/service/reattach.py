"""Which run each board runs, across restarts of the service, and the runs it cannot reattach.

``service.json`` names the run database of every board id with a run going (written when the
run streams, removed when it ended). When a board is opened, :meth:`RunBook.plan` says whether
to reattach (the board still runs that run id: ``RunSession.resume``). A run it cannot
reattach gets a note, kept in the run database's ``service_note`` (and shown by ``runs()``):
its board runs another run or none, or was not found within the grace time after the start.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

from sicell import store as store_mod
from sicell.client import BoardInfo
from sicell.errors import SicellError, StoreError, UsageError
from sicell.service.boardview import RunRef
from sicell.service.datadir import DataDir
from sicell.service.runviews import run_facts

__all__ = ["RunBook"]

log = logging.getLogger("sicell.service")


class RunBook:
    """The service's record of its runs (thread-safe)."""

    def __init__(self, data: DataDir) -> None:
        self.data = data
        self._notes: dict[str, str] = {}  # run name -> why it is not logged (also in its db)
        self._lock = threading.Lock()

    def note(self, name: str) -> str | None:
        with self._lock:
            return self._notes.get(name)

    def listed(self) -> dict[str, str]:
        """run name -> board id, of the runs service.json says a board runs."""
        return {str(e.get("run")): b for b, e in self.data.load_runs().items()}

    def plan(self, info: BoardInfo) -> tuple[str, Path] | None:
        """(run name, database) to reattach to on the board of ``info``, or None."""
        entry = self.data.load_runs().get(info.board_id)
        if entry is None:
            return self._unlisted(info) if info.run_id else None
        name, rid = str(entry.get("run", "")), entry.get("run_id")
        try:
            db = self.data.db(name)
        except UsageError:
            db = None
        if db is None or not db.is_file():
            self.data.update_run(info.board_id, None)
            return None
        if info.run_id == rid:
            return name, db
        now = (
            f"runs run {info.run_id:08x} ({info.state_name})"
            if info.run_id
            else f"is {info.state_name} with no run"
        )
        self.data.update_run(info.board_id, None)
        self.mark(name, db, f"not reattached: board {info.board_id} {now}, not this run")
        return None

    def _unlisted(self, info: BoardInfo) -> tuple[str, Path] | None:
        """A database in runs/ of the board's run that has not ended and carries no note
        (started, but service.json was not written before a crash)."""
        rid = f"{info.run_id:08x}"
        for name in self.data.run_names():
            db = self.data.runs / f"{name}.db"
            with contextlib.suppress(StoreError):
                f = run_facts(db)
                if (
                    f["board_id"] == info.board_id
                    and f["run_id"] == rid
                    and not f["ended_at"]
                    and not f["note"]
                ):
                    return name, db
        return None

    def started(self, board_id: str, port: str, run: RunRef) -> None:
        """The run streams (a new one, or reattached): name it in service.json."""
        entry = {"run": run.name, "run_id": run.run_id, "port": port, "started_at": run.started_at}
        self.data.update_run(board_id, entry)
        with self._lock:
            noted = self._notes.pop(run.name, None)
        if noted is not None:
            self._set_note(run.db, None)

    def ended(self, board_id: str, run: RunRef, note: str | None) -> None:
        """The run ended (or cannot go on: ``note`` says why)."""
        entry = self.data.load_runs().get(board_id)
        if entry is not None and entry.get("run") == run.name:
            self.data.update_run(board_id, None)
        if note is not None:
            self.mark(run.name, run.db, note)

    def mark(self, name: str, db: Path, note: str) -> None:
        with self._lock:
            if self._notes.get(name) == note:
                return
            self._notes[name] = note
        log.warning("run %s: %s", name, note)
        self._set_note(db, note)

    def _set_note(self, db: Path, note: str | None) -> None:
        try:
            with store_mod.RunStore.open(db) as st:
                st.set_meta("service_note", note)
        except (SicellError, sqlite3.Error, OSError) as e:  # the note stays in memory only
            log.warning("%s: cannot write the service note: %s", db, e)

    def mark_unattached(self, logging_now: Iterable[str], grace_s: float) -> None:
        """Mark the runs service.json names that no board logs ``grace_s`` after the start."""
        now = set(logging_now)
        for board_id, entry in self.data.load_runs().items():
            name = str(entry.get("run", ""))
            if name in now:
                continue
            with contextlib.suppress(UsageError):
                db = self.data.db(name)
                if db.is_file():
                    self.mark(
                        name,
                        db,
                        f"not reattached: board {board_id} not found within {grace_s:g} s of "
                        "the service's start (it is reattached when it comes back)",
                    )
