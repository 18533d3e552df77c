# Schedule engine: runs the uploaded schedule on the board, tick by tick.
#
# One ``tick()`` = read ADC (frontend.measure) -> integrate charge -> safety limits (debounced) ->
# step control (CC / CV / CC-CV / rest / OCV) -> step limits (next, goto, end) -> recording into
# the ring -> plan the next tick. The tick works in integers only (µV, nA, nAh, ms) and does not
# allocate (checked with micropython.heap_lock in tests/test_engine.py); anything that allocates
# (flash writes, schedule parsing) happens outside it, driven by main.py through ``persist_dirty``.
#
# Timing: the schedule header gives a fast control tick (``tick_ms``) and a slow tick
# (``slow_tick_ms``). The engine runs at the fast tick during CV, at every step's first ticks,
# while a safety violation is being debounced, and when a voltage limit (or the CC->CV switch)
# is predicted to be crossed within _SLOW_HORIZON slow ticks from the measured dV/dt; otherwise at
# the slow tick. Next to that it lands ticks on predicted voltage crossings, on time limits, on
# the recording interval and on the end of the safety debounce, so cutoffs overshoot far less than
# one tick of dV.
#
# Cost: tick() times itself (time.ticks_us: the board's clock, the emulator's virtual one) and
# keeps the durations of the last 32 control ticks (a run's; kept after it ends) and idle ticks
# (a measurement only) in two preallocated arrays; cost() gives the figures INFO reports, and the
# host refuses a schedule whose tick is below twice the control figure (sicell.schedule).
#
# Conventions (DESIGN §5): + current = lithiation. A step's direction is the sign of its current
# (CV: of the current it needs, from v_set vs the cell voltage and the learned plant sign); a
# half-cycle is a run of steps with the same direction (rest/OCV/loop do not change it); the cycle
# counter starts at 0 and increments at the start of a lithiation step that follows a
# delithiation, and on _SF_NEW_CYCLE. LOOP: jumps back to loop_target loop_count more times (the
# body runs loop_count + 1 times); counters are per LOOP step and reset when the loop completes
# or when a GOTO leaves its body.
#
# Coulomb counting: trapezoid over the measured current on intervals where the set point did not
# change; an interval that starts with a set-point change (step start, CV update, resume) is
# integrated with the current measured at its end (the source held that current over the
# interval). Exact integer arithmetic with remainders (nAh = nA*ms / 3,600,000), all
# intermediates below 2**30 so nothing is boxed on the RP2040 either.
#
# Wire ids: protocol/ defines them; the const() copies below (and in engine_*.py) carry the
# protocol name, and tests/test_wire_ids.py checks every copy against protocol's value.

from array import array

from protocol import schedule as S

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]
        return x


try:  # the tick's own duration, in µs of the board (the emulator's: its virtual clock)
    from time import ticks_diff as _us_diff
    from time import ticks_us as _us
except ImportError:  # CPython: a monotonic stand-in with MicroPython's 2**30 wrap
    import time as _time

    def _us():  # type: ignore[misc]
        return int(_time.perf_counter() * 1000000) & 0x3FFFFFFF

    def _us_diff(a, b):  # type: ignore[no-redef]
        return ((a - b + 0x20000000) & 0x3FFFFFFF) - 0x20000000


# run states (messages.ST_*)
ST_IDLE = const(0)
ST_LOADED = const(1)
ST_RUNNING = const(2)
ST_PAUSED = const(3)
ST_DONE = const(4)
ST_TRIPPED = const(5)
ST_HOLD = const(6)
ST_INTERRUPTED = const(7)
ST_STOPPED = const(8)

# step kinds (schedule.K_*)
_K_REST = const(0)
_K_CC = const(1)
_K_CV = const(2)
_K_CCCV = const(3)
_K_OCV = const(4)
_K_LOOP = const(5)

# limit quantities / ops / actions (schedule.*)
_Q_V = const(1)
_Q_I = const(2)
_Q_ABS_I = const(3)
_Q_TIME = const(4)
_Q_ABS_Q = const(5)
_Q_DVDT = const(6)
_Q_TEMP = const(7)
_OP_LE = const(0)
_A_NEXT = const(0)
_A_GOTO = const(1)
_A_END = const(2)
_P_DECIMATE = const(0)
_RANGE_AUTO = const(0xFF)
_SF_NEW_CYCLE = const(1)
_TEMP_OFF = const(32767)

# sample flags (messages.F_*)
_F_STEP_FIRST = const(0x01)
_F_STEP_LAST = const(0x02)
_F_CV = const(0x04)
_F_OPEN = const(0x08)
_F_CLIPPED = const(0x10)
_F_RANGE = const(0x20)

# event codes (messages.EV_*) and reasons
_EV_RUN_START = const(1)
_EV_RUN_END = const(2)
_EV_STEP_START = const(3)
_EV_STEP_END = const(4)
_EV_CUTOFF = const(5)
_EV_LIMIT = const(6)
_EV_SAFETY = const(7)
_EV_HOST_LOSS = const(8)
_EV_ERROR = const(9)
_EV_INTERRUPTED = const(10)
_EV_PAUSED = const(11)
_EV_RESUMED = const(12)
_EV_RANGE = const(13)
_EV_DECIMATED = const(14)
_EV_STOPPED = const(15)
_RE_COMPLETE = const(0)
_RE_LIMIT = const(1)
_RE_SAFETY = const(2)
_RE_HOST = const(3)
_RE_HOLD = const(4)
_SE_ABORT = const(0)  # step cut short by a safety trip or a fault (value = SF_* / FAULT_*)
_SE_TIME = const(1)
_SE_LIMIT = const(2)
_SE_CUTOFF = const(3)
_SE_CURRENT = const(4)
_SE_DVDT = const(5)
_SE_CHARGE = const(6)
_SE_HOST = const(7)
_SF_VMIN = const(1)
_SF_VMAX = const(2)
_SF_IMAX = const(3)
_SF_TEMP = const(4)
_SF_COMPLIANCE = const(5)

# NACK codes (messages.E_*) returned by the run-control calls
_E_STATE = const(5)
_E_NO_SCHEDULE = const(9)

# reset causes (messages.RC_*)
_RC_POWER_ON = const(0)

# firmware fault ids (fault()'s ``err``, the _EV_ERROR reason) are messages.FAULT_*; callers
# keep their own const copies (main.py, engine_step.py) or use the protocol name (link.py)

# tuning
MIN_TICK_MS = const(5)  # shortest control tick a schedule may ask for
_COST_N = const(32)  # tick durations kept per kind (control / idle) for cost()
_SLOW_HORIZON = const(3)  # go fast when a V limit is predicted within this many slow ticks
_NEAR_UV = const(2000)  # ... or closer than this
_FIRST_FAST_TICKS = const(3)  # fast ticks at each step start
_CV_ARM_TICKS = const(10)  # current-decay limits of a CV phase armed after this many ticks
_ID_MIN_DV = const(2000)  # µV: smallest voltage response used to identify the plant
_DVDT_MIN_MS = const(1000)  # |dV/dt| window: recorded intervals shorter than this are merged
_DVDT_MAX_MS = const(60000)  # ... and it is refreshed at least this often
_REC_CAP_MS = const(1000000000)
_DV_CLAMP = const(1000000)  # |dV| clamp before *1000 (keeps products < 2**30)
_IDLE_TICK_MS = const(1000)
_HOLD_RESUME_DIV = const(4)  # resume from HOLD when capacity/4 slots are free again
_R_MAX = const(10000000)  # Ω, CV plant estimate bounds
_NQ1 = const(7200)  # 7,200,000 = 7200 * 1000 (2 * 3,600,000: trapezoid sums are doubled)
# The coulomb counter starts each run half a nAh up (in its 1/1000 nAh remainder), so the whole
# nAh it reports are the nearest to the exact charge, not the floor (engine_run._coulomb).
_HALF_NAH = const(500)


class _Clock:
    # ticks_* from the time module (MicroPython), or a monotonic fallback on CPython.

    def __init__(self):
        import time

        self._t = time
        if not hasattr(time, "ticks_ms"):
            self.ticks_ms = self._cp_ms

    def ticks_ms(self):
        return self._t.ticks_ms()

    def _cp_ms(self):
        return int(self._t.monotonic() * 1000) & 0x3FFFFFFF

    def ticks_diff(self, a, b):
        return ((a - b + 0x20000000) & 0x3FFFFFFF) - 0x20000000

    def ticks_add(self, a, b):
        return (a + b) & 0x3FFFFFFF


def cfg_get(cfg, key, default, alt=None):
    # board config value: top level, then under "limits" (board.json), then ``alt`` names
    for k in (key, alt):
        if k is None:
            continue
        try:
            v = cfg[k]
            if v is not None:
                return v
        except Exception:
            pass
        try:
            v = cfg["limits"][k]
            if v is not None:
                return v
        except Exception:
            pass
    return default


class Engine:
    def __init__(self, fe, clock=None, cfg=None, ring=None):
        if ring is None:
            import ring as _ring

            ring = _ring.Ring()
        self.fe = fe
        self.clk = clock if clock is not None else _Clock()
        self.ring = ring
        cfg = cfg if cfg is not None else {}
        self.fs = tuple(fe.full_scale_nA)
        self.n_ranges = len(self.fs)
        self.top = self.fs[self.n_ranges - 1]
        self.hw_v_min = int(cfg_get(cfg, "v_min_uV", getattr(fe, "v_min_uV", -(2**31))))
        self.hw_v_max = int(cfg_get(cfg, "v_max_uV", getattr(fe, "v_max_uV", 2**31 - 1)))
        self.compliance = int(cfg_get(cfg, "compliance_uV", getattr(fe, "compliance_uV", 0)))
        self.has_temp = hasattr(fe, "temp_dC")
        self.state = ST_IDLE
        self.run_id = 0
        # the schedule in flat preallocated arrays (no per-step objects: a 64-step schedule costs
        # the same few KB as none, and loading one does not fragment the heap)
        ns = S.MAX_STEPS
        nl = S.MAX_STEPS * S.MAX_LIMITS
        self.has_sched = False
        self.blob_buf = bytearray(S.MAX_BYTES)
        self.blob_len = 0
        self.n_steps = 0
        self.s_kind = bytearray(ns)
        self.s_rng = bytearray(ns)
        self.s_flags = bytearray(ns)
        self.s_nlim = bytearray(ns)
        z = [0] * ns
        self.s_iset = array("i", z)
        self.s_vset = array("i", z)
        self.s_rdt = array("i", z)
        self.s_rdv = array("i", z)
        self.s_rdi = array("i", z)
        self.s_rdq = array("i", z)
        self.s_ltgt = array("H", z)
        self.s_lcnt = array("H", z)
        self.loopc = array("H", z)
        self.loops = bytearray(ns)  # indexes of the LOOP steps
        self.n_loops = 0
        z = [0] * nl
        self.l_q = bytearray(nl)
        self.l_op = bytearray(nl)
        self.l_act = bytearray(nl)
        self.l_val = array("i", z)
        self.l_tgt = array("H", z)
        self.l_vs = array("i", z)
        self.l_vms = array("H", z)
        self.lim0 = 0  # the current step's limits: l_*[lim0 : lim0 + nlim]
        self.nlim = 0
        self.policy = _P_DECIMATE
        self.tick_ms = 100
        self.slow_ms = 1000
        self.deb = 0
        self.vmin = self.hw_v_min
        self.vmax = self.hw_v_max
        self.imax = self.top
        self.tmax = _TEMP_OFF
        self.persist_dirty = False
        self.active = False  # a run is in progress (persisted: survives resets)
        self.errors = 0
        self.reset_cause = _RC_POWER_ON
        self._reset_run()
        self.t_last = self.clk.ticks_ms()
        self.due = self.t_last
        self.v = 0
        self.i = 0
        self.range = fe.range
        self.n_ticks = 0
        self.landing = True  # land ticks on predicted V crossings (off: plain tick grid)
        # the durations (µs) of the last _COST_N control ticks (a run's) and idle ticks (a
        # measurement only), ring-buffered; a run's are kept after it ends (cost())
        z = [0] * _COST_N
        self.c_run = array("i", z)
        self.c_idle = array("i", z)
        self.c_run_k = 0
        self.c_run_n = 0
        self.c_idle_k = 0
        self.c_idle_n = 0

    # ==== schedule ======================================================================
    def load(self, blob):
        # Validate and take a schedule blob (bytes). Raises schedule.ScheduleError; the schedule
        # in use stays untouched unless the new one is valid.
        hdr, steps = S.decode(blob, self.n_ranges, self.hw_v_min, self.hw_v_max, self.top)
        policy, tick, slow, deb, vmin, vmax, imax, tmax = hdr
        if tick < MIN_TICK_MS:
            raise S.ScheduleError(S.ERR_TICK, -1, "tick below " + str(MIN_TICK_MS) + " ms")
        n = len(steps)
        for s in range(n):
            kind = steps[s][0][0]
            rng = steps[s][0][1]
            iset = steps[s][0][3]
            if (kind == _K_CC or kind == _K_CCCV) and rng != _RANGE_AUTO:
                if iset > self.fs[rng] or -iset > self.fs[rng]:
                    raise S.ScheduleError(S.ERR_CURRENT, s, "beyond range " + str(rng))
        nl = 0
        big = 2**30 - 1
        for s in range(n):
            st, limits = steps[s]
            kind, rng, flags, iset, vset, ltgt, lcnt, rdt, rdv, rdi, rdq = st
            self.s_kind[s] = kind
            self.s_rng[s] = rng
            self.s_flags[s] = flags
            self.s_nlim[s] = len(limits)
            self.s_iset[s] = iset
            self.s_vset[s] = vset
            self.s_ltgt[s] = ltgt
            self.s_lcnt[s] = lcnt
            self.s_rdt[s] = rdt if rdt < _REC_CAP_MS else _REC_CAP_MS
            self.s_rdv[s] = rdv if rdv < big else big
            self.s_rdi[s] = rdi if rdi < big else big
            self.s_rdq[s] = rdq if rdq < big else big
            self.loopc[s] = 0
            if kind == _K_LOOP:
                self.loops[nl] = s
                nl += 1
            j = s * S.MAX_LIMITS
            for q, op, act, val, tgt in limits:
                self.l_q[j] = q
                self.l_op[j] = op
                self.l_act[j] = act
                self.l_val[j] = val if -big <= val <= big else (big if val > 0 else -big)
                self.l_tgt[j] = tgt
                self.l_vs[j] = val // 1000
                self.l_vms[j] = val % 1000
                j += 1
        self.n_loops = nl
        self.n_steps = n
        n = len(blob)
        self.blob_buf[:n] = blob  # a no-op when the link uploaded straight into blob_buf
        self.blob_len = n
        self.has_sched = True
        self.policy = policy
        self.tick_ms = tick
        self.slow_ms = slow
        self.deb = deb
        self.vmin = vmin
        self.vmax = vmax
        self.imax = imax
        self.tmax = tmax
        if self.state in (ST_IDLE, ST_LOADED, ST_DONE, ST_TRIPPED, ST_STOPPED):
            self.state = ST_LOADED
        return hdr

    def unload(self):
        # SCHED_BEGIN: the upload goes straight into blob_buf, so the schedule in RAM is dropped
        # (only allowed while no run is active; the copy on flash stays until a new one is valid)
        self.has_sched = False
        self.n_steps = 0
        self.blob_len = 0
        if self.state in (ST_LOADED, ST_DONE, ST_TRIPPED, ST_STOPPED):
            self.state = ST_IDLE

    def blob(self):
        # the schedule bytes in use (SCHED_READ), or None
        if not self.has_sched:
            return None
        return memoryview(self.blob_buf)[: self.blob_len]

    # ==== run control (called from the link, outside the tick) ==========================
    def _reset_run(self):
        self.step = 0
        self.kind = _K_REST
        self.cycle = 0
        self.hc_dir = 0
        self.q_step = 0
        self.q_hc = 0
        self.q_cyc_pos = 0
        self.q_cyc_neg = 0
        self.q_r1 = _HALF_NAH
        self.q_r2 = 0
        self.rt_s = 0
        self.rt_ms = 0
        self.st_s = 0
        self.st_ms = 0
        self.step_ticks = 0
        self.rec_ms = 0
        self.first_pending = False
        self.rec_v = 0
        self.rec_i = 0
        self.rec_q = 0
        self.rec_range = -1
        self.i_fresh = True
        self.i_last = 0
        self.i_f = 0
        self.v_last = 0
        self.slope = 0
        self.slope_ok = False
        self.dv_v = 0
        self.dv_ms = 0
        self.dvdt = 0
        self.dvdt_ok = False
        self.sf_ms = -1
        self.sf_code = 0
        self.i_cmd = 0
        self.i_set = 0
        self.v_set = 0
        self.rng_sel = _RANGE_AUTO
        self.flags = 0
        self.lim0 = 0
        self.nlim = 0
        self.rdt = 0
        self.rdv = 0
        self.rdi = 0
        self.rdq = 0
        self.cv = False
        self.cv_down = False
        self.cv_ticks = 0
        self.cv_probe = 0
        self.cv_p = 0
        self.cv_pv = 0
        self.cv_pi = 0
        self.cv_e0 = 0
        self.cv_dok = False
        self.cv_d16 = 0
        self.cv_vp = 0
        self.cv_i2 = 0
        self.vl_ok = False
        self.i_int = 0
        self.cv_alt = 0
        self.cv_last_di = 0
        self.r_est = 0  # Ω, 0 = unknown
        self.h_rate = 0  # Ω per second of tick  (h = h_rate * P_ms / 1000)
        self.sign = -1  # dV/dI sign of the load (+I = lithiation lowers V)
        self.id_pending = False
        self.id_v = 0
        self.id_i = 0
        self.open = True
        self.loop_guard = 0

    def start(self, run_id):
        # START: returns 0 or (code, detail) for a NACK.
        if not self.has_sched:
            return _E_NO_SCHEDULE, 0
        if self.state not in (ST_LOADED, ST_DONE, ST_STOPPED, ST_TRIPPED):
            return _E_STATE, self.state
        self._reset_run()
        for k in range(self.n_steps):
            self.loopc[k] = 0
        self.run_id = run_id & 0xFFFFFFFF
        self.state = ST_RUNNING
        self.active = True
        now = self.clk.ticks_ms()
        self.t_last = now
        self.fe.measure()
        self.v = self.fe.v_uV
        self.i = self.fe.i_nA
        self.v_last = self.v
        self._event(_EV_RUN_START, 0, self.run_id, 0)
        self._goto(0, -1)
        self.persist_dirty = True
        return 0

    def pause(self):
        # charge and clocks up to now, relay open, then the boundary: a relay-open sample at 0 A
        # (the step's charge stays as it is until RESUME)
        if self.state != ST_RUNNING:
            return _E_STATE, self.state
        self._catch_up(True)
        self.fe.safe()
        self.open = True
        self.state = ST_PAUSED
        self._open_sample(0, True)
        self._event(_EV_PAUSED, 0, self.step, 0)
        return 0

    def resume(self):
        st = self.state
        if st == ST_PAUSED or st == ST_HOLD:
            # the other boundary: a relay-open sample at 0 A the moment the relay closes again
            self._catch_up(False)
            self._open_sample(0, True)
            self._reconnect()
            self.state = ST_RUNNING
            self._event(_EV_RESUMED, _RE_HOLD if st == ST_HOLD else 0, self.step, 0)
            self._due(self.tick_ms)
            return 0
        if st == ST_INTERRUPTED:
            if not self.has_sched:
                return _E_NO_SCHEDULE, 0
            self.state = ST_RUNNING
            self.t_last = self.clk.ticks_ms()
            self._event(_EV_RESUMED, 0, self.step, 0)
            self._enter(self.step)
            self.persist_dirty = True
            return 0
        return _E_STATE, st

    def stop(self):
        st = self.state
        if st not in (ST_RUNNING, ST_PAUSED, ST_HOLD, ST_INTERRUPTED):
            return _E_STATE, st
        if st != ST_INTERRUPTED:
            self._catch_up(st == ST_RUNNING)
        self.fe.safe()
        self.open = True
        if st != ST_INTERRUPTED:
            # the step's last sample is the boundary: relay open, 0 A
            self._open_sample(_F_STEP_LAST, True)
            self._event(_EV_STEP_END, _SE_HOST, 0, self.q_step)
        self.cv = False
        self._event(_EV_STOPPED, 0, self.run_id, 0)
        self._event(_EV_RUN_END, _RE_HOST, self.run_id, 0)
        self.state = ST_STOPPED
        self.active = False
        self.persist_dirty = True
        return 0

    def fault(self, err, detail=0):
        # Unexpected exception in the loop: safe state, _EV_ERROR (reason = ``err``, a
        # messages.FAULT_* id; value = ``detail``), a run in progress ends (no crash loop).
        try:
            self.fe.safe()
        except Exception:
            pass
        self.open = True
        self.errors += 1
        self._event(_EV_ERROR, err, detail, self.errors)
        if self.state in (ST_RUNNING, ST_PAUSED, ST_HOLD):
            self._event(_EV_STEP_END, _SE_ABORT, err, self.q_step)
            self._event(_EV_RUN_END, _RE_SAFETY, self.run_id, 0)
            self.state = ST_TRIPPED
            self.active = False
            self.persist_dirty = True

    def interrupted(self, snap, cause):
        # Boot after a reset during a run: stay safe, ST_INTERRUPTED, queue _EV_INTERRUPTED.
        self._reset_run()
        self.run_id = snap.get("run", 0)
        self.step = snap.get("step", 0)
        if not self.has_sched or self.step >= self.n_steps:
            self.step = 0
        loops = snap.get("loops", ())
        for k in range(min(len(loops), self.n_steps)):
            self.loopc[k] = loops[k]
        self.cycle = snap.get("cycle", 0)
        self.hc_dir = snap.get("hc", 0)
        self.q_hc = snap.get("qhc", 0)
        self.q_cyc_pos = snap.get("qcp", 0)
        self.q_cyc_neg = snap.get("qcn", 0)
        self.rt_s = snap.get("t", 0)
        self.r_est = snap.get("r", 0)
        self.h_rate = snap.get("h", 0)
        self.sign = snap.get("sign", -1)
        self.state = ST_INTERRUPTED
        self.active = True
        self.reset_cause = cause
        self._event(_EV_INTERRUPTED, cause, self.run_id, self.step)

    def snapshot(self):
        # What survives a reset (runstate.py writes it at step starts).
        return {
            "run": self.run_id,
            "active": self.active,
            "step": self.step,
            "loops": [self.loopc[k] for k in range(self.n_steps)],
            "cycle": self.cycle,
            "hc": self.hc_dir,
            "qhc": self.q_hc,
            "qcp": self.q_cyc_pos,
            "qcn": self.q_cyc_neg,
            "r": self.r_est,
            "h": self.h_rate,
            "sign": self.sign,
        }

    # ==== the tick ======================================================================
    def due_in(self, now):
        return self.clk.ticks_diff(self.due, now)

    def _due(self, delay):
        self.due = self.clk.ticks_add(self.t_last, delay)

    def tick(self):
        # one tick (_tick), timed: its duration goes into the control or the idle window
        run = self.state == ST_RUNNING
        t0 = _us()
        self._tick()
        dt = _us_diff(_us(), t0)
        if dt < 0:
            dt = 0
        if run:
            k = self.c_run_k
            self.c_run[k] = dt
            self.c_run_k = 0 if k + 1 == _COST_N else k + 1
            if self.c_run_n < _COST_N:
                self.c_run_n += 1
        else:
            k = self.c_idle_k
            self.c_idle[k] = dt
            self.c_idle_k = 0 if k + 1 == _COST_N else k + 1
            if self.c_idle_n < _COST_N:
                self.c_idle_n += 1

    def cost(self):
        # What a tick costs this board, µs (INFO): (control tick at the 94th percentile of the
        # recent ones, the longest of them, idle tick at its 94th percentile); 0 = none yet.
        # Outside the tick: it allocates.
        return (
            _high(self.c_run, self.c_run_n, 16),
            _high(self.c_run, self.c_run_n, 0),
            _high(self.c_idle, self.c_idle_n, 16),
        )

    def _tick(self):
        clk = self.clk
        now = clk.ticks_ms()
        dt = clk.ticks_diff(now, self.t_last)
        if dt < 0:
            dt = 0
        self.t_last = now
        self.n_ticks += 1
        st = self.state
        if st == ST_RUNNING or st == ST_PAUSED or st == ST_HOLD:
            ms = self.rt_ms + dt
            if ms >= 1000:
                self.rt_s += ms // 1000
                ms %= 1000
            self.rt_ms = ms
        if st != ST_RUNNING:
            self._idle(st)
            return
        while dt > 60000:  # a stalled loop: integrate in bounded pieces
            self._run(60000, False)
            if self.state != ST_RUNNING:
                return
            dt -= 60000
        self._run(dt, True)

    def _idle(self, st):
        fe = self.fe
        fe.measure()
        self.v = fe.v_uV
        self.i = fe.i_nA
        self.range = fe.range
        if st == ST_HOLD:
            ring = self.ring
            if ring.sample_room() >= ring.capacity // _HOLD_RESUME_DIV:
                self._open_sample(0, False)  # the boundary as the relay closes again
                self._reconnect()
                self.state = ST_RUNNING
                self._event(_EV_RESUMED, _RE_HOLD, self.step, ring.count)
                self._due(self.tick_ms)
                return
            self._due(self.tick_ms)
            return
        self._due(_IDLE_TICK_MS)

    # ==== status ======================================================================
    def status_flags(self):
        f = 0
        if self.cv and self.state == ST_RUNNING:
            f |= _F_CV
        if self.open:
            f |= _F_OPEN
        return f


def _high(a, n, div):
    # of the first n values of array a: the one n // div of them lie above (div 0: the largest)
    if n == 0:
        return 0
    s = sorted(a[k] for k in range(n))
    return s[n - 1 - (n // div if div else 0)]


def _bind():
    import engine_cv
    import engine_run
    import engine_step

    for mod in (engine_run, engine_step, engine_cv):
        for name in mod.NAMES:
            setattr(Engine, name, getattr(mod, name))


_bind()
