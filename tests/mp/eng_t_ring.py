# Ring buffer and host-loss policy checks. Each check_* raises AssertionError on failure; run
# under MicroPython (`micropython eng_t_ring.py` prints a JSON summary) or import under CPython.
import gc
import struct
import sys

import ring

S_FMT = "<IHiiiHHBB"
# copies of protocol.messages names (tied to the protocol by tests/test_wire_ids.py)
SAMPLE = 0x44
EVENT = 0x45
F_STEP_FIRST = 0x01
F_GAP = 0x40


def sample_fields(rg, off):
    typ, seq, pay = rg.record(off)
    return (typ, seq) + struct.unpack(S_FMT if typ == SAMPLE else "<IHBBHHii", bytes(pay))


def send_all(rg):
    out = []
    while True:
        off = rg.peek_send()
        if off < 0:
            return out
        out.append(sample_fields(rg, off))
        rg.mark_sent()


def check_ack_replay():
    rg = ring.Ring(256, reserve=8)
    for k in range(10):
        assert rg.push_sample(k, 0, 1000 + k, k, k, 0, 0, 1, 0)
    assert rg.push_event(10, 0, 3, 0, 1, 0, 7, 0)
    got = send_all(rg)
    assert [r[1] for r in got] == list(range(11))
    assert got[3][4] == 1003 and got[10][0] == EVENT
    assert rg.ack(4) == 5 and rg.first_seq() == 5 and rg.count == 6 and rg.pending() == 0
    assert rg.replay(3) == 5  # gone: NACK with the oldest held
    assert rg.replay(7) == -1
    again = send_all(rg)
    assert [r[1] for r in again] == [7, 8, 9, 10]
    assert rg.replay(5) == -1 and len(send_all(rg)) == 6
    assert rg.replay(999) == -1 and rg.pending() == 0  # past the end: nothing to send
    rg.ack(100000)  # beyond anything produced: frees what exists, no more
    assert rg.count == 0 and rg.acked == 10 and rg.first_seq() == 11
    assert rg.replay(11) == -1 and rg.replay(10) == 11
    return "ok"


def check_reserve_and_full():
    rg = ring.Ring(128, reserve=16)
    n = 0
    while rg.push_sample(n, 0, 0, 0, 0, 0, 0, 0, 0):
        n += 1
    assert n == 128 - 16 and rg.sample_room() == 0
    assert rg.push_sample(0, 0, 0, 0, 0, 0, 0, 0, 0, True, True)  # forced: uses the reserve
    e = 0
    while rg.push_event(0, 0, 1, 0, 0, 0, 0, 0):
        e += 1
    assert e == 15 and rg.count == 128 and rg.lost == 1
    return "ok"


def check_wrap_and_chunks():
    rg = ring.Ring(300, reserve=4)  # rounds up to 3 chunks of 128
    assert rg.capacity == 384 and len(rg.chunks) == 3
    seq = 0
    for rnd in range(7):
        for k in range(250):
            assert rg.push_sample(seq, rnd, seq * 3, -seq, seq, k, rnd, 2, 0)
            seq += 1
        got = send_all(rg)
        assert len(got) == 250
        for r in got:
            assert r[4] == r[1] * 3 and r[5] == -r[1] and r[2] == r[1]
        rg.ack(got[-1][1])
        assert rg.count == 0
        # the unix port's GC scans the C stack conservatively: a collection from up here
        # frees the previous rounds that a collection deep in an allocation may still see
        gc.collect()
    return "ok"


def check_decimate():
    rg = ring.Ring(256, reserve=8)
    kinds = []
    for k in range(120):
        if k % 25 == 0:
            rg.push_event(k, 0, 3, 0, 0, 0, k, 0)
            kinds.append("E")
        elif k % 10 == 0:
            rg.push_sample(k, 0, k, 0, 0, 0, 0, 0, 1, True)  # a step boundary
            kinds.append("B")
        else:
            rg.push_sample(k, 0, k, 0, 0, 0, 0, 0, 0)
            kinds.append("S")
    sent_before = 30
    for _ in range(sent_before):
        rg.mark_sent()
    n_drop = rg.decimate()
    plain = kinds.count("S")
    assert n_drop == plain // 2
    assert rg.count == 120 - n_drop and rg.dropped == n_drop
    rg.sent = 0
    got = send_all(rg)
    seqs = [r[1] for r in got]
    assert seqs == sorted(seqs)
    held = set(seqs)
    for k in range(120):
        if kinds[k] != "S":
            assert k in held  # events and boundaries are never dropped
    # every dropped sample is followed by a kept sample flagged F_GAP
    for k in range(120):
        if k not in held:
            nxt = [r for r in got if r[1] > k and r[0] == SAMPLE]
            if nxt:
                assert nxt[0][-1] & F_GAP, (k, nxt[0])
            else:
                assert rg.gap  # ... or the next sample produced gets it
    # replay from a dropped seq starts at the next held record
    missing = next(k for k in range(120) if k not in held)
    assert rg.replay(missing) == -1
    assert sample_fields(rg, rg.peek_send())[1] == missing + 1 or missing + 1 not in held
    # repeated passes keep thinning old samples, never boundaries
    for _ in range(6):
        rg.decimate()
    rg.sent = 0
    got = send_all(rg)
    assert sum(1 for r in got if r[0] == EVENT) == kinds.count("E")
    assert sum(1 for r in got if r[0] == SAMPLE and r[-1] & F_STEP_FIRST) == kinds.count("B")
    return "ok"


def check_sent_pointer_after_decimate():
    rg = ring.Ring(128, reserve=8)
    for k in range(100):
        rg.push_sample(k, 0, k, 0, 0, 0, 0, 0, 0)
    for _ in range(40):
        rg.mark_sent()
    rg.decimate()
    # unsent records stay unsent: the next one to send is the first kept seq >= 40
    nxt = sample_fields(rg, rg.peek_send())[1]
    assert 40 <= nxt <= 41, nxt
    return "ok"


def check_u32_wrap():
    rg = ring.Ring(128, reserve=4, first_seq=0xFFFFFFF0)
    for k in range(40):
        rg.push_sample(k, 0, k, 0, 0, 0, 0, 0, 0)
    got = send_all(rg)
    assert got[0][1] == 0xFFFFFFF0 and got[15][1] == 0xFFFFFFFF and got[16][1] == 0
    assert rg.replay(0xFFFFFFF8) == -1 and sample_fields(rg, rg.peek_send())[1] == 0xFFFFFFF8
    assert rg.ack(5) == 22 and rg.first_seq() == 6
    assert rg.replay(0xFFFFFFFF) == 6
    return "ok"


def check_hold_policy_engine():
    # engine-level: P_HOLD opens the relay and stops the step clock until the host acks
    import eng_sched as H
    import engine
    from eng_fakefe import Clock, Frontend

    from protocol import schedule as S

    clk = Clock(0)
    fe = Frontend(clock=clk, model="rc", r_ohm=250, c_uf=10000000, v0_uv=0)
    rg = ring.Ring(128, reserve=8)
    eng = engine.Engine(fe, clock=clk, ring=rg)
    eng.load(
        H.build(
            H.hdr(policy=S.P_HOLD, tick=100, slow=100),
            [
                H.step(S.K_CC, iset=100000, rdt=100, limits=[H.lim(S.Q_TIME, S.OP_GE, 30000)]),
                H.step(S.K_REST, limits=[H.lim(S.Q_TIME, S.OP_GE, 1000)]),
            ],
        )
    )
    eng.start(5)
    recs = []
    H.run(eng, clk, 60000, stop_states=(H.ST_DONE, H.ST_HOLD), ack=False)
    assert eng.state == H.ST_HOLD, eng.state
    assert not fe.connected and fe.i_cmd == 0
    t_hold = clk.t
    st_s = eng.st_s
    q_hold = fe.q
    H.run(eng, clk, 120000, stop_states=(H.ST_DONE,), ack=False)  # host away 2 min
    assert eng.state == H.ST_HOLD and eng.st_s == st_s and fe.q == q_hold
    H.drain(rg, recs, True)  # the host is back and acks everything
    H.run(eng, clk, 120000, drain_into=recs)
    assert eng.state == H.ST_DONE
    loss = H.events(recs, H.EV_HOST_LOSS)
    res = H.events(recs, H.EV_RESUMED)
    assert len(loss) == 1 and loss[0][4] == S.P_HOLD and len(res) == 1
    end = H.events(recs, H.EV_STEP_END)[0]
    start = H.events(recs, H.EV_STEP_START)[0]
    # step clock stopped while held: the 30 s CC step took 30 s of clock + the hold
    assert end[2] - start[2] >= 30000 + 120000
    assert abs(end[8] - 100000 * 30000 // 3600000) <= 3  # charge of exactly 30 s at 100 µA
    held = [r for r in recs if r[0] == "S" and r[1] > loss[0][1] and r[1] < res[0][1]]
    assert all(r[9] & H.F_OPEN for r in held)
    return {"hold_s": (clk.t - t_hold) // 1000, "step_ms": end[2] - start[2], "q": end[8]}


def check_decimate_policy_engine():
    import eng_sched as H
    import engine
    from eng_fakefe import Clock, Frontend

    from protocol import schedule as S

    clk = Clock(0)
    fe = Frontend(clock=clk, model="rc", r_ohm=250, c_uf=10000000, v0_uv=0)
    rg = ring.Ring(128, reserve=8)
    eng = engine.Engine(fe, clock=clk, ring=rg)
    t = [H.lim(S.Q_TIME, S.OP_GE, 2000)]
    eng.load(
        H.build(
            H.hdr(policy=S.P_DECIMATE, tick=50, slow=50),
            [
                H.step(S.K_CC, iset=100000, rdt=50, limits=t),
                H.step(S.K_REST, rdt=50, limits=t),
                H.step(S.K_LOOP, ltgt=0, lcnt=9),
            ],
        )
    )
    eng.start(6)
    H.run(eng, clk, 100000, ack=False)
    assert eng.state == H.ST_DONE
    recs = []
    H.drain(rg, recs, True)
    dec = H.events(recs, H.EV_DECIMATED)
    assert dec and rg.dropped > 0
    assert [e[7] for e in dec] == sorted(e[7] for e in dec) and dec[-1][7] <= rg.dropped
    assert len(H.events(recs, H.EV_STEP_START)) == 20 == len(H.events(recs, H.EV_STEP_END))
    firsts = [r for r in recs if r[0] == "S" and r[9] & H.F_STEP_FIRST]
    lasts = [r for r in recs if r[0] == "S" and r[9] & H.F_STEP_LAST]
    assert len(firsts) == 20 and len(lasts) == 20
    assert any(r[9] & H.F_GAP for r in recs if r[0] == "S")
    assert fe.q // 3600000 >= 100000 * 20000 // 3600000 - 2  # never held: all 10 CC steps ran
    return {"dropped": rg.dropped, "held": len(recs), "decimations": len(dec)}


CHECKS = (
    "ack_replay",
    "reserve_and_full",
    "wrap_and_chunks",
    "decimate",
    "sent_pointer_after_decimate",
    "u32_wrap",
    "hold_policy_engine",
    "decimate_policy_engine",
)

if __name__ == "__main__":
    try:
        import ujson as json
    except ImportError:
        import json
    out = {}
    for name in CHECKS:
        gc.collect()
        out[name] = globals()["check_" + name]()
    print(json.dumps(out))
    sys.exit(0)
