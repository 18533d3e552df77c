# Engine scenarios: the boundary samples of a relay-open stretch (PAUSE / RESUME, STOP, safety
# trip, host-loss hold) and the step charge across it. A CC step of 100 µA on the fake RC load;
# the fake front end integrates the true charge, so the board's count is checked against it.
from eng_common import *  # noqa: F403
from eng_common import Clock, Frontend, H, S, engine, go, main, make, ring

EV_PAUSED = 11  # messages.EV_PAUSED
I_CC = 100000  # nA
RC = {"r_ohm": 250, "c_uf": 10000000, "v0_uv": 0}  # 250 Ω + 10 F: V moves 10 µV/s


def cc_blob(rdt=2000, secs=60):
    return H.build(
        H.hdr(tick=100, slow=1000),
        [
            H.step(S.K_CC, iset=I_CC, rdt=rdt, limits=[H.lim(S.Q_TIME, S.OP_GE, secs * 1000)]),
            H.step(S.K_REST, limits=[H.lim(S.Q_TIME, S.OP_GE, 1000)]),
        ],
    )


def run_for(eng, clk, ms, recs):
    # the virtual main loop for ``ms`` (the run may go on)
    H.run(eng, clk, ms, stop_states=(), drain_into=recs)


def sample_dict(s):
    # ('S', seq, t_ms, v, i, q, step, cycle, range, flags)
    return {"seq": s[1], "t_ms": s[2], "i": s[4], "q": s[5], "step": s[6], "flags": s[9]}


def boundary_report(recs):
    # the samples of step 0, and those of them with the relay open
    ss = [sample_dict(s) for s in H.samples(recs, 0)]
    return ss, [s for s in ss if s["flags"] & H.F_OPEN]


def sc_pause():
    # pause 20 s into the 60 s CC step, resume 20 s later (virtual time)
    clk, fe, eng = make("rc", **RC)
    eng.load(cc_blob())
    assert eng.start(1) == 0
    recs = []
    run_for(eng, clk, 20050, recs)
    q_true_pause = fe.q
    clk.advance(37)  # PAUSE arrives between two ticks
    assert eng.pause() == 0
    H.drain(eng.ring, recs)
    q_at_pause = eng.q_step
    q_true_at_pause = fe.q
    run_for(eng, clk, 20000, recs)  # paused: idle ticks only
    q_after_pause = eng.q_step
    clk.advance(13)
    assert eng.resume() == 0
    H.drain(eng.ring, recs)
    H.run(eng, clk, 120000, drain_into=recs)
    ss, opened = boundary_report(recs)
    end = H.events(recs, H.EV_STEP_END)[0]
    paused_ev = H.events(recs, EV_PAUSED)
    resumed_ev = H.events(recs, H.EV_RESUMED)
    return {
        "state": eng.state,
        "n_open": len(opened),
        "open_i": [s["i"] for s in opened],
        "open_q": [s["q"] for s in opened],
        "open_t": [s["t_ms"] for s in opened],
        "open_keep_between_events": [
            paused_ev[0][1] > opened[0]["seq"],
            opened[1]["seq"] > paused_ev[0][1],
            resumed_ev[0][1] > opened[1]["seq"],
        ],
        "q_at_pause": q_at_pause,
        "q_after_pause": q_after_pause,
        "q_true_at_pause_nAh": q_true_at_pause // 3600000,
        "q_true_before_cmd_nAh": q_true_pause // 3600000,
        "q_end": end[8],
        "q_true_end_nAh": fe.q // 3600000,
        "closed_after": [s["flags"] & H.F_OPEN for s in ss if s["seq"] > opened[1]["seq"]][:3],
        "step_ms": ss[-1]["t_ms"] - ss[0]["t_ms"],
        "gap_ms": opened[1]["t_ms"] - opened[0]["t_ms"],
    }


def sc_stop():
    clk, fe, eng = make("rc", **RC)
    eng.load(cc_blob())
    assert eng.start(1) == 0
    recs = []
    run_for(eng, clk, 10050, recs)
    clk.advance(41)
    assert eng.stop() == 0
    H.drain(eng.ring, recs)
    ss = [sample_dict(s) for s in H.samples(recs, 0)]
    last = ss[-1]
    end = H.events(recs, H.EV_STEP_END)[0]
    return {
        "state": eng.state,
        "last_flags": last["flags"],
        "last_i": last["i"],
        "last_q": last["q"],
        "end_aux": end[8],
        "q_true_nAh": fe.q // 3600000,
        "connected": fe.connected,
    }


def sc_trip():
    clk, _fe, eng = make("rc", r_ohm=250, c_uf=1000, v0_uv=0)  # 100 µA: V falls 0.1 V/s
    blob = H.build(
        H.hdr(tick=20, slow=20, deb=0, vmin=-300000, vmax=1000000, imax=2000000),
        [
            H.step(S.K_CC, iset=I_CC, rdt=500, limits=[H.lim(S.Q_TIME, S.OP_GE, 10000)]),
            H.step(S.K_REST, limits=[H.lim(S.Q_TIME, S.OP_GE, 1000)]),
        ],
    )
    recs = go(eng, clk, blob, 60000)
    trip = H.events(recs, H.EV_SAFETY)[0]
    after = [sample_dict(s) for s in H.samples(recs) if s[1] > trip[1]]
    end = H.events(recs, H.EV_STEP_END)[0]
    return {
        "state": eng.state,
        "n_after": len(after),
        "after_flags": [s["flags"] for s in after],
        "after_i": [s["i"] for s in after],
        "after_q": [s["q"] for s in after],
        "end_aux": end[8],
    }


class Keep:
    # a drain sink keeping only relay-open samples and events (a long run on a small heap)
    def __init__(self):
        self.recs = []

    def append(self, r):
        if r[0] == "E" or r[9] & H.F_OPEN:
            self.recs.append(r)


def sc_hold():
    # host-loss policy hold: a 128-slot ring fills while nothing is acked
    clk = Clock(0)
    fe = Frontend(clock=clk, model="rc", **RC)
    rg = ring.Ring(128, reserve=8)
    eng = engine.Engine(fe, clock=clk, ring=rg)
    eng.load(
        H.build(
            H.hdr(policy=S.P_HOLD, tick=100, slow=1000),
            [
                H.step(S.K_CC, iset=I_CC, rdt=1000, limits=[H.lim(S.Q_TIME, S.OP_GE, 300000)]),
                H.step(S.K_REST, limits=[H.lim(S.Q_TIME, S.OP_GE, 1000)]),
            ],
        )
    )
    eng.start(5)
    H.run(eng, clk, 600000, stop_states=(H.ST_DONE, H.ST_HOLD), ack=False)
    held_state = eng.state
    q_hold = eng.q_step
    H.run(eng, clk, 30000, stop_states=(H.ST_DONE,), ack=False)  # host away 30 s more
    q_held = eng.q_step
    sink = Keep()
    H.drain(rg, sink, True)
    H.run(eng, clk, 600000, drain_into=sink)
    recs = sink.recs
    loss = H.events(recs, H.EV_HOST_LOSS)[0]
    res = H.events(recs, H.EV_RESUMED)[0]
    opened = [sample_dict(s) for s in H.samples(recs, 0)]
    end = H.events(recs, H.EV_STEP_END)[0]
    return {
        "held_state": held_state,
        "state": eng.state,
        "n_open": len(opened),
        "open_i": [s["i"] for s in opened],
        "open_q": [s["q"] for s in opened],
        "hold_before_loss": opened[0]["seq"] < loss[1],
        "resume_before_resumed": loss[1] < opened[-1]["seq"] < res[1],
        "q_hold": q_hold,
        "q_held": q_held,
        "q_end": end[8],
        "q_true_end_nAh": fe.q // 3600000,
    }


if __name__ == "__main__":
    main(globals())
