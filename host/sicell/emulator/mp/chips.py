"""Register-level models of the front-end chips (runs inside the emulated board).

Each model is an I2C target: ``write(data)`` is one I2C write transaction (the bytes
after the address), ``read(n)`` one read transaction returning n bytes.  A transaction
the silicon would not accept raises OSError(EIO) (a data NAK).  Where the silicon would
silently ignore or truncate a malformed transaction, these models are stricter and NAK
too, so a driver bug fails loudly in CI; a driver that sets wrong bits gets wrong
numbers back (every config field is honoured).

The models take their analog inputs from the world: ``world.sample()`` returns the
absolute node voltages AIN0..AIN3 at the current virtual time (the cell integrated up
to that instant); ``world.dac_changed(chip)`` is called whenever the DAC output changes.
Conversion times are virtual time: a single-shot conversion started at t is latched at
t + t_conv (``world.schedule_latch``); reading before that returns the previous result.

ADS1115 (TI, 16-bit delta-sigma, I2C 0x48..0x4B)
    pointer register (P1:P0; other bits must be 0): 0 conversion (read only),
    1 config, 2 Lo_thresh, 3 Hi_thresh.  A write is 1 byte (pointer) or 3 bytes
    (pointer + MSB + LSB); a read is 1 or 2 bytes of the register the pointer selects.
    config: OS[15] (write 1 = start single shot; read 0 = converting), MUX[14:12]
    (0 AIN0-AIN1, 1 AIN0-AIN3, 2 AIN1-AIN3, 3 AIN2-AIN3, 4..7 AINx-GND), PGA[11:9]
    (+-6.144, 4.096, 2.048, 1.024, 0.512, 0.256 V), MODE[8] (1 single shot, 0
    continuous), DR[7:5] (8, 16, 32, 64, 128, 250, 475, 860 SPS), COMP_* [4:0]
    (stored).  Reset value 0x8583.  Conversion time 1/DR (internal oscillator
    error from the seed, within +-3 %) + 25 us wake-up; result = round(V / FS * 32768)
    saturated to -32768 .. 32767, big-endian two's complement.
ADS1219 (TI, 24-bit, I2C 0x40..0x4F)
    commands: RESET 0x06/0x07, START/SYNC 0x08/0x09, POWERDOWN 0x02/0x03, RDATA
    0x10..0x1F (then read 3 bytes), RREG 0x20 (config) / 0x24 (status) (then read
    1 byte), WREG 0x40..0x4F + 1 data byte (config).  config: MUX[7:5] (0 AIN0-AIN1,
    1 AIN2-AIN3, 2 AIN1-AIN2, 3..6 AIN0..AIN3-AGND, 7 shorted to AVDD/2), GAIN[4]
    (1 or 4), DR[3:2] (20, 90, 330, 1000 SPS), CM[1] (0 single shot, 1 continuous),
    VREF[0] (0 internal 2.048 V, 1 external REFP-REFN = not fitted on this board, reads
    as a 0 V reference: results saturate).  status: DRDY[7] (set when a new result
    is ready, cleared by RDATA).  Result round(V * gain / Vref * 2^23), saturated,
    24-bit big-endian two's complement.
MCP4725 (Microchip, 12-bit DAC, I2C 0x60..0x67, output 0..VDD = 3.3 V)
    fast write: pairs [0 0 PD1 PD0 D11..D8][D7..D0] (one or more pairs);
    write DAC register: triples [0 1 0 x x PD1 PD0 x][D11..D4][D3..D0 x x x x];
    write DAC register and EEPROM: [0 1 1 ...] (same layout, EEPROM busy 25 ms);
    C2:C0 = 1xx is reserved (NAK).  Read (1..5 bytes): status [RDY/BSY POR 0 0 0 PD1
    PD0 0], DAC register [D11..D4][D3..D0 0000], EEPROM [0 PD1 PD0 0 D11..D8][D7..D0].
    PD != 0 pulls the output to GND (so the Howland drives -FS: a driver that sets
    PD bits gets full negative current).  Power-up loads the EEPROM (programmed to
    midscale 0x800 at board bring-up).
DAC8571 (TI, 16-bit DAC, I2C 0x4C/0x4E, output 0..VREF = 2.5 V external)
    write: control byte [0 0 L1 L0 0 0 0 PD0] then one or more MSB,LSB pairs.
    L1:L0 = 00 store temporary register, 01 store and load the DAC (0x10, the
    normal update), 10 load DAC from the temporary register (data still required),
    11 broadcast update (same as 10 here).  PD0 = 1: power down (output to GND
    through 1 k / 100 k or Hi-Z per MSB[7:6]); the model treats any power-down as
    0 V output.  Reserved control bits set -> NAK.  Read (1..3 bytes): MSB, LSB of the
    DAC register, control byte.  Power-on reset: zero scale (0x0000, i.e. -FS current
    through the Howland, which is why the relay is open at power-up).
"""

EIO = 5

# ADS1115 tables
_ADS1115_FS = (6.144, 4.096, 2.048, 1.024, 0.512, 0.256, 0.256, 0.256)
_ADS1115_DR = (8, 16, 32, 64, 128, 250, 475, 860)
# MUX -> (positive node, negative node or -1 for GND)
_ADS1115_MUX = ((0, 1), (0, 3), (1, 3), (2, 3), (0, -1), (1, -1), (2, -1), (3, -1))

_ADS1219_DR = (20, 90, 330, 1000)
_ADS1219_MUX = ((0, 1), (2, 3), (1, 2), (0, -1), (1, -1), (2, -1), (3, -1), (-2, -2))


def _nak():
    raise OSError(EIO)


class _Adc:
    """What both ADC models share: seeded analog errors, starting a conversion, settling
    before a register access, and the end of a conversion (single shot stops, continuous
    schedules the next).  A model sets ERRORS = (seed factor, input offset |V| low and
    high, gain error, oscillator error) for the per-seed part spread, CONTINUOUS = (config bit
    of the mode, its value in continuous mode), and conv_us(cfg)."""

    mem_into = False               # no read_mem_into (machine.I2C)

    def __init__(self, world, addr, seed=0):
        from analog import Rng
        factor, off_lo, off_hi, gain_err, osc_err = self.ERRORS
        r = Rng(seed * factor + addr)
        self.world = world
        self.addr = addr
        self.offset_v = r.sym(off_lo, off_hi)           # input offset
        self.gain_err = r.sym(0.0, gain_err)            # reference / PGA gain error
        self.gain = 1.0 + self.gain_err
        self.osc = 1.0 + r.sym(0.0, osc_err)            # internal oscillator error
        self._conv = [None] * 8                         # conv_us per data rate (cache)
        self.power_on()

    def power_on(self):
        self.busy = False
        self.t_done = 0
        self.conv_cfg = 0
        self.conversions = 0       # diagnostics: number of results latched

    def catch_up(self, t):
        """continuous mode: skip conversions nobody can read (all but the last before t)"""
        bit, on = self.CONTINUOUS
        if self.conv_cfg & bit == on:
            per = self.conv_us(self.conv_cfg)
            if self.t_done + per <= t:
                self.t_done += ((t - self.t_done) // per) * per

    def _start(self):
        """start a conversion with the current config; the world latches it at t_done"""
        self.busy = True
        self.conv_cfg = self.config
        self.t_done = self.world.now + self.conv_us(self.config)
        self.world.schedule_latch(self)

    def _settle(self):
        if self.busy and self.world.now >= self.t_done:
            self.world.latch_due()     # latches via latch() at t_done

    def _latched(self, cfg):
        """a result is in: latch()'s return value (next latch time, or None when done)"""
        self.conversions += 1
        bit, on = self.CONTINUOUS
        if cfg & bit != on:
            self.busy = False
            return None
        self.t_done += self.conv_us(cfg)
        return self.t_done


class ADS1115(_Adc):
    part = 'ads1115'
    mem_into = True                # read_mem_into: machine.I2C's allocation-free path
    ERRORS = (31, 20e-6, 60e-6, 0.0005, 0.03)
    CONTINUOUS = (0x0100, 0)       # MODE[8] = 0

    def power_on(self):
        super().power_on()
        self.ptr = 0
        self.config = 0x8583
        self.lo = 0x8000
        self.hi = 0x7FFF
        self.conv = 0

    def conv_us(self, cfg):
        k = (cfg >> 5) & 7
        us = self._conv[k]
        if us is None:             # once per data rate: the same integer every time
            us = self._conv[k] = int(1e6 / _ADS1115_DR[k] * self.osc) + 25
        return us

    # -- I2C ----------------------------------------------------------------------------
    def write(self, data):
        n = len(data)
        p = data[0]
        if p & 0xFC or n not in (1, 3):
            _nak()
        if n == 1:
            self.ptr = p
            return
        w = (data[1] << 8) | data[2]
        if p == 0:
            _nak()                  # conversion register is read-only
        self.ptr = p
        if p == 2:
            self.lo = w
        elif p == 3:
            self.hi = w
        else:
            self._write_config(w)

    def _write_config(self, w):
        self._settle()
        start = bool(w & 0x8000)
        self.config = w & 0x7FFF
        # continuous starts at once; single shot on OS=1 (ignored while converting)
        if not (w & 0x0100) or (start and not self.busy):
            self._start()
        elif self.busy and (self.conv_cfg & 0x0100) == 0:
            # switching from continuous to single shot: conversion in flight finishes
            self.conv_cfg |= 0x0100

    def read(self, n):
        if n < 1 or n > 2:
            _nak()
        w = self._reg()
        if n == 1:
            return bytes(((w >> 8) & 0xFF,))
        return bytes(((w >> 8) & 0xFF, w & 0xFF))

    def _reg(self):
        self._settle()
        p = self.ptr
        if p == 0:
            return self.conv
        if p == 1:
            return self.config | (0 if self.busy else 0x8000)
        if p == 2:
            return self.lo
        return self.hi

    def read_mem_into(self, p, buf, cost):
        """write(bytes((p,))), cost us of bus time, then buf[:] = read(len(buf)): the same
        transactions without temporary objects"""
        if p & 0xFC:
            _nak()
        self.ptr = p
        self.world.advance(cost)
        if not 0 < len(buf) < 3:
            _nak()
        w = self._reg()
        buf[0] = (w >> 8) & 0xFF
        if len(buf) == 2:
            buf[1] = w & 0xFF

    # -- conversion ---------------------------------------------------------------------
    def latch(self):
        """called by the world at virtual time t_done with the cell integrated to it"""
        cfg = self.conv_cfg
        v = self.world.sample_diff(_ADS1115_MUX[(cfg >> 12) & 7])
        v = (v + self.offset_v) * self.gain + self.world.noise_v(_ADS1115_DR[(cfg >> 5) & 7])
        code = int(round(v / _ADS1115_FS[(cfg >> 9) & 7] * 32768.0))
        if code > 32767:
            code = 32767
        elif code < -32768:
            code = -32768
        self.conv = code & 0xFFFF
        return self._latched(cfg)


class ADS1219(_Adc):
    part = 'ads1219'
    ERRORS = (37, 2e-6, 10e-6, 0.0002, 0.02)
    CONTINUOUS = (0x02, 0x02)      # CM[1] = 1
    VREF_INT = 2.048

    def power_on(self):
        super().power_on()
        self.config = 0
        self.data = 0
        self.drdy = False
        self.last = 0              # last command byte (selects what a read returns)

    def conv_us(self, cfg):
        return int(1e6 / _ADS1219_DR[(cfg >> 2) & 3] * self.osc) + 50

    def write(self, data):
        n = len(data)
        c = data[0]
        self._settle()
        if c & 0xF0 == 0x40:                  # WREG
            if n != 2 or c & 0x0C:
                _nak()
            self.config = data[1]
            self.last = 0
            return
        if n != 1:
            _nak()
        if c & 0xFE == 0x06:                  # RESET
            self.power_on()
        elif c & 0xFE == 0x08:                # START/SYNC
            self._start()
            self.last = 0
        elif c & 0xFE == 0x02:                # POWERDOWN
            self.busy = False
            self.last = 0
        elif c & 0xF0 == 0x10:                # RDATA
            self.last = 0x10
        elif c == 0x20 or c == 0x24:          # RREG config / status
            self.last = c
        else:
            _nak()

    def read(self, n):
        self._settle()
        c = self.last
        if c == 0x10:
            if n != 3:
                _nak()
            d = self.data
            self.drdy = False
            return bytes(((d >> 16) & 0xFF, (d >> 8) & 0xFF, d & 0xFF))
        if c == 0x20 and n == 1:
            return bytes((self.config,))
        if c == 0x24 and n == 1:
            return bytes((0x80 if self.drdy else 0x00,))
        _nak()

    def latch(self):
        cfg = self.conv_cfg
        mux = _ADS1219_MUX[(cfg >> 5) & 7]
        v = 0.0 if mux[0] == -2 else self.world.sample_diff(mux)
        gain = 4.0 if cfg & 0x10 else 1.0
        vref = 0.0 if cfg & 0x01 else self.VREF_INT
        dr = _ADS1219_DR[(cfg >> 2) & 3]
        v = (v + self.offset_v) * self.gain + self.world.noise_v(dr) * 0.2
        if vref > 0.0:
            code = int(round(v * gain / vref * 8388608.0))
        else:
            code = 8388607 if v >= 0 else -8388608
        if code > 8388607:
            code = 8388607
        elif code < -8388608:
            code = -8388608
        self.data = code & 0xFFFFFF
        self.drdy = True
        return self._latched(cfg)


class _Dac:
    """What both DAC models share: a new output code or power-down state reaches the world,
    and the output voltage (vref * code / 2^bits; 0 V when powered down)."""

    mem_into = False               # no read_mem_into (machine.I2C)

    def vout(self):
        if self.pd:
            return 0.0
        return self.vref * self.code / (1 << self.bits)

    def _apply(self, code, pd):
        if code != self.code or pd != self.pd:
            self.world.sync()  # integrate the cell up to now at the old output first
            self.code = code
            self.pd = pd
            self.world.dac_changed(self)
        self.writes += 1


class MCP4725(_Dac):
    part = 'mcp4725'
    bits = 12
    vref = 3.3
    EEPROM_US = 25000

    def __init__(self, world, addr=0x60, eeprom=0x800):
        self.world = world
        self.addr = addr
        self.ee_code = eeprom
        self.ee_pd = 0
        self.ee_busy_until = 0
        self.writes = 0
        self.power_on()

    def power_on(self):
        self.code = self.ee_code
        self.pd = self.ee_pd
        self.ee_busy_until = 0

    def write(self, data):
        n = len(data)
        if n < 2:
            _nak()
        c = data[0] >> 5
        if c >= 4:
            _nak()                               # reserved command
        if c < 2:                                # fast mode, pairs
            if n & 1:
                _nak()
            for k in range(0, n, 2):
                if data[k] & 0xC0:
                    _nak()
                self._apply(((data[k] & 0x0F) << 8) | data[k + 1], (data[k] >> 4) & 3)
            return
        if n % 3:
            _nak()
        for k in range(0, n, 3):
            b0 = data[k]
            if (b0 >> 5) != c:
                _nak()
            code = (data[k + 1] << 4) | (data[k + 2] >> 4)
            pd = (b0 >> 1) & 3
            self._apply(code, pd)
            if c == 3:
                if self.world.now < self.ee_busy_until:
                    _nak()                           # EEPROM write in progress
                self.ee_code = code
                self.ee_pd = pd
                self.ee_busy_until = self.world.now + self.EEPROM_US

    def read(self, n):
        if n < 1 or n > 5:
            _nak()
        rdy = 0x80 if self.world.now >= self.ee_busy_until else 0
        b = bytes((rdy | 0x40 | (self.pd << 1),
                   (self.code >> 4) & 0xFF, (self.code & 0x0F) << 4,
                   (self.ee_pd << 5) | ((self.ee_code >> 8) & 0x0F), self.ee_code & 0xFF))
        return b[:n]


class DAC8571(_Dac):
    part = 'dac8571'
    bits = 16
    vref = 2.5

    def __init__(self, world, addr=0x4C):
        self.world = world
        self.addr = addr
        self.writes = 0
        self.power_on()

    def power_on(self):
        self.code = 0
        self.temp = 0
        self.ctrl = 0
        self.pd = False

    def write(self, data):
        n = len(data)
        if n < 3 or not (n & 1):
            _nak()
        c = data[0]
        if c & 0xCE:
            _nak()
        mode = (c >> 4) & 3
        for k in range(1, n, 2):
            w = (data[k] << 8) | data[k + 1]
            self.ctrl = c
            if c & 1:                       # power-down command
                self._apply(self.code, True)
                continue
            if mode == 0:
                self.temp = w
            elif mode == 1:
                self.temp = w
                self._apply(w, False)
            else:
                self._apply(self.temp, False)

    def read(self, n):
        if n < 1 or n > 3:
            _nak()
        b = bytes(((self.code >> 8) & 0xFF, self.code & 0xFF, self.ctrl))
        return b[:n]


def make(part, world, addr=None, seed=0):
    if part == 'ads1115':
        return ADS1115(world, 0x48 if addr is None else addr, seed)
    if part == 'ads1219':
        return ADS1219(world, 0x40 if addr is None else addr, seed)
    if part == 'mcp4725':
        return MCP4725(world, 0x60 if addr is None else addr)
    if part == 'dac8571':
        return DAC8571(world, 0x4C if addr is None else addr)
    raise ValueError('unknown chip ' + str(part))
