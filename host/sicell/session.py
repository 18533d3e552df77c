"""A run: one schedule on one board, streamed into one SQLite database.

:class:`RunSession` compiles the schedule against the board's limits, uploads and verifies it,
creates the run database (schedule metadata, board info, calibration), STARTs, and streams:

* records are batched and committed to SQLite in one durable transaction, and only then is the
  highest contiguous committed seq ACKed (so the board frees nothing the disk does not hold);
* a hole in the sequence (a frame lost on the wire) that persists is healed with REPLAY from
  the first missing seq; duplicates and reordering are absorbed;
* a serial failure (unplug, EIO) closes the port, reconnects with back-off, says HELLO, checks
  the run id and REPLAYs from the last stored seq + 1;
* ``RunSession.resume(db, port)`` reattaches a new host process to a running board the same way.

The session ends when the run's EV_RUN_END (or a terminal board state) has arrived and every
record up to it is stored. When the disk is full it stops ACKing (the board keeps the records),
tells the user, and leaves the database as it was after the last good commit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import importlib
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sicell.client import (
    Board,
    BoardInfo,
    Nack,
    Record,
    Status,
    new_run_id,
    state_name,
)
from sicell.errors import (
    BoardBusyError,
    BoardError,
    BoardTimeoutError,
    CalibrationError,
    Detached,
    RunMismatchError,
    SessionError,
    StoreFull,
)
from sicell.progress import Display, NullDisplay, Progress
from sicell.protocol import messages
from sicell.protocol import schedule as wire_schedule
from sicell.transport import LinkLostError, TransportError, VersionMismatchError

M = messages


# ---- options and results --------------------------------------------------------------------
@dataclass
class SessionOptions:
    batch_records: int = 500  # commit at least this often (records) ...
    batch_interval_s: float = 0.5  # ... or this often (seconds)
    gap_wait_s: float = 0.4  # a hole this old is healed with REPLAY
    replay_retry_s: float = 2.0  # repeat an unanswered REPLAY after this long
    status_interval_s: float = 2.0  # STATUS poll (tail losses, terminal states, display)
    reconnect_initial_s: float = 0.25
    reconnect_max_s: float = 10.0
    reconnect_give_up_s: float | None = None  # None: keep trying for as long as it takes
    hello_timeout_s: float = 5.0
    request_timeout_s: float = 1.0
    display_interval_s: float = 0.25


@dataclass
class CycleCapacity:
    cycle: int
    lith_ah: float | None
    delith_ah: float | None
    delith_mah_g: float | None = None  # when the run's metadata gives the active mass
    delith_mah_cm2: float | None = None  # when it gives the electrode area

    @property
    def ce(self) -> float | None:
        if self.lith_ah and self.delith_ah is not None and self.lith_ah > 0:
            return self.delith_ah / self.lith_ah
        return None


@dataclass
class RunSummary:
    db_path: Path
    board: str
    run_id: int
    state: str
    end_reason: str | None
    samples: int
    events: int
    first_seq: int | None
    last_seq: int | None
    elapsed_s: float | None
    cycles: list[CycleCapacity] = field(default_factory=list)
    complete_cycles: int = 0
    board_cycle: int | None = None  # the board's cycle counter at the last sample
    reconnects: int = 0
    replays: int = 0
    lost_seqs: int = 0
    decimated: int = 0
    framing_errors: int = 0

    def lines(self) -> list[str]:
        from sicell.progress import fmt_capacity, fmt_duration

        out = [
            f"run {self.run_id:08x} on {self.board}: {self.state}"
            + (f" ({self.end_reason})" if self.end_reason else ""),
            f"database: {self.db_path}",
            f"stored: {self.samples} samples, {self.events} events"
            + (
                (
                    f" (seq {self.first_seq}..{self.last_seq}, each exactly once)"
                    if not (self.decimated or self.lost_seqs)
                    else f" (seq {self.first_seq}..{self.last_seq}, none twice, "
                    f"{self.decimated + self.lost_seqs} missing: see below)"
                )
                if self.first_seq is not None
                else ""
            ),
            f"test time: {fmt_duration(self.elapsed_s)}",
            f"link: {self.reconnects} reconnects, {self.replays} replays, "
            f"{self.framing_errors} bad frames, {self.lost_seqs} records lost",
            *(
                [
                    f"decimated by the board while no host listened: {self.decimated} records "
                    "(host-loss policy; the samples after them carry the gap flag)"
                ]
                if self.decimated
                else []
            ),
            f"cycles: {self.complete_cycles} complete"
            + (f" (board cycle counter at {self.board_cycle})" if self.board_cycle else ""),
        ]
        shown: list[CycleCapacity | None] = list(self.cycles)
        if len(shown) > 8:
            shown = [*self.cycles[:3], None, *self.cycles[-3:]]
        for c in shown:
            if c is None:
                out.append(f"  ... ({len(self.cycles) - 6} more cycles in the database)")
                continue
            ce = c.ce
            norm = [
                f"{v:{f}} {unit}"
                for v, f, unit in (
                    (c.delith_mah_g, ".0f", "mAh/g"),
                    (c.delith_mah_cm2, ".3f", "mAh/cm²"),
                )
                if v is not None
            ]
            out.append(
                f"  cycle {c.cycle}: lithiation {fmt_capacity(c.lith_ah)}, "
                f"delithiation {fmt_capacity(c.delith_ah)}"
                + (f" ({', '.join(norm)})" if norm else "")
                + (f", CE {ce * 100:.2f} %" if ce is not None else "")
            )
        return out


# ---- live half-cycle tracking (for the display) ---------------------------------------------
class _HalfCycleTracker:
    """Capacity of the half-cycle in progress from SAMPLE records (charge resets per step)."""

    def __init__(self, rest_na: int = 1) -> None:
        self.rest_na = rest_na
        self.sign = 0
        self.done_nah = 0
        self.step_key: tuple[int, int] | None = None
        self.step_q = 0
        self.step_sign = 0

    def add(self, f: dict[str, int]) -> None:
        key = (f["step"], f["cycle"])
        first = bool(f["flags"] & M.F_STEP_FIRST)
        if key != self.step_key or first:
            if self.step_key is not None and self.step_sign == self.sign:
                self.done_nah += abs(self.step_q)
            self.step_key = key
            self.step_q = 0
            self.step_sign = 0
        i = f["i_na"]
        if abs(i) > self.rest_na:
            s = 1 if i > 0 else -1
            if s != self.sign:
                self.sign = s
                self.done_nah = 0
            self.step_sign = s
        self.step_q = f["q_nah"]

    @property
    def capacity_ah(self) -> float:
        q = self.done_nah + (abs(self.step_q) if self.step_sign == self.sign else 0)
        return q * 1e-9


def _now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(str(path) + suffix)


# ---- the session ----------------------------------------------------------------------------
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
        store_factory: Any = None,
    ) -> None:
        if not resume and schedule is None:
            raise ValueError("a new run needs a schedule")
        self.port = port
        self.db_path = Path(db_path)
        self.schedule = schedule
        self.resuming = resume
        self.name = name or short_port_name(port)
        self.display: Display = display if display is not None else NullDisplay()
        self.opt = options or SessionOptions()
        self.extra_meta = extra_meta or {}
        self._store_factory = store_factory
        self.board: Board | None = None
        self.store: Any = None
        self.info: BoardInfo | None = None
        self.run_id = 0
        self.offset_v = 0.0
        self.step_kinds: list[str] = []
        self.estimate_s: float | None = None
        # sequence bookkeeping
        self.base: int | None = None  # seq of this run's EV_RUN_START (None: not known yet)
        self.committed = 0  # highest seq stored with every lower run seq stored (or lost)
        self.pending: dict[int, Record] = {}
        self.skipped: set[int] = set()  # seqs the board decimated (never to come)
        self.decimated = 0
        self.lost_count = 0
        self.replay_counts: dict[int, int] = {}
        self.ready_upto = 0  # pending holds committed+1 .. ready_upto contiguously
        self.end_seq: int | None = None  # seq of EV_RUN_END once stored
        self.end_reason: str | None = None
        self.board_last_seq = 0
        self.board_state: int | None = None
        self.hole_since: float | None = None
        self.last_replay: tuple[int, float] | None = None
        self.last_commit = time.monotonic()
        self.last_rx = time.monotonic()
        self.status_at = 0.0
        self.gone_nacks: list[Nack] = []
        self.lost_ranges: list[tuple[int, int]] = []
        # counters
        self.samples = 0
        self.events = 0
        self.reconnects = 0
        self.replays = 0
        self.framing_errors = 0
        self._tracker = _HalfCycleTracker()
        self._last_sample: dict[str, int] | None = None
        self._progress = Progress(board=self.name)
        self._last_display = 0.0
        self._stop_requested = threading.Event()

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

    # -- store access (import late: the store module is independent of the wire) --------------
    def _store_mod(self) -> Any:
        return importlib.import_module("sicell.store")

    # -- top level ---------------------------------------------------------------------------
    def run(self) -> RunSummary:
        try:
            if self.resuming:
                self._attach()
            else:
                self._start_new()
            self._stream()
        except KeyboardInterrupt:
            self._detach_quietly()
            raise Detached(
                f"detached from run {self.run_id:08x} on {self.port}; the board keeps running "
                f"and holds unstored records; reattach with "
                f"`sicell run --resume {self.db_path} --port {self.port}`"
            ) from None
        finally:
            self._close()
        return self.summary()

    def _close(self) -> None:
        if self.board is not None:
            self.framing_errors += self.board.link.framing_errors
            self.board.close()
            self.board = None
        if self.store is not None:
            with contextlib.suppress(Exception):
                self.store.close()
            self.store = None

    def _detach_quietly(self) -> None:
        with contextlib.suppress(Exception):
            self._commit(force=True, ack=False)
        if self.board is not None:
            with contextlib.suppress(Exception):
                self.board.ack(self.committed)

    # -- connecting --------------------------------------------------------------------------
    def _open_board(self) -> Board:
        board = Board.open(
            self.port,
            record_sink=self._on_record,
            nack_sink=self._on_nack,
            timeout=self.opt.request_timeout_s,
            hello_timeout=self.opt.hello_timeout_s,
        )
        self.last_rx = time.monotonic()
        return board

    def _start_new(self) -> None:
        import sicell.schedule as sched_mod

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
        if info.has_run:
            raise BoardBusyError(
                f"{self.port} is {info.state_name} with run {info.run_id:08x}; stop it with "
                f"`sicell stop --port {self.port}` or reattach with `sicell run --resume RUN.db "
                f"--port {self.port}`"
            )
        limits = sched_mod.BoardLimits.from_info(info.as_dict())
        blob = sch.compile(limits)
        board.upload_schedule(blob)
        calibration = [c.as_dict() for c in board.calibration()]
        self.run_id = new_run_id()
        meta: dict[str, Any] = dict(sch.metadata())
        meta.update(info.metadata())
        meta.update(
            {
                "calibration": calibration,
                "started_at": _now_iso(),
                "run_id": self.run_id,
                "port": self.port,
                "board_name": self.name,
                "schedule_sha256": _sha256(blob),
                "host_loss_policy": _policy_name(blob),
            }
        )
        meta.update(self.extra_meta)
        self._load_schedule_facts(sch, meta)
        store_mod = self._store_mod()
        factory = self._store_factory or store_mod.RunStore.create
        self.store = factory(self.db_path, meta, sch.step_rows())
        try:
            board.start(self.run_id)
        except BaseException:
            with contextlib.suppress(Exception):
                self.store.close()
            self.store = None
            _remove_db(self.db_path)
            raise
        self.board_state = M.ST_RUNNING
        self.display.note(
            self.name,
            f"run {self.run_id:08x} started on {self.port} (board {info.board_id}, firmware "
            f"{info.fw_version_str}); logging to {self.db_path}",
        )

    def _load_schedule_facts(self, sch: Any, meta: dict[str, Any]) -> None:
        off = meta.get("reference_offset_v")
        self.offset_v = float(off) if isinstance(off, int | float) else 0.0
        try:
            rows = sch.step_rows()
            self.step_kinds = [str(_row_get(r, "kind", "")) for r in rows]
        except Exception:
            self.step_kinds = []
        try:
            est = sch.estimate_duration_s()
            self.estimate_s = float(est) if est is not None and math.isfinite(est) else None
        except Exception:
            self.estimate_s = None

    def _attach(self) -> None:
        if not self.db_path.exists():
            raise SessionError(f"{self.db_path}: no such run database")
        store_mod = self._store_mod()
        self.store = store_mod.RunStore.open(self.db_path)
        meta = dict(self.store.meta())
        rid = meta.get("run_id")
        if not isinstance(rid, int):
            raise SessionError(f"{self.db_path} records no run id; it cannot be resumed")
        self.run_id = rid
        if self.schedule is None and isinstance(meta.get("schedule_toml"), str):
            try:
                import sicell.schedule as sched_mod

                self.schedule = sched_mod.parse_schedule(meta["schedule_toml"])
            except Exception:
                self.schedule = None
        if self.schedule is not None:
            self._load_schedule_facts(self.schedule, meta)
        else:
            off = meta.get("reference_offset_v")
            self.offset_v = float(off) if isinstance(off, int | float) else 0.0
        last = self.store.last_seq()
        if last:
            # This run's first record is stored, so the sequence is anchored.
            self.base = int(meta.get("first_seq") or 0) or int(last)
            self.committed = self.ready_upto = int(last)
        self._count_stored()
        self.board = board = self._open_board()
        info = board.info
        assert info is not None
        self.info = info
        self._check_run(info)
        self.board_state = info.state
        self._replay(time.monotonic())
        self.display.note(
            self.name,
            f"reattached to run {self.run_id:08x} on {self.port} ({info.state_name}); "
            f"{self.samples} samples already stored, replaying from seq {self.committed + 1}",
        )

    def _count_stored(self) -> None:
        """Stored sample/event counts and the last point (for the display and summary)."""
        import sqlite3

        try:
            con = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)
            try:
                self.samples = int(con.execute("SELECT COUNT(*) FROM samples").fetchone()[0])
                self.events = int(con.execute("SELECT COUNT(*) FROM events").fetchone()[0])
                row = con.execute(
                    "SELECT seq FROM events WHERE code = ? ORDER BY seq DESC LIMIT 1",
                    (M.EV_RUN_END,),
                ).fetchone()
                if row is not None:
                    self.end_seq = int(row[0])
            finally:
                con.close()
        except sqlite3.Error:
            pass

    def _check_run(self, info: BoardInfo) -> None:
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
        delay = self.opt.reconnect_initial_s
        t0 = time.monotonic()
        last_err: Exception = err
        while True:
            if self._stop_requested.is_set():
                raise KeyboardInterrupt
            waited = time.monotonic() - t0
            give_up = self.opt.reconnect_give_up_s
            if give_up is not None and waited > give_up:
                raise SessionError(
                    f"gave up reconnecting to {self.port} after {waited:.0f} s ({last_err}); "
                    f"the board keeps running; reattach with "
                    f"`sicell run --resume {self.db_path} --port {self.port}`"
                )
            time.sleep(delay)
            delay = min(delay * 2, self.opt.reconnect_max_s)
            try:
                board = self._open_board()
            except VersionMismatchError:
                raise
            except (TransportError, BoardError) as e:
                last_err = e
                continue
            info = board.info
            assert info is not None
            try:
                self._check_run(info)
            except RunMismatchError:
                board.close()
                raise
            self.board = board
            self.board_state = info.state
            break
        self.reconnects += 1
        self.last_replay = None
        self.hole_since = None
        if self.base is not None and self.committed > 0:
            self.board.ack(self.committed)
        self._replay(time.monotonic())
        self.display.note(self.name, f"reconnected; replaying from seq {self.committed + 1}")

    # -- records -----------------------------------------------------------------------------
    def _on_record(self, rec: Record) -> None:
        self.last_rx = time.monotonic()
        if self.base is None:
            if (
                rec.is_event
                and rec.fields["code"] == M.EV_RUN_START
                and (rec.fields["value"] & 0xFFFFFFFF) == self.run_id
            ):
                self.base = rec.seq
                self.committed = self.ready_upto = rec.seq - 1
                if self.store is not None:
                    with contextlib.suppress(Exception):
                        self.store.set_meta("first_seq", rec.seq)
                for s in [s for s in self.pending if s < rec.seq]:
                    del self.pending[s]
                for r in list(self.pending.values()):
                    self._mark_gap(r)
            elif len(self.pending) > 100_000:
                return
        elif rec.seq <= self.committed:
            return  # a duplicate of something stored
        self.pending[rec.seq] = rec
        if self.base is not None:
            self._mark_gap(rec)
            self._advance()

    def _advance(self) -> None:
        while self.ready_upto + 1 in self.pending or self.ready_upto + 1 in self.skipped:
            self.ready_upto += 1

    def _mark_gap(self, rec: Record) -> None:
        """A sample flagged F_GAP says the board decimated samples before it (host-loss policy
        "decimate" while the host was away; events are never dropped): the seqs missing
        between it and the previous stored-or-pending sample will never come."""
        if not (rec.is_sample and rec.fields["flags"] & M.F_GAP):
            return
        s = rec.seq - 1
        while s > self.committed:
            prev = self.pending.get(s)
            if prev is not None:
                if prev.is_sample:
                    break
            elif s not in self.skipped:
                self.skipped.add(s)
                self.decimated += 1
            s -= 1

    def _on_nack(self, nack: Nack) -> None:
        if nack.request == M.REPLAY and nack.code == M.E_SEQ_GONE:
            self.gone_nacks.append(nack)

    def _handle_gone(self) -> None:
        """The board no longer holds records we lack: note them as lost and move on."""
        while self.gone_nacks:
            nack = self.gone_nacks.pop(0)
            oldest = nack.detail & 0xFFFFFFFF
            if self.base is None:
                continue
            first_missing = self.committed + 1
            if oldest <= first_missing:
                continue
            # Records we hold between committed and oldest are kept; only true holes are lost.
            lost_from = first_missing
            missing = [
                s
                for s in range(lost_from, oldest)
                if s not in self.pending and s not in self.skipped
            ]
            if not missing:
                continue
            self.lost_ranges.append((missing[0], missing[-1]))
            self.lost_count += len(missing)
            self.display.note(
                self.name,
                f"{len(missing)} records in {missing[0]}..{missing[-1]} are gone from the board "
                "and cannot be recovered; continuing",
            )
            self.skipped.update(missing)
            self._advance()
            self._commit(force=True)
            with contextlib.suppress(Exception):
                self.store.set_meta("lost_seqs", [list(r) for r in self.lost_ranges])
            self.hole_since = None
            self.last_replay = None

    def _commit(self, *, force: bool = False, ack: bool = True) -> None:
        """Store pending records committed+1..ready_upto in one transaction, then ACK."""
        n = self.ready_upto - self.committed
        if n <= 0:
            return
        now = time.monotonic()
        if (
            not force
            and n < self.opt.batch_records
            and now - self.last_commit < self.opt.batch_interval_s
        ):
            return
        store_mod = self._store_mod()
        samples: list[Any] = []
        events: list[Any] = []
        end_seq: int | None = None
        end_reason: str | None = None
        last_sample: dict[str, int] | None = None
        recs = [
            self.pending[s]
            for s in range(self.committed + 1, self.ready_upto + 1)
            if s in self.pending
        ]
        for rec in recs:
            if rec.is_sample:
                samples.append(store_mod.SampleRecord.from_wire(rec.seq, rec.values))
                last_sample = rec.fields
            else:
                events.append(store_mod.EventRecord.from_wire(rec.seq, rec.values))
                if rec.fields["code"] == M.EV_RUN_END:
                    end_seq = rec.seq
                    end_reason = _end_reason(rec.fields["reason"])
        try:
            self.store.add(samples, events)
        except store_mod.StoreFullError as e:
            raise StoreFull(
                f"disk full writing {self.db_path} ({e}): records up to seq {self.committed} "
                f"are stored, nothing after is half-written; the board keeps running and holds "
                f"the rest; free space, then `sicell run --resume {self.db_path} "
                f"--port {self.port}`"
            ) from e
        # durable: now the board may free them
        top = self.ready_upto
        for s in range(self.committed + 1, top + 1):
            self.pending.pop(s, None)
            self.skipped.discard(s)
        self.committed = top
        self.last_commit = now
        self.samples += len(samples)
        self.events += len(events)
        for rec in recs:
            if rec.is_sample:
                self._tracker.add(rec.fields)
        if last_sample is not None:
            self._last_sample = last_sample
        if end_seq is not None:
            self.end_seq = end_seq
            self.end_reason = end_reason
        if ack and self.board is not None:
            self.board.ack(top)

    # -- gap healing -------------------------------------------------------------------------
    def _replay(self, now: float) -> None:
        if self.board is None:
            return
        if self.base is None:
            # This run's first record is not known yet: ask for everything the board holds.
            st = self.board.status()
            self._note_status(st)
            from_seq = st.first_seq
        else:
            from_seq = self.committed + 1
        self.board.replay(from_seq)
        self.last_replay = (from_seq, now)
        self.replays += 1
        self.replay_counts[from_seq] = self.replay_counts.get(from_seq, 0) + 1

    def _check_gaps(self, now: float) -> None:
        """REPLAY when records are missing: a hole below records that did arrive, or a tail
        the board reports (STATUS.last_seq) that has not come although the link went quiet.

        A board with a backlog keeps sending, so records merely not sent yet are never
        mistaken for lost ones (a REPLAY would rewind its send pointer for nothing).
        """
        if self.base is None:
            hole = bool(self.pending)
        else:
            hole = len(self.pending) > self.ready_upto - self.committed
        quiet = now - self.last_rx > self.opt.gap_wait_s and self.status_at > self.last_rx
        tail = quiet and self.board_last_seq > max(self.ready_upto, self.committed)
        if self.base is None and quiet and self.board_state in TERMINAL_OR_RUNNING:
            tail = True  # this run's first record never came
        if not (hole or tail):
            self.hole_since = None
            return
        if self.hole_since is None:
            self.hole_since = now
            if not tail:
                return
        if now - self.hole_since < self.opt.gap_wait_s and not tail:
            return
        target = self.committed + 1 if self.base is not None else None
        if (
            self.last_replay is not None
            and (target is None or self.last_replay[0] == target)
            and now - self.last_replay[1] < self.opt.replay_retry_s
        ):
            return
        if hole and target is not None and self._skip_decimated_hole():
            return
        self._replay(now)

    def _skip_decimated_hole(self) -> bool:
        """A hole that two REPLAYs did not fill, right below a sample flagged F_GAP, was
        decimated more than once: the board no longer holds it (REPLAY skips what it lacks)."""
        first_missing = self.ready_upto + 1
        if self.replay_counts.get(self.committed + 1, 0) < 2:
            return False
        above = min((s for s in self.pending if s > first_missing), default=None)
        if above is None:
            return False
        rec = self.pending[above]
        if not (rec.is_sample and rec.fields["flags"] & M.F_GAP):
            return False
        for s in range(first_missing, above):
            self.skipped.add(s)
            self.decimated += 1
        self._advance()
        self.hole_since = None
        self.last_replay = None
        return True

    def _note_status(self, st: Status) -> None:
        self.status_at = time.monotonic()
        self.board_state = st.state
        if st.last_seq:
            self.board_last_seq = max(self.board_last_seq, st.last_seq)

    # -- streaming ---------------------------------------------------------------------------
    def _finished(self) -> bool:
        if self.end_seq is not None and self.committed >= self.end_seq:
            return self.committed >= self.board_last_seq
        if self.board_state in (M.ST_TRIPPED, M.ST_INTERRUPTED, M.ST_DONE, M.ST_STOPPED):
            return self.base is not None and self.committed >= self.board_last_seq > 0
        return False

    def _stream(self) -> None:
        last_status = 0.0
        end_confirmed = False
        while True:
            if self._stop_requested.is_set():
                raise KeyboardInterrupt
            now = time.monotonic()
            try:
                assert self.board is not None
                self.board.poll(0.05)
                self._handle_gone()
                self._commit()
                now = time.monotonic()
                if now - last_status >= self.opt.status_interval_s or (
                    self.end_seq is not None and not end_confirmed
                ):
                    st = self.board.status()
                    self._note_status(st)
                    last_status = now
                    if self.end_seq is not None:
                        end_confirmed = True
                    if st.run_id != self.run_id and st.has_run:
                        raise RunMismatchError(
                            f"{self.port} now runs run {st.run_id:08x}, not "
                            f"{self.run_id:08x}; stopping the session"
                        )
                    self._update_display(st)
                if self._finished():
                    self._commit(force=True)
                    if self._finished():
                        break
                self._check_gaps(now)
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
        self._update_display(None, final=True)
        with contextlib.suppress(Exception):
            self.store.set_meta("ended_at", _now_iso())
            if self.decimated:
                self.store.set_meta("decimated_records", self.decimated)
            self.store.set_meta(
                "end_state", state_name(self.board_state) if self.board_state is not None else ""
            )

    def _update_display(self, st: Status | None, *, final: bool = False) -> None:
        self._last_display = time.monotonic()
        f = self._last_sample
        p = self._progress
        kw: dict[str, Any] = {
            "samples": self.samples,
            "events": self.events,
            "last_seq": self.committed,
        }
        if self.board_state is not None:
            kw["state"] = state_name(self.board_state)
        if f is not None:
            v = f["v_uv"] * 1e-6
            t = f["t_s"] + f["t_ms"] / 1000.0
            step = f["step"]
            kw.update(
                step=step,
                step_kind=self.step_kinds[step] if 0 <= step < len(self.step_kinds) else None,
                cycle=f["cycle"],
                voltage_v=v,
                we_v=v + self.offset_v,
                current_a=f["i_na"] * 1e-9,
                half_cycle_ah=self._tracker.capacity_ah,
                elapsed_s=t,
                eta_s=(max(0.0, self.estimate_s - t) if self.estimate_s is not None else None),
            )
        elif st is not None:
            v = st.v_uv * 1e-6
            kw.update(
                step=st.step,
                cycle=st.cycle,
                voltage_v=v,
                we_v=v + self.offset_v,
                current_a=st.i_na * 1e-9,
                elapsed_s=st.t_s,
            )
        if final:
            kw["eta_s"] = 0.0
            kw["final"] = True
        self._progress = dataclasses.replace(p, **kw)
        self.display.update(self._progress)

    # -- summary -----------------------------------------------------------------------------
    def summary(self) -> RunSummary:
        cycles, complete = _cycle_capacities(self.db_path)
        first, last = _seq_range(self.db_path)
        elapsed = None
        if self._last_sample is not None:
            elapsed = self._last_sample["t_s"] + self._last_sample["t_ms"] / 1000.0
        else:
            elapsed = _last_time(self.db_path)
        return RunSummary(
            db_path=self.db_path,
            board=self.name,
            run_id=self.run_id,
            state=state_name(self.board_state) if self.board_state is not None else "unknown",
            end_reason=self.end_reason,
            samples=self.samples,
            events=self.events,
            first_seq=first,
            last_seq=last,
            elapsed_s=elapsed,
            cycles=cycles,
            complete_cycles=complete,
            board_cycle=self._last_sample["cycle"] if self._last_sample is not None else None,
            reconnects=self.reconnects,
            replays=self.replays,
            lost_seqs=self.lost_count,
            decimated=self.decimated,
            framing_errors=self.framing_errors,
        )


TERMINAL_OR_RUNNING = (
    M.ST_RUNNING,
    M.ST_HOLD,
    M.ST_PAUSED,
    M.ST_DONE,
    M.ST_TRIPPED,
    M.ST_INTERRUPTED,
    M.ST_STOPPED,
)

_END_REASONS = {
    M.RE_COMPLETE: "complete",
    M.RE_LIMIT: "limit",
    M.RE_SAFETY: "safety trip",
    M.RE_HOST: "stopped by host",
    M.RE_HOLD: "host-loss hold",
}


def short_port_name(port: str) -> str:
    """A port as a display name: a URL without its options (emu://rc), a device as it is."""
    if "://" in port:
        base, _, query = port.partition("?")
        for part in query.split("&"):
            if part.startswith("board="):
                return f"{base} ({part[6:]})"
        return base
    return port


def _end_reason(code: int) -> str:
    return _END_REASONS.get(code, f"reason {code}")


def _policy_name(blob: bytes) -> str:
    try:
        policy = blob[5]
    except IndexError:
        return "unknown"
    return {wire_schedule.P_DECIMATE: "decimate", wire_schedule.P_HOLD: "hold"}.get(
        policy, str(policy)
    )


def _sha256(blob: bytes) -> str:
    import hashlib

    return hashlib.sha256(blob).hexdigest()


def _row_get(row: Any, key: str, default: Any) -> Any:
    if isinstance(row, dict):
        return row.get(key, default)
    if isinstance(row, Sequence) and not isinstance(row, str) and len(row) > 1:
        return row[1] if key == "kind" else default
    return getattr(row, key, default)


def _seq_range(db: Path) -> tuple[int | None, int | None]:
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            row = con.execute(
                "SELECT MIN(s), MAX(s) FROM (SELECT seq AS s FROM samples UNION ALL "
                "SELECT seq AS s FROM events)"
            ).fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return None, None
    if row is None or row[0] is None:
        return None, None
    return int(row[0]), int(row[1])


def _last_time(db: Path) -> float | None:
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            row = con.execute("SELECT MAX(t_s) FROM samples").fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return None
    return None if row is None or row[0] is None else float(row[0])


def _cycle_capacities(db: Path) -> tuple[list[CycleCapacity], int]:
    """Complete cycles of the run, straight from the analysis module's cycle table."""
    try:
        from sicell import analysis, rundata

        table = analysis.cycle_table(rundata.load_run(db))
    except Exception:
        return [], 0
    cycles = [
        CycleCapacity(
            r.cycle, r.lith_mah / 1e3, r.delith_mah / 1e3, r.delith_mah_g, r.delith_mah_cm2
        )
        for r in table.rows
    ]
    return cycles, len(cycles)


# ---- several boards -------------------------------------------------------------------------
@dataclass
class SessionResult:
    session: RunSession
    summary: RunSummary | None
    error: BaseException | None


def run_many(
    sessions: Sequence[RunSession],
    *,
    on_done: Callable[[SessionResult], None] | None = None,
) -> list[SessionResult]:
    """Run several sessions at once, one thread and one database each; wait for all.

    Ctrl-C asks every session to detach (each keeps its board running).
    """
    results: list[SessionResult | None] = [None] * len(sessions)

    def work(i: int, s: RunSession) -> None:
        try:
            res = SessionResult(s, s.run(), None)
        except BaseException as e:
            res = SessionResult(s, None, e)
        results[i] = res
        if on_done is not None:
            on_done(res)

    threads = [
        threading.Thread(target=work, args=(i, s), name=f"sicell-{s.name}", daemon=True)
        for i, s in enumerate(sessions)
    ]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.2)
    except KeyboardInterrupt:
        for s in sessions:
            s.request_stop()
        for t in threads:
            t.join(30)
    return [
        r if r is not None else SessionResult(s, None, None)
        for r, s in zip(results, sessions, strict=True)
    ]


# ---- two-point calibration on a known resistor -----------------------------------------------
@dataclass
class TwoPointResult:
    range: int
    resistor_ohm: float
    set_na: tuple[int, int]
    v_zero_uv: float  # voltage read at zero current (old calibration)
    v_uv: tuple[float, float]  # voltage read at +I and -I (old calibration)
    i_meas_na: tuple[float, float]  # current read at +I and -I (old calibration)
    i_true_na: tuple[float, float]  # -V/R after the voltage zero correction
    old: list[Any]
    entries: list[Any]

    def lines(self) -> list[str]:
        out = [
            f"range {self.range}, R = {self.resistor_ohm:g} Ω: zero {self.v_zero_uv:+.1f} µV",
        ]
        for k in (0, 1):
            out.append(
                f"  set {self.set_na[k]:+d} nA: V {self.v_uv[k]:+.1f} µV, read "
                f"{self.i_meas_na[k]:+.1f} nA, true {self.i_true_na[k]:+.1f} nA"
            )
        names = {0: "voltage", 1: "current", 2: "setpoint"}
        for o, n in zip(self.old, self.entries, strict=True):
            out.append(
                f"  {names.get(n.channel, n.channel)}: offset {o.offset:+d} → {n.offset:+d}, "
                f"gain {o.gain_ppm / 1e6:.6f} → {n.gain_ppm / 1e6:.6f}"
            )
        return out


def _fit(x1: float, y1: float, x2: float, y2: float) -> tuple[int, int]:
    """(offset, gain_ppm) of y = x * gain + offset through two points (firmware's two_point)."""
    if x1 == x2:
        raise CalibrationError("two-point fit: both points are the same; check the wiring")
    g = (y2 - y1) / (x2 - x1)
    return round(y1 - x1 * g), round(g * 1_000_000)


def two_point_calibration(
    board: Board,
    rng: int,
    resistor_ohm: float,
    *,
    fraction: float = 0.5,
    settle_s: float = 5.0,
    measure_s: float = 5.0,
    timeout_s: float = 600.0,
    log: Callable[[str], None] | None = None,
) -> TwoPointResult:
    """Run rest, +I, -I on range ``rng`` through a known resistor and fit new calibration.

    Returns the new (offset, gain) for the voltage (zero only), current-measurement and
    set-point channels of that range; the caller applies them with ``cal_set``. The voltage
    channel is trusted for gain (calibrate it against a voltmeter); its zero comes from the
    rest at no current. The resistor obeys V = -I·R (positive current lithiates).
    """
    from sicell.client import CalEntry
    from sicell.schedule import BoardLimits, parse_schedule

    info = board.info
    if info is None:
        info = board.hello()
    if resistor_ohm <= 0:
        raise CalibrationError("the resistor must be > 0 Ω")
    if not 0 <= rng < info.n_ranges:
        raise CalibrationError(f"range {rng}: the board has ranges 0..{info.n_ranges - 1}")
    fs_na = info.ranges_na[rng]
    v_lim = 0.8 * min(abs(info.v_min_uv), abs(info.v_max_uv)) * 1e-6
    i_a = min(fraction * fs_na * 1e-9, v_lim / resistor_ohm)
    i_ua = round(i_a * 1e6, 3)
    if i_ua <= 0:
        raise CalibrationError("the test current rounds to zero; use a smaller resistor")
    step_s = settle_s + measure_s
    toml = f"""
name = "two-point calibration"
vs = "cell"
[reference]
electrode = "Li"
[recording]
dt_s = {max(0.1, measure_s / 20):g}
dv_mv = 0
[[step]]
kind = "rest"
range = {rng}
duration_s = {step_s:g}
[[step]]
kind = "cc"
direction = "lithiation"
current_ua = {i_ua:g}
range = {rng}
duration_s = {step_s:g}
[[step]]
kind = "cc"
direction = "delithiation"
current_ua = {i_ua:g}
range = {rng}
duration_s = {step_s:g}
"""
    sch = parse_schedule(toml, "<two-point calibration>")
    blob = sch.compile(BoardLimits.from_info(info.as_dict()))
    old = [board.cal_get(rng, ch) for ch in (0, 1, 2)]
    if log:
        log(f"two-point calibration of range {rng}: rest, +{i_ua:g} µA, -{i_ua:g} µA")
    records: list[Record] = []
    prev_sink = board.record_sink
    board.record_sink = records.append
    try:
        board.upload_schedule(blob)
        run_id = new_run_id()
        board.start(run_id)
        deadline = time.monotonic() + timeout_s
        done = False
        while not done:
            if time.monotonic() > deadline:
                with contextlib.suppress(TransportError, BoardError):
                    board.stop()
                raise CalibrationError(f"calibration run did not end within {timeout_s:g} s")
            board.poll(0.1)
            if records:
                board.ack(max(r.seq for r in records))
            done = any(r.is_event and r.fields["code"] == M.EV_RUN_END for r in records)
            if not done:
                st = board.status()
                if st.finished and st.last_seq <= max((r.seq for r in records), default=0):
                    done = True
        end = [r for r in records if r.is_event and r.fields["code"] == M.EV_RUN_END]
        if end and end[0].fields["reason"] != M.RE_COMPLETE:
            raise CalibrationError(
                f"calibration run ended early ({_end_reason(end[0].fields['reason'])}); "
                "check the resistor and the connections"
            )
    finally:
        board.record_sink = prev_sink

    uniq = {r.seq: r for r in records if r.is_sample}
    by_step: dict[int, list[dict[str, int]]] = {0: [], 1: [], 2: []}
    for r in sorted(uniq.values(), key=lambda r: r.seq):
        f = r.fields
        t = f["t_s"] + f["t_ms"] / 1000.0
        if f["step"] in by_step:
            by_step[f["step"]].append({**f, "_t": round(t * 1000)})

    def means(step: int) -> tuple[float, float]:
        pts = by_step[step]
        if not pts:
            raise CalibrationError(f"no samples in step {step} of the calibration run")
        t_end = pts[-1]["_t"]
        sel = [p for p in pts if p["_t"] >= t_end - measure_s * 1000] or pts
        v = sum(p["v_uv"] for p in sel) / len(sel)
        i = sum(p["i_na"] for p in sel) / len(sel)
        return v, i

    v0, _ = means(0)
    va, ia = means(1)
    vb, ib = means(2)
    ov, oi, os_ = old
    g0 = ov.gain_ppm / 1e6
    g1 = oi.gain_ppm / 1e6
    g2 = os_.gain_ppm / 1e6
    # voltage channel: raw = true*g0 + off0; at zero current the true voltage is 0
    new_off0 = round(v0 * g0 + ov.offset)
    true_va = va - v0
    true_vb = vb - v0
    ta = -true_va / resistor_ohm * 1000.0  # µV / Ω = µA → nA
    tb = -true_vb / resistor_ohm * 1000.0
    # current measurement: raw = true*g1 + off1
    raw_ia = ia * g1 + oi.offset
    raw_ib = ib * g1 + oi.offset
    off1, gain1 = _fit(ta, raw_ia, tb, raw_ib)
    # set point: actual = command*g2 + off2, where the board commanded (want - off2)/g2
    want_a = round(i_ua * 1000)
    want_b = -want_a
    cmd_a = (want_a - os_.offset) / g2
    cmd_b = (want_b - os_.offset) / g2
    off2, gain2 = _fit(cmd_a, ta, cmd_b, tb)
    for name, g in (("current", gain1), ("setpoint", gain2)):
        if abs(g - 1_000_000) > 100_000:
            raise CalibrationError(
                f"{name} gain {g / 1e6:.4f} is more than 10 % off unity; check the resistor "
                f"value ({resistor_ohm:g} Ω) and the wiring"
            )
    entries = [
        CalEntry(rng, 0, new_off0, ov.gain_ppm),
        CalEntry(rng, 1, off1, gain1),
        CalEntry(rng, 2, off2, gain2),
    ]
    return TwoPointResult(
        range=rng,
        resistor_ohm=resistor_ohm,
        set_na=(want_a, want_b),
        v_zero_uv=v0,
        v_uv=(va, vb),
        i_meas_na=(ia, ib),
        i_true_na=(ta, tb),
        old=old,
        entries=entries,
    )
