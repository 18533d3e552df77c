"""Sequence bookkeeping of one run: what is stored, what to ACK, what to REPLAY, what is gone.

Pure: no board, no database, no clock. The session hands it every record, E_SEQ_GONE and
STATUS with the time it arrived, stores what :meth:`SeqBook.ready` returns, reports that with
:meth:`SeqBook.stored`, ACKs :attr:`SeqBook.committed` and sends the REPLAY or STATUS
:meth:`SeqBook.next_request` asks for.

The board numbers SAMPLE and EVENT records in one seq space and holds each until it is ACKed;
this run's records start at its EV_RUN_START (``base``). The book keeps

* ``committed``: every run seq up to it is stored or known to be gone from the board. ACKs
  never go further, so the board frees nothing the disk does not hold;
* ``pending``: records received above ``committed`` (duplicates and reordering absorbed);
* ``floor``: no seq below it is on the board any more (E_SEQ_GONE's detail and STATUS's
  first_seq are the oldest seq the board holds). A missing seq below the floor never comes
  and is given up; one at or above it may still be on the board and is only ever asked for
  again, never given up.

The first hole (a seq missing below records that did arrive) is REPLAYed once it has lasted
``gap_wait_s``, after the records below it are stored and ACKed: the board then holds nothing
older, so it answers E_SEQ_GONE if the hole is gone, or sends it again. A hole right below a
sample flagged F_GAP (the board decimated samples there while no host listened) is most likely
gone: it is probed at once (store and ACK below it, then STATUS, whose first_seq answers), one
round trip per hole and no rewind of the board's stream. The same REPLAY or probe is repeated
after ``replay_retry_s`` at the earliest. F_GAP never decides alone that a seq is gone: a
record the link dropped may sit in a decimated stretch.

Given-up seqs are classified by the first stored record above them: EV_INTERRUPTED means the
board reset and numbered on above everything it had sent (a reset skip, reported apart, not
counted as lost); a sample flagged F_GAP, or an EV_DECIMATED and the run's end, means the
host-loss policy decimated them; anything else means they were lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from sicell.protocol import messages as M

U32 = 0xFFFFFFFF
MAX_UNANCHORED = 100_000  # records kept before this run's EV_RUN_START is known

TERMINAL_STATES = (M.ST_TRIPPED, M.ST_INTERRUPTED, M.ST_DONE, M.ST_STOPPED)
TERMINAL_OR_RUNNING = (M.ST_RUNNING, M.ST_HOLD, M.ST_PAUSED, *TERMINAL_STATES)

DECIMATED = "decimated"
LOST = "lost"
RESET = "reset"


class RecordLike(Protocol):
    """What the book reads of a record (``sicell.client.Record`` is one)."""

    @property
    def seq(self) -> int: ...

    @property
    def is_sample(self) -> bool: ...

    @property
    def is_event(self) -> bool: ...

    @property
    def fields(self) -> Mapping[str, int]: ...


R = TypeVar("R", bound=RecordLike)


@dataclass(frozen=True)
class Batch(Generic[R]):
    """Records to store in one transaction: the pending ones of ``committed+1 .. top``."""

    records: tuple[R, ...]
    top: int


@dataclass(frozen=True)
class Replay:
    """A REPLAY to send: from ``from_seq``, or (None) from the oldest record the board holds.
    The records below ``from_seq`` are stored and ACKed first."""

    from_seq: int | None


@dataclass(frozen=True)
class Probe:
    """Store and ACK the records below ``hole``, then ask STATUS: a first_seq above the hole
    means the board no longer holds it."""

    hole: int


def is_run_anchor(rec: RecordLike, run_id: int) -> bool:
    """This run's EV_RUN_START, or its EV_INTERRUPTED: a reset before the host received the
    run's start took the start with it, and numbering goes on above all the board had."""
    f = rec.fields
    return (
        rec.is_event
        and f["code"] in (M.EV_RUN_START, M.EV_INTERRUPTED)
        and (f["value"] & U32) == run_id
    )


class SeqBook(Generic[R]):
    """The sequence state of one run (see the module docstring)."""

    def __init__(
        self, run_id: int, now: float, *, gap_wait_s: float = 0.4, replay_retry_s: float = 2.0
    ) -> None:
        self.run_id = run_id & U32
        self.gap_wait_s = gap_wait_s
        self.replay_retry_s = replay_retry_s
        self.base: int | None = None  # seq of this run's EV_RUN_START (None: not known yet)
        self.committed = 0
        self.ready_upto = 0  # committed+1 .. ready_upto are pending or below the floor
        self.pending: dict[int, R] = {}
        self.floor = 0
        self._top = -1  # highest seq pending (records above ready_upto are never removed)
        self.end_seq: int | None = None  # seq of EV_RUN_END once stored
        self.board_last_seq = 0
        self.board_state: int | None = None
        self._last_seq_current = False  # board_last_seq came with board_state (STATUS)
        self.last_rx = now
        self.status_at: float | None = None
        self.hole_since: float | None = None
        self._hole_at: int | None = None  # the first hole hole_since is about
        self.last_replay: tuple[int | None, float] | None = None
        self.last_probe: tuple[int | None, float] | None = None
        self.replays = 0
        self.probes = 0
        self.decimated = 0
        self.lost = 0
        self.reset_skipped = 0
        self.lost_ranges: list[tuple[int, int]] = []
        self.reset_ranges: list[tuple[int, int]] = []
        self.notes: list[str] = []  # for the user; the session takes them
        self._open: list[tuple[int, int]] = []  # given-up seqs not classified yet
        self._open_decimated = False  # an EV_DECIMATED was stored after them

    # -- anchoring ---------------------------------------------------------------------------
    def resume(self, first_seq: int | None, last_stored: int | None) -> None:
        """Continue a run whose records up to ``last_stored`` are in the database."""
        if last_stored is not None:
            self.base = first_seq if first_seq is not None else last_stored
            self.committed = self.ready_upto = last_stored

    def restore(
        self, decimated: int, lost: list[tuple[int, int]], reset: list[tuple[int, int]]
    ) -> None:
        """Counts of an earlier session of this run (from the database's metadata)."""
        self.decimated += decimated
        self.lost_ranges = [*lost, *self.lost_ranges]
        self.lost += sum(b - a + 1 for a, b in lost)
        self.reset_ranges = [*reset, *self.reset_ranges]
        self.reset_skipped += sum(b - a + 1 for a, b in reset)

    def _anchor(self, seq: int) -> None:
        self.base = seq
        self.committed = self.ready_upto = seq - 1
        for s in [s for s in self.pending if s < seq]:
            del self.pending[s]

    # -- input -------------------------------------------------------------------------------
    def connected(self, now: float) -> None:
        """A new connection to the board: the link is fresh, earlier REPLAYs are void."""
        self.last_rx = now
        self.hole_since = None
        self.last_replay = None
        self.last_probe = None

    def add(self, rec: R, now: float) -> bool:
        """A record arrived; False when it is dropped (stored already, or too many waiting
        for this run's start)."""
        self.last_rx = now
        if self.base is None:
            if is_run_anchor(rec, self.run_id):
                self._anchor(rec.seq)
            elif len(self.pending) >= MAX_UNANCHORED:
                return False
        elif rec.seq <= self.committed:
            return False
        self.pending[rec.seq] = rec
        self._top = max(self._top, rec.seq)
        if self.base is not None:
            self._advance()
        return True

    def seq_gone(self, oldest: int) -> None:
        """The board holds nothing below ``oldest`` (E_SEQ_GONE's detail)."""
        oldest &= U32
        if oldest <= self.floor:
            return
        self.floor = oldest
        if self.base is not None:
            before = self.ready_upto
            self._advance()
            if self.ready_upto != before:
                self.hole_since = None
                self.last_replay = None

    def board_is(self, state: int) -> None:
        """The board's state from elsewhere than STATUS (INFO, a START accepted): until the
        next STATUS, its last seq is not known to go with it."""
        self.board_state = state
        self._last_seq_current = False

    def status(self, state: int, first_seq: int, last_seq: int, now: float) -> None:
        """A STATUS reply: the board's state, oldest held and last produced seq."""
        self.status_at = now
        self.board_state = state
        self._last_seq_current = True
        if last_seq:
            self.board_last_seq = max(self.board_last_seq, last_seq)
        self.seq_gone(first_seq)

    def _advance(self) -> None:
        n = self.ready_upto + 1
        while n in self.pending or n < self.floor:
            n += 1
        self.ready_upto = n - 1

    # -- storing -----------------------------------------------------------------------------
    @property
    def ready_count(self) -> int:
        """Seqs the next :meth:`stored` moves ``committed`` over (records and given-up)."""
        return self.ready_upto - self.committed

    def ready(self) -> Batch[R]:
        """The records to store now, ascending."""
        span = range(self.committed + 1, self.ready_upto + 1)
        return Batch(tuple(self.pending[s] for s in span if s in self.pending), self.ready_upto)

    def stored(self, batch: Batch[R]) -> None:
        """``batch`` is durable: move ``committed`` to its top (the seq to ACK)."""
        in_batch = {r.seq for r in batch.records}
        for s in range(self.committed + 1, batch.top + 1):
            rec = self.pending.pop(s, None)
            if rec is None or s not in in_batch:
                self._give_up(s)
                continue
            self._classify_by(rec)
            if rec.is_event and rec.fields["code"] == M.EV_RUN_END:
                self.end_seq = s
        self.committed = max(self.committed, batch.top)

    def ack_seq(self) -> int | None:
        """The seq to ACK: everything up to it is stored or gone."""
        if self.base is None or self.committed < self.base:
            return None
        return self.committed

    def _give_up(self, s: int) -> None:
        if self._open and self._open[-1][1] == s - 1:
            self._open[-1] = (self._open[-1][0], s)
        else:
            self._open.append((s, s))

    def _classify_by(self, rec: R) -> None:
        if not self._open:
            return
        if rec.is_event:
            code = rec.fields["code"]
            if code == M.EV_INTERRUPTED:
                self._close(RESET)
            elif code == M.EV_DECIMATED:
                self._open_decimated = True
        elif rec.is_sample:
            self._close(DECIMATED if rec.fields["flags"] & M.F_GAP else LOST)

    def finish(self) -> None:
        """No more records will be stored this session: classify what is still open."""
        if self._open:
            self._close(DECIMATED if self._open_decimated else LOST)

    def _close(self, kind: str) -> None:
        for a, b in self._open:
            n = b - a + 1
            if kind == DECIMATED:
                self.decimated += n
            elif kind == RESET:
                self.reset_skipped += n
                _add_range(self.reset_ranges, a, b)
                self.notes.append(
                    f"the board reset: seqs {a}..{b} skipped (it numbers on above all it had "
                    "sent; records it held unsent went with its memory)"
                )
            else:
                self.lost += n
                _add_range(self.lost_ranges, a, b)
                self.notes.append(
                    f"{n} records in {a}..{b} are gone from the board and cannot be "
                    "recovered; continuing"
                )
        self._open = []
        self._open_decimated = False

    def take_notes(self) -> list[str]:
        notes, self.notes = self.notes, []
        return notes

    # -- gap healing -------------------------------------------------------------------------
    def _first_sample_above_gapped(self) -> bool:
        """The first pending sample above the first hole carries F_GAP."""
        for s in range(self.ready_upto + 2, self._top + 1):
            r = self.pending.get(s)
            if r is not None and r.is_sample:
                return bool(r.fields["flags"] & M.F_GAP)
        return False

    def next_request(self, now: float) -> Replay | Probe | None:
        """What to ask the board now, if anything.

        A REPLAY heals a hole below records that arrived once it has been the first hole for
        ``gap_wait_s``, or a tail the board reports (STATUS last_seq) that has not come
        although the link went quiet; a board with a backlog keeps sending, so records merely
        not sent yet are never taken for lost ones (a REPLAY would rewind its send pointer
        for nothing). A PROBE asks at once whether the board still holds a hole right below
        a sample flagged F_GAP (most likely decimated).
        """
        anchored = self.base is not None
        if anchored:
            hole = bool(self.pending) and self._top > self.ready_upto
        else:
            hole = bool(self.pending)
        quiet = (
            now - self.last_rx > self.gap_wait_s
            and self.status_at is not None
            and self.status_at > self.last_rx
        )
        tail = quiet and self.board_last_seq > self.ready_upto
        if not anchored and quiet and self.board_state in TERMINAL_OR_RUNNING:
            tail = True  # this run's first record never came
        if not (hole or tail):
            self.hole_since = None
            return None
        target = self.ready_upto + 1 if anchored else None
        if self.hole_since is None or self._hole_at != target:
            self.hole_since = now
            self._hole_at = target
        if (
            hole
            and target is not None
            and not _recent(self.last_probe, target, now, self.replay_retry_s)
            and self._first_sample_above_gapped()
        ):
            return Probe(target)
        if not tail and now - self.hole_since < self.gap_wait_s:
            return None
        if _recent(self.last_replay, target, now, self.replay_retry_s):
            return None
        return Replay(target)

    def resume_replay(self) -> Replay:
        """The REPLAY after (re)connecting: from the first seq not stored."""
        return Replay(self.ready_upto + 1 if self.base is not None else None)

    def replay_sent(self, replay: Replay, now: float) -> None:
        self.last_replay = (replay.from_seq, now)
        self.replays += 1

    def probe_sent(self, probe: Probe, now: float) -> None:
        """The records below ``probe.hole`` are stored and ACKed and a STATUS was asked for:
        its first_seq (given to :meth:`status`) says whether the hole is still held."""
        self.last_probe = (probe.hole, now)
        self.probes += 1

    # -- the end -----------------------------------------------------------------------------
    def finished(self) -> bool:
        """The run has ended on the board and every record of it is stored (or gone)."""
        if self.end_seq is not None and self.committed >= self.end_seq:
            return self.committed >= self.board_last_seq
        if self.board_state in TERMINAL_STATES and self._last_seq_current:
            return self.base is not None and self.committed >= self.board_last_seq > 0
        return False


def _recent(
    last: tuple[int | None, float] | None, target: int | None, now: float, within: float
) -> bool:
    return last is not None and last[0] == target and now - last[1] < within


def _add_range(ranges: list[tuple[int, int]], a: int, b: int) -> None:
    if ranges and ranges[-1][1] == a - 1:
        ranges[-1] = (ranges[-1][0], b)
    else:
        ranges.append((a, b))
