# Engine part 2 of 3 bound onto engine.Engine: step limits and sequencing (next, goto,
# loops, run end), step set-up and reconnect after pause/hold.

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]
        return x


_A_END = const(2)
_A_GOTO = const(1)
_A_NEXT = const(0)
_CV_ARM_TICKS = const(10)  # current-decay limits of a CV phase armed after this many ticks
_FAULT_LOOP = const(5)
_EV_CUTOFF = const(5)
_EV_LIMIT = const(6)
_EV_RUN_END = const(2)
_EV_STEP_END = const(4)
_EV_STEP_START = const(3)
_F_STEP_LAST = const(0x02)
_IDLE_TICK_MS = const(1000)
_K_CC = const(1)
_K_CCCV = const(3)
_K_CV = const(2)
_K_LOOP = const(5)
_K_OCV = const(4)
_OP_LE = const(0)
_Q_ABS_I = const(3)
_Q_ABS_Q = const(5)
_Q_DVDT = const(6)
_Q_I = const(2)
_Q_TEMP = const(7)
_Q_TIME = const(4)
_Q_V = const(1)
_RANGE_AUTO = const(0xFF)
_RE_COMPLETE = const(0)
_RE_LIMIT = const(1)
_SE_CHARGE = const(6)
_SE_CURRENT = const(4)
_SE_CUTOFF = const(3)
_SE_DVDT = const(5)
_SE_LIMIT = const(2)
_SE_TIME = const(1)
_MAX_LIMITS = const(4)  # schedule.MAX_LIMITS
_SF_NEW_CYCLE = const(1)
_ST_DONE = const(4)
_ST_RUNNING = const(2)


def _limits(self, v, i):
    # index (0..) of the first limit of the step that holds, or -1
    lq = self.l_q
    lop = self.l_op
    lval = self.l_val
    base = self.lim0
    for k in range(self.nlim):
        j = base + k
        q = lq[j]
        op = lop[j]
        if q == _Q_V:
            x = v
        elif q == _Q_TIME:
            s = self.st_s
            vs = self.l_vs[j]
            vms = self.l_vms[j]
            if op == _OP_LE:
                hit = s < vs or (s == vs and self.st_ms <= vms)
            else:
                hit = s > vs or (s == vs and self.st_ms >= vms)
            if hit:
                return k
            continue
        elif q == _Q_I or q == _Q_ABS_I:
            if self.kind == _K_CCCV or self.kind == _K_CV:
                if not self.cv or self.cv_probe or self.cv_ticks < _CV_ARM_TICKS:
                    continue
            x = self.i_f
            if q == _Q_ABS_I and x < 0:
                x = -x
        elif q == _Q_ABS_Q:
            x = self.q_step if self.q_step >= 0 else -self.q_step
        elif q == _Q_DVDT:
            if not self.dvdt_ok:
                continue
            x = self.dvdt if self.dvdt >= 0 else -self.dvdt
        else:  # Q_TEMP
            if not self.has_temp:
                continue
            x = self.fe.temp_dC
        val = lval[j]
        if (op == _OP_LE and x <= val) or (op != _OP_LE and x >= val):
            return k
    return -1


def _end_step(self, li, v, flags):
    j = self.lim0 + li
    q = self.l_q[j]
    act = self.l_act[j]
    val = self.l_val[j]
    tgt = self.l_tgt[j]
    self._sample(flags | _F_STEP_LAST, True)
    if q == _Q_V:
        reason = _SE_CUTOFF
        over = v - val
        if over < 0:
            over = -over
        self._event(_EV_CUTOFF, li, v, over)
    else:
        if q == _Q_TIME:
            reason = _SE_TIME
            x = self.st_s
        elif q == _Q_ABS_I:
            reason = _SE_CURRENT
            x = self.i_f
        elif q == _Q_DVDT:
            reason = _SE_DVDT
            x = self.dvdt
        elif q == _Q_ABS_Q:
            reason = _SE_CHARGE
            x = self.q_step
        else:
            reason = _SE_LIMIT
            x = self.i_f if q == _Q_I else (self.fe.temp_dC if self.has_temp else 0)
        if act != _A_NEXT or q == _Q_I or q == _Q_TEMP:
            self._event(_EV_LIMIT, q, x, li)
    self._event(_EV_STEP_END, reason, li, self.q_step)
    if act == _A_END:
        self._finish(_RE_LIMIT)
    elif act == _A_GOTO:
        self._goto(tgt, self.step)
    else:
        self._goto(self.step + 1, -1)


def _goto(self, idx, frm):
    # Enter step ``idx`` (processing LOOP steps); ``frm`` >= 0 for a GOTO jump.
    guard = 0
    loopc = self.loopc
    while True:
        if frm >= 0:
            # a jump leaves the bodies of the loops it jumps out of: reset their counters
            for k in range(self.n_loops):
                L = self.loops[k]
                t = self.s_ltgt[L]
                if t <= frm <= L and not (t <= idx <= L):
                    loopc[L] = 0
        if idx >= self.n_steps:
            self._finish(_RE_COMPLETE)
            return
        if self.s_kind[idx] != _K_LOOP:
            break
        guard += 1
        if guard > 4 * self.n_steps + 16:
            self.fault(_FAULT_LOOP, idx)
            return
        if loopc[idx] < self.s_lcnt[idx]:
            loopc[idx] += 1
            frm = idx
            idx = self.s_ltgt[idx]
        else:
            loopc[idx] = 0
            frm = -1
            idx += 1
    self._enter(idx)


def _finish(self, reason):
    self.fe.safe()
    self.open = True
    self._event(_EV_RUN_END, reason, self.run_id, 0)
    self.state = _ST_DONE
    self.active = False
    self.persist_dirty = True
    self._due(_IDLE_TICK_MS)


def _pick_range(self, i):
    a = i if i >= 0 else -i
    r = 0
    fs = self.fs
    while r < self.n_ranges - 1 and a > fs[r]:
        r += 1
    return r


def _enter(self, idx):
    kind = self.s_kind[idx]
    rng = self.s_rng[idx]
    flags = self.s_flags[idx]
    iset = self.s_iset[idx]
    vset = self.s_vset[idx]
    fe = self.fe
    was_open = self.open
    self.step = idx
    self.kind = kind
    self.i_set = iset
    self.v_set = vset
    self.rng_sel = rng
    self.flags = flags
    self.lim0 = idx * _MAX_LIMITS
    self.nlim = self.s_nlim[idx]
    self.rdt = self.s_rdt[idx]
    self.rdv = self.s_rdv[idx]
    self.rdi = self.s_rdi[idx]
    self.rdq = self.s_rdq[idx]
    self.q_step = 0
    self.st_s = 0
    self.st_ms = 0
    self.step_ticks = 0
    self.rec_ms = 0
    self.slope_ok = False
    self.vl_ok = False
    self.dv_v = self.v
    self.dv_ms = 0
    self.dvdt_ok = False
    self.sf_ms = -1
    self.cv = False
    self.cv_probe = 0
    self.first_pending = True
    self.i_fresh = True
    # direction of the step -> half-cycle and cycle counting (DESIGN §5)
    d = 0
    if kind == _K_CC or kind == _K_CCCV:
        d = 1 if iset > 0 else -1
    elif kind == _K_CV:
        need = vset - self.v  # V must move by this much
        if need != 0:
            d = 1 if (need > 0) == (self.sign > 0) else -1
    new_cycle = (flags & _SF_NEW_CYCLE) != 0
    if d > 0 and self.hc_dir < 0:
        new_cycle = True
    if new_cycle:
        self.cycle += 1
        self.q_cyc_pos = 0
        self.q_cyc_neg = 0
    if (d != 0 and d != self.hc_dir) or new_cycle:
        self.q_hc = 0
    if d != 0:
        self.hc_dir = d
    # control set-up
    prev_i = self.i_cmd
    if self.state != _ST_RUNNING:
        # entered while holding (ring full at the step end): stay safe, resume applies it
        self.i_cmd = 0
        self.id_pending = False
        if kind == _K_CV:
            self._cv_begin()
        elif kind == _K_CCCV:
            self.cv_down = (iset > 0) != (self.sign > 0)
        self._event(_EV_STEP_START, 0, kind, self.loopc[idx])
        self.persist_dirty = True
        return
    if kind == _K_OCV:
        self._apply(0)
        fe.disconnect()
        self.open = True
        self.id_pending = False
    else:
        target = iset if (kind == _K_CC or kind == _K_CCCV) else 0
        if kind == _K_CV and not was_open:
            # bumpless: keep the current if it already pushes V towards v_set
            if prev_i and ((prev_i > 0) == (d > 0)):
                target = prev_i
        self._apply(target)
        if was_open:
            fe.connect()
            self.open = False
        # identify the load from this step's current change at the first tick
        if not was_open and self.i_cmd != prev_i:
            self.id_pending = True
            self.id_v = self.v
            self.id_i = self.i
        else:
            self.id_pending = False
    self.range = fe.range
    if kind == _K_CV:
        self._cv_begin()
    elif kind == _K_CCCV:
        # the CC current moves V down when sign(I) * sign(load) < 0: CV starts once V is at
        # or past v_set in that direction (at the first tick if the step starts there)
        self.cv_down = (iset > 0) != (self.sign > 0)
    self._event(_EV_STEP_START, 0, kind, self.loopc[idx])
    self.persist_dirty = True
    self._due(self.tick_ms)


def _apply(self, target):
    # range mode of the step, then the set point. A fixed range is selected with the set point
    # at zero when the present one would not fit it (set_range refuses that).
    fe = self.fe
    rng = self.rng_sel
    if rng == _RANGE_AUTO:
        fe.autorange = True
    else:
        fe.autorange = False
        if fe.range != rng:
            fs = self.fs[rng]
            if self.i_cmd > fs or -self.i_cmd > fs:
                fe.set_current(0)
            fe.set_range(rng)
    self.i_cmd = fe.set_current(target)


def _reconnect(self):
    # back to the step's control after pause / hold (relay was open)
    fe = self.fe
    if self.kind == _K_OCV:
        return
    if self.kind == _K_CC or (self.kind == _K_CCCV and not self.cv):
        target = self.i_set
    elif self.cv:
        target = self.i_int
    else:
        target = 0
    self._apply(target)
    fe.connect()
    self.open = False
    self.i_fresh = True
    self.slope_ok = False
    self.vl_ok = False
    self.cv_dok = False
    self.step_ticks = 0
    self.dv_v = self.v
    self.dv_ms = 0
    self.t_last = self.clk.ticks_ms()


NAMES = ("_limits", "_end_step", "_goto", "_finish", "_pick_range", "_enter", "_apply", "_reconnect")
