# Engine scenarios: voltage cutoff overshoot, coulomb counting, safety trip, loops.
import gc

from eng_common import *  # noqa: F403
from eng_common import Clock, Frontend, H, S, crossing, engine, go, main, make, ring, sign_changes  # noqa: F401


def cutoff(model, kw, i_na, v_lim, below, tick, slow, landing=True):
    clk, fe, eng = make(model, **kw)
    fe.trace = []
    eng.landing = landing
    op = S.OP_LE if below else S.OP_GE
    blob = H.build(
        H.hdr(tick=tick, slow=slow),
        [
            H.step(S.K_CC, iset=i_na, rdt=10000, rdv=5000, limits=[H.lim(S.Q_V, op, v_lim)]),
            H.step(S.K_REST, limits=[H.lim(S.Q_TIME, S.OP_GE, 1000)]),
        ],
    )
    t0 = clk.t
    recs = go(eng, clk, blob, 200000000, samples=False)
    # the switch away from the CC current: first trace entry with i_before == CC current and
    # i_after != it (relay stays closed into the rest)
    sw = None
    for e in fe.trace:
        if e[2] != 0 and e[3] != e[2]:
            sw = e
            break
    t_cross, q_cross, _v_cross = crossing(
        model, kw, fe.i_cmd if sw is None else sw[2], v_lim, sw[0] - t0 + 10, below
    )
    ev = H.events(recs, H.EV_CUTOFF)[0]
    return {
        "over_uV": (v_lim - sw[1]) if below else (sw[1] - v_lim),
        "over_nAh_x1000": (sw[4] - q_cross) * 1000 // 3600000
        if i_na > 0
        else (q_cross - sw[4]) * 1000 // 3600000,
        "late_ms": sw[0] - t0 - t_cross,
        "ev_value": ev[7],
        "ev_aux": ev[8],
        "ticks": eng.n_ticks,
        "t_cc_s": (sw[0] - t0) // 1000,
    }


def sc_cutoff():
    out = {}
    rc = {"r_ohm": 250, "c_uf": 1000000, "v0_uv": 0}  # 250 Ω + 1 F: V falls 100 µV/s at 100 µA
    si = {"r_ohm": 250, "q0_nah": 250000}  # Si-like film, lithiation end at C/6
    si_d = {"r_ohm": 250, "q0_nah": 60000}  # ... delithiation end
    for land in (True, False):
        tag = "" if land else "_noland"
        out["rc" + tag] = cutoff("rc", rc, 100000, -300000, True, 100, 1000, land)
        out["si_lith" + tag] = cutoff("si", si, 56700, -610000, True, 100, 1000, land)
        out["si_delith" + tag] = cutoff("si", si_d, -56700, 580000, False, 100, 1000, land)
        # 10 mA/cm2 (100x the slope), low-resistance cell so the IR drop leaves room
        out["si_lith_10mA" + tag] = cutoff(
            "si", {"r_ohm": 5, "q0_nah": 250000}, 5670000, -610000, True, 100, 1000, land
        )
    # ADS1115-like readings: ±60 µV noise, 62.5 µV steps (the detection can come early, too)
    nz = {"noise_uv": 60, "lsb_uv": 62}
    for k, v in (("rc", rc), ("si_lith", si), ("si_delith", si_d)):
        kw = dict(v)
        kw.update(nz)
        i = 100000 if k == "rc" else (56700 if k == "si_lith" else -56700)
        lim = -300000 if k == "rc" else (-610000 if k == "si_lith" else 580000)
        out[k + "_noisy"] = cutoff("si" if k != "rc" else "rc", kw, i, lim, i > 0, 100, 1000)
    return out


def sc_cc_charge():
    out = {}
    for noise in (0, 200):
        clk, fe, eng = make("rc", r_ohm=250, c_uf=10000000, v0_uv=0, noise_na=noise)
        blob = H.build(
            H.hdr(tick=100, slow=1000),
            [H.step(S.K_CC, iset=123457, rdt=60000, limits=[H.lim(S.Q_TIME, S.OP_GE, 3600000)])],
        )
        recs = go(eng, clk, blob, 4000000)
        end = H.events(recs, H.EV_STEP_END)[0]
        q_true = fe.q  # nA*ms actually passed
        q_board, rem = eng.q_exact()
        out["noise%d" % noise] = {
            "q_board_nAh": end[8],
            "q_true_nAh_x1000": q_true * 1000 // 3600000,
            "i_cmd": fe.i_cmd,
            "q_board_exact_x1000": q_board * 1000 + rem * 1000 // 7200000,
            "t_ms": H.samples(recs)[-1][2] - H.samples(recs)[0][2],
            "ticks": eng.n_ticks,
        }
    return out


def sc_safety():
    out = {}
    for deb in (0, 200, 1000):
        gc.collect()
        kw = {"r_ohm": 250, "c_uf": 1000, "v0_uv": 0}  # 400 µA: V falls 0.4 V/s
        clk, fe, eng = make("rc", **kw)
        fe.trace = []
        blob = H.build(
            H.hdr(tick=20, slow=20, deb=deb, vmin=-300000, vmax=1000000, imax=2000000),
            [
                H.step(S.K_REST, limits=[H.lim(S.Q_TIME, S.OP_GE, 200)]),
                H.step(
                    S.K_CC, iset=400000, rdt=20, rdv=2000, limits=[H.lim(S.Q_TIME, S.OP_GE, 10000)]
                ),
                H.step(S.K_REST, limits=[H.lim(S.Q_TIME, S.OP_GE, 1000)]),
            ],
        )
        recs = go(eng, clk, blob, 60000)
        cc = next(e for e in fe.trace if e[3] != 0)
        t_cc = cc[0]
        t_open = next(e for e in fe.trace if e[2] == cc[3] and e[3] == 0)[0]
        t_x, _, _ = crossing("rc", kw, cc[3], -300000, 10000, True)
        trip = H.events(recs, H.EV_SAFETY)[0]
        first_out = next(s for s in H.samples(recs) if s[3] < -300000)
        after = [s for s in H.samples(recs) if s[1] > trip[1]]
        out["deb%d" % deb] = {
            "open_after_cross_ms": t_open - (t_cc + t_x),
            "trip_minus_first_sample_ms": trip[2] - first_out[2],
            "state": eng.state,
            "connected": fe.connected,
            "i_after": fe.i_cmd,
            "n_after": len(after),
            "after_open": all(s[9] & H.F_OPEN for s in after),
            "after_i_max": max([abs(s[4]) for s in after]) if after else -1,
            "step2_ran": len(H.samples(recs, 2)) > 0,
            "reason": trip[4],
        }
    return out


def sc_loops():
    R = S.K_REST
    t = lambda ms: [H.lim(S.Q_TIME, S.OP_GE, ms)]  # noqa: E731
    steps = [
        H.step(R, limits=t(1000)),  # 0  outer body start
        H.step(S.K_CC, iset=10000, limits=t(1000)),  # 1  inner body
        H.step(S.K_CC, iset=-10000, limits=t(1000)),  # 2
        H.step(S.K_LOOP, ltgt=1, lcnt=2),  # 3  inner: body 1..2 runs 3x per outer pass
        H.step(R, limits=t(500)),  # 4
        H.step(S.K_LOOP, ltgt=0, lcnt=3),  # 5  outer: runs 4x
        # goto out of a loop body: step 6 jumps to 8 on its first visit (limit), 7 never runs
        H.step(R, limits=[H.lim(S.Q_TIME, S.OP_GE, 100, S.A_GOTO, 8)]),  # 6
        H.step(R, limits=t(100)),  # 7
        H.step(R, limits=t(100)),  # 8
        H.step(S.K_LOOP, ltgt=6, lcnt=1),  # 9: 6..8 twice
        H.step(R, limits=[H.lim(S.Q_TIME, S.OP_GE, 100, S.A_END)]),  # 10: ends the run
        H.step(S.K_CC, iset=1000, limits=t(100)),  # 11: never
    ]
    clk, _fe, eng = make("rc", r_ohm=250, c_uf=1000000, v0_uv=0)
    recs = go(eng, clk, H.build(H.hdr(tick=50, slow=1000), steps), 100000000)
    counts = [0] * len(steps)
    for e in H.events(recs, H.EV_STEP_START):
        counts[e[5]] += 1
    cyc = [e[6] for e in H.events(recs, H.EV_STEP_START)]
    return {
        "starts": counts,
        "state": eng.state,
        "cycles_max": max(cyc),
        "run_end": H.events(recs, H.EV_RUN_END)[0][4],
    }


if __name__ == "__main__":
    main(globals())
