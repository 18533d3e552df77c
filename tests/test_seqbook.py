"""Sequence bookkeeping (sicell.session.seqbook) against a model of the board's ring.

The model (tests/ringmodel.py) is first checked against the real firmware ring. Then a host
loop, the session's in miniature, drives a SeqBook while the board decimates, resets, and the
link drops, duplicates and reorders frames (and drops ACKs and REPLAYs): every seq the board
still holds ends up stored exactly once, no ACK passes a seq the board holds unstored, the
seqs given up are exactly the ones the board no longer has, and the bookkeeping settles
without a storm of REPLAYs.
"""

from __future__ import annotations

import random
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, target
from hypothesis import event as note_event
from hypothesis import strategies as st
from sicell.client import Record
from sicell.protocol import messages as M
from sicell.session.seqbook import Probe, Replay, SeqBook

from tests.ringmodel import BoardModel, RingModel

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "firmware") not in sys.path:
    sys.path.insert(0, str(ROOT / "firmware"))

import ring as fw_ring  # noqa: E402  (firmware/ring.py, as the board runs it)

RUN_ID = 0x5EC0B00C
DT = 0.05  # simulated seconds per loop


def sample(seq: int, flags: int = 0) -> Record:
    return Record(M.SAMPLE, seq, {"flags": flags})


def event(seq: int, code: int, value: int = 0) -> Record:
    return Record(M.EVENT, seq, {"code": code, "reason": 0, "value": value})


def start(seq: int) -> Record:
    return event(seq, M.EV_RUN_START, RUN_ID)


# ---- the model against the real ring ----------------------------------------------------------
RING_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("sample"), st.integers(0, 1), st.booleans()),
        st.tuples(st.just("event"), st.just(False), st.just(False)),
        st.tuples(st.just("send"), st.integers(0, 40), st.just(False)),
        st.tuples(st.just("ack"), st.integers(-3, 60), st.just(False)),
        st.tuples(st.just("replay"), st.integers(-3, 60), st.just(False)),
        st.tuples(st.just("decimate"), st.just(False), st.just(False)),
    ),
    max_size=400,
)


def _fw_send(rg: fw_ring.Ring) -> tuple[int, int, int]:
    off = rg.peek_send()
    typ, seq, pay = rg.record(off)
    rg.mark_sent()
    flags = bytes(pay)[23] if typ == M.SAMPLE else -1
    return typ, seq, flags


@settings(max_examples=150, deadline=None)
@given(ops=RING_OPS, first=st.integers(0, 1000))
def test_model_matches_the_firmware_ring(ops: list[tuple[str, int, bool]], first: int) -> None:
    real = fw_ring.Ring(128, reserve=16, first_seq=first)
    model = RingModel(128, 16, next_seq=first)
    for op, a, b in ops:
        if op == "sample":
            got = real.push_sample(0, 0, 0, 0, 0, 0, 0, 0, 0, bool(a), bool(b))
            assert got == model.push_sample(bool(a), bool(b))
        elif op == "event":
            assert real.push_event(0, 0, 5, 0, 0, 0, 0, 0) == model.push_event(5)
        elif op == "send":
            for _ in range(a):
                slot = model.next_to_send()
                if slot is None:
                    assert real.peek_send() < 0
                    break
                typ, seq, flags = _fw_send(real)
                assert (typ == M.SAMPLE, seq) == (slot.sample, slot.seq)
                assert flags == (slot.flags if slot.sample else -1)
        elif op in ("ack", "replay"):
            seq = model.first_seq() + a
            if op == "ack":
                assert real.ack(seq) == model.ack(seq)
            else:
                assert real.replay(seq) == model.replay(seq)
        else:
            assert real.decimate() == model.decimate()
        assert (real.count, real.sent, real.first_seq(), real.gap, real.dropped) == (
            len(model.held),
            model.sent,
            model.first_seq(),
            model.gap,
            model.dropped,
        )


# ---- unit tests of the book -------------------------------------------------------------------
def _book(now: float = 0.0) -> SeqBook[Record]:
    return SeqBook(RUN_ID, now, gap_wait_s=0.4, replay_retry_s=2.0)


def _store(b: SeqBook[Record]) -> list[int]:
    batch = b.ready()
    b.stored(batch)
    return [r.seq for r in batch.records]


def test_anchor_order_duplicates() -> None:
    b = _book()
    assert b.add(sample(9), 0.0)  # before this run's start: kept until it is known
    b.add(sample(12), 0.0)
    b.add(start(10), 0.0)
    assert b.base == 10 and 9 not in b.pending
    b.add(sample(11), 0.0)
    b.add(sample(11), 0.0)
    assert _store(b) == [10, 11, 12] and b.ack_seq() == 12
    assert not b.add(sample(11), 0.0)  # stored already


def test_ack_stops_at_a_hole_until_the_board_says_it_is_gone() -> None:
    b = _book()
    for r in (start(1), sample(2), sample(4, M.F_GAP), sample(5)):
        b.add(r, 0.0)
    assert _store(b) == [1, 2] and b.ack_seq() == 2
    # F_GAP says seq 3 was most likely decimated: ask at once, but never assume
    assert b.next_request(0.0) == Probe(3)
    b.probe_sent(Probe(3), 0.0)
    b.status(M.ST_RUNNING, first_seq=3, last_seq=5, now=0.01)  # still held after all
    assert b.ready_count == 0 and b.next_request(0.02) is None
    assert b.next_request(0.5) == Replay(3)  # the link dropped it: ask for it again
    b.replay_sent(Replay(3), 0.5)
    assert b.next_request(1.0) is None  # no repeat before replay_retry_s
    b.seq_gone(4)  # E_SEQ_GONE: the board holds nothing below 4 now
    assert _store(b) == [4, 5] and b.ack_seq() == 5
    assert b.decimated == 1 and b.lost == 0


def test_seq_gone_keeps_records_that_arrived() -> None:
    b = _book()
    for r in (start(1), sample(2), sample(4), sample(7)):
        b.add(r, 0.0)
    b.seq_gone(8)
    assert _store(b) == [1, 2, 4, 7]
    assert b.lost == 3 and b.lost_ranges == [(3, 3), (5, 6)]
    assert len(b.take_notes()) == 2


def test_reset_skip_is_reported_not_lost() -> None:
    b = _book()
    for r in (start(1), sample(2)):
        b.add(r, 0.0)
    b.seq_gone(100)
    b.add(event(100, M.EV_INTERRUPTED, RUN_ID), 0.0)
    assert _store(b) == [1, 2, 100]
    assert b.reset_skipped == 97 and b.reset_ranges == [(3, 99)] and b.lost == 0


def test_decimated_tail_before_the_run_end() -> None:
    b = _book()
    for r in (start(1), event(4, M.EV_DECIMATED, 2), event(5, M.EV_RUN_END)):
        b.add(r, 0.0)
    b.seq_gone(4)
    _store(b)
    b.finish()
    assert b.decimated == 2 and b.end_seq == 5


def test_tail_replay_only_when_the_link_is_quiet() -> None:
    b = _book()
    b.add(start(1), 0.0)
    _store(b)
    b.status(M.ST_RUNNING, first_seq=1, last_seq=9, now=0.1)
    assert b.next_request(0.2) is None  # records may still be on their way
    b.status(M.ST_RUNNING, first_seq=1, last_seq=9, now=0.6)
    assert b.next_request(0.6) == Replay(2)


def test_resume_anchors_at_the_stored_run() -> None:
    b = _book()
    b.resume(5, 40)
    b.restore(3, [(10, 11)], [])
    assert (b.base, b.committed, b.decimated, b.lost) == (5, 40, 3, 2)
    assert b.resume_replay() == Replay(41)
    assert not b.add(sample(40), 0.0) and b.add(sample(41), 0.0)


# ---- the host loop against the board model ----------------------------------------------------
@dataclass
class Link:
    """Frames to the host (records, NACKs) and commands to the board, with faults at ``rate``
    until ``budget`` of them are spent: after that the link is clean."""

    rate: float
    budget: int
    rng: random.Random
    to_host: list[tuple[str, object]] = field(default_factory=list)
    to_board: list[tuple[str, int]] = field(default_factory=list)
    injected: int = 0

    def _fault(self) -> int:
        """0 drop, 1 duplicate, 2 reorder, else none."""
        if self.budget <= self.injected or self.rng.random() >= self.rate:
            return 9
        self.injected += 1
        return self.rng.randrange(3)

    def send_host(self, kind: str, item: object) -> None:
        f = self._fault()
        if f == 0:
            return  # dropped
        if f == 2 and self.to_host:  # reordered: overtakes frames still in flight
            self.to_host.insert(self.rng.randrange(len(self.to_host)), (kind, item))
            return
        self.to_host.append((kind, item))
        if f == 1:
            self.to_host.append((kind, item))  # duplicated

    def send_board(self, kind: str, seq: int) -> None:
        if self._fault() == 0:
            return
        self.to_board.append((kind, seq))

    def cut(self) -> None:
        self.to_host.clear()
        self.to_board.clear()


@dataclass
class Host:
    board: BoardModel
    link: Link
    book: SeqBook[Record]
    stored: dict[int, int] = field(default_factory=dict)  # seq -> times stored
    given_up: set[int] = field(default_factory=set)
    received: set[int] = field(default_factory=set)  # arrived while not stored or given up
    requests: int = 0
    acked: int = 0

    def store_and_ack(self) -> None:
        b = self.book
        batch = b.ready()
        if batch.top > b.committed:
            kept = {r.seq for r in batch.records}
            for r in batch.records:
                self.stored[r.seq] = self.stored.get(r.seq, 0) + 1
                assert self.stored[r.seq] == 1, f"seq {r.seq} stored twice"
            for s in range(b.committed + 1, batch.top + 1):
                if s not in kept:
                    # given up: the board must no longer have it
                    assert not self.board.ring.holds(s), f"gave up seq {s} the board holds"
                    self.given_up.add(s)
            b.stored(batch)
        ack = b.ack_seq()
        if ack is not None:
            unstored = [s for s in self.board.ring.held if s.seq <= ack and s.seq >= b.base]
            assert all(s.seq in self.stored for s in unstored), f"ACK {ack} passes unstored"
            self.acked = ack
            self.link.send_board("ack", ack)

    def status(self, now: float, state: int) -> None:
        r = self.board.ring
        self.book.status(state, r.first_seq(), r.last_seq(), now)

    def step(self, now: float, state: int, status_due: bool) -> None:
        b = self.book
        frames, self.link.to_host = self.link.to_host, []
        for kind, item in frames:
            if kind == "rec":
                assert isinstance(item, Record)
                if b.base is None or item.seq > b.committed:
                    self.received.add(item.seq)
                b.add(item, now)
            else:
                assert isinstance(item, int)
                b.seq_gone(item)
        if b.ready_count:
            self.store_and_ack()
        if status_due:
            self.status(now, state)
        req = b.next_request(now)
        if req is None:
            return
        self.requests += 1
        if isinstance(req, Probe):
            self.store_and_ack()
            b.probe_sent(req, now)
            self.board_step(0)  # the board reads the ACK before it answers STATUS
            self.status(now, state)
        elif req.from_seq is None:
            self.status(now, state)
            self.link.send_board("replay", self.board.ring.first_seq())
            b.replay_sent(req, now)
        else:
            self.store_and_ack()
            self.link.send_board("replay", req.from_seq)
            b.replay_sent(req, now)

    def board_step(self, max_tx: int) -> None:
        cmds, self.link.to_board = self.link.to_board, []
        for kind, seq in cmds:
            if kind == "ack":
                self.board.ring.ack(seq)
            else:
                oldest = self.board.replay(seq)
                if oldest is not None:
                    self.link.send_host("gone", oldest)
        for _ in range(max_tx):
            slot = self.board.ring.next_to_send()
            if slot is None:
                break
            self.link.send_host("rec", slot.record())


_SAMPLES = st.tuples(st.just("samples"), st.integers(0, 5), st.booleans())
ACTIONS = st.lists(
    st.one_of(
        *[_SAMPLES] * 6,  # mostly recording, now and then something goes wrong
        st.tuples(st.just("event"), st.just(0), st.just(False)),
        st.tuples(st.just("away"), st.integers(1, 25), st.just(False)),
        st.tuples(st.just("reset"), st.integers(1, 40), st.just(False)),
        st.tuples(st.just("restart"), st.just(0), st.just(False)),
    ),
    min_size=20,
    max_size=100,
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    actions=ACTIONS,
    rate=st.sampled_from([0.2, 0.5, 0.05, 0.0]),
    budget=st.sampled_from([300, 50, 10, 0]),
    capacity=st.integers(12, 40),
    decimate=st.booleans(),
    prior=st.integers(0, 3),
    first=st.integers(0, 10_000),
    max_tx=st.integers(1, 10),
    seed=st.integers(0, 2**16),
)
def test_bookkeeping_against_the_ring(
    actions: list[tuple[str, int, bool]],
    rate: float,
    budget: int,
    capacity: int,
    decimate: bool,
    prior: int,
    first: int,
    max_tx: int,
    seed: int,
) -> None:
    board = BoardModel(RingModel(capacity, 4, next_seq=first), decimate_policy=decimate)
    for _ in range(prior):  # unacked records of an earlier run
        board.sample()
    board.event(M.EV_RUN_START, RUN_ID)
    base = board.ring.last_seq()
    link = Link(rate, budget, random.Random(seed))
    host = Host(board, link, _new_book(0.0))
    now = 0.0
    away = 0
    tick = 0
    state = M.ST_RUNNING

    def loop(produce: tuple[str, int, bool] | None) -> None:
        nonlocal now, away, tick
        tick += 1
        now += DT
        if produce is not None:
            kind, n, keep = produce
            if kind == "samples":
                for k in range(n):
                    board.sample(keep and k == 0)
            elif kind == "event":
                board.event(M.EV_STEP_START)
            elif kind == "reset":
                board.reset(n)
                away = max(away, 3)  # the port vanishes while the board boots
            elif kind == "away":
                away = max(away, n)
            elif kind == "restart":  # a new host process resumes from the database
                host.book = _new_book(now)
                host.book.resume(anchor, max(host.stored, default=None))
                host.received.clear()  # what the old process had in memory is gone with it
                reconnect()
        if away:
            away -= 1
            link.cut()
            if not away:
                reconnect()
            return
        host.board_step(max_tx)
        host.step(now, state, status_due=tick % 10 == 0)

    def reconnect() -> None:
        link.cut()
        board.hello()
        host.book.connected(now)
        host.book.board_is(state)
        req = host.book.resume_replay()
        host.store_and_ack()
        if req.from_seq is None:
            link.send_board("replay", board.ring.first_seq())
        else:
            link.send_board("replay", req.from_seq)
        host.book.replay_sent(req, now)

    anchor: int | None = None  # the run's first seq as the host knows it

    for a in actions:
        loop(a)
        anchor = host.book.base if anchor is None else anchor
    board.event(M.EV_RUN_END)
    state = M.ST_DONE
    end = board.ring.last_seq()
    settle = 0
    while not host.book.finished():
        settle += 1
        assert settle < 3000, "the bookkeeping did not settle"
        loop(None)
    host.store_and_ack()
    host.book.finish()

    # what the board no longer has: decimated, lost in a reset, or never produced (the seqs
    # a reset skips)
    gone = board.gone() | (set(range(base, end + 1)) - board.produced)
    assert host.book.base is not None
    # EV_RUN_START can vanish in a reset before it reached the host: its EV_INTERRUPTED
    # anchors the run then, and the board has nothing older
    assert set(range(base, host.book.base)) <= gone
    run = range(host.book.base, end + 1)
    missing = {s for s in run if s not in host.stored}
    # every seq the board still had is stored (exactly once: checked as it was stored)
    assert missing <= gone
    # what reached the host is kept, even when the board has dropped it since
    assert {s for s in host.received if s in run} <= set(host.stored)
    # the seqs given up are exactly the ones not stored, none of which the board still has
    assert missing == {s for s in host.given_up if s in run}
    if not decimate_or_reset(actions, decimate):
        assert not missing
    note_event(f"board lost some: {bool(gone)}, host gave up some: {bool(missing)}")
    note_event(f"link faults: {min(link.injected, 50) // 10 * 10}+")
    target(float(len(missing)), label="given up")
    target(float(link.injected), label="faults")
    # no replay storm: requests stay in proportion to what went wrong
    trouble = link.injected + len(gone) + sum(1 for a in actions if a[0] in ("away", "reset"))
    assert host.requests <= 4 * (trouble + 1) + settle // 40


def _new_book(now: float) -> SeqBook[Record]:
    b: SeqBook[Record] = SeqBook(RUN_ID, now, gap_wait_s=0.4, replay_retry_s=2.0)
    return b


def decimate_or_reset(actions: list[tuple[str, int, bool]], decimate: bool) -> bool:
    return decimate or any(a[0] == "reset" for a in actions)


@pytest.mark.parametrize("reset", [False, True])
def test_counts_add_up_in_one_process(reset: bool) -> None:
    """Given-up seqs are counted once each: decimated + lost + reset = missing."""
    board = BoardModel(RingModel(16, 4, next_seq=3))
    board.event(M.EV_RUN_START, RUN_ID)
    base = board.ring.last_seq()
    link = Link(0.0, 0, random.Random(7))
    host = Host(board, link, _new_book(0.0))
    now = 0.0

    def run(ticks: int, state: int) -> None:
        nonlocal now
        for n in range(ticks):
            now += DT
            host.board_step(4)
            host.step(now, state, status_due=n % 10 == 0)

    board.sample()
    run(5, M.ST_RUNNING)
    assert host.book.base == base
    for _ in range(60):  # the host away: the ring overflows and decimates
        board.sample()
    if reset:  # ... and then the board loses it all
        board.reset(9)
    for _ in range(5):
        board.sample()
    board.event(M.EV_RUN_END)
    board.hello()
    host.book.connected(now)
    host.book.board_is(M.ST_DONE)
    host.store_and_ack()
    link.send_board("replay", host.book.committed + 1)
    n = 0
    while not host.book.finished():
        n += 1
        assert n < 2000
        run(1, M.ST_DONE)
    host.book.finish()
    b = host.book
    missing = set(range(base, board.ring.last_seq() + 1)) - set(host.stored)
    assert b.decimated + b.lost + b.reset_skipped == len(missing) > 9
    if reset:
        assert b.reset_skipped == len(missing)
    else:
        assert b.decimated == len(missing) == board.ring.dropped


@pytest.mark.parametrize("gap", [True, False])
def test_probe_resolves_a_decimated_hole_in_one_round_trip(gap: bool) -> None:
    b = _book()
    for r in (start(1), sample(2), sample(5, M.F_GAP if gap else 0)):
        b.add(r, 0.0)
    _store(b)
    req = b.next_request(0.0)
    assert (req == Probe(3)) if gap else (req is None)
    b.probe_sent(Probe(3), 0.0)
    b.status(M.ST_RUNNING, first_seq=5, last_seq=5, now=0.01)
    assert _store(b) == [5] and b.ack_seq() == 5


def test_wire_payload_layout_of_flags() -> None:
    """The differential test reads the flags byte where SAMPLE has it."""
    assert struct.calcsize("<IHiiiHHBB") == M.size(M.SAMPLE) == 24
