# Tick budget scenarios (MicroPython; tests/test_tick_budget.py runs each by name and reads the
# JSON line it prints): the tick's own cost figures, what gc.collect() takes on this heap, the
# link's receive path (allocation-free batches from a real stdin), the main loop collecting
# garbage only where the tick has slack, and the front-end fault's errno detail.
import gc
import sys
import time

from eng_common import RG, Clock, Frontend, H, S, json, make, ring  # noqa: F401

from protocol import framing as F
from protocol import messages as M

CFG = {"v_min_uV": -2000000, "v_max_uV": 2000000, "compliance_uV": 4500000}


def cc_schedule(tick, slow, minutes=10):
    t = minutes * 60000
    return H.build(
        H.hdr(tick=tick, slow=slow),
        [
            H.step(S.K_CC, iset=200000, rdt=1000, limits=[H.lim(S.Q_TIME, S.OP_GE, t)]),
            H.step(S.K_CV, vset=-100000, rdt=1000, limits=[H.lim(S.Q_TIME, S.OP_GE, t)]),
        ],
    )


def sc_cost():
    import micropython

    clk, _fe, eng = make("rc", r_ohm=250, c_uf=100000, rp_ohm=2000, noise_uv=30, noise_na=20)
    before = eng.cost()
    for _ in range(40):  # idle ticks (a measurement each)
        clk.advance(1000)
        eng.tick()
    idle_only = eng.cost()
    eng.load(cc_schedule(10, 10, 1))
    eng.start(7)
    fails = 0
    n = 0
    t_end = clk.t + 120000
    while clk.t < t_end and eng.state == H.ST_RUNNING:
        d = clk.ticks_diff(eng.due, clk.ticks_ms())
        if d > 0:
            clk.advance(d)
        micropython.heap_lock()
        try:
            eng.tick()
        except MemoryError:
            fails += 1
        micropython.heap_unlock()
        n += 1
        H.drain(eng.ring, H.Count(), True)
    ran = eng.cost()
    eng.stop()
    for _ in range(40):  # idle again: the run's figures stay
        clk.advance(1000)
        eng.tick()
    return {
        "before": before,
        "idle_only": idle_only,
        "ran": ran,
        "after": eng.cost(),
        "ticks": n,
        "alloc_failures": fails,
        "window": len(eng.c_run),
    }


def sc_gc():
    # what gc.collect() takes here (the firmware's modules, a 512-slot ring, a link), with the
    # heap as left after a collection and with ~40 KB of garbage in it
    import link

    _clk, fe, eng = make("rc")
    lk = link.Link(eng, fe, io=_NullIO())
    lk.poll()

    def timed():
        t0 = time.ticks_us()
        gc.collect()
        return time.ticks_diff(time.ticks_us(), t0)

    clean = []
    dirty = []
    for _ in range(9):
        clean.append(timed())
    for _ in range(9):
        junk = [bytearray(64) for _ in range(500)]  # ~40 KB
        junk = None  # noqa: F841
        dirty.append(timed())
    clean.sort()
    dirty.sort()
    return {
        "heap_free": gc.mem_free(),
        "heap_used": gc.mem_alloc(),
        "clean_us": clean[len(clean) // 2],
        "dirty_us": dirty[len(dirty) // 2],
        "max_us": max(clean[-1], dirty[-1]),
    }


class _NullIO:
    def readinto(self, buf):
        return 0

    def write(self, data):
        pass


def sc_rx():
    # StdIO.readinto on the real stdin (a pipe the test filled and closed), under heap_lock
    import link
    import micropython

    io = link.StdIO()
    buf = bytearray(link.RX_CHUNK)
    io._ready()  # the first ipoll makes its result tuple (once)
    lens = []
    ends = []
    got = bytearray(8192)
    total = 0
    fails = 0
    t0 = time.ticks_us()
    while True:
        micropython.heap_lock()
        try:
            k = io.readinto(buf)
        except MemoryError:
            k = -1
        micropython.heap_unlock()
        if k < 0:
            fails += 1
            break
        if k == 0:
            break
        got[total : total + k] = buf[:k]
        total += k
        lens.append(k)
        ends.append(buf[k - 1])
    us = time.ticks_diff(time.ticks_us(), t0)
    return {
        "total": total,
        "crc": F.crc16(got, 0, total),
        "lens": lens,
        "ends": ends,
        "alloc_failures": fails,
        "us": us,
    }


def sc_rx_old():
    # the receive path as it was (poll(0) and one readinto and one push per byte), for the
    # comparison the test prints
    import select

    dfr = F.Deframer()
    p = select.poll()
    p.register(sys.stdin, select.POLLIN)
    inp = sys.stdin.buffer
    b1 = bytearray(1)
    n = 0
    frames = 0
    alloc = -1
    gc.collect()
    gc.disable()  # over the first 128 bytes: what it allocates per byte
    a0 = gc.mem_alloc()
    t0 = time.ticks_us()
    while True:
        ev = p.poll(0)
        if not ev or not (ev[0][1] & 1) or inp.readinto(b1, 1) != 1:
            break
        n += 1
        dfr.push(b1, 0)
        if dfr.ready:
            frames += 1
        if n == 128:
            alloc = gc.mem_alloc() - a0
            gc.enable()
    us = time.ticks_diff(time.ticks_us(), t0)
    gc.enable()
    return {"total": n, "frames": frames, "us": us, "alloc_128": alloc}


def sc_rx_new():
    # the same stream through Link.poll() (StdIO.readinto, batches through the deframer)
    import link

    _clk, fe, eng = make("rc")
    lk = link.Link(eng, fe)  # io: StdIO, the real stdin
    frames = [0]

    def handle():
        frames[0] += 1  # count frames only

    lk.handle = handle
    lk.io._ready()  # the first ipoll makes its result tuple (once)
    n = 0
    gc.collect()
    gc.disable()
    a0 = gc.mem_alloc()
    t0 = time.ticks_us()
    while True:
        k = lk.poll()
        if k == 0:
            break
        n += k
    us = time.ticks_diff(time.ticks_us(), t0)
    alloc = gc.mem_alloc() - a0
    gc.enable()
    return {"total": n, "frames": frames[0], "us": us, "alloc": alloc}


def sc_poll_heap():
    # Link.poll() over bytes that complete no frame (a frame's body arriving in pieces) and
    # over nothing: no allocation
    import link
    import micropython

    class Trickle:
        def __init__(self):
            self.left = 0
            self.out = []

        def readinto(self, buf):
            k = min(self.left, len(buf), 7)
            for j in range(k):
                buf[j] = 0x55
            self.left -= k
            return k

        def write(self, data):
            self.out.append(bytes(data))

    _clk, fe, eng = make("rc")
    io = Trickle()
    lk = link.Link(eng, fe, io=io)
    lk.poll()
    fails = 0
    n = 0
    for rnd in range(40):
        io.left = 5 if rnd % 2 else 0
        micropython.heap_lock()
        try:
            n += lk.poll()
        except MemoryError:
            fails += 1
        micropython.heap_unlock()
    # the body (200 bytes so far) then ends: a frame error is answered (allocating, outside)
    return {"bytes": n, "alloc_failures": fails, "replies": len(io.out)}


# ---- the main loop ------------------------------------------------------------------------------
class UsClock(Clock):
    # the engine tests' virtual clock with a µs counter
    def ticks_us(self):
        return (self.t * 1000) & 0x3FFFFFFF


class FakeGC:
    # stands in for the gc module inside main.loop: a collection takes ``ms`` of the clock;
    # each records the slack it had (ms to the next tick) and whether a tick was running
    def __init__(self, clk, eng, ms):
        self.clk = clk
        self.eng = eng
        self.ms = ms
        self.in_tick = False
        self.log = []

    def collect(self):
        eng = self.eng
        slack = self.clk.ticks_diff(eng.due, self.clk.ticks_ms())
        self.log.append((slack, self.in_tick, eng.state))
        self.clk.advance(self.ms)


class LoopIO:
    def readinto(self, buf):
        return 0

    def write(self, data):
        pass


def _machine():
    class Machine:
        def reset_cause(self):
            return 1

        def unique_id(self):
            return b"budget01"

    return Machine()


def sc_loop(tick_ms):
    # one board per process (two do not fit this heap side by side)
    import link  # noqa: F401  (compiled first, while the heap is in one piece)
    import main
    import runstate  # noqa: F401

    gc.collect()
    tick_ms = int(tick_ms)
    clk = UsClock(1000)
    fe = Frontend(clock=clk, model="rc", r_ohm=250, c_uf=100000, rp_ohm=2000)
    cfg = dict(CFG)
    cfg["ring_slots"] = 256
    b = main.boot(fe=fe, cfg=cfg, io=LoopIO(), clock=clk, machine=_machine(), wdt=False)
    eng = b["eng"]
    fake = FakeGC(clk, eng, 30)
    real_gc = main.gc
    main.gc = fake
    main.GC_TICKS = 40  # collect often enough to see where
    late = [0, 0]  # ticks, late ticks (after the first: loop()'s own measurement delays it)
    tick = eng.tick

    def timed_tick(fake=fake, tick=tick, eng=eng, clk=clk, late=late):
        if late[0] and clk.ticks_diff(clk.ticks_ms(), eng.due) > 0:
            late[1] += 1
        late[0] += 1
        fake.in_tick = True
        try:
            tick()
        finally:
            fake.in_tick = False

    eng.tick = timed_tick
    eng.load(cc_schedule(tick_ms, tick_ms, 1))
    eng.start(9)
    try:
        main.loop(b, clock=clk, max_passes=6000)
    finally:
        main.gc = real_gc
        main.GC_TICKS = 1000
    running = [s for s in fake.log[1:] if s[2] == H.ST_RUNNING]
    return {
        "collections": len(fake.log) - 1,  # the first is loop()'s measurement
        "while_running": len(running),
        "min_slack_ms": min([s[0] for s in fake.log[1:]] or [-1]),
        "in_tick": sum(1 for s in fake.log if s[1]),
        "late_ticks": late[1],
        "ticks": late[0],
        "state": eng.state,
    }


def sc_fault():
    # boot with a front end whose init raises: EV_ERROR FAULT_FRONTEND carries the errno
    import link  # noqa: F401  (compiled first, while the heap is in one piece)
    import main
    import runstate  # noqa: F401

    gc.collect()

    out = {}
    for name, exc in (
        ("etimedout", OSError(110)),
        ("enodev", OSError(19)),
        ("other", ValueError("bad pin")),
    ):

        class Boom:
            def __init__(self, cfg=None, exc=exc):
                raise exc

        class Mod:
            pass

        mod = Mod()
        mod.Frontend = Boom
        sys.modules["frontend"] = mod
        cfg = dict(CFG)
        cfg["ring_slots"] = 256
        b = main.boot(cfg=cfg, io=LoopIO(), clock=Clock(1000), machine=_machine(), wdt=False)
        recs = []
        H.drain(b["ring"], recs, True, False)
        ev = [r for r in H.events(recs) if r[3] == M.EV_ERROR and r[4] == M.FAULT_FRONTEND]
        out[name] = [r[7] for r in ev]
        b = None
        gc.collect()
    del sys.modules["frontend"]
    return out


if __name__ == "__main__":
    print(json.dumps(globals()["sc_" + sys.argv[1]](*sys.argv[2:])))
