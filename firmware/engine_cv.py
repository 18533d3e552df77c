# Engine part 3 of 3 bound onto engine.Engine: the CV controller (model-based PI on the
# DAC current, with an identification ramp when nothing is known about the load).

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]
        return x


_DV_CLAMP = const(1000000)  # |dV| clamp before *1000 (keeps products < 2**30)
_ID_MIN_DV = const(2000)  # µV: smallest voltage response used to identify the plant
_K_CCCV = const(3)
_RANGE_AUTO = const(0xFF)
_R_MAX = const(10000000)  # Ω, CV plant estimate bounds


def _cv_begin(self):
    self.cv = True
    self.cv_ticks = 0
    self.cv_alt = 0
    self.cv_last_di = 0
    self.i_int = self.i_cmd
    if self.rng_sel == _RANGE_AUTO and not self.fe.autorange:
        self.fe.autorange = True
    self.cv_p = 0
    self.cv_pv = self.v
    self.cv_e0 = self.v_set - self.v
    self.cv_dok = False  # disturbance observer: needs one control tick of history
    self.cv_d16 = 0
    self.cv_vp = self.v
    self.cv_i2 = self.i_int
    # no estimate of the load yet: identify it first (doubling current ramp, then a hold)
    self.cv_probe = 1 if self.r_est <= 0 else 0


def _cv_limit(self, x):
    if self.kind == _K_CCCV:
        s = self.i_set
        if s > 0:
            return 0 if x < 0 else (s if x > s else x)
        return 0 if x > 0 else (s if x < s else x)
    lim = self.imax - self.imax // 32
    if self.rng_sel != _RANGE_AUTO:
        fs = self.fs[self.rng_sel]
        if fs < lim:
            lim = fs
    elif self.top < lim:
        lim = self.top
    return lim if x > lim else (-lim if x < -lim else x)


def _cv(self, v):
    e = self.v_set - v
    if self.cv_probe:
        self.cv_ticks += 1
        self._cv_probe(v, e)
        return
    self.cv_ticks += 1
    sign = self.sign
    r = self.r_est
    h = self.h_rate * self.tick_ms // 1000
    d = r + h
    if d < 1:
        d = 1
    # Model-based PI with a disturbance observer. Load model over one tick T:
    #   V[k+1] - V[k] = sign*(h*I[k] + R*(I[k] - I[k-1])) + dist      (h = T/C)
    # ``dist`` (drift the model does not explain: leak/diffusion paths, OCV curvature, a wrong
    # R or C) is observed every tick and filtered (1/16); the current is chosen to move V a
    # fraction g of the way to v_set:  I[k] = (sign*(g*e - dist) + R*I[k-1]) / (R + h).
    # The observer is the integral action: no steady error, also with a DC path.
    i1 = self.i_int  # the current of the interval that just ended
    if self.cv_dok:
        pred = h * i1 + r * (i1 - self.cv_i2)  # nV
        pred = pred // 1000 if pred >= 0 else -((-pred) // 1000)
        dobs = v - self.cv_vp - (pred if sign > 0 else -pred)
        if dobs > _DV_CLAMP:
            dobs = _DV_CLAMP
        elif dobs < -_DV_CLAMP:
            dobs = -_DV_CLAMP
        self.cv_d16 += dobs - (self.cv_d16 >> 4)
    else:
        self.cv_dok = True
    self.cv_vp = v
    self.cv_i2 = i1
    # g*e in nV, g continuous and piecewise linear in |e|: 1/8 within 0.5 mV of v_set
    # (averages ADC noise), 1/4 up to 8 mV, 1/2 beyond
    ae = e if e >= 0 else -e
    if ae > _DV_CLAMP:
        ae = _DV_CLAMP
    if ae <= 500:
        ge = ae * 125
    elif ae <= 8000:
        ge = 62500 + (ae - 500) * 250
    else:
        ge = 1937500 + (ae - 8000) * 500
    if e < 0:
        ge = -ge
    dist = self.cv_d16 >> 4
    if dist > _DV_CLAMP:
        dist = _DV_CLAMP
    elif dist < -_DV_CLAMP:
        dist = -_DV_CLAMP
    ge -= dist * 1000
    if sign < 0:
        ge = -ge
    num = ge + r * i1
    x = (num + num + d) // (d + d)
    x = self._cv_limit(x)
    di = x - self.i_int
    # oscillation guard: repeated large alternations of dI -> the load is slower than
    # estimated; halve the gain (double R and h)
    big = self.i_int // 16
    if big < 0:
        big = -big
    if big < 100:
        big = 100
    if (di > big and self.cv_last_di < -big) or (di < -big and self.cv_last_di > big):
        self.cv_alt += 1
        if self.cv_alt >= 3:
            self.cv_alt = 0
            self.r_est = r + r if r + r < _R_MAX else _R_MAX
            self.h_rate += self.h_rate
            self.cv_dok = False
    elif di > big or di < -big:
        self.cv_alt = 0
    self.cv_last_di = di
    self.i_int = x
    self.i_cmd = self.fe.set_current(x)
    self.i_fresh = True


def _cv_probe(self, v, e):
    # Identify the load at the start of a CV phase when nothing is known about it: ramp
    # the current towards v_set, doubling each tick, until the voltage answers by _ID_MIN_DV
    # (or crosses v_set); then hold one tick. The last ramp step gives R (+h), the hold h.
    dv = v - self.cv_pv
    adv = dv if dv >= 0 else -dv
    p = self.cv_p
    ap = p if p >= 0 else -p
    i = self.i_int
    ai = i if i >= 0 else -i
    if self.cv_probe == 2:
        h1 = 0  # Ω over one tick
        if ai and dv != 0 and (dv > 0) == ((self.sign > 0) == (i > 0)) and adv < _DV_CLAMP:
            h1 = adv * 1000 // ai
        self.h_rate = h1 * 1000 // self.tick_ms
        r = 1
        if ap:
            z = self.cv_pi * 1000 // ap
            r = (self.cv_pi * 1000 - h1 * ai) // ap
            if r < z // 4:
                r = z // 4
        if r < 1:
            r = 1
        self.r_est = r if r < _R_MAX else _R_MAX
        self.cv_probe = 0
        self._cv(v)
        return
    crossed = (e > 0) != (self.cv_e0 > 0)
    if ap and (adv >= _ID_MIN_DV or crossed):
        if adv >= _ID_MIN_DV // 2:
            self.sign = 1 if (dv > 0) == (p > 0) else -1
        self.cv_pi = adv  # |dV| answering the last ramp step
        self.cv_probe = 2
        self.cv_pv = v
        return
    step = ap + ap if ap else self.fs[self.fe.range] // 1000
    if step < 1:
        step = 1
    up = (self.cv_e0 > 0) == (self.sign > 0)  # current sign that moves V towards v_set
    x = self._cv_limit(i + step if up else i - step)
    if x == i:  # at the current limit without an answer: the load is stiff
        if self.r_est <= 0:
            self.r_est = 1
        self.cv_probe = 0
        return
    self.cv_p = x - i
    self.i_int = x
    self.cv_pv = v
    self.i_cmd = self.fe.set_current(x)
    self.i_fresh = True


NAMES = ("_cv_begin", "_cv_limit", "_cv", "_cv_probe",)
