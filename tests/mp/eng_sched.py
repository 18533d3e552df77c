"""Test helpers (MicroPython and CPython): build schedules, run the engine on a virtual clock,
drain the ring into decoded records."""

import struct

from protocol import schedule as S

# copies of protocol.messages names (this runs on a 192K heap without importing messages;
# tests/test_wire_ids.py ties every copy to the protocol's value)
SAMPLE = 0x44
EVENT = 0x45
ST_RUNNING = 2
ST_DONE = 4
ST_TRIPPED = 5
ST_HOLD = 6
ST_STOPPED = 8
EV_RUN_END = 2
EV_STEP_START = 3
EV_STEP_END = 4
EV_CUTOFF = 5
EV_SAFETY = 7
EV_HOST_LOSS = 8
EV_RESUMED = 12
EV_DECIMATED = 14
F_STEP_FIRST = 0x01
F_STEP_LAST = 0x02
F_CV = 0x04
F_OPEN = 0x08
F_GAP = 0x40


def hdr(
    policy=0,
    tick=100,
    slow=1000,
    deb=0,
    vmin=-2000000,
    vmax=2000000,
    imax=10000000,
    tmax=S.TEMP_OFF,
):
    return (policy, tick, slow, deb, vmin, vmax, imax, tmax)


def step(
    kind, rng=0xFF, flags=0, iset=0, vset=0, ltgt=0, lcnt=0, rdt=0, rdv=0, rdi=0, rdq=0, limits=()
):
    return ((kind, rng, flags, iset, vset, ltgt, lcnt, rdt, rdv, rdi, rdq), list(limits))


def lim(q, op, val, act=S.A_NEXT, tgt=0):
    return (q, op, act, val, tgt)


def build(header, steps):
    return S.encode(header, steps)


def run(
    eng,
    clock,
    max_ms,
    stop_states=(ST_DONE, ST_TRIPPED, ST_STOPPED),
    drain_into=None,
    ack=True,
    every=None,
    samples=True,
):
    """Virtual main loop: jump the clock to the engine's next due time and tick, until
    ``max_ms`` of virtual time passed or the state is in ``stop_states``. Drains (and acks)
    the ring into ``drain_into`` (a list) when given. ``every(eng)`` runs after each tick."""
    t_end = clock.t + max_ms
    while clock.t < t_end:
        d = clock.ticks_diff(eng.due, clock.ticks_ms())
        if d > 0:
            clock.advance(d)
        eng.tick()
        if every is not None:
            every(eng)
        if drain_into is not None:
            drain(eng.ring, drain_into, ack, samples)
        if eng.state in stop_states:
            break
    if drain_into is not None:
        drain(eng.ring, drain_into, ack, samples)


def drain(ring, out, ack=True, samples=True):
    """Decode every unsent record into ``out``: ('S', seq, t_ms_total, v, i, q, step, cycle,
    range, flags) or ('E', seq, t_ms_total, code, reason, step, cycle, value, aux)."""
    last = -1
    while True:
        off = ring.peek_send()
        if off < 0:
            break
        typ, seq, pay = ring.record(off)
        if typ == SAMPLE:
            if samples:
                t_s, t_ms, v, i, q, st, cy, rg, fl = struct.unpack("<IHiiiHHBB", bytes(pay))
                out.append(("S", seq, t_s * 1000 + t_ms, v, i, q, st, cy, rg, fl))
        else:
            t_s, t_ms, code, reason, st, cy, val, aux = struct.unpack("<IHBBHHii", bytes(pay))
            out.append(("E", seq, t_s * 1000 + t_ms, code, reason, st, cy, val, aux))
        ring.mark_sent()
        last = seq
    if ack and last >= 0:
        ring.ack(last)


def events(recs, code=None):
    return [r for r in recs if r[0] == "E" and (code is None or r[3] == code)]


def samples(recs, step=None):
    return [r for r in recs if r[0] == "S" and (step is None or r[6] == step)]


class Count:
    # a drain sink that only counts (long runs on a small heap): records, samples, events by
    # code, seq monotonicity, F_STEP_FIRST / F_STEP_LAST points
    def __init__(self):
        self.n = 0
        self.samples = 0
        self.ev = {}
        self.last_seq = -1
        self.seq_errors = 0
        self.firsts = 0
        self.lasts = 0
        self.gaps = 0

    def append(self, r):
        self.n += 1
        if r[1] <= self.last_seq:
            self.seq_errors += 1
        self.last_seq = r[1]
        if r[0] == "E":
            self.ev[r[3]] = self.ev.get(r[3], 0) + 1
        else:
            self.samples += 1
            if r[9] & F_STEP_FIRST:
                self.firsts += 1
            if r[9] & F_STEP_LAST:
                self.lasts += 1
            if r[9] & F_GAP:
                self.gaps += 1

    def __len__(self):
        return self.n
