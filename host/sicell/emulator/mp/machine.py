"""Emulator-only ``machine`` module (replaces the built-in one for the emulated board).

Only what the real rp2 ``machine`` module has, with the same names and signatures:
Pin, I2C, SoftI2C, WDT, Timer, ADC (internal, channel 4 = temperature), unique_id,
freq, reset, soft_reset, reset_cause, idle, lightsleep, deepsleep, disable_irq,
enable_irq, and the reset-cause constants.  All state lives in the world object
(world.py) so that it survives the firmware's modules being reloaded after a reset.

mem32 with the watchdog's CTRL and scratch registers (see _Mem32).

Reset causes, as the rp2 port reports them: PWRON_RESET (first boot, brown-out), WDT_RESET
(watchdog expired, and machine.reset(), which the RP2040 implements with the watchdog: the
status line says which), DEEPSLEEP_RESET (machine.deepsleep()), SOFT_RESET
(machine.soft_reset(), control command 'reset'). The watchdog's scratch registers
(mem32 at 0x4005800C..0x40058028) survive every reset but a power-on, so firmware can leave
itself a note across machine.reset() as on the chip.

I2C errors: an address nobody answers -> OSError(ENODEV = 19); a data byte the target
NAKs -> OSError(EIO = 5) (see chips.py).  The chips sit on I2C0 with SDA = GP4 and
SCL = GP5; a bus built on other pins finds nothing there.
"""

import world as _world

_W = _world.get()

PWRON_RESET = _world.PWRON_RESET
HARD_RESET = _world.HARD_RESET
WDT_RESET = _world.WDT_RESET
DEEPSLEEP_RESET = _world.DEEPSLEEP_RESET
SOFT_RESET = _world.SOFT_RESET

ENODEV = 19
EIO = 5

# rp2 I2C pin mux: (sda pins, scl pins) per controller
_I2C_PINS = (((0, 4, 8, 12, 16, 20, 28), (1, 5, 9, 13, 17, 21)),
             ((2, 6, 10, 14, 18, 26), (3, 7, 11, 15, 19, 27)))


def _pin_id(p):
    if isinstance(p, Pin):
        return p.id
    if isinstance(p, int):
        if 0 <= p < _world.N_PINS:
            return p
        raise ValueError('invalid pin')
    if isinstance(p, str):
        if p == 'LED':
            return 25
        for pre in ('GPIO', 'GP'):
            if p.startswith(pre):
                try:
                    return _pin_id(int(p[len(pre):]))
                except ValueError:
                    pass
    raise ValueError('invalid pin')


class Pin:
    IN = _world.IN
    OUT = _world.OUT
    OPEN_DRAIN = _world.OPEN_DRAIN
    ALT = 3
    PULL_UP = _world.PULL_UP
    PULL_DOWN = _world.PULL_DOWN
    IRQ_FALLING = 4
    IRQ_RISING = 8

    def __init__(self, id, mode=-1, pull=-1, *, value=None, drive=None, alt=None):
        self.id = _pin_id(id)
        self.init(mode, pull, value=value)

    def init(self, mode=-1, pull=-1, *, value=None, drive=None, alt=None):
        _W.pin_config(self.id, None if mode == -1 else mode,
                      None if pull == -1 else (0 if pull is None else pull), value)

    def value(self, x=None):
        if x is None:
            _W.check()
            if _W.pin_mode[self.id] == _world.OUT:
                return _W.pin_out[self.id]
            return _W.pin_level(self.id)
        _W.pin_config(self.id, value=x)

    def __call__(self, x=None):
        return self.value(x)

    def on(self):
        _W.pin_config(self.id, value=1)

    def off(self):
        _W.pin_config(self.id, value=0)

    high = on
    low = off

    def toggle(self):
        _W.pin_config(self.id, value=0 if _W.pin_out[self.id] else 1)

    def irq(self, handler=None, trigger=12, hard=False):
        return None

    def __repr__(self):
        return 'Pin(GPIO%d)' % self.id


class I2C:
    def __init__(self, id=0, *, scl=None, sda=None, freq=400000, timeout=50000):
        if id not in (0, 1):
            raise ValueError('I2C(%s) doesn\'t exist' % (id,))
        # rp2 defaults: I2C0 SDA GP8 / SCL GP9, I2C1 SDA GP6 / SCL GP7
        sda = _pin_id(sda) if sda is not None else (8, 6)[id]
        scl = _pin_id(scl) if scl is not None else (9, 7)[id]
        self._check_pins(id, sda, scl)
        self._init(id, sda, scl, freq)

    def _check_pins(self, id, sda, scl):
        if sda not in _I2C_PINS[id][0]:
            raise ValueError('bad SDA pin')
        if scl not in _I2C_PINS[id][1]:
            raise ValueError('bad SCL pin')

    def _init(self, id, sda, scl, freq):
        if freq <= 0:
            raise ValueError('freq')
        self.freq = freq
        self.sda = sda
        self.scl = scl
        self._on_bus = (sda == _world.BUS_SDA and scl == _world.BUS_SCL)
        # bus time of a transfer of n bytes (n < 8), as world.i2c_cost charges it
        self._cost = [(10 + (n + 1) * 9000000 // freq) if _W.i2c_timing else 0
                      for n in range(8)]

    def _dev(self, addr):
        _W.check()
        if self._on_bus:
            d = _W.bus.get(addr)
            if d is not None:
                return d
        _W.i2c_cost(0, self.freq)
        raise OSError(ENODEV)

    def scan(self):
        _W.check()
        out = []
        for a in range(0x08, 0x78):
            _W.i2c_cost(0, self.freq)
            if self._on_bus and a in _W.bus:
                out.append(a)
        return out

    def writeto(self, addr, buf, stop=True):
        d = self._dev(addr)
        n = len(buf)
        _W.advance(self._cost[n]) if n < 8 else _W.i2c_cost(n, self.freq)
        if n:
            d.write(buf)             # the models only index it, never keep it
        return n

    def writevto(self, addr, vector, stop=True):
        b = b''.join(bytes(v) for v in vector)
        return self.writeto(addr, b, stop)

    def readfrom(self, addr, nbytes, stop=True):
        d = self._dev(addr)
        _W.i2c_cost(nbytes, self.freq)
        return d.read(nbytes)

    def readfrom_into(self, addr, buf, stop=True):
        d = self._dev(addr)
        n = len(buf)
        _W.i2c_cost(n, self.freq)
        buf[:] = d.read(n)

    def writeto_mem(self, addr, memaddr, buf, *, addrsize=8):
        d = self._dev(addr)
        _W.i2c_cost(len(buf) + addrsize // 8, self.freq)
        d.write(_memaddr(memaddr, addrsize) + bytes(buf))

    def readfrom_mem(self, addr, memaddr, nbytes, *, addrsize=8):
        d = self._dev(addr)
        _W.i2c_cost(addrsize // 8, self.freq)
        d.write(_memaddr(memaddr, addrsize))
        _W.i2c_cost(nbytes, self.freq)
        return d.read(nbytes)

    def readfrom_mem_into(self, addr, memaddr, buf, *, addrsize=8):
        d = self._dev(addr)
        if addrsize == 8 and len(buf) < 8 and d.mem_into:
            # one pointer write then one read, without temporary objects (the hot path)
            _W.advance(self._cost[1])
            d.read_mem_into(memaddr, buf, self._cost[len(buf)])
            return
        _W.i2c_cost(addrsize // 8, self.freq)
        d.write(_memaddr(memaddr, addrsize))
        n = len(buf)
        _W.i2c_cost(n, self.freq)
        buf[:] = d.read(n)


def _memaddr(memaddr, addrsize):
    if addrsize == 8:
        return bytes((memaddr & 0xFF,))
    if addrsize == 16:
        return bytes(((memaddr >> 8) & 0xFF, memaddr & 0xFF))
    raise ValueError('addrsize')


class SoftI2C(I2C):
    def __init__(self, scl, sda, *, freq=400000, timeout=50000):
        self._init(-1, _pin_id(sda), _pin_id(scl), freq)


class WDT:
    def __init__(self, id=0, timeout=5000):
        if timeout > 8388:
            raise ValueError('timeout exceeds 8388 ms')
        _W.wdt_start(timeout)

    def feed(self):
        w = _W                       # World.wdt_feed inlined: once per main-loop pass
        if w._reset is not None:
            raise w._reset
        w.wdt_last = w.now


class Timer:
    ONE_SHOT = 0
    PERIODIC = 1

    def __init__(self, id=-1, *, mode=1, period=-1, freq=-1, callback=None, tick_hz=1000):
        if callback is not None:
            self.init(mode=mode, period=period, freq=freq, callback=callback, tick_hz=tick_hz)

    def init(self, *, mode=1, period=-1, freq=-1, callback=None, tick_hz=1000):
        self.deinit()
        if freq > 0:
            us = int(1000000 / freq)
        elif period >= 0:
            us = int(period * 1000000 // tick_hz)
        else:
            us = 1000000
        us = max(us, 1)
        _W.timer_add([_W.now + us, us if mode == self.PERIODIC else 0, callback, self])

    def deinit(self):
        _W.timer_remove(self)


class ADC:
    """rp2 internal 12-bit ADC (read_u16 scaled to 16 bit); channel 4 = temperature sensor
    at 27 C (0.706 V), other inputs read 0 V on this board."""
    CORE_TEMP = 4

    def __init__(self, pin):
        self.ch = pin if isinstance(pin, int) and pin < 5 else 4 if pin == 4 else -1

    def read_u16(self):
        _W.advance(2)
        if self.ch == 4:
            return (int(0.706 / 3.3 * 4095) << 4)
        return 0


def unique_id():
    """8 bytes: board_id when it is 16 hex digits, else an FNV-1a hash of it"""
    bid = str(_W.cfg['board_id'])
    if len(bid) == 16:
        try:
            import binascii
            return binascii.unhexlify(bid)
        except ValueError:
            pass
    h = 0xCBF29CE484222325
    for c in bid.encode():
        h = ((h ^ c) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return bytes((h >> (8 * k)) & 0xFF for k in range(8))


def freq(hz=None):
    if hz is None:
        return _W.cpu_freq
    _W.cpu_freq = int(hz)


def reset():
    _W.raise_reset(WDT_RESET, 'machine.reset()')  # a watchdog reboot on the RP2040


def soft_reset():
    _W.raise_reset(SOFT_RESET, 'machine.soft_reset()')


def reset_cause():
    return _W.reset_cause


def bootloader(value=None):
    _W.raise_reset(HARD_RESET, 'machine.bootloader()')


def idle():
    _W.advance(500)


def lightsleep(time_ms=None):
    _W.advance(int(time_ms) * 1000 if time_ms else 1000)


def deepsleep(time_ms=None):
    if time_ms:
        _W.advance(int(time_ms) * 1000)
    _W.raise_reset(DEEPSLEEP_RESET, 'machine.deepsleep()')


class _Mem32:
    """mem32: the watchdog's CTRL register (WATCHDOG_BASE 0x40058000, bit 30 ENABLE; in flashed
    mode clearing ENABLE stops the watchdog as on the RP2040, main.py does before it hands the
    port to mpremote) and its SCRATCH0..7 registers (kept across resets but power-on); other
    addresses read 0 and ignore writes"""

    def __getitem__(self, addr):
        k = (addr - _WDT_SCRATCH0) >> 2
        if 0 <= k < 8 and not addr & 3:
            return _W.scratch[k]
        return _WDT_ENABLE if addr == _WDT_CTRL and _W.wdt_timeout else 0

    def __setitem__(self, addr, value):
        k = (addr - _WDT_SCRATCH0) >> 2
        if 0 <= k < 8 and not addr & 3:
            _W.scratch[k] = value & 0xFFFFFFFF
        elif addr == _WDT_CTRL and _W.cfg.get('flashed') and not value & _WDT_ENABLE:
            _W.wdt_timeout = 0
            _W._recompute_next()


_WDT_CTRL = 0x40058000
_WDT_SCRATCH0 = 0x4005800C
_WDT_ENABLE = 1 << 30
mem32 = _Mem32()


def disable_irq():
    return 1


def enable_irq(state=1):
    return None
