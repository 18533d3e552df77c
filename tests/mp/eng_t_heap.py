# Engine scenarios: no allocation in the tick (heap_lock), tick timing (MicroPython only).
import gc

from eng_common import *  # noqa: F403
from eng_common import (  # noqa: F401
    RG,
    Clock,
    Frontend,
    H,
    S,
    crossing,
    engine,
    go,
    main,
    make,
    ring,
    sign_changes,
)


def full_schedule(policy=0):
    t = lambda ms: [H.lim(S.Q_TIME, S.OP_GE, ms)]  # noqa: E731
    return H.build(
        H.hdr(policy=policy, tick=50, slow=500, deb=100),
        [
            H.step(S.K_REST, rdt=200, limits=t(2000)),
            H.step(
                S.K_CC,
                iset=500000,
                rdt=100,
                rdv=500,
                limits=[H.lim(S.Q_V, S.OP_LE, -150000), H.lim(S.Q_TIME, S.OP_GE, 60000)],
            ),
            H.step(
                S.K_CV,
                vset=-200000,
                rdt=300,
                rdi=2000,
                limits=[H.lim(S.Q_ABS_I, S.OP_LE, 20000), H.lim(S.Q_TIME, S.OP_GE, 20000)],
            ),
            H.step(S.K_OCV, rdt=500, limits=t(3000)),
            H.step(
                S.K_CCCV,
                iset=-300000,
                vset=-50000,
                rdt=250,
                rdq=50,
                limits=[H.lim(S.Q_ABS_I, S.OP_LE, 30000), H.lim(S.Q_TIME, S.OP_GE, 30000)],
            ),
            H.step(
                S.K_REST,
                rdt=100,
                limits=[H.lim(S.Q_DVDT, S.OP_LE, 10), H.lim(S.Q_TIME, S.OP_GE, 5000)],
            ),
            H.step(S.K_LOOP, ltgt=1, lcnt=3),
            H.step(
                S.K_CC,
                rng=2,
                iset=200000,
                rdt=50,
                limits=[
                    H.lim(S.Q_ABS_Q, S.OP_GE, 100, S.A_GOTO, 9),
                    H.lim(S.Q_TIME, S.OP_GE, 5000),
                ],
            ),
            H.step(S.K_REST, limits=t(100)),
            H.step(S.K_REST, rdt=100, limits=t(2000)),
        ],
    )


def sc_heap(policy=0, ack=True, cap=1024):
    import micropython

    rg = RG if cap == 1024 else ring.Ring(cap)
    clk, _fe, eng = make(
        "rc", ring_obj=rg, r_ohm=250, c_uf=100000, rp_ohm=2000, v0_uv=0, noise_uv=30, noise_na=20
    )
    eng.load(full_schedule(policy))
    eng.start(3)
    fails = 0
    ticks = 0
    recs = H.Count()
    first_fail = None
    t_end = clk.t + 3000000
    while clk.t < t_end and eng.state != H.ST_DONE:
        d = clk.ticks_diff(eng.due, clk.ticks_ms())
        if d > 0:
            clk.advance(d)
        micropython.heap_lock()
        try:
            eng.tick()
        except MemoryError:
            fails += 1
        micropython.heap_unlock()
        ticks += 1
        if fails and first_fail is None:
            first_fail = (ticks, eng.state, eng.step, eng.kind)
        if ack:
            H.drain(rg, recs, True)
        elif eng.state == H.ST_HOLD and ticks % 200 == 0:
            H.drain(rg, recs, True)  # the host returns now and then
    if not ack:
        H.drain(rg, recs, True)
    return {
        "ticks": ticks,
        "alloc_failures": fails,
        "first_fail": first_fail,
        "state": eng.state,
        "dropped": rg.dropped,
        "records": recs.n,
        "decimated_events": recs.ev.get(H.EV_DECIMATED, 0),
        "hold_events": recs.ev.get(H.EV_HOST_LOSS, 0),
        "resumed_events": recs.ev.get(H.EV_RESUMED, 0),
        "seq_errors": recs.seq_errors,
        "step_starts": recs.ev.get(H.EV_STEP_START, 0),
        "step_ends": recs.ev.get(H.EV_STEP_END, 0),
        "firsts": recs.firsts,
        "lasts": recs.lasts,
        "gap_flags": recs.gaps,
        "lost": rg.lost,
    }


def sc_heap_all():
    return {"acked": sc_heap(), "decimate": sc_heap(0, False, 256), "hold": sc_heap(1, False, 256)}


def sc_timing():
    import time

    clk, fe, eng = make(
        "si",
        r_ohm=250,
        q0_nah=200000,
        r2_ohm=500,
        tau2_ms=20000,
        noise_uv=60,
        noise_na=30,
        lsb_uv=62,
    )
    # the decimation ring below needs whole 4 KB chunks: take them now, before the timing
    # loop's garbage fragments a 192K heap (CI once failed to find one afterwards)
    gc.collect()
    rg = ring.Ring(1024)
    eng.load(full_schedule(0))
    eng.start(4)
    tot = 0
    n = 0
    hist = [0] * 12  # 2**k µs buckets
    durs = {}
    recs = H.Count()
    t_end = clk.t + 1200000
    gc.collect()
    while clk.t < t_end and eng.state == H.ST_RUNNING:
        d = clk.ticks_diff(eng.due, clk.ticks_ms())
        if d > 0:
            clk.advance(d)
        kind = eng.kind if not eng.cv else 9
        t0 = time.ticks_us()
        eng.tick()
        dt = time.ticks_diff(time.ticks_us(), t0)
        tot += dt
        n += 1
        k = 0
        while k < 11 and (1 << (k + 1)) <= dt:
            k += 1
        hist[k] += 1
        a = durs.get(kind)
        durs[kind] = (a[0] + dt, a[1] + 1, max(a[2], dt)) if a else (dt, 1, dt)
        H.drain(eng.ring, recs, True)
    srt = 0
    p99 = 0
    for k in range(12):
        srt += hist[k]
        if srt * 100 >= n * 99:
            p99 = 1 << (k + 1)
            break
    t0 = time.ticks_us()
    for _ in range(1000):
        fe.measure()
    fe_us = time.ticks_diff(time.ticks_us(), t0) // 1000
    # worst single tick: a decimation pass over a full ring (1024 slots)
    for k in range(1024 - 16):
        rg.push_sample(k, 0, k, k, k, 0, 0, 0, 0)
    t0 = time.ticks_us()
    dropped = rg.decimate()
    dec_us = time.ticks_diff(time.ticks_us(), t0)
    kinds = {}
    for kk in durs:
        a = durs[kk]
        kinds[("cv" if kk == 9 else S.KIND_NAMES[kk])] = {
            "mean_us": a[0] // a[1],
            "max_us": a[2],
            "n": a[1],
        }
    return {
        "ticks": n,
        "mean_us": tot // max(1, n),
        "p99_us_le": p99,
        "hist_pow2": hist,
        "by_kind": kinds,
        "fake_measure_us": fe_us,
        "decimate_1024_us": dec_us,
        "decimate_dropped": dropped,
    }


if __name__ == "__main__":
    main(globals())
