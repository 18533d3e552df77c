"""Fake front end + virtual clock for engine tests (MicroPython and CPython).

Same interface as firmware/frontend.py's Frontend (ints in µV / nA). The cell is integrated
exactly in integers from the clock at every call: charge in nA·ms, so a test can compare the
board's coulomb counter with the truth. Sign convention (DESIGN §5, and what a real front end
sees on any passive load): positive current = lithiation, lowers the cell voltage.

Models:
  * "rc":  V = v0 - q/C - R*I             (C in µF, R in Ω)
  * "si":  V = OCV(q) - R*I - v_pol        OCV piecewise linear over charge (nAh table),
           v_pol a first-order polarisation (r2 Ω, tau2 ms) - an Si-like thin film.
Nothing here allocates per call (so heap_lock tests cover the engine, not the fake), unless a
trace list is attached. Like the firmware, it keeps every int a small int on the RP2040
(-2**30 .. 2**30-1; tests/intcheck.py checks it): the charge is whole nAh plus nA·ms below one
nAh, products that could pass 2**30 go through muldiv(), the noise generator works on 15-bit
limbs. ``q`` (the charge in nA·ms as one int) is for the test scripts, between ticks.
"""

TICKS_MAX = 0x3FFFFFFF
TICKS_HALF = 0x20000000
NAMS = 3600000  # nA·ms per nAh
_SMALL = 0x3FFFFFFF
_REM = [0]  # remainder of the last muldiv()


def muldiv(a, b, c):
    """floor(a * b / c) for |a|, |b| < 2**30 and 0 < c < 2**29, every intermediate below 2**30
    when the quotient is; the remainder (0 <= r < c) goes to _REM[0]. Long multiplication over
    b's digits (base 128 when c < 2**22, else base 2) keeps the running remainder below c."""
    neg = (a < 0) != (b < 0)
    if a < 0:
        a = -a
    if b < 0:
        b = -b
    if b > a:
        a, b = b, a
    if b == 0 or a <= _SMALL // b:
        p = a * b
        q = p // c
        r = p - q * c
    else:
        q = a // c
        ra = a - q * c
        q = q * b
        k = 7 if c < 0x400000 else 1
        m = (1 << k) - 1
        sh = 0
        t = b >> k
        while t:
            t >>= k
            sh += k
        q1 = 0
        r = 0
        while sh >= 0:
            r <<= k
            x = r // c
            q1 = (q1 << k) + x
            r -= x * c
            r += ra * ((b >> sh) & m)
            x = r // c
            q1 += x
            r -= x * c
            sh -= k
        q += q1
    if neg:
        if r:
            q = -q - 1
            r = c - r
        else:
            q = -q
    _REM[0] = r
    return q


class Clock:
    """Virtual ticks_ms clock with MicroPython's wrap-around (2**30)."""

    def __init__(self, start=0):
        self.t = start  # absolute ms (every scenario stays below 2**30 ms: 12 days)

    def ticks_ms(self):
        return self.t & TICKS_MAX

    def ticks_diff(self, a, b):
        d = a - b
        if d >= TICKS_HALF:
            d = d - TICKS_HALF - TICKS_HALF
        elif d < -TICKS_HALF:
            d = d + TICKS_HALF + TICKS_HALF
        return d

    def ticks_add(self, a, b):
        if b >= 0:
            room = TICKS_MAX - a
            return a + b if b <= room else b - room - 1
        s = a + b
        if s < 0:
            s = s + TICKS_HALF + TICKS_HALF
        return s

    def sleep_ms(self, n):
        if n > 0:
            self.t += n

    def advance(self, n):
        self.t += n


# Si-like lithiation curve of a 0.34 mAh thin film (0.6 mAh/cm2 x 0.567 cm2) in cell volts vs
# In-Li (vs Li minus 0.62 V): (charge nAh, OCV µV). Steep at both ends.
SI_CAP_NAH = 340000
SI_TABLE = (
    (-40000, 1100000),
    (0, 580000),  # 1.2 V vs Li
    (17000, -220000),  # 0.40
    (100000, -370000),  # 0.25
    (240000, -500000),  # 0.12
    (306000, -550000),  # 0.07
    (340000, -610000),  # 0.01
    (360000, -900000),  # lithium plating region, very steep
    (380000, -1500000),
)
_A0 = 20077  # the noise LCG's multiplier 1103515245 in 15-bit limbs: _A0 + _A1 << 15 + 1 << 30
_A1 = 908


class Frontend:
    n_ranges = 4

    def __init__(
        self,
        cfg=None,
        i2c=None,
        clock=None,
        model="rc",
        r_ohm=250,
        c_uf=1000000,
        v0_uv=500000,
        q0_nah=0,
        r2_ohm=0,
        tau2_ms=0,
        rp_ohm=0,
        noise_uv=0,
        noise_na=0,
        lsb_uv=0,
        dac_bits=16,
        full_scale=(10000, 100000, 1000000, 10000000),
        i_offset_na=0,
        seed=12345,
    ):
        self.clock = clock if clock is not None else Clock()
        self.full_scale_nA = tuple(full_scale)
        self.n_ranges = len(self.full_scale_nA)
        self.range = self.n_ranges - 1
        self.autorange = False
        self.v_uV = 0
        self.i_nA = 0
        self.clipped = False
        self.connected = False
        self.model = model
        self.r = r_ohm
        self.c = c_uf
        self.v0 = v0_uv
        self.qh = q0_nah  # charge passed: whole nAh (floor) ...
        self.qr = 0  # ... and nA·ms (0 .. NAMS - 1)
        self.r2 = r2_ohm
        self.tau2 = tau2_ms
        self.vpol = 0  # µV
        if rp_ohm > 1000000:
            raise ValueError("rp_ohm above 1 MΩ")
        self.rp = rp_ohm  # RC model: leak across C (0 = none)
        self.u = v0_uv  # RC model with leak: capacitor voltage µV
        self.uacc = 0  # charge not yet in u: whole nA·ms ...
        self.uaccf = 0  # ... and thousandths (0 .. 999)
        self.lk_u = None  # the u the leak current below is for
        self.lk_w = 0  # leak current u/rp: whole nA ...
        self.lk_f = 0  # ... and thousandths
        self.noise_uv = noise_uv
        self.noise_na = noise_na
        self.lsb = lsb_uv
        self.dac_bits = dac_bits
        self.i_off = i_offset_na
        self.s0 = seed & 0x7FFF  # noise LCG state (31 bits) in limbs: bits 0-14, 15-29, 30
        self.s1 = (seed >> 15) & 0x7FFF
        self.s2 = (seed >> 30) & 1
        self.i_cmd = 0  # commanded (quantised) current
        self.t_last = self.clock.t
        self.cal = {}
        self.saved = 0
        self.n_measure = 0
        self.n_set = 0
        self.trace = None  # optional list of (t, v_true_before, i_before, i_after, q_nAms)
        self.fail_measure = False
        self.stats_reset()

    def stats_reset(self):
        # running statistics of the commanded current (no list needed for long runs)
        self.n_cmd = 0  # changes of the flowing current
        self.sign_changes = 0  # sign changes of successive current changes dI
        self.cmd_first = 0
        self.cmd_absmax = 0
        self._last_di = 0
        self.sc_big = 0  # sign changes where both |dI| exceed sc_thr (nA) and 1/1000 of |I|
        self.sc_di_max = 0  # largest |dI| taking part in a sign change
        self.sc_thr = 50

    # ---- model -------------------------------------------------------------------------
    def i_flow(self):
        return self.i_cmd if self.connected else 0

    def _update(self):
        now = self.clock.t
        dt = now - self.t_last
        if dt <= 0:
            return
        self.t_last = now
        i = self.i_flow()
        # charge += i*dt nA·ms, as i = ih*3600 + il: ih*d/1000 nAh and il*d nA·ms per piece
        ih = i // 3600
        il = i - ih * 3600
        left = dt
        while left > 0:
            d = left if left < 100000 else 100000
            left -= d
            x = ih * d
            w = x // 1000
            r = self.qr + (x - w * 1000) * 3600 + il * d
            k = r // NAMS
            self.qh += w + k
            self.qr = r - k * NAMS
        if self.rp:
            # C || Rp: du/dt = -(i + u/Rp)/C, 1 ms Euler sub-steps (Rp*C >> 1 ms); the charge
            # not yet in u in nA·ms and thousandths (w, f), the leak current likewise
            u = self.u
            w = self.uacc
            f = self.uaccf
            c = self.c
            lu = self.lk_u
            lw = self.lk_w
            lf = self.lk_f
            for _ in range(dt):
                if u != lu:
                    self._leak(u)
                    lu = u
                    lw = self.lk_w
                    lf = self.lk_f
                w -= i + lw
                f -= lf
                if f < 0:
                    f += 1000
                    w -= 1
                du = w // c
                w -= du * c
                u += du
            self.u = u
            self.uacc = w
            self.uaccf = f
        if self.r2 and self.tau2:
            # exact-enough first order step in integers: vpol -> r2*i/1000
            target = muldiv(self.r2, i, 1000)
            if dt >= self.tau2 * 8:
                self.vpol = target
            else:
                self.vpol += muldiv(target - self.vpol, dt, self.tau2 + dt)

    def _leak(self, u):
        # u * 1000 / rp nA (the current through the leak) as whole nA and thousandths (floor):
        # u = p * rp + s, then s * 1000000 // rp in two decimal steps (rp <= 1 MΩ)
        rp = self.rp
        p = u // rp
        x = (u - p * rp) * 1000
        w = x // rp
        f = (x - w * rp) * 1000 // rp
        self.lk_w = p * 1000 + w
        self.lk_f = f
        self.lk_u = u

    def ocv(self):
        if self.model == "rc":
            if self.rp:
                return self.u
            # v0 - q // C, q = qh * NAMS + qr nA·ms
            c = self.c
            x = muldiv(self.qh, NAMS, c)
            return self.v0 - x - (_REM[0] + self.qr) // c
        # va + (vb - va) * (q - qa) // (qb - qa) with q - qa = (qh - ta) * NAMS + qr nA·ms:
        # the part of qr below one nAh never moves the floor, so it is
        # va + (dv * (qh - ta) + dv * qr // NAMS) // (tb - ta)
        qh = self.qh
        qr = self.qr
        t = SI_TABLE
        k = 1
        n = len(t)
        while k < n - 1 and (qh > t[k][0] or (qh == t[k][0] and qr > 0)):
            k += 1
        ta = t[k - 1][0]
        va = t[k - 1][1]
        e = t[k][0] - ta
        dv = t[k][1] - va
        m = muldiv(dv, qr, NAMS)
        x = muldiv(dv, qh - ta, e)
        return va + x + (_REM[0] + m) // e

    def v_true(self):
        i = self.i_flow()
        r = self.r
        small = r == 0 or (i if i >= 0 else -i) <= _SMALL // r  # the usual case: no call
        ri = r * i // 1000 if small else muldiv(r, i, 1000)
        return self.ocv() - ri - (self.vpol if self.connected else 0)

    def q_nah(self):
        return self.qh

    @property
    def q(self):  # intcheck: skip (the charge in nA·ms, for the test scripts between ticks)
        return self.qh * NAMS + self.qr

    def _rand(self, n):
        if n <= 0:
            return 0
        # seed = (seed * 1103515245 + 12345) mod 2**31 on 15-bit limbs s2:s1:s0
        s0 = self.s0
        s1 = self.s1
        t0 = _A0 * s0 + 12345
        p = _A0 * s1
        q = _A1 * s0
        t1 = (p & 0x7FFF) + (q & 0x7FFF) + (t0 >> 15)
        c1 = (t1 >> 15) + (p >> 15) + (q >> 15)
        self.s2 = (c1 + _A0 * self.s2 + _A1 * s1 + s0) & 1
        self.s1 = t1 & 0x7FFF
        self.s0 = t0 & 0x7FFF
        x = (self.s2 << 22) | (self.s1 << 7) | (self.s0 >> 8)  # seed >> 8
        return x % (2 * n + 1) - n

    def _log(self, i_after):
        di = i_after - self.i_flow()
        if di:
            if self.n_cmd == 0:
                self.cmd_first = i_after
            self.n_cmd += 1
            a = i_after if i_after >= 0 else -i_after
            if a > self.cmd_absmax:
                self.cmd_absmax = a
            if self._last_di and (di > 0) != (self._last_di > 0):
                self.sign_changes += 1
                ad = di if di > 0 else -di
                al = self._last_di if self._last_di > 0 else -self._last_di
                m = ad if ad < al else al
                if m > self.sc_di_max:
                    self.sc_di_max = m
                thr = a // 1000
                if thr < self.sc_thr:
                    thr = self.sc_thr
                if ad > thr and al > thr:
                    self.sc_big += 1
            self._last_di = di
        if self.trace is not None:
            self.trace.append((self.clock.t, self.v_true(), self.i_flow(), i_after, self.q))

    # ---- interface ---------------------------------------------------------------------
    def connect(self):
        self._update()
        if not self.connected:
            self._log(self.i_cmd)
        self.connected = True

    def disconnect(self):
        self._update()
        if self.connected:
            self._log(0)
        self.connected = False

    def set_range(self, idx):
        if idx < 0 or idx >= self.n_ranges:
            raise ValueError("range")
        self._update()
        self.range = idx
        fs = self.full_scale_nA[idx]
        if self.i_cmd > fs:
            self.i_cmd = fs
        elif self.i_cmd < -fs:
            self.i_cmd = -fs

    def _quant(self, i, rng):
        # code = round(i * steps / fs) (half away from zero), back to nA as code * fs // steps
        fs = self.full_scale_nA[rng]
        steps = 1 << (self.dac_bits - 1)
        a = i if i >= 0 else -i
        code = muldiv(a, steps, fs)
        code += (_REM[0] + (fs >> 1)) // fs
        if i < 0:
            code = -code
        if code >= steps:
            code = steps - 1
        if code < -steps:
            code = -steps
        return muldiv(code, fs, steps)

    def set_current(self, i_nA):
        top = self.full_scale_nA[self.n_ranges - 1]
        if i_nA > top or i_nA < -top:
            raise ValueError("current above the top range")
        self._update()
        a = i_nA if i_nA >= 0 else -i_nA
        if self.autorange:
            r = 0
            while r < self.n_ranges - 1 and a > self.full_scale_nA[r]:
                r += 1
            self.range = r
        fs = self.full_scale_nA[self.range]
        if a > fs:
            i_nA = fs if i_nA > 0 else -fs
        q = self._quant(i_nA, self.range)
        if q != self.i_flow() and self.connected:
            self._log(q)
        self.i_cmd = q
        self.n_set += 1
        return q

    def measure(self):
        if self.fail_measure:
            raise OSError(5)
        self._update()
        self.n_measure += 1
        i = self.i_flow()
        v = self.v_true() + self._rand(self.noise_uv)
        if self.lsb:
            h = self.lsb >> 1
            v = ((v + h) // self.lsb) * self.lsb
        self.v_uV = v
        self.i_nA = (
            i + self.i_off + self._rand(self.noise_na)
            if self.connected
            else self._rand(self.noise_na)
        )
        # the ADC reads no further than its full scale (a cell run past it reads the rail)
        self.clipped = v > 4096000 or v < -4096000
        if self.clipped:
            v = 4096000 if v > 0 else -4096000
            self.v_uV = v
        switched = False
        if self.autorange and self.connected:
            r = self.range
            a = self.i_cmd if self.i_cmd >= 0 else -self.i_cmd
            if r > 0 and a * 10 < self.full_scale_nA[r - 1] * 9:
                self.range = r - 1
                self.i_cmd = self._quant(self.i_cmd, self.range)
                switched = True
        return switched

    def safe(self):
        try:
            self._update()
            if self.connected and self.i_cmd:
                self._log(0)
        except Exception:
            pass
        self.i_cmd = 0
        self.connected = False

    def get_cal(self, rng, channel):
        if rng < 0 or rng >= self.n_ranges or channel not in (0, 1):
            raise ValueError("range/channel")
        return self.cal.get((rng, channel), (0, 0))

    def set_cal(self, rng, channel, offset, gain_ppm):
        if rng < 0 or rng >= self.n_ranges or channel not in (0, 1):
            raise ValueError("range/channel")
        self.cal[(rng, channel)] = (offset, gain_ppm)

    def save_cal(self):
        self.saved += 1
