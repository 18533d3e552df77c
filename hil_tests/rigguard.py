"""Leave every rig as it was found: what a test changes on a board is saved first and put back
afterwards — also when the test fails, when the link died under it, and across a reset.

A test that changes the board's calibration (or other saved state) takes a ``CalibrationGuard``:
it reads the board's entries, writes them to a marker file (one per board id, in the pytest
cache: ``.pytest_cache/d/sicell-hil/restore-<board id>.json``) and only then lets the test
change anything. ``restore()`` opens a fresh connection to the port (waiting for a board that
resets or re-enumerates to come back, same board id), writes the saved entries back, saves them
on the board's flash, reads them back, and deletes the marker only when they match. A marker
left behind (the host was killed mid-test, the board never came back) is found by the next run
(``restore_pending``, called once per session before any test touches the board), which
finishes the restore and says so.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sicell import reenumerate
from sicell.client import Board, BoardError, CalEntry
from sicell.protocol import messages as M
from sicell.transport import TransportError

CHANNELS = (0, 1, 2)  # voltage reading, current reading, current set point (firmware/calibration)
REOPEN_TIMEOUT_S = 60.0  # a reset board: boot (~1 s on a Pico) plus USB enumeration, with margin


def read_calibration(board: Board) -> dict[tuple[int, int], CalEntry]:
    """Every calibration entry the board has, by (range, channel)."""
    assert board.info is not None
    out: dict[tuple[int, int], CalEntry] = {}
    for r in range(board.info.n_ranges):
        for ch in CHANNELS:
            try:
                out[(r, ch)] = board.cal_get(r, ch)
            except BoardError as e:
                if ch == 2 and e.code in (M.E_RANGE, M.E_LENGTH):
                    continue  # a firmware with two channels per range
                raise
    return out


def reopen(port: str, board_id: str | None, timeout: float = REOPEN_TIMEOUT_S) -> Board:
    """A handshaken Board on ``port`` once the board is back (after a reset or a replug), the
    same board as ``board_id`` when given (sicell.reenumerate.reconnect, the host's helper)."""
    return reenumerate.reconnect(port, board_id, timeout)


def _marker(cache_dir: Path, board_id: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in board_id)
    return cache_dir / f"restore-{safe}.json"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _encode(port: str, entries: dict[tuple[int, int], CalEntry]) -> str:
    return json.dumps({"port": port, "calibration": [asdict(e) for e in entries.values()]})


def _decode(text: str) -> tuple[str, list[CalEntry]]:
    d = json.loads(text)
    return str(d["port"]), [CalEntry(**e) for e in d["calibration"]]


class CalibrationGuard:
    """Saves a board's calibration before a test changes it; ``restore()`` puts it back."""

    def __init__(
        self,
        port: str,
        board: Board,
        cache_dir: Path,
        *,
        reopen_fn: Callable[[str, str | None], Board] = reopen,
    ) -> None:
        assert board.info is not None
        self.port = port
        self.board_id = board.info.board_id
        self.before = read_calibration(board)
        self.marker = _marker(cache_dir, self.board_id)
        self._reopen = reopen_fn
        cache_dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.marker, _encode(port, self.before))

    def restore(self, board: Board | None = None) -> None:
        """Write the saved entries back (on ``board`` if it still answers, else on a fresh
        connection), save them on the board and check them; then drop the marker."""
        live = board
        if live is not None:
            try:
                live.ping()
            except (TransportError, BoardError):  # the link died under the test: reconnect
                with contextlib.suppress(TransportError):
                    live.close()
                live = None
        opened = live is None
        if live is None:
            live = self._reopen(self.port, self.board_id)
        try:
            put_back(live, list(self.before.values()))
            got = read_calibration(live)
        finally:
            if opened:
                live.close()
        if got != self.before:
            raise AssertionError(f"calibration not restored on board {self.board_id}: {got}")
        self.marker.unlink(missing_ok=True)


def put_back(board: Board, entries: list[CalEntry]) -> None:
    for e in entries:
        board.cal_set(e)
    board.cal_save()


@contextlib.contextmanager
def guarded_calibration(
    port: str, board: Board, cache_dir: Path, **kw: Any
) -> Iterator[CalibrationGuard]:
    """``with guarded_calibration(port, board, dir) as g:`` — restored on leaving, however."""
    g = CalibrationGuard(port, board, cache_dir, **kw)
    try:
        yield g
    finally:
        g.restore(board)


def restore_pending(port: str, cache_dir: Path, say: Callable[[str], None]) -> int:
    """Finish restores an earlier run left undone for the board on ``port``; how many."""
    if not cache_dir.is_dir():
        return 0
    markers = sorted(cache_dir.glob("restore-*.json"))
    if not markers:
        return 0
    with reopen(port, None) as b:
        assert b.info is not None
        mine = _marker(cache_dir, b.info.board_id)
        if mine not in markers:
            return 0
        _, entries = _decode(mine.read_text())
        put_back(b, entries)
        want = {(e.range, e.channel): e for e in entries}
        if read_calibration(b) != want:
            raise AssertionError(f"pending calibration restore on {port} did not hold")
        mine.unlink()
        say(f"restored board {b.info.board_id}'s calibration that an earlier run left changed")
        return 1
