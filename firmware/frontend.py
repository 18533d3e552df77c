"""The analog front end: DAC -> Howland V-to-I stage -> relay -> sense resistor -> cell,
ADC reading the cell voltage (AIN0-AIN1) and the sense voltage (AIN2-AIN3).

Integers throughout: voltages in uV, currents in nA (+ = lithiation).

    fe = Frontend()                 # board.load(), I2C bus + drivers, calibration.json
    fe.set_current(-150000)         # -> the current actually commanded (quantised, calibrated)
    fe.connect()                    # relay closed
    fe.measure()                    # fe.v_uV, fe.i_nA, fe.clipped; True if autorange switched
    fe.safe()                       # DAC midscale + relay open; never raises

Ranges: index 0..n_ranges-1, full_scale_nA[i]; one-hot GPIOs.  Switching range (set_range)
puts the DAC at midscale (zero current) across the switch, then re-applies the set point.
With ``autorange`` (default True), set_current picks the smallest range whose full scale
is >= |I| / 0.9 (board.json autorange.select_pct), and measure() steps up when
|I| > 95 % FS or the current reading clips, and down when |I| < 8 % FS and the set point
still fits the lower range (hysteresis: a step never lands outside 9 .. 90 % FS).

Voltage: over the ADC's fine range (ADS1115 +-2.048 V), and over its wide range (+-4.096 V)
above 15/16 of the fine one, back below 7/8 (board.json adc voltage pga_mV / wide_pga_mV).

Hot paths: measure() is integer-only and allocation-free (on the RP2040 every product
stays below 2**30); set_current() uses a few floats for the DAC code (boxed floats are
the only allocation).
"""

import time
from machine import I2C, Pin
from micropython import const

import board
import calibration
import drivers

# calibration channels: const() copies of messages.CH_* (tests/test_wire_ids.py ties them)
_CH_VOLTAGE = const(0)
_CH_CURRENT = const(1)
_CH_SETPOINT = const(2)


def _gcd(a, b):
    while b:
        a, b = b, a % b
    return a


class Frontend:
    def __init__(self, cfg=None, i2c=None):
        if cfg is None:
            cfg = board.load()
        self.cfg = cfg
        # relay first: keep the cell disconnected whatever happens below
        rl = cfg['relay']
        self._relay_on = 1 if rl.get('active_high', True) else 0
        self._relay = Pin(rl['gpio'], Pin.OUT, value=1 - self._relay_on)
        self.connected = False
        rngs = cfg['ranges']
        self.n_ranges = len(rngs)
        self.full_scale_nA = tuple(r['full_scale_nA'] for r in rngs)
        self.range_names = tuple(r.get('name', str(k)) for k, r in enumerate(rngs))
        self._pins = [Pin(r['gpio'], Pin.OUT, value=0) for r in rngs]
        # sense uV -> nA with the nominal resistor: nA = uV * 1e6 / R_mohm, reduced
        self._mul = []
        self._div = []
        for r in rngs:
            mo = int(round(r['sense_ohm'] * 1000))
            g = _gcd(1000000, mo)
            self._mul.append(1000000 // g)
            self._div.append(mo // g)
        ar = cfg.get('autorange', {})
        sel = ar.get('select_pct', 90)
        up = ar.get('up_pct', 95)
        down = ar.get('down_pct', 8)
        self._sel = tuple(fs * sel // 100 for fs in self.full_scale_nA)
        self._up = tuple(fs * up // 100 for fs in self.full_scale_nA)
        self._down = tuple(fs * down // 100 for fs in self.full_scale_nA)
        self.autorange = True
        # bus and chips
        if i2c is None:
            b = cfg['i2c']
            i2c = I2C(b['id'], sda=Pin(b['sda']), scl=Pin(b['scl']), freq=b['freq'])
        self.i2c = i2c
        part, p = board.dac(cfg)
        self.dac = drivers.make_dac(i2c, part, p)
        self._mid = self.dac.mid
        self._max = self.dac.max_code
        self._lsb = tuple(fs / self._mid for fs in self.full_scale_nA)       # nA per code
        self._lsb_inv = tuple(self._mid / fs for fs in self.full_scale_nA)
        self.dac.write(self._mid)
        part, p = board.adc(cfg)
        self.adc = drivers.make_adc(i2c, part, p)
        # The voltage channel: ADC channel 0, and channel 2 over a wide range where board.json
        # gives one (ADS1115: +-2.048 V at 62.5 uV per code, +-4.096 V at 125 uV). A reading
        # above 15/16 of the fine range (or clipped there) is taken again over the wide one,
        # which stays in use until a reading falls below 7/8 of the fine range.
        self._vw = 2 if 'wide_pga_mV' in p['voltage'] else 0
        self._vch = 0
        self.v_wide = False      # the last voltage reading was taken over the wide range
        fine = self.adc.span_uv(0)
        self._v_up = fine - fine // 16
        self._v_down = fine - fine // 8
        # What it reads: its full scale, and the inputs' reach of the rails (AIN0 on the
        # mid-rail, AIN1 = mid - V_cell within 0 .. rail; beyond, the input clamps bend the
        # reading). A reading outside lo .. hi counts as clipped.
        a = cfg['adc']
        span = self.adc.span_uv(self._vw)
        mid = a.get('mid_rail_uV', span)
        self._v_lo = max(-span, mid - a.get('rail_uV', mid + span))
        self._v_hi = min(span, mid)
        # The cell-voltage window is board.json's (limits). Where the channel reads less, the
        # window narrows to what it reads less 1/32, in board.json's limits too, which the
        # engine and INFO take it from.
        lim = cfg['limits']
        if lim['v_max_uV'] > self._v_hi - self._v_hi // 32:
            lim['v_max_uV'] = self._v_hi - self._v_hi // 32
        if lim['v_min_uV'] < self._v_lo - self._v_lo // 32:
            lim['v_min_uV'] = self._v_lo - self._v_lo // 32
        self.v_min_uV = lim['v_min_uV']
        self.v_max_uV = lim['v_max_uV']
        self.compliance_uV = lim['compliance_uV']
        self.cal = calibration.Calibration(self.n_ranges)
        # state
        self.range = self.n_ranges - 1
        self._pins[self.range].on()
        self.set_nA = 0          # requested set point
        self.cmd_nA = 0          # what set_current returned (expected actual current)
        self.v_uV = 0
        self.i_nA = 0
        self.v_raw_uV = 0
        self.i_raw_nA = 0
        self.clipped = False
        self.v_clipped = False
        self.i_clipped = False

    # -- relay ----------------------------------------------------------------------------
    def connect(self):
        self._relay.value(self._relay_on)
        self.connected = True

    def disconnect(self):
        self._relay.value(1 - self._relay_on)
        self.connected = False

    # -- ranges ---------------------------------------------------------------------------
    def _switch(self, idx):
        self.dac.write(self._mid)             # zero current across the switch
        for p in self._pins:                  # break ...
            p.off()
        self._pins[idx].on()                  # ... then make
        self.range = idx

    def set_range(self, idx):
        if not 0 <= idx < self.n_ranges:
            raise ValueError('range %d not in 0..%d' % (idx, self.n_ranges - 1))
        self._switch(idx)
        i = self.set_nA
        if i:
            if abs(i) > self.full_scale_nA[idx]:
                self.set_nA = 0
                self.cmd_nA = 0
                raise ValueError('set point %d nA exceeds range %d (%d nA); set to 0'
                                 % (i, idx, self.full_scale_nA[idx]))
            self._apply(i)

    # -- set point ------------------------------------------------------------------------
    def set_current(self, i_nA):
        i_nA = int(i_nA)
        a = -i_nA if i_nA < 0 else i_nA
        top = self.n_ranges - 1
        if a > self.full_scale_nA[top]:
            raise ValueError('current %d nA exceeds the top range (%s, %d nA)'
                             % (i_nA, self.range_names[top], self.full_scale_nA[top]))
        if self.autorange:
            r = 0
            while r < top and a > self._sel[r]:
                r += 1
            if r != self.range:
                self._switch(r)
        elif a > self.full_scale_nA[self.range]:
            raise ValueError('current %d nA exceeds range %d (%d nA) and autorange is off'
                             % (i_nA, self.range, self.full_scale_nA[self.range]))
        return self._apply(i_nA)

    def _apply(self, i_nA):
        # DAC code = mid + (I - offset) / gain * mid / FS; floats (a few boxed temporaries),
        # because (I - offset) * mid would be a big int (an allocation) on the RP2040
        r = self.range
        cal = self.cal
        off = cal.off[r][_CH_SETPOINT]
        mid = self._mid
        code = mid + int(round((i_nA - off) * cal.inv[r][_CH_SETPOINT] * self._lsb_inv[r]))
        if code < 0:
            code = 0
        elif code > self._max:
            code = self._max
        self.dac.write(code)
        self.set_nA = i_nA
        act = int(round((code - mid) * self._lsb[r] * cal.gf[r][_CH_SETPOINT])) + off
        self.cmd_nA = act
        return act

    # -- measurement ----------------------------------------------------------------------
    def measure(self):
        adc = self.adc
        r = self.range
        ch = self._vch
        v = adc.read_uv(ch)
        vc = adc.clipped
        if self._vw:
            a = -v if v < 0 else v
            if ch == 0:
                if vc or a > self._v_up:
                    ch = self._vch = self._vw
                    v = adc.read_uv(ch)
                    vc = adc.clipped
            elif a < self._v_down:
                self._vch = 0                # the next reading over the fine range
        self.v_wide = ch != 0
        vc = vc or v <= self._v_lo or v >= self._v_hi
        s = adc.read_uv(1)
        ic = adc.clipped
        d = self._div[r]
        i = (s * self._mul[r] + (d >> 1)) // d
        self.v_raw_uV = v
        self.i_raw_nA = i
        cal = self.cal
        v = calibration.correct(v, cal.off[r][_CH_VOLTAGE], cal.k[r][_CH_VOLTAGE])
        i = calibration.correct(i, cal.off[r][_CH_CURRENT], cal.k[r][_CH_CURRENT])
        self.v_uV = v
        self.i_nA = i
        self.v_clipped = vc
        self.i_clipped = ic
        self.clipped = vc or ic
        if not self.autorange:
            return False
        a = -i if i < 0 else i
        if (ic or a > self._up[r]) and r < self.n_ranges - 1:
            self._switch(r + 1)
            self._apply(self.set_nA)
            return True
        if r > 0 and a < self._down[r]:
            sp = self.set_nA
            if sp < 0:
                sp = -sp
            if sp <= self._sel[r - 1]:
                self._switch(r - 1)
                self._apply(self.set_nA)
                return True
        return False

    # -- safety ---------------------------------------------------------------------------
    def safe(self):
        """zero current and open the relay; never raises (an I2C fault is ignored, the
        relay is a GPIO and opens regardless)"""
        self.set_nA = 0
        self.cmd_nA = 0
        try:
            self.dac.write(self._mid)
        except Exception:
            pass
        try:
            self._relay.value(1 - self._relay_on)
        except Exception:
            pass
        self.connected = False

    # -- calibration ----------------------------------------------------------------------
    def get_cal(self, rng, channel):
        return self.cal.get(rng, channel)

    def set_cal(self, rng, channel, offset, gain_ppm):
        self.cal.set(rng, channel, offset, gain_ppm)
        if channel == _CH_SETPOINT and rng == self.range and self.set_nA:
            self._apply(self.set_nA)

    def save_cal(self):
        self.cal.save()

    def calibrate(self, rng, ref, frac_pct=80, settle_ms=50, n_avg=8):
        """Two-point calibration of range rng against an external reference.

        The cell terminals carry a precision load (a resistor of about the range's sense
        resistance gives +-0.8 V); ``ref()`` returns the true (uV, nA) now - a bench DMM.
        Drives -frac and +frac of full scale with unity calibration, averages n_avg
        measurements at each, and sets channels 0, 1, 2 of rng.  Returns the three
        (offset, gain_ppm) pairs; call save_cal() to keep them."""
        auto = self.autorange
        self.autorange = False
        self.cal.reset(rng)
        pts = []
        try:
            self.set_range(rng)
            self.connect()
            fs = self.full_scale_nA[rng]
            for sgn in (-1, 1):
                cmd = self.set_current(sgn * fs * frac_pct // 100)
                time.sleep_ms(settle_ms)
                sv = 0
                si = 0
                for _ in range(n_avg):
                    self.measure()
                    sv += self.v_uV
                    si += self.i_nA
                tv, ti = ref()
                pts.append((cmd, sv // n_avg, si // n_avg, tv, ti))
        finally:
            self.set_current(0)
            self.autorange = auto
        (c1, v1, i1, tv1, ti1), (c2, v2, i2, tv2, ti2) = pts
        out = (two_point(tv1, v1, tv2, v2) if tv1 is not None else (0, 1000000),
               two_point(ti1, i1, ti2, i2),
               two_point(c1, ti1, c2, ti2))
        for ch in range(3):
            self.cal.set(rng, ch, out[ch][0], out[ch][1])
        return out


two_point = calibration.two_point
