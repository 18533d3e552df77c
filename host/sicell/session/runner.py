"""A run: one schedule on one board, streamed into one SQLite database.

:class:`RunSession` compiles the schedule against the board's limits, uploads and verifies it,
creates the run database (schedule metadata, board info, calibration), STARTs, and streams:

* records are batched and committed to SQLite in one durable transaction, and only then is the
  highest contiguous committed seq ACKed (so the board frees nothing the disk does not hold);
* holes, replays, decimated and lost records are the sequence book's business
  (:mod:`sicell.session.seqbook`); this module does the I/O it asks for;
* a serial failure (unplug, EIO) closes the port, reconnects with back-off, says HELLO, checks
  the run id and REPLAYs from the first seq not stored;
* ``RunSession.resume(db, port)`` reattaches a new host process to a running board the same way;
* the session owns its port from start to end (:mod:`sicell.session.owning`): no other process
  opens it, and what they ask (``sicell pause`` in a second terminal) runs between polls.

The session ends when the run's EV_RUN_END (or a terminal board state) has arrived and every
record up to it is stored. When the disk is full it stops ACKing (the board keeps the records),
tells the user, and leaves the database as it was after the last good commit.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sicell import store as store_mod
from sicell.client import Board, BoardInfo, Nack, Record, Status, state_name
from sicell.errors import (
    BoardTimeoutError,
    Detached,
    LinkLostError,
    RunMismatchError,
    SessionError,
    StoreFull,
    StoreFullError,
    TransportError,
)
from sicell.progress import Display, NullDisplay
from sicell.protocol import messages as M
from sicell.session import prestart, runmeta
from sicell.session.controls import Controls
from sicell.session.detach import detached
from sicell.session.options import SessionOptions
from sicell.session.outcome import run_outcome, safety_limits
from sicell.session.owning import PortOwner
from sicell.session.reopen import reopen
from sicell.session.seqbook import U32, Probe, Replay, SeqBook
from sicell.session.summary import LiveView, RunSummary, end_reason, summarize

# Writing these to the run's metadata may fail (disk full, I/O error); they are hints for a
# later resume or for the reader, and the records themselves are committed separately.
_META_ERRORS = (StoreFullError, sqlite3.Error)

StoreFactory = Callable[..., store_mod.RunStore]  # (path, meta, step rows), as RunStore.create


class RunSession:
    """Runs (or resumes) one schedule on one board into one database. Call :meth:`run`."""

    def __init__(
        self,
        port: str,
        db_path: str | Path,
        *,
        schedule: Any = None,
        resume: bool = False,
        name: str | None = None,
        display: Display | None = None,
        options: SessionOptions | None = None,
        extra_meta: dict[str, Any] | None = None,
        store_factory: StoreFactory | None = None,
        controls: Controls | None = None,
        on_commit: Callable[[Sequence[Record]], None] | None = None,
    ) -> None:
        if not resume and schedule is None:
            raise ValueError("a new run needs a schedule")
        self.port = port
        self.db_path = Path(db_path)
        self.schedule = schedule
        self.resuming = resume
        self.name = name or runmeta.short_port_name(port)
        self.display: Display = display if display is not None else NullDisplay()
        self.opt = options or SessionOptions()
        self.extra_meta = extra_meta or {}
        self._store_factory = store_factory
        # requests from other threads/processes, run on this session's board between polls
        self.owner = PortOwner(port, controls)
        self.controls = self.owner.controls
        # told every batch of records once it is durable (a service broadcasts them)
        self.on_commit = on_commit
        self.board: Board | None = None
        self.store: store_mod.RunStore | None = None
        self.info: BoardInfo | None = None
        self.run_id = 0
        self.book: SeqBook[Record] = SeqBook(
            0,
            time.monotonic(),
            gap_wait_s=self.opt.gap_wait_s,
            replay_retry_s=self.opt.replay_retry_s,
        )
        self.live = LiveView(self.name)
        self.end_reason: str | None = None
        self.end_code: int | None = None  # EV_RUN_END's reason (messages.RE_*) when seen
        self.last_commit = time.monotonic()
        self.samples = 0
        self.events = 0
        self.reconnects = 0
        self.framing_errors = 0
        self._meta_ranges: tuple[list[tuple[int, int]], list[tuple[int, int]]] = ([], [])
        self._last_display = 0.0
        self._stop_requested = threading.Event()
        # whether the board took this session's START: False before, True after, None when a
        # Ctrl-C cut START short and the board could not say (a resume: its run started before)
        self._started: bool | None = resume
        self._db_ours = False  # the file at db_path was created by this session

    # -- constructors ------------------------------------------------------------------------
    @classmethod
    def new(cls, schedule: Any, port: str, db_path: str | Path, **kw: Any) -> RunSession:
        return cls(port, db_path, schedule=schedule, **kw)

    @classmethod
    def resume(cls, db_path: str | Path, port: str, **kw: Any) -> RunSession:
        return cls(port, db_path, resume=True, **kw)

    def request_stop(self) -> None:
        """Ask :meth:`run` to detach at its next loop (from another thread)."""
        self._stop_requested.set()

    # -- the book's figures, under the names callers use -------------------------------------
    @property
    def base(self) -> int | None:
        """Seq of this run's EV_RUN_START (None until it is known)."""
        return self.book.base

    @property
    def committed(self) -> int:
        return self.book.committed

    @property
    def board_last_seq(self) -> int:
        """The highest seq the board reported producing (STATUS.last_seq)."""
        return self.book.board_last_seq

    @property
    def board_state(self) -> int | None:
        return self.book.board_state

    # -- top level ---------------------------------------------------------------------------
    def run(self) -> RunSummary:
        self.owner.take()
        try:
            if self.resuming:
                self._attach()
            else:
                self._start_new()
            self._stream()
        except KeyboardInterrupt:
            raise self._interrupted() from None
        finally:
            self._close()
            self.owner.release()
        return self.summary()

    def _interrupted(self) -> Detached:
        """What a Ctrl-C (or ``request_stop``) leaves: before START nothing runs and the new
        database goes again; after it the board keeps running."""
        if self._started is False:
            self._discard_new_db()
        else:
            self._detach_quietly()
        return detached(self._started, self.run_id, self.port, self.db_path)

    def _discard_new_db(self) -> None:
        """Close and delete the database of a run that never started (only one this session
        created: a file that was there before is never touched)."""
        if self.store is not None:
            with contextlib.suppress(sqlite3.Error):  # it goes away anyway
                self.store.close()
            self.store = None
        if self._db_ours:
            runmeta.remove_db(self.db_path)
            self._db_ours = False

    def _took_start(self, board: Board) -> bool | None:
        """After a Ctrl-C during START: does the board run this session's run? None when it
        cannot tell (the link failed, or a second Ctrl-C)."""
        try:
            st = board.status()
        except (TransportError, KeyboardInterrupt):
            return None
        return bool(st.run_id == self.run_id)  # (a fresh random id: only START sets it)

    def _close(self) -> None:
        if self.board is not None:
            self.framing_errors += self.board.link.framing_errors
            self.board.close()
            self.board = None
        if self.store is not None:
            # closing after a failure: what was committed is on disk either way
            with contextlib.suppress(sqlite3.Error):
                self.store.close()
            self.store = None

    def _detach_quietly(self) -> None:
        # Interrupted: keep what can be kept; anything not stored stays on the board.
        with contextlib.suppress(StoreFull, *_META_ERRORS):
            self._commit(force=True, ack=False)
            self.book.finish()
            self._book_news(last=True)
        ack = self.book.ack_seq()
        if self.board is not None and ack is not None:
            with contextlib.suppress(TransportError):
                self.board.ack(ack)

    # -- connecting --------------------------------------------------------------------------
    def _open_board(self) -> Board:
        board = Board.open(
            self.port,
            record_sink=self._on_record,
            nack_sink=self._on_nack,
            timeout=self.opt.request_timeout_s,
            hello_timeout=self.opt.hello_timeout_s,
        )
        self.book.connected(time.monotonic())
        return board

    def _start_new(self) -> None:
        if self.db_path.exists():
            raise SessionError(
                f"{self.db_path} exists; choose another --db, or reattach to its run with "
                f"`sicell run --resume {self.db_path} --port {self.port}`"
            )
        sch = self.schedule
        self.board = board = self._open_board()
        info = board.info
        assert info is not None
        self.info = info
        self.owner.noted(info)
        self._say_cell_history(board)
        ready = prestart.prepare(
            board, sch, info, port=self.port, name=self.name, extra=self.extra_meta
        )
        self.run_id = self.book.run_id = ready.run_id
        meta = ready.meta
        self._load_schedule_facts(sch, meta)
        if self._stop_requested.is_set():  # asked to stop while uploading: do not start
            raise KeyboardInterrupt
        factory = self._store_factory or store_mod.RunStore.create
        self._db_ours = True  # (create refuses an existing file)
        self.store = store = factory(self.db_path, meta, sch.step_rows())
        before = time.time()
        try:
            board.start(self.run_id)
        except KeyboardInterrupt:
            self._started = self._took_start(board)
            raise
        except BaseException:
            # not started: the database of a run that never ran goes again
            self._discard_new_db()
            raise
        after = time.time()
        self._started = True
        with contextlib.suppress(*_META_ERRORS):  # Unix Time falls back to started_at
            for key, value in runmeta.start_time_meta(before, after).items():
                store.set_meta(key, value)
        self.book.board_is(M.ST_RUNNING)
        self.display.note(
            self.name,
            f"run {self.run_id:08x} started on {self.port} (board {info.board_id}, firmware "
            f"{info.fw_version_str}); logging to {self.db_path}",
        )

    def _say_cell_history(self, board: Board) -> None:
        """An emulated cell that was cycled before says so first (its numbers depend on it)."""
        emu_info = getattr(board.link.ser, "emulator_info", None)
        if emu_info:
            from sicell.urlhandler.protocol_emu import history_note

            note = history_note(emu_info)
            if note is not None:
                self.display.note(self.name, note)

    def _load_schedule_facts(self, sch: Any, meta: Mapping[str, Any]) -> None:
        self.live.offset_v, rows, self.live.estimate_s = runmeta.schedule_facts(sch, meta)
        if rows:
            self.live.set_steps(rows)

    def _attach(self) -> None:
        if not self.db_path.exists():
            raise SessionError(f"{self.db_path}: no such run database")
        self.store = store_mod.RunStore.open(self.db_path)
        meta = self.store.meta()
        rid = meta.get("run_id")
        if not isinstance(rid, int):
            raise SessionError(f"{self.db_path} records no run id; it cannot be resumed")
        self.run_id = self.book.run_id = rid
        if self.schedule is None and isinstance(meta.get("schedule_toml"), str):
            from sicell.schedule import parse_schedule

            self.schedule = runmeta.parse_or_none(parse_schedule, meta["schedule_toml"])
        self._load_schedule_facts(self.schedule, meta)
        ext = self.store.extent()
        first = meta.get("first_seq")
        self.book.resume(first if isinstance(first, int) else None, ext.last_seq)
        self.book.restore(*runmeta.stored_gone(meta))
        self._meta_ranges = (list(self.book.lost_ranges), list(self.book.reset_ranges))
        self.samples, self.events = ext.samples, ext.events
        self.book.end_seq = ext.end_seq
        self.board = board = self._open_board()
        info = board.info
        assert info is not None
        self.info = info
        self._check_run(info)
        self.owner.noted(info)
        self.book.board_is(info.state)
        self._replay(self.book.resume_replay(), time.monotonic())
        self.display.note(
            self.name,
            f"reattached to run {self.run_id:08x} on {self.port} ({info.state_name}); "
            f"{self.samples} samples already stored, replaying from seq {self.committed + 1}",
        )

    def _check_run(self, info: BoardInfo | None) -> None:
        assert info is not None
        if info.run_id != self.run_id:
            raise RunMismatchError(
                f"{self.port} is running run {info.run_id:08x} ({info.state_name}), but "
                f"{self.db_path} is run {self.run_id:08x}; wrong board or port?"
            )

    def _reconnect(self, err: Exception) -> None:
        if self.board is not None:
            self.framing_errors += self.board.link.framing_errors
            self.board.close()
            self.board = None
        self.display.note(self.name, f"link lost ({err}); reconnecting to {self.port}")
        self.board = board = reopen(
            self._open_board,
            lambda b: self._check_run(b.info),
            first_error=err,
            initial_s=self.opt.reconnect_initial_s,
            max_s=self.opt.reconnect_max_s,
            give_up_s=self.opt.reconnect_give_up_s,
            stop=self._stop_requested,
            port=self.port,
            hint=f"the board keeps running; reattach with "
            f"`sicell run --resume {self.db_path} --port {self.port}`",
        )
        assert board.info is not None
        self.book.board_is(board.info.state)
        self.reconnects += 1
        self._replay(self.book.resume_replay(), time.monotonic())
        self.display.note(self.name, f"reconnected; replaying from seq {self.committed + 1}")

    # -- records -----------------------------------------------------------------------------
    def _on_record(self, rec: Record) -> None:
        anchored = self.book.base is not None
        self.book.add(rec, time.monotonic())
        if not anchored and self.book.base is not None and self.store is not None:
            with contextlib.suppress(*_META_ERRORS):  # resume falls back to the stored seqs
                self.store.set_meta("first_seq", self.book.base)

    def _on_nack(self, nack: Nack) -> None:
        if nack.request == M.REPLAY and nack.code == M.E_SEQ_GONE:
            self.book.seq_gone(nack.detail & U32)

    def _commit(self, *, force: bool = False, ack: bool = True) -> bool:
        """Store the ready records in one transaction, then ACK; True when it stored."""
        n = self.book.ready_count
        if n <= 0:
            return False
        now = time.monotonic()
        if (
            not force
            and n < self.opt.batch_records
            and now - self.last_commit < self.opt.batch_interval_s
        ):
            return False
        batch = self.book.ready()
        samples = [
            store_mod.SampleRecord.from_wire(r.seq, r.values) for r in batch.records if r.is_sample
        ]
        events = [
            store_mod.EventRecord.from_wire(r.seq, r.values)
            for r in batch.records
            if not r.is_sample
        ]
        assert self.store is not None
        try:
            self.store.add(samples, events)
        except StoreFullError as e:
            raise StoreFull(
                f"disk full writing {self.db_path} ({e}): records up to seq {self.committed} "
                f"are stored, nothing after is half-written; the board keeps running and holds "
                f"the rest; free space, then `sicell run --resume {self.db_path} "
                f"--port {self.port}`"
            ) from e
        # durable: now the board may free them
        self.book.stored(batch)
        self.last_commit = now
        self.samples += len(samples)
        self.events += len(events)
        for rec in batch.records:
            if rec.is_sample:
                self.live.add_sample(rec.fields)
            elif rec.fields["code"] == M.EV_RUN_END:
                self.end_code = rec.fields["reason"]
                self.end_reason = end_reason(self.end_code)
        self._book_news()
        if ack and self.board is not None:
            self.board.ack(batch.top)
        if self.on_commit is not None:
            self.on_commit(batch.records)
        return True

    def _book_news(self, *, last: bool = False) -> None:
        """Show the book's notes; record lost and reset-skipped seqs in the metadata, and at
        the ``last`` call of the session the number decimated (a resume adds to them)."""
        for note in self.book.take_notes():
            self.display.note(self.name, note)
        if self.store is None:
            return
        ranges = (self.book.lost_ranges, self.book.reset_ranges)
        with contextlib.suppress(*_META_ERRORS):
            if ranges != self._meta_ranges:
                self._meta_ranges = (list(ranges[0]), list(ranges[1]))
                self.store.set_meta("lost_seqs", [list(r) for r in ranges[0]])
                if ranges[1]:
                    self.store.set_meta("reset_skips", [list(r) for r in ranges[1]])
            if last and self.book.decimated:
                self.store.set_meta("decimated_records", self.book.decimated)

    # -- gap healing -------------------------------------------------------------------------
    def _store_and_ack(self, board: Board) -> None:
        """Store and ACK everything ready: the board then holds nothing older than the first
        hole, so its oldest held seq says whether it still has the hole."""
        if not self._commit(force=True):
            ack = self.book.ack_seq()
            if ack is not None:
                board.ack(ack)

    def _replay(self, replay: Replay, now: float) -> None:
        board = self.board
        if board is None:
            return
        if replay.from_seq is None:
            # This run's first record is not known yet: ask for everything the board holds.
            st = board.status()
            self._note_status(st)
            from_seq = st.first_seq
        else:
            self._store_and_ack(board)
            from_seq = replay.from_seq
        board.replay(from_seq)
        self.book.replay_sent(replay, now)

    def _probe(self, probe: Probe, now: float) -> None:
        board = self.board
        if board is None:
            return
        self._store_and_ack(board)
        self.book.probe_sent(probe, now)
        self._note_status(board.status())

    def _note_status(self, st: Status) -> None:
        self.book.status(st.state, st.first_seq, st.last_seq, time.monotonic())

    # -- streaming ---------------------------------------------------------------------------
    def _stream(self) -> None:
        last_status = 0.0
        end_confirmed = False
        probed = False
        while True:
            if self._stop_requested.is_set():
                raise KeyboardInterrupt
            now = time.monotonic()
            try:
                assert self.board is not None
                if not probed:  # (a probe's STATUS read what had come meanwhile)
                    self.board.poll(0.05)
                probed = False
                self._commit()
                self._serve_controls()
                now = time.monotonic()
                if now - last_status >= self.opt.status_interval_s or (
                    self.book.end_seq is not None and not end_confirmed
                ):
                    st = self.board.status()
                    self._note_status(st)
                    last_status = now
                    if self.book.end_seq is not None:
                        end_confirmed = True
                    if st.run_id != self.run_id and st.has_run:
                        raise RunMismatchError(
                            f"{self.port} now runs run {st.run_id:08x}, not "
                            f"{self.run_id:08x}; stopping the session"
                        )
                    self._update_display(st)
                if self.book.finished():
                    self._commit(force=True)
                    if self.book.finished():
                        break
                request = self.book.next_request(now)
                if isinstance(request, Probe):
                    self._probe(request, now)
                    probed = True
                elif request is not None:
                    self._replay(request, now)
            except (LinkLostError, BoardTimeoutError) as e:
                self._commit(force=True, ack=False)
                self._reconnect(e)
                last_status = 0.0
                continue
            if now - self._last_display >= self.opt.display_interval_s:
                self._update_display(None)
        self._commit(force=True)
        if self.board is not None:
            # The final ACK may have been lost; repeat it so the board frees everything.
            with contextlib.suppress(TransportError):
                self.board.ack(self.committed)
        self.book.finish()
        self._book_news(last=True)
        self._update_display(None, final=True)
        assert self.store is not None
        with contextlib.suppress(*_META_ERRORS):
            self.store.set_meta("ended_at", runmeta.now_iso())
            state = self.book.board_state
            self.store.set_meta("end_state", state_name(state) if state is not None else "")

    def _serve_controls(self) -> None:
        assert self.board is not None
        self.owner.serve(self.board, self._controlled)

    def _controlled(self, st: Status) -> None:
        self._note_status(st)
        self._update_display(st)

    def _update_display(self, st: Status | None, *, final: bool = False) -> None:
        self._last_display = time.monotonic()
        progress = self.live.snapshot(
            samples=self.samples,
            events=self.events,
            last_seq=self.committed,
            state=self.book.board_state,
            status=st,
            final=final,
        )
        self.display.update(progress)

    # -- summary -----------------------------------------------------------------------------
    def summary(self) -> RunSummary:
        """The run's summary, with its outcome (:mod:`sicell.session.outcome`)."""
        out = summarize(
            self.db_path,
            self.name,
            self.run_id,
            self.book,
            self.live,
            end_reason=self.end_reason,
            samples=self.samples,
            events=self.events,
            reconnects=self.reconnects,
            framing_errors=self.framing_errors,
        )
        limits = safety_limits(self.schedule, self.info)
        out.outcome = run_outcome(
            self.db_path, self.book.board_state, self.end_code, limits, self.port
        )
        return out
