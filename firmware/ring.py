# Record ring buffer: SAMPLE and EVENT records in fixed 32-byte slots, one u32 seq space.
#
# Slot layout (32 bytes, little-endian):
#     0      u8   message type (messages.SAMPLE 0x44 / messages.EVENT 0x45)
#     1      u8   slot flags: bit0 = keep (step boundary; decimation never drops it)
#     2..3        pad
#     4..7   u32  seq
#     8..31       payload: SAMPLE "<IHiiiHHBB" (24 bytes) or EVENT "<IHBBHHii" (20 bytes + pad)
#
# Storage is preallocated at construction as chunks of CHUNK_SLOTS slots (4 KB bytearrays, so a
# fragmented heap can still hold it). Records are held oldest-first from ``head`` (circular), in
# increasing seq order. Everything held is unacked: ACK(seq) frees every record with seq <= seq.
# ``sent`` counts the held records already written to the host (the send pointer, as an offset
# from ``head``); REPLAY moves it.
#
# Samples may only fill ``capacity - reserve`` slots; the last ``reserve`` slots are kept for
# events, so the host-loss policy can always log what it did. ``push_sample`` returns False when
# the sample area is full; the engine then applies the policy (``decimate`` here, or hold).
# Nothing here allocates after construction, except ``record`` (used by the link, not the tick).

import struct

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


SLOT = const(32)
CHUNK_SLOTS = const(128)  # slots per 4 KB chunk
_SHIFT = const(7)  # log2(CHUNK_SLOTS)
_MASK = const(127)
_PAY = const(8)
_KEEP = const(1)
_SAMPLE = const(0x44)  # messages.SAMPLE
_EVENT = const(0x45)  # messages.EVENT
_F_GAP = const(0x40)  # messages.F_GAP
SAMPLE_SIZE = const(24)
EVENT_SIZE = const(20)
DEFAULT_CAPACITY = const(1024)
DEFAULT_RESERVE = const(16)
_SAMPLE_FMT = "<IHiiiHHBB"
_EVENT_FMT = "<IHBBHHii"


def _seq_gt(a, b):
    # a > b in u32 serial-number arithmetic
    d = (a - b) & 0xFFFFFFFF
    return d != 0 and d < 0x80000000


class Ring:
    def __init__(self, capacity=DEFAULT_CAPACITY, reserve=DEFAULT_RESERVE, first_seq=0):
        n = (capacity + CHUNK_SLOTS - 1) >> _SHIFT
        capacity = n << _SHIFT  # whole chunks
        if capacity < 2 * reserve + 4:
            raise ValueError("ring too small")
        self.capacity = capacity
        self.reserve = reserve
        self.chunks = [bytearray(CHUNK_SLOTS * SLOT) for _ in range(n)]
        self.mvs = [memoryview(c) for c in self.chunks]
        self.head = 0  # slot index of the oldest held record
        self.count = 0  # records held
        self.sent = 0  # held records already sent (send pointer = head + sent)
        self.next_seq = first_seq & 0xFFFFFFFF
        self.acked = -1  # highest seq the host acked (-1: none yet)
        self.dropped = 0  # samples dropped by decimation (running count)
        self.lost = 0  # events that found no slot at all (never expected)
        self.gap = False  # the next stored sample gets F_GAP
        self.ci = 0  # chunk index of the last _at() (avoids returning tuples)
        self.cb = self.chunks[0]

    # ---- state ---------------------------------------------------------------------------
    def free(self):
        return self.capacity - self.count

    def sample_room(self):
        return self.capacity - self.reserve - self.count

    def first_seq(self):
        # oldest held seq, or the next seq to be produced when nothing is held
        if self.count == 0:
            return self.next_seq
        return self.seq_at(0)

    def last_seq(self):
        # last seq produced (0xFFFFFFFF before any)
        return (self.next_seq - 1) & 0xFFFFFFFF

    def _at(self, k):
        # byte offset of held record k (0 = oldest) inside chunk self.cb
        s = self.head + k
        if s >= self.capacity:
            s -= self.capacity
        self.ci = s >> _SHIFT
        self.cb = self.chunks[self.ci]
        return (s & _MASK) << 5

    def seq_at(self, k):
        o = self._at(k) + 4
        b = self.cb
        return b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)

    def type_at(self, k):
        o = self._at(k)
        return self.cb[o]

    # ---- producing -----------------------------------------------------------------------
    def _alloc(self, typ, keep):
        o = self._at(self.count)
        b = self.cb
        seq = self.next_seq
        b[o] = typ
        b[o + 1] = keep
        b[o + 2] = 0
        b[o + 3] = 0
        b[o + 4] = seq & 0xFF
        b[o + 5] = (seq >> 8) & 0xFF
        b[o + 6] = (seq >> 16) & 0xFF
        b[o + 7] = (seq >> 24) & 0xFF
        self.next_seq = (seq + 1) & 0xFFFFFFFF
        self.count += 1
        return o

    def push_sample(self, t_s, t_ms, v, i, q, step, cycle, rng, flags, keep=False, force=False):
        # store a SAMPLE; False when the sample area is full (``force``: may use the reserve)
        if self.count >= self.capacity - self.reserve:
            if not force or self.count >= self.capacity:
                return False
        if self.gap:
            flags |= _F_GAP
            self.gap = False
        o = self._alloc(_SAMPLE, _KEEP if keep else 0)
        struct.pack_into(_SAMPLE_FMT, self.cb, o + _PAY, t_s, t_ms, v, i, q, step, cycle, rng, flags)
        return True

    def push_event(self, t_s, t_ms, code, reason, step, cycle, value, aux):
        # store an EVENT (may use the reserve); False only when every slot is taken
        if self.count >= self.capacity:
            self.lost += 1
            return False
        o = self._alloc(_EVENT, _KEEP)
        b = self.cb
        struct.pack_into(_EVENT_FMT, b, o + _PAY, t_s, t_ms, code, reason, step, cycle, value, aux)
        o += _PAY + EVENT_SIZE
        b[o] = 0
        b[o + 1] = 0
        b[o + 2] = 0
        b[o + 3] = 0
        return True

    # ---- host side -----------------------------------------------------------------------
    def ack(self, seq):
        # free every held record with seq <= ``seq``; return how many were freed
        seq &= 0xFFFFFFFF
        if self.next_seq == 0 and self.count == 0:
            return 0  # nothing was ever produced
        last = self.last_seq()
        if _seq_gt(seq, last):
            seq = last  # cannot ack what was never produced
        n = 0
        while n < self.count and not _seq_gt(self.seq_at(n), seq):
            n += 1
        if n:
            h = self.head + n
            self.head = h - self.capacity if h >= self.capacity else h
            self.count -= n
            self.sent = self.sent - n if self.sent > n else 0
        if self.acked < 0 or _seq_gt(seq, self.acked):
            self.acked = seq
        return n

    def find(self, seq):
        # index (from head) of the first held record with seq >= ``seq`` (count if none)
        lo = 0
        hi = self.count
        while lo < hi:
            mid = (lo + hi) >> 1
            if _seq_gt(seq, self.seq_at(mid)):
                lo = mid + 1
            else:
                hi = mid
        return lo

    def replay(self, from_seq):
        # rewind the send pointer to ``from_seq``: -1 when fine, else the oldest seq held
        # (the link NACKs E_SEQ_GONE with it)
        from_seq &= 0xFFFFFFFF
        oldest = self.first_seq()
        if _seq_gt(oldest, from_seq):
            return oldest
        self.sent = self.find(from_seq)
        return -1

    def pending(self):
        # records produced but not yet sent
        return self.count - self.sent

    def peek_send(self):
        # byte offset (in chunk self.cb) of the next record to send, or -1
        if self.sent >= self.count:
            return -1
        return self._at(self.sent)

    def mark_sent(self):
        if self.sent < self.count:
            self.sent += 1

    def record(self, off):
        # (type, seq, payload memoryview) of the record peek_send() just pointed at
        b = self.cb
        typ = b[off]
        seq = b[off + 4] | (b[off + 5] << 8) | (b[off + 6] << 16) | (b[off + 7] << 24)
        n = SAMPLE_SIZE if typ == _SAMPLE else EVENT_SIZE
        return typ, seq, self.mvs[self.ci][off + _PAY : off + _PAY + n]

    # ---- host-loss policy: decimate ------------------------------------------------------
    def decimate(self):
        # Drop every other held SAMPLE that is not a step boundary (events are never dropped),
        # compacting in place; the next kept sample after a dropped one gets F_GAP. Returns the
        # number dropped (0: nothing droppable). Allocation-free.
        chunks = self.chunks
        cap = self.capacity
        head = self.head
        n = self.count
        sent = self.sent
        toggle = False
        gap = False
        dst = 0
        dropped = 0
        new_sent = 0
        for k in range(n):
            s = head + k
            if s >= cap:
                s -= cap
            sb = chunks[s >> _SHIFT]
            so = (s & _MASK) << 5
            if sb[so] == _SAMPLE:
                if not (sb[so + 1] & _KEEP):
                    toggle = not toggle
                    if not toggle:
                        dropped += 1
                        gap = True
                        continue
                if gap:
                    sb[so + _PAY + 23] |= _F_GAP
                    gap = False
            if k < sent:
                new_sent += 1
            if dst != k:
                d = head + dst
                if d >= cap:
                    d -= cap
                db = chunks[d >> _SHIFT]
                do = (d & _MASK) << 5
                for j in range(SLOT):
                    db[do + j] = sb[so + j]
            dst += 1
        if gap:
            self.gap = True
        self.count = dst
        self.sent = new_sent
        self.dropped += dropped
        return dropped
