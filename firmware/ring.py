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
# Nothing here allocates after construction, except ``record`` / ``encode`` (a payload view, for
# the link, not the tick) and the int-valued API below for seqs from 2**30 on.
#
# Seqs are u32 on the wire, but the RP2040's small ints are 31-bit: a seq of 2**30 or more as
# one int would be a heap object, and so would the result of any arithmetic on it. The ring
# keeps each seq as two 16-bit halves (hi, lo) and does serial-number arithmetic on those; the
# link hands it the ACK / REPLAY payload bytes (``ack_from``, ``replay_from``) and streams a
# record with its stored seq bytes (``encode``). The int-valued API (``first_seq()``,
# ``last_seq()``, ``next_seq``, ``acked``, ``ack(seq)``, ``replay(seq)``, ``record``'s seq) is
# for boot, status and tests: it converts with struct (below 2**30 with small-int shifts), never
# by arithmetic on a value past 2**30.

import struct

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]
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


def _gt(ah, al, bh, bl):
    # (ah, al) > (bh, bl) in u32 serial-number arithmetic, on 16-bit halves: a - b mod 2**32
    # is non-zero and below 2**31
    dh = ah - bh
    if al < bl:
        dh -= 1
    dh &= 0xFFFF
    return (dh != 0 or al != bl) and dh < 0x8000


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
        self._sb = bytearray(8)  # int <-> halves conversions
        self.th = 0  # halves of the last seq looked up (avoids returning tuples)
        self.tl = 0
        self.nh = 0  # next seq to produce: hi, lo halves
        self.nl = 0
        self.next_seq = first_seq
        self.ah = 0  # highest seq the host acked (halves; valid when has_ack)
        self.al = 0
        self.has_ack = False
        self.dropped = 0  # samples dropped by decimation (running count)
        self.lost = 0  # events that found no slot at all (never expected)
        self.gap = False  # the next stored sample gets F_GAP
        self.ci = 0  # chunk index of the last _at() (avoids returning tuples)
        self.cb = self.chunks[0]

    # ---- seqs as ints (boot, status, tests) ------------------------------------------------
    def _split(self, seq):
        # halves of ``seq`` mod 2**32 (any int) into th, tl
        sb = self._sb
        struct.pack_into("<q", sb, 0, seq)
        self.tl = sb[0] | (sb[1] << 8)
        self.th = sb[2] | (sb[3] << 8)

    def _join(self, h, lo):
        # the u32 with halves h, lo as an int (from 2**30 on a heap int on the chip)
        if h < 0x4000:
            return (h << 16) | lo
        sb = self._sb
        sb[0] = lo & 0xFF
        sb[1] = lo >> 8
        sb[2] = h & 0xFF
        sb[3] = h >> 8
        return struct.unpack_from("<I", sb, 0)[0]

    def _get_next(self):
        return self._join(self.nh, self.nl)

    def _set_next(self, seq):
        self._split(seq)
        self.nh = self.th
        self.nl = self.tl

    next_seq = property(_get_next, _set_next)  # the next seq to produce

    def _get_acked(self):
        return self._join(self.ah, self.al) if self.has_ack else -1

    def _set_acked(self, seq):
        self.has_ack = seq >= 0
        if self.has_ack:
            self._split(seq)
            self.ah = self.th
            self.al = self.tl

    acked = property(_get_acked, _set_acked)  # highest seq the host acked (-1: none yet)

    def acked_seq(self):
        # the acked seq as STATUS carries it (0xFFFFFFFF before any ACK)
        return self._join(self.ah, self.al) if self.has_ack else 0xFFFFFFFF

    def first_seq(self):
        # oldest held seq, or the next seq to be produced when nothing is held
        self._first()
        return self._join(self.th, self.tl)

    def last_seq(self):
        # last seq produced (0xFFFFFFFF before any)
        self._last()
        return self._join(self.th, self.tl)

    def seq_at(self, k):
        self._seq_hl(k)
        return self._join(self.th, self.tl)

    # ---- state ---------------------------------------------------------------------------
    def free(self):
        return self.capacity - self.count

    def sample_room(self):
        return self.capacity - self.reserve - self.count

    def _first(self):
        # halves of the oldest held seq (the next seq when nothing is held) into th, tl
        if self.count == 0:
            self.th = self.nh
            self.tl = self.nl
        else:
            self._seq_hl(0)

    def _last(self):
        # halves of the last seq produced into th, tl
        h = self.nh
        lo = self.nl - 1
        if lo < 0:
            lo = 0xFFFF
            h = (h - 1) & 0xFFFF
        self.th = h
        self.tl = lo

    def _at(self, k):
        # byte offset of held record k (0 = oldest) inside chunk self.cb
        s = self.head + k
        if s >= self.capacity:
            s -= self.capacity
        self.ci = s >> _SHIFT
        self.cb = self.chunks[self.ci]
        return (s & _MASK) << 5

    def _seq_hl(self, k):
        # halves of held record k's seq into th, tl
        o = self._at(k) + 4
        b = self.cb
        self.tl = b[o] | (b[o + 1] << 8)
        self.th = b[o + 2] | (b[o + 3] << 8)

    def type_at(self, k):
        o = self._at(k)
        return self.cb[o]

    # ---- producing -----------------------------------------------------------------------
    def _alloc(self, typ, keep):
        o = self._at(self.count)
        b = self.cb
        lo = self.nl
        h = self.nh
        b[o] = typ
        b[o + 1] = keep
        b[o + 2] = 0
        b[o + 3] = 0
        b[o + 4] = lo & 0xFF
        b[o + 5] = lo >> 8
        b[o + 6] = h & 0xFF
        b[o + 7] = h >> 8
        if lo == 0xFFFF:
            self.nl = 0
            self.nh = (h + 1) & 0xFFFF
        else:
            self.nl = lo + 1
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
        # free every held record with seq <= ``seq`` (taken mod 2**32); return how many
        self._split(seq)
        return self._ack(self.th, self.tl)

    def ack_from(self, buf, off):
        # ack() of the u32 little-endian at buf[off] (an ACK payload), without making an int
        return self._ack(buf[off + 2] | (buf[off + 3] << 8), buf[off] | (buf[off + 1] << 8))

    def _ack(self, h, lo):
        if self.nh == 0 and self.nl == 0 and self.count == 0:
            return 0  # nothing was ever produced
        self._last()
        if _gt(h, lo, self.th, self.tl):
            h = self.th  # cannot ack what was never produced
            lo = self.tl
        n = 0
        while n < self.count:
            self._seq_hl(n)
            if _gt(self.th, self.tl, h, lo):
                break
            n += 1
        if n:
            k = self.head + n
            self.head = k - self.capacity if k >= self.capacity else k
            self.count -= n
            self.sent = self.sent - n if self.sent > n else 0
        if not self.has_ack or _gt(h, lo, self.ah, self.al):
            self.ah = h
            self.al = lo
            self.has_ack = True
        return n

    def find(self, seq):
        # index (from head) of the first held record with seq >= ``seq`` (count if none)
        self._split(seq)
        return self._find(self.th, self.tl)

    def _find(self, h, lo):
        a = 0
        b = self.count
        while a < b:
            mid = (a + b) >> 1
            self._seq_hl(mid)
            if _gt(h, lo, self.th, self.tl):
                a = mid + 1
            else:
                b = mid
        return a

    def replay(self, from_seq):
        # rewind the send pointer to ``from_seq``: -1 when fine, else the oldest seq held
        # (the link NACKs E_SEQ_GONE with it)
        self._split(from_seq)
        return self._replay(self.th, self.tl)

    def replay_from(self, buf, off):
        # replay() of the u32 little-endian at buf[off] (a REPLAY payload)
        return self._replay(buf[off + 2] | (buf[off + 3] << 8), buf[off] | (buf[off + 1] << 8))

    def _replay(self, h, lo):
        self._first()
        if _gt(self.th, self.tl, h, lo):
            return self._join(self.th, self.tl)
        self.sent = self._find(h, lo)
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
        seq = self._join(b[off + 6] | (b[off + 7] << 8), b[off + 4] | (b[off + 5] << 8))
        n = SAMPLE_SIZE if typ == _SAMPLE else EVENT_SIZE
        return typ, seq, self.mvs[self.ci][off + _PAY : off + _PAY + n]

    def encode(self, enc, off):
        # the wire frame of the record peek_send() just pointed at, built by the
        # framing.Encoder ``enc`` from the stored seq bytes (no u32 int is made)
        b = self.cb
        typ = b[off]
        n = SAMPLE_SIZE if typ == _SAMPLE else EVENT_SIZE
        return enc.encode_at(typ, b, off + 4, self.mvs[self.ci][off + _PAY : off + _PAY + n])

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
