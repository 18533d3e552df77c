# Engine scenarios: CV, CC-CV, rest ended by |dV/dt|. Long runs: figures are aggregated while
# the run goes (a 192 KB heap cannot hold hours of records).
import gc

from eng_common import H, S, go, main, make


class Agg:
    # folds records as they are drained: per-step sample counts, V error after settling, ...
    def __init__(self, step, v_set, settle_ms=30000):
        self.step = step
        self.v_set = v_set
        self.settle = settle_ms
        self.t0 = -1
        self.n = 0
        self.n_cv = 0
        self.n_cc_after_cv = 0
        self.v_err = 0
        self.v_over = 0
        self.i_last = 0
        self.i_max_cv = 0
        self.i_min_cv = 1 << 40
        self.t_last = 0
        self.t_cv0 = -1
        self.cc_v_min = 1 << 40
        self.ends = []
        self.buf = []
        self.f_cv_all = True

    def __call__(self, eng):
        buf = self.buf
        H.drain(eng.ring, buf, True)
        for r in buf:
            if r[0] == "E":
                if r[3] == H.EV_STEP_END:
                    self.ends.append((r[5], r[4], r[8]))
                continue
            if r[6] != self.step:
                continue
            t, v, i, fl = r[2], r[3], r[4], r[9]
            if self.t0 < 0:
                self.t0 = t
            self.n += 1
            self.t_last = t
            self.i_last = i
            cv = fl & H.F_CV
            if not cv:
                self.f_cv_all = False
                if self.t_cv0 >= 0:
                    self.n_cc_after_cv += 1
                if v < self.cc_v_min:
                    self.cc_v_min = v
                continue
            if self.t_cv0 < 0:
                self.t_cv0 = t
            self.n_cv += 1
            a = i if i >= 0 else -i
            self.i_max_cv = max(self.i_max_cv, a)
            self.i_min_cv = min(self.i_min_cv, a)
            e = v - self.v_set
            if t - self.t_cv0 > self.settle:
                self.v_err = max(self.v_err, e if e >= 0 else -e)
        del buf[:]


def cv_run(model, kw, v_set, end_na, max_ms, tick=100, pre_cc=0):
    clk, fe, eng = make(model, **kw)
    steps = []
    if pre_cc:
        steps.append(H.step(S.K_CC, iset=pre_cc, limits=[H.lim(S.Q_TIME, S.OP_GE, 5000)]))
    steps.append(
        H.step(
            S.K_CV,
            vset=v_set,
            rdt=1000,
            limits=[H.lim(S.Q_ABS_I, S.OP_LE, end_na), H.lim(S.Q_TIME, S.OP_GE, max_ms)],
        )
    )
    cv_idx = len(steps) - 1
    agg = Agg(cv_idx, v_set)

    def every(e):
        if e.step == cv_idx and e.kind == S.K_CV and agg.n == 0 and fe.n_cmd and pre_cc:
            fe.stats_reset()  # count the CV step's own current changes
        agg(e)

    eng.load(H.build(H.hdr(tick=tick, slow=1000), steps))
    eng.start(1)
    H.run(eng, clk, max_ms + 60000, every=every)
    agg(eng)
    end = next(e for e in agg.ends if e[0] == cv_idx)
    return {
        "sign_changes": fe.sign_changes,
        "sign_changes_big": fe.sc_big,
        "sc_di_max": fe.sc_di_max,
        "n_cmds": fe.n_cmd,
        "i_first": fe.cmd_first,
        "i_max": fe.cmd_absmax,
        "i_end": agg.i_last,
        "end_reason": end[1],
        "t_end_s": (agg.t_last - agg.t0) // 1000,
        "v_err_max_after_30s": agg.v_err,
        "f_cv_all": agg.f_cv_all,
        "r_est": eng.r_est,
        "h_rate": eng.h_rate,
        "sign": eng.sign,
    }


def sc_cv():
    out = {}
    # emulator-like RC dummy: 250 Ω + (1 mF || 1 kΩ): time constant comparable to the tick
    out["rc_leak"] = cv_run(
        "rc", {"r_ohm": 250, "c_uf": 1000, "rp_ohm": 1000, "v0_uv": 0}, -300000, 1, 120000
    )
    gc.collect()
    out["rc_1mF"] = cv_run("rc", {"r_ohm": 250, "c_uf": 1000, "v0_uv": 0}, -300000, 100, 120000)
    gc.collect()
    out["rc_1F"] = cv_run("rc", {"r_ohm": 250, "c_uf": 1000000, "v0_uv": 0}, -300000, 1000, 3600000)
    gc.collect()
    # Si-like cell, 250 Ω series + polarisation, from rest
    out["si_rest"] = cv_run(
        "si",
        {"r_ohm": 250, "q0_nah": 100000, "r2_ohm": 500, "tau2_ms": 30000},
        -400000,
        567,
        36000000,
    )
    gc.collect()
    # after a CC step (estimates carried over, bumpless)
    out["si_after_cc"] = cv_run(
        "si", {"r_ohm": 250, "q0_nah": 100000}, -400000, 567, 36000000, pre_cc=56700
    )
    return out


def sc_cccv():
    clk, fe, eng = make("si", r_ohm=250, q0_nah=280000, r2_ohm=1000, tau2_ms=100000)
    agg = Agg(0, -610000)
    state = {"cc": True}

    def every(e):
        if state["cc"] and e.cv:
            state["cc"] = False
            fe.stats_reset()  # count the CV phase's current changes only
        agg(e)

    eng.load(
        H.build(
            H.hdr(tick=100, slow=1000),
            [
                H.step(
                    S.K_CCCV,
                    iset=56700,
                    vset=-610000,
                    rdt=10000,
                    rdv=2000,
                    limits=[H.lim(S.Q_ABS_I, S.OP_LE, 567), H.lim(S.Q_TIME, S.OP_GE, 72000000)],
                )
            ],
        )
    )
    eng.start(1)
    H.run(eng, clk, 80000000, every=every)
    agg(eng)
    end = agg.ends[0]
    return {
        "n_cc": agg.n - agg.n_cv,
        "n_cv": agg.n_cv,
        "cc_after_cv": agg.n_cc_after_cv,
        "cc_v_min": agg.cc_v_min,
        "cv_v_err_max": agg.v_err,
        "cv_i_max": agg.i_max_cv,
        "cv_i_min": agg.i_min_cv,
        "sign_changes": fe.sign_changes,
        "sign_changes_big": fe.sc_big,
        "sc_di_max": fe.sc_di_max,
        "n_cv_cmds": fe.n_cmd,
        "end_reason": end[1],
        "i_end": agg.i_last,
        "q_step_nAh": end[2],
        "t_cv_s": (agg.t_last - agg.t_cv0) // 1000,
        "t_total_s": (agg.t_last - agg.t0) // 1000,
    }


def sc_cut_then_cccv():
    # CC cut off at V, then CC-CV holding that same V (the step starts at/past v_set: CV from
    # its first tick), on the emulator's reference dummy 250 Ω + (1 mF || 1 kΩ), 10 ms tick
    out = {}
    for noisy in (False, True):
        kw = {"r_ohm": 250, "c_uf": 1000, "rp_ohm": 1000, "v0_uv": 0}
        if noisy:
            kw.update({"noise_uv": 60, "lsb_uv": 62, "noise_na": 100})
        clk, _fe, eng = make("rc", **kw)
        eng.load(
            H.build(
                H.hdr(tick=10, slow=10, deb=100, vmin=-1000000, vmax=1000000, imax=2000000),
                [
                    H.step(S.K_REST, rdt=50, limits=[H.lim(S.Q_TIME, S.OP_GE, 500)]),
                    H.step(
                        S.K_CC,
                        iset=400000,
                        rdt=50,
                        rdv=2000,
                        limits=[H.lim(S.Q_V, S.OP_LE, -300000), H.lim(S.Q_TIME, S.OP_GE, 20000)],
                    ),
                    H.step(
                        S.K_CCCV,
                        iset=400000,
                        vset=-300000,
                        rdt=20,
                        rdv=1000,
                        rdi=2000,
                        limits=[H.lim(S.Q_ABS_I, S.OP_LE, 260000), H.lim(S.Q_TIME, S.OP_GE, 20000)],
                    ),
                ],
            )
        )
        eng.start(1)
        recs = []
        H.run(eng, clk, 60000, drain_into=recs)
        cv = [r for r in H.samples(recs, 2) if r[9] & H.F_CV]
        mags = [abs(r[4]) for r in cv]
        rises = [mags[k + 1] - mags[k] for k in range(len(mags) - 1)]
        end = [e for e in H.events(recs, H.EV_STEP_END) if e[5] == 2]
        out["noisy" if noisy else "clean"] = {
            "n_cv": len(cv),
            "n_step": len(H.samples(recs, 2)),
            "i0": mags[0] if mags else 0,
            "i_last": mags[-1] if mags else 0,
            "worst_rise": max([0] + rises),
            "signs": len(set(1 if r[4] > 0 else -1 for r in cv if r[4])),
            "v_err_max": max([abs(r[3] + 300000) for r in cv[1:]] or [0]),
            "end_reason": end[0][4] if end else -1,
            "t_cv_ms": (cv[-1][2] - cv[0][2]) if cv else 0,
        }
        gc.collect()
    return out


def sc_rest_dvdt():
    clk, fe, eng = make("si", r_ohm=250, q0_nah=100000, r2_ohm=2000, tau2_ms=60000)
    blob = H.build(
        H.hdr(tick=100, slow=1000),
        [
            H.step(S.K_CC, iset=56700, rdt=10000, limits=[H.lim(S.Q_TIME, S.OP_GE, 600000)]),
            H.step(
                S.K_REST,
                rdt=5000,
                limits=[H.lim(S.Q_DVDT, S.OP_LE, 20), H.lim(S.Q_TIME, S.OP_GE, 7200000)],
            ),
        ],
    )
    recs = go(eng, clk, blob, 10000000)
    ends = H.events(recs, H.EV_STEP_END)
    rest = H.samples(recs, 1)
    last = rest[-3:]
    slope = (last[-1][3] - last[0][3]) * 1000 // max(1, last[-1][2] - last[0][2])
    return {
        "end_reason": ends[1][4],
        "t_rest_s": (rest[-1][2] - rest[0][2]) // 1000,
        "dvdt_board": eng.dvdt,
        "slope_last_samples": slope,
        "vpol_start_uV": 2000 * 56700 // 1000,
        "vpol_end_uV": fe.vpol,
    }


if __name__ == "__main__":
    main(globals())
