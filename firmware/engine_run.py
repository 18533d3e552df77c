# Engine part 1 of 3 bound onto engine.Engine: the measurement tick (charge, filters,
# safety, recording, host-loss policy, tick planning). Kept in its own module so no firmware
# module is big enough to exhaust the heap while MicroPython compiles it from source.

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]
        return x


_DVDT_MAX_MS = const(60000)  # ... and it is refreshed at least this often
_DVDT_MIN_MS = const(1000)  # |dV/dt| window: recorded intervals shorter than this are merged
_DV_CLAMP = const(1000000)  # |dV| clamp before *1000 (keeps products < 2**30)
_EV_DECIMATED = const(14)
_EV_HOST_LOSS = const(8)
_EV_RANGE = const(13)
_EV_RUN_END = const(2)
_EV_SAFETY = const(7)
_EV_STEP_END = const(4)
_FIRST_FAST_TICKS = const(3)  # fast ticks at each step start
_F_CLIPPED = const(0x10)
_F_CV = const(0x04)
_F_OPEN = const(0x08)
_F_RANGE = const(0x20)
_F_STEP_FIRST = const(0x01)
_F_STEP_LAST = const(0x02)
_IDLE_TICK_MS = const(1000)
_ID_MIN_DV = const(2000)  # µV: smallest voltage response used to identify the plant
_K_CC = const(1)
_K_CCCV = const(3)
_K_OCV = const(4)
_NEAR_UV = const(2000)  # ... or closer than this
_NQ1 = const(7200)  # 7,200,000 = 7200 * 1000 (2 * 3,600,000: trapezoid sums are doubled)
_OP_LE = const(0)
_P_DECIMATE = const(0)
_Q_TIME = const(4)
_Q_V = const(1)
_REC_CAP_MS = const(1000000000)
_RE_SAFETY = const(2)
_R_MAX = const(10000000)  # Ω, CV plant estimate bounds
_SE_ABORT = const(0)  # step cut short by a safety trip or a fault (value = SF_* / FAULT_*)
_SF_COMPLIANCE = const(5)
_SF_IMAX = const(3)
_SF_TEMP = const(4)
_SF_VMAX = const(2)
_SF_VMIN = const(1)
_SLOW_HORIZON = const(3)  # go fast when a V limit is predicted within this many slow ticks
_SLOPE_MAX = const(500000000)  # µV/s: |slope| bound (the running mean's sum stays < 2**30)
_SLOPE_EXACT = const(1000000)  # µV/s: _cross is exact up to here (remainder * 1000 < 2**30)
_ST_HOLD = const(6)
_ST_RUNNING = const(2)
_ST_TRIPPED = const(5)
_TEMP_OFF = const(32767)


def _run(self, dt, measure):
    fe = self.fe
    if measure:
        sw = fe.measure()
    else:
        sw = False
    v = fe.v_uV
    i = fe.i_nA
    self.v = v
    self.i = i
    # ---- clocks
    ms = self.st_ms + dt
    if ms >= 1000:
        self.st_s += ms // 1000
        ms %= 1000
    self.st_ms = ms
    r = self.rec_ms + dt
    self.rec_ms = r if r < _REC_CAP_MS else _REC_CAP_MS
    # ---- charge
    if self.i_fresh:
        self._coulomb(i + i, dt)
        self.i_fresh = False
    else:
        self._coulomb(i + self.i_last, dt)
    self.i_last = i
    # ---- filters
    if self.step_ticks == 0:
        self.i_f = i
    else:
        self.i_f += (i - self.i_f) // 4
    if self.vl_ok and dt > 0:
        dv = v - self.v_last
        if dv > _DV_CLAMP:
            dv = _DV_CLAMP
        elif dv < -_DV_CLAMP:
            dv = -_DV_CLAMP
        s = dv * 1000 // dt
        if s > _SLOPE_MAX:
            s = _SLOPE_MAX
        elif s < -_SLOPE_MAX:
            s = -_SLOPE_MAX
        if self.slope_ok:
            self.slope = (self.slope + s) // 2
        else:
            self.slope = s
            self.slope_ok = True
    self.v_last = v
    self.vl_ok = True
    self.step_ticks += 1
    self.dv_ms += dt
    if self.dv_ms >= _DVDT_MAX_MS:
        self._dvdt(v)
    # ---- plant identification from the step's current change
    if self.id_pending:
        self.id_pending = False
        self._identify(v, i)
    # ---- range
    flags = 0
    if sw:
        self.range = fe.range
        flags = _F_RANGE
        self._event(_EV_RANGE, 0, self.range, 0)
        self.cv_dok = False
    elif self.range != fe.range:
        self.range = fe.range
    if fe.clipped:
        flags |= _F_CLIPPED
    # ---- safety
    if self._safety(v, i, dt):
        return
    # ---- control
    kind = self.kind
    if kind == _K_CCCV and not self.cv:
        if (self.cv_down and v <= self.v_set) or (not self.cv_down and v >= self.v_set):
            self._cv_begin()
    if self.cv:
        self._cv(v)
    # ---- limits
    li = self._limits(v, i)
    if li >= 0:
        self._end_step(li, v, flags)
        return
    # ---- recording
    if self._rec_due(v, i, flags):
        self._sample(flags, False)
    self._plan(v)


def _coulomb(self, x2, dt):
    # Add x2*dt/7,200,000 nAh (x2 = doubled mean current, nA) with exact remainders.
    a = x2 // _NQ1
    b = x2 - a * _NQ1  # 0 <= b < 7200
    r1 = self.q_r1 + a * dt  # units of 1/1000 nAh
    r2 = self.q_r2 + b * dt  # units of 1/7,200,000 nAh
    c1 = r1 // 1000
    c2 = r2 // 7200000
    self.q_r1 = r1 - c1 * 1000
    self.q_r2 = r2 - c2 * 7200000
    dq = c1 + c2
    if dq:
        self.q_step += dq
        self.q_hc += dq
        if dq > 0:
            self.q_cyc_pos += dq
        else:
            self.q_cyc_neg -= dq


def q_exact(self):
    # Step charge as (nAh, remainder in 1/7,200,000 nAh, may be negative) for tests: the
    # counter's half-nAh start (engine._HALF_NAH) taken back out.
    return self.q_step, self.q_r1 * 7200 + self.q_r2 - 3600000


def _dvdt(self, v):
    ms = self.dv_ms
    if ms <= 0:
        return
    dv = v - self.dv_v
    if dv > _DV_CLAMP:
        dv = _DV_CLAMP
    elif dv < -_DV_CLAMP:
        dv = -_DV_CLAMP
    self.dvdt = dv * 1000 // ms
    self.dvdt_ok = True
    self.dv_v = v
    self.dv_ms = 0
    # plant: dV/dt under a constant current gives the capacitive part h of the load
    if (self.kind == _K_CC or (self.kind == _K_CCCV and not self.cv)) and self.i_set:
        i = self.i_set if self.i_set > 0 else -self.i_set
        d = self.dvdt
        if (d > 0) == ((self.sign > 0) == (self.i_set > 0)) and d != 0:
            if d < 0:
                d = -d
            if d < _DV_CLAMP:
                self.h_rate = d * 1000 // i


def _identify(self, v, i):
    di = i - self.id_i
    dv = v - self.id_v
    if dv > _DV_CLAMP or dv < -_DV_CLAMP or di == 0:
        return
    adv = dv if dv > 0 else -dv
    if adv < _ID_MIN_DV:
        return
    adi = di if di > 0 else -di
    z = adv * 1000 // adi  # Ω
    if z < 1:
        z = 1
    h = self.h_rate * self.tick_ms // 1000
    ai = i if i > 0 else -i
    corr = h * ai // adi if adi else 0
    if z > corr + corr:
        z -= corr
    self.r_est = z if z < _R_MAX else _R_MAX
    self.sign = 1 if (dv > 0) == (di > 0) else -1


def _safety(self, v, i, dt):
    code = 0
    val = 0
    if v < self.vmin:
        code = _SF_VMIN
        val = v
    elif v > self.vmax:
        code = _SF_VMAX
        val = v
    elif i > self.imax or -i > self.imax:
        code = _SF_IMAX
        val = i
    elif self.has_temp and self.tmax != _TEMP_OFF and self.fe.temp_dC > self.tmax:
        code = _SF_TEMP
        val = self.fe.temp_dC
    elif self.compliance and not self.open and (v >= self.compliance or -v >= self.compliance):
        code = _SF_COMPLIANCE
        val = v
    if code == 0:
        self.sf_ms = -1
        return False
    if self.sf_ms < 0:
        self.sf_ms = 0
        self.sf_code = code
        if self.deb > 0:
            self._sample(0, False)  # the first point past the limit is always recorded
    else:
        self.sf_ms += dt
    if self.sf_ms < self.deb:
        return False
    # trip: relay open + DAC zero at once, then log: last point of the step (the reading that
    # tripped), EV_SAFETY, the boundary (relay open, 0 A: a fresh voltage), step end, run end
    fe = self.fe
    fe.safe()
    self._sample(_F_STEP_LAST, True)
    self.open = True
    self._event(_EV_SAFETY, code, val, self.sf_ms)
    self._open_sample(0, True)
    self._event(_EV_STEP_END, _SE_ABORT, code, self.q_step)
    self._event(_EV_RUN_END, _RE_SAFETY, self.run_id, 0)
    self.state = _ST_TRIPPED
    self.active = False
    self.cv = False
    self.persist_dirty = True
    self._due(_IDLE_TICK_MS)
    return True


def _rec_due(self, v, i, flags):
    if self.first_pending or flags & _F_RANGE:
        return True
    if self.range != self.rec_range:
        return True
    if self.rdt and self.rec_ms >= self.rdt:
        return True
    if self.rdv:
        d = v - self.rec_v
        if d >= self.rdv or -d >= self.rdv:
            return True
    if self.rdi:
        d = i - self.rec_i
        if d >= self.rdi or -d >= self.rdi:
            return True
    if self.rdq:
        d = self.q_step - self.rec_q
        if d >= self.rdq or -d >= self.rdq:
            return True
    return False


def _sample(self, flags, boundary):
    if self.first_pending:
        flags |= _F_STEP_FIRST
        self.first_pending = False
        boundary = True
    if self.cv:
        flags |= _F_CV
    if self.open:
        flags |= _F_OPEN
    if self.range != self.rec_range:
        if self.rec_range >= 0:
            flags |= _F_RANGE
        self.rec_range = self.range
    v = self.v
    i = self.i
    ring = self.ring
    ok = ring.push_sample(
        self.rt_s, self.rt_ms, v, i, self.q_step, self.step, self.cycle, self.range, flags,
        boundary,
    )
    if not ok:
        if self.policy == _P_DECIMATE and ring.decimate():
            self._event(_EV_DECIMATED, 0, ring.dropped, ring.count)
            ok = ring.push_sample(
                self.rt_s, self.rt_ms, v, i, self.q_step, self.step, self.cycle, self.range,
                flags, boundary,
            )
        if not ok:
            self._hold(flags, boundary)
    self.rec_v = v
    self.rec_i = i
    self.rec_q = self.q_step
    self.rec_ms = 0
    # |dV/dt| over the last recorded interval (intervals < _DVDT_MIN_MS merged)
    if self.dv_ms >= _DVDT_MIN_MS:
        self._dvdt(v)


def _hold(self, flags, boundary):
    # Ring full with the host silent (policy hold, or nothing left to decimate): relay open,
    # and in place of the sample that found no room the boundary (relay open, 0 A), from the
    # slots kept for events.
    ring = self.ring
    fe = self.fe
    fe.safe()
    self.open = True
    fe.measure()
    self.v = fe.v_uV
    self.i = 0
    ring.push_sample(
        self.rt_s, self.rt_ms, self.v, 0, self.q_step, self.step, self.cycle,
        self.range, flags | _F_OPEN, boundary, True,
    )
    if self.state == _ST_RUNNING:
        self.state = _ST_HOLD
        self._event(_EV_HOST_LOSS, self.policy, ring.count, 0)


def _open_sample(self, flags, measure):
    # A boundary of a relay-open stretch (pause, resume, stop, trip, hold): the voltage as it
    # is (measured now when ``measure``), 0 A (the relay is open: nothing flows, whatever the
    # current channel's offset reads), flagged F_OPEN, kept by decimation.
    if measure:
        self.fe.measure()
        self.v = self.fe.v_uV
    self.i = 0
    self._sample(flags | _F_OPEN, True)


def _catch_up(self, running):
    # Clocks (and, ``running``, the step's charge with the current last measured, which the
    # source held) from the last tick to now: PAUSE / RESUME / STOP act between ticks.
    clk = self.clk
    now = clk.ticks_ms()
    dt = clk.ticks_diff(now, self.t_last)
    if dt <= 0:
        return
    self.t_last = now
    ms = self.rt_ms + dt
    self.rt_s += ms // 1000
    self.rt_ms = ms % 1000
    if not running:
        return
    ms = self.st_ms + dt
    self.st_s += ms // 1000
    self.st_ms = ms % 1000
    r = self.rec_ms + dt
    self.rec_ms = r if r < _REC_CAP_MS else _REC_CAP_MS
    self.dv_ms += dt
    i = self.i_cmd if self.i_fresh else self.i_last
    while dt > 60000:  # in bounded pieces, as the tick does
        self._coulomb(i + i, 60000)
        dt -= 60000
    self._coulomb(i + i, dt)


def _event(self, code, reason, value, aux):
    self.ring.push_event(
        self.rt_s, self.rt_ms, code, reason, self.step, self.cycle, value, aux
    )


def _plan(self, v):
    if self.state != _ST_RUNNING:
        return
    tick = self.tick_ms
    fast = (
        self.cv
        or self.sf_ms >= 0
        or self.step_ticks < _FIRST_FAST_TICKS
        or not self.slope_ok
        or self.id_pending
    )
    delay = tick if fast else self.slow_ms
    land = -1
    near = False
    # voltage crossings: limits on V and the CC->CV switch
    slope = self.slope
    if self.kind == _K_CCCV and not self.cv:
        d = self.v_set - v
        if -_NEAR_UV <= d <= _NEAR_UV:
            near = True
        land = self._cross(d, slope)
    # the safety window too: a trip then starts its debounce right at the crossing
    t = self._cross(self.vmin - v, slope)
    if t >= 0 and (land < 0 or t < land):
        land = t
    t = self._cross(self.vmax - v, slope)
    if t >= 0 and (land < 0 or t < land):
        land = t
    lq = self.l_q
    for j in range(self.lim0, self.lim0 + self.nlim):
        q = lq[j]
        if q == _Q_V:
            d = self.l_val[j] - v
            if -_NEAR_UV <= d <= _NEAR_UV:
                near = True
            t = self._cross(d, slope)
            if t >= 0 and (land < 0 or t < land):
                land = t
        elif q == _Q_TIME and self.l_op[j] != _OP_LE:
            ds = self.l_vs[j] - self.st_s
            if ds < 1000000:  # further off than any tick (a limit of days: ds * 1000 > 2**30)
                rem = ds * 1000 + self.l_vms[j] - self.st_ms
                if 0 < rem < delay:
                    delay = rem
    if near and delay > tick:
        delay = tick
    if land >= 0:
        if delay > tick and land <= _SLOW_HORIZON * self.slow_ms:
            delay = tick
        if land < delay and self.landing:
            # land just after the predicted crossing instead of up to a tick later
            m = tick // 16
            if m < 2:
                m = 2
            x = land + 1 + land // 16
            delay = x if x > m else m
    if self.rdt:
        rem = self.rdt - self.rec_ms
        if 0 < rem < delay:
            delay = rem
    if self.sf_ms >= 0:
        rem = self.deb - self.sf_ms
        if 0 < rem < delay:
            delay = rem
    if delay < 1:
        delay = 1
    self._due(delay)


def _cross(self, d, slope):
    # ms until V moves by ``d`` µV at ``slope`` µV/s; -1 if it is not heading there.
    if slope == 0 or d == 0 or (d > 0) != (slope > 0):
        return -1
    ad = d if d > 0 else -d
    s = slope if slope > 0 else -slope
    whole = ad // s
    if whole > 1000000:
        return -1
    if s > _SLOPE_EXACT:
        # steeper than 1 V/s (a current step's IR jump between two ticks): the remainder
        # (< s) times 1000 would pass 2**30, so divide by s/1000 (at most 1 ms late)
        return whole * 1000 + (ad - whole * s) // (s // 1000)
    return whole * 1000 + (ad - whole * s) * 1000 // s


NAMES = ("_run", "_coulomb", "q_exact", "_dvdt", "_identify", "_safety", "_rec_due", "_sample", "_hold", "_open_sample", "_catch_up", "_event", "_plan", "_cross",)
