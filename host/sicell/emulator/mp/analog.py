"""Analog model of the sicell front end (runs inside the emulated board, MicroPython).

The physical board this models (documented in firmware/board.json as well)::

    DAC (MCP4725, 0..3.3 V  |  DAC8571, 0..2.5 V)
      -> improved Howland V-to-I stage:  I = (Vdac - Vref/2) / (Vref/2) * I_FS(range)
      -> cell relay (GP15, high = closed; open = safe, the default after any reset)
      -> sense resistor top = ADC AIN2
      -> range resistor R_s (GP10..GP13 one-hot: 100k / 10k / 1k / 100 ohm,
         1 V across R_s at full scale: 10 uA / 100 uA / 1 mA / 10 mA)
      -> sense resistor bottom = ADC AIN3 = cell counter electrode = ADC AIN1
      -> cell -> working electrode = ADC AIN0 = analog mid-rail VG (2.5 V, buffered)

    So AIN0 - AIN1 = V_cell (working vs counter) and AIN2 - AIN3 = +I * R_s, with
    I > 0 = lithiation of the working electrode (DESIGN section 5).  The ADC runs on the
    5 V analog rail; absolute inputs are clamped to -0.3 .. 5.3 V (ESD diodes).

    The relay sits between the Howland output and the sense resistor: with the relay
    open no current flows but the ADC still sees the cell (rest voltage can be read).

    Compliance: the Howland output (relative to VG) is I*R_s - V_cell(I); it cannot
    exceed +-4.5 V.  Beyond that the current collapses to the value at which the output
    sits on the rail (solved by bisection).

    Range GPIOs: exactly one high selects that range.  None high = the current path
    is open (I = 0, sense voltage 0).  Two or more high = those sense resistors in
    parallel (the stage sets I = Vin / R_parallel, each path adds its own gain/offset
    error); firmware should never do that, but the model is physical about it.

Non-idealities (deterministic from the world seed):
    * V-to-I stage gain error per range: 0.15 .. 0.4 %, random sign;
    * V-to-I stage offset per range: (2 .. 5 nA) + (0.05 .. 0.2 % FS), random sign;
    * sense resistor tolerance per range: up to +-0.1 %;
    * ADC input offset (per ADC chip, see chips.py) and Gaussian noise (seeded).
"""

import math

# The printed circuit board (what the firmware's board.json must agree with).
VG = 2.5
ADC_VDD = 5.0
RANGE_GPIO = (10, 11, 12, 13)
RELAY_GPIO = 15
LED_GPIO = 25
SENSE_OHM = (100000.0, 10000.0, 1000.0, 100.0)
FS_A = (10e-6, 100e-6, 1e-3, 10e-3)
COMPLIANCE_V = 4.5
DAC_VREF = {'mcp4725': 3.3, 'dac8571': 2.5}


class Rng:
    """xorshift32: small, fast, deterministic, independent of the global `random`."""

    def __init__(self, seed):
        s = (seed * 2654435761 + 0x9E3779B9) & 0xFFFFFFFF
        self.s = s or 0x12345678
        for _ in range(8):
            self.next()

    def next(self):
        s = self.s
        s ^= (s << 13) & 0xFFFFFFFF
        s ^= s >> 17
        s ^= (s << 5) & 0xFFFFFFFF
        self.s = s
        return s

    def uniform(self):
        """0 <= u < 1"""
        return self.next() / 4294967296.0

    def sym(self, lo, hi):
        """magnitude uniform in [lo, hi), random sign"""
        m = lo + (hi - lo) * self.uniform()
        return m if self.next() & 1 else -m

    def gauss(self):
        """approximately standard normal (Irwin-Hall, 4 uniforms); the integer sum / 2**32
        is exactly the sum of the four uniform() values, with fewer boxed floats"""
        s = self.s
        u = 0
        for _ in range(4):           # next() four times, inlined
            s ^= (s << 13) & 0xFFFFFFFF
            s ^= s >> 17
            s ^= (s << 5) & 0xFFFFFFFF
            u += s
        self.s = s
        return (u / 4294967296.0 - 2.0) * 1.7320508


class Analog:
    def __init__(self, seed=0, noise=True):
        r = Rng(seed * 7 + 1)
        n = len(SENSE_OHM)
        self.gain_err = [r.sym(0.0015, 0.004) for _ in range(n)]
        self.offset_a = [r.sym(2e-9, 5e-9) + r.sym(0.0005, 0.002) * FS_A[k] for k in range(n)]
        self.r_actual = [SENSE_OHM[k] * (1.0 + r.sym(0.0, 0.001)) for k in range(n)]
        self.noise = noise
        self.rng = Rng(seed * 13 + 5)
        self.x = 0.0          # normalised DAC input of the stage, -1 .. +1 (0 = midscale)
        self.mask = 0         # range GPIO levels, bit k = range k
        self.relay = False
        self.i_cmd = 0.0      # what the stage tries to drive (A)
        self.r_sense = 0.0    # actual sense resistance in the path (0 = path open)
        self.v_ok = False     # cell_current() left cell.voltage(its result) in v_at
        self.v_at = 0.0
        self.gen = 0          # bumped by the world whenever the cell's state changes
        self._v_gen = -1      # cell_current's voltage cache: valid for gen and i object
        self._v_i = None
        self._rms = {}        # noise rms per data rate

    # -- switches and set point --------------------------------------------------------
    def set_dac(self, vout, vref):
        half = vref * 0.5
        self.x = (vout - half) / half
        self._update()

    def set_switches(self, mask, relay):
        self.mask = mask
        self.relay = relay
        self._update()

    def _update(self):
        i = 0.0
        g = 0.0
        for k in range(len(SENSE_OHM)):
            if self.mask & (1 << k):
                i += self.x * FS_A[k] * (1.0 + self.gain_err[k]) + self.offset_a[k]
                g += 1.0 / self.r_actual[k]
        self.i_cmd = i
        self.r_sense = 1.0 / g if g else 0.0

    def range_index(self):
        """selected range index, or -1 (none / several)"""
        for k in range(len(SENSE_OHM)):
            if self.mask == (1 << k):
                return k
        return -1

    # -- the cell branch ---------------------------------------------------------------
    def cell_current(self, cell):
        """actual current through the cell (A) given the present state, with compliance."""
        if not self.relay or self.r_sense == 0.0:
            return 0.0
        i = self.i_cmd
        if self._v_gen == self.gen and self._v_i is i:
            v = self.v_at        # same cell state, same current: the same voltage
        else:
            v = cell.voltage(i)
            self._v_gen = self.gen
            self._v_i = i
        out = i * self.r_sense - v
        self.v_at = v
        if -COMPLIANCE_V <= out <= COMPLIANCE_V:
            self.v_ok = True
            return i
        self._v_gen = -1
        return self._on_rail(cell, out)

    def _on_rail(self, cell, out):
        i = self.i_cmd
        rs = self.r_sense
        # out of compliance: the output sits on the rail; find I with |I Rs - V(I)| = rail
        rail = COMPLIANCE_V if out > 0 else -COMPLIANCE_V
        lo = 0.0
        hi = i
        if (lo * rs - cell.voltage(lo) - rail) * (hi * rs - cell.voltage(hi) - rail) > 0:
            return 0.0   # even zero current is beyond the rail: the stage cannot drive it
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            f = mid * rs - cell.voltage(mid) - rail
            if (f > 0) == (rail > 0):
                hi = mid
            else:
                lo = mid
        return lo

    def nodes(self, cell, i):
        """absolute voltages of AIN0..AIN3 (V vs board GND) with cell current i."""
        vc = cell.voltage(i)
        a1 = VG - vc
        a2 = a1 + i * self.r_sense
        return (_clamp(VG), _clamp(a1), _clamp(a2), _clamp(a1))

    def diff(self, cell, p, n):
        """nodes(cell, cell_current(cell))[p] minus the same of n (0 V for n = -1), with
        fewer temporary objects (the ADC models' hot path)"""
        self.v_ok = False
        i = self.cell_current(cell)
        a1 = VG - (self.v_at if self.v_ok else cell.voltage(i))
        if n < 0:
            return self._node(p, a1, i)
        return self._node(p, a1, i) - self._node(n, a1, i)

    def _node(self, k, a1, i):
        if k == 0:
            return _clamp(VG)
        if k == 2:
            return _clamp(a1 + i * self.r_sense)
        return _clamp(a1)

    def out_of_compliance(self, cell):
        if not self.relay or self.r_sense == 0.0:
            return False
        i = self.i_cmd
        out = i * self.r_sense - cell.voltage(i)
        return out > COMPLIANCE_V or out < -COMPLIANCE_V

    def noise_v(self, rms):
        if not self.noise or rms <= 0.0:
            return 0.0
        return rms * self.rng.gauss()

    def noise_for_rate(self, sps):
        """noise_v(noise_rms_for_rate(sps)), the rms computed once per rate"""
        if not self.noise:
            return 0.0
        rms = self._rms.get(sps)
        if rms is None:
            rms = self._rms[sps] = noise_rms_for_rate(sps)
        return self.noise_v(rms)


def _clamp(v):
    if v < -0.3:
        return -0.3
    if v > ADC_VDD + 0.3:
        return ADC_VDD + 0.3
    return v


def noise_rms_for_rate(sps):
    """input-referred noise of a delta-sigma ADC, grows with sqrt(data rate): ~22 uV at 860 SPS"""
    return 0.75e-6 * math.sqrt(sps)
