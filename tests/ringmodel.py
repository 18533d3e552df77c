"""A model of the board's record ring (firmware/ring.py) and the link's handling of it, for
property tests of the host's sequence bookkeeping.

Same rules as the firmware, in plain Python lists: records numbered by seq and held oldest
first until ACKed; samples may fill ``capacity - reserve`` slots, events the rest; a send
pointer that REPLAY moves (E_SEQ_GONE with the oldest seq held when the seq is gone, then the
stream restarts at the oldest); decimation drops every other held sample that is no step
boundary, flags the next kept sample F_GAP and carries the flag to the next new sample when
the last ones were dropped; a reset loses the memory and numbers on above everything sent.
tests/test_seqbook.py checks it against the real ring.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sicell.client import Record
from sicell.protocol import messages as M


@dataclass
class Slot:
    seq: int
    sample: bool
    flags: int = 0  # SAMPLE flags (F_GAP set by decimation)
    keep: bool = False  # step boundary (samples) / always (events)
    code: int = 0  # EVENT code
    value: int = 0  # EVENT value

    def record(self) -> Record:
        if self.sample:
            return Record(M.SAMPLE, self.seq, {"flags": self.flags})
        return Record(M.EVENT, self.seq, {"code": self.code, "reason": 0, "value": self.value})


@dataclass
class RingModel:
    capacity: int
    reserve: int
    next_seq: int = 0
    held: list[Slot] = field(default_factory=list)
    sent: int = 0  # held records already sent (from the oldest)
    gap: bool = False  # the next stored sample gets F_GAP
    dropped: int = 0
    decimated: set[int] = field(default_factory=set)  # seqs decimation removed

    def first_seq(self) -> int:
        return self.held[0].seq if self.held else self.next_seq

    def last_seq(self) -> int:
        return self.next_seq - 1

    def _push(self, slot: Slot) -> None:
        self.held.append(slot)
        self.next_seq += 1

    def push_sample(self, keep: bool = False, force: bool = False, flags: int = 0) -> bool:
        n = len(self.held)
        if n >= self.capacity - self.reserve and (not force or n >= self.capacity):
            return False
        if self.gap:
            flags |= M.F_GAP
            self.gap = False
        self._push(Slot(self.next_seq, True, flags, keep))
        return True

    def push_event(self, code: int, value: int = 0) -> bool:
        if len(self.held) >= self.capacity:
            return False
        self._push(Slot(self.next_seq, False, 0, True, code, value))
        return True

    def ack(self, seq: int) -> int:
        seq = min(seq, self.last_seq())
        n = 0
        while n < len(self.held) and self.held[n].seq <= seq:
            n += 1
        del self.held[:n]
        self.sent = self.sent - n if self.sent > n else 0
        return n

    def replay(self, from_seq: int) -> int:
        """-1 when fine (the send pointer moves to the first held seq >= from_seq), else the
        oldest seq held (the link answers E_SEQ_GONE with it)."""
        oldest = self.first_seq()
        if oldest > from_seq:
            return oldest
        self.sent = next((k for k, s in enumerate(self.held) if s.seq >= from_seq), len(self.held))
        return -1

    def next_to_send(self) -> Slot | None:
        if self.sent >= len(self.held):
            return None
        slot = self.held[self.sent]
        self.sent += 1
        return slot

    def decimate(self) -> int:
        toggle = gap = False
        kept: list[Slot] = []
        new_sent = dropped = 0
        for k, s in enumerate(self.held):
            if s.sample:
                if not s.keep:
                    toggle = not toggle
                    if not toggle:
                        dropped += 1
                        gap = True
                        self.decimated.add(s.seq)
                        continue
                if gap:
                    s.flags |= M.F_GAP
                    gap = False
            if k < self.sent:
                new_sent += 1
            kept.append(s)
        if gap:
            self.gap = True
        self.held = kept
        self.sent = new_sent
        self.dropped += dropped
        return dropped

    def holds(self, seq: int) -> bool:
        return any(s.seq == seq for s in self.held)


@dataclass
class BoardModel:
    """The engine's recording (host-loss policy decimate or hold) and the link's commands."""

    ring: RingModel
    decimate_policy: bool = True
    run_id: int = 0x5EC0B00C
    produced: set[int] = field(default_factory=set)
    vanished: set[int] = field(default_factory=set)  # decimated, or lost at a reset
    resets: int = 0

    def sample(self, keep: bool = False) -> None:
        r = self.ring
        before = r.next_seq
        ok = r.push_sample(keep)
        if not ok:
            if self.decimate_policy and r.decimate():
                self.event(M.EV_DECIMATED, r.dropped)
                ok = r.push_sample(keep)
            if not ok:
                r.push_sample(keep, force=True, flags=M.F_OPEN)  # hold: may find no slot
        self.produced.update(range(before, r.next_seq))

    def event(self, code: int, value: int = 0) -> None:
        before = self.ring.next_seq
        self.ring.push_event(code, value)
        self.produced.update(range(before, self.ring.next_seq))

    def reset(self, jump: int) -> None:
        """Power loss: the ring's memory is gone; numbering goes on ``jump`` seqs above."""
        r = self.ring
        self.vanished.update(s.seq for s in r.held)
        self.ring = RingModel(r.capacity, r.reserve, next_seq=r.next_seq + jump)
        self.ring.decimated = r.decimated
        self.resets += 1
        self.event(M.EV_INTERRUPTED, self.run_id)

    def gone(self) -> set[int]:
        """Seqs the board produced and no longer has, other than by ACK."""
        return self.vanished | self.ring.decimated

    # -- the link's commands ---------------------------------------------------------------
    def hello(self) -> None:
        self.ring.sent = 0

    def replay(self, from_seq: int) -> int | None:
        """None, or the oldest seq held for an E_SEQ_GONE NACK (the stream restarts there)."""
        r = self.ring.replay(from_seq)
        if r < 0:
            return None
        self.ring.sent = 0
        return r
