"""The emulated bench: one object owning the cell, the analog front end, the chips on the
I2C bus, the GPIO levels, the watchdog and the virtual clock.  Runs inside the
``micropython`` unix process next to the unmodified firmware.

Wiring: DAC -> V-to-I (Howland) stage -> relay -> sense resistor -> cell (analog.py);
the ADC converts the node voltages (chips.py).  ``machine.py`` and ``time.py`` (the
emulator's replacements of the built-in modules) are thin shims over this object.

The module-level singleton (``get()``) survives a board reset: emuboot drops only the
firmware's modules from sys.modules, so the cell, the clock and the chips persist while
the firmware's RAM state does not.

Configuration: a JSON file whose path is in env var SICELL_EMU_CONFIG (all keys optional):
    cell            cell model name for cells.make_cell ('rc')
    cell_overrides  dict of keyword overrides for the cell model ({})
    seed            seed of every deterministic error and of the noise (0)
    board_id        machine.unique_id(): 16 hex digits = those 8 bytes, any other string is
                    hashed to 8 bytes (default: env SICELL_EMU_BOARD, else hex from seed)
    realtime        pace virtual time to the wall clock (false)
    noise           Gaussian ADC noise on/off (true)
    max_dt_s        largest cell integration step (1.0; one step may exceed it by 1/64)
    tick_cost_us    virtual time charged per ticks_*() / time() call, so busy polls end (5)
    i2c_timing      charge I2C transfer time (9 bits per byte at the bus clock + 10 us) (true)
    adc, dac        populated parts: 'ads1115' | 'ads1219', 'mcp4725' | 'dac8571'
    adc_addr, dac_addr   I2C addresses (0x48 / 0x40, 0x60 / 0x4C by part)
    mcp4725_eeprom  MCP4725 power-up code (2048 = midscale = zero current)
    epoch_s         time.time() at virtual t = 0 (1735689600 = 2025-01-01T00:00:00Z)
    ctrl_poll_ms    shortest control-channel poll interval in virtual ms (50)
    idle_wait       an idle board waits in wall time (true; idle.py)
    ballast_kb      heap held while the firmware boots, freed at its first engine tick
                    (0; the launcher passes options.BALLAST_KB = 512 and counts it in the
                    emulator's overhead): the firmware sizes its ring from the free heap
                    exactly as on a Pico, then the emulator's own short-lived floats get
                    that much room, so the garbage collector runs far less often
    stop_after_s    end the emulator (exit 0) at this virtual time; 0 = never (0)
    max_boots       end the emulator (exit 0) when this boot would start; 0 = never (0)
    heap_info       print gc.mem_free()/mem_alloc() to stderr at every boot (false)
    quiet           no 'emu:' status lines on stderr (false)
Env var SICELL_EMU_CTRL: the control channel (ctrl.py).
Virtual time: integer microseconds since the world was built (``now``).  Sleeps advance
it by the requested amount; every ticks_*()/time() call by tick_cost_us; every I2C
transfer by its bus time.  The cell is integrated lazily, in steps of at most max_dt_s,
up to the instant anything reads or changes the analog state (DAC write, GPIO change), or,
for an ADC sample, up to the conversion's own end: the result equals integrating on every
advance, at a fraction of the cost.
Control polls, idle waits, the run state and the cell history: ctrl.py and idle.py.
Realtime mode: virtual time never runs ahead of the wall clock since the world was
built (sleeps really sleep, in slices of at most 50 ms), and jumps forward when the
firmware computed for longer than its sleeps.
"""

import gc
import json
import os
import sys

import analog
import chips
import ctrl as _ctrl
import idle as _idle

try:
    import cells as _cells
except ImportError:        # pragma: no cover - cells.py ships with the emulator
    _cells = None

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5
CAUSE_NAMES = {1: 'PWRON_RESET', 2: 'HARD_RESET', 3: 'WDT_RESET', 4: 'DEEPSLEEP_RESET',
               5: 'SOFT_RESET'}

# GPIO modes / pulls, same numbers as rp2 machine.Pin
IN = 0
OUT = 1
OPEN_DRAIN = 2
PULL_UP = 1
PULL_DOWN = 2
N_PINS = 30

# the bus the chips sit on: I2C0, SDA GP4, SCL GP5
BUS_ID = 0
BUS_SDA = 4
BUS_SCL = 5

DEFAULTS = {
    'cell': 'rc', 'cell_overrides': {}, 'seed': 0, 'board_id': None, 'realtime': False,
    'noise': True, 'max_dt_s': 1.0, 'tick_cost_us': 5, 'i2c_timing': True,
    'adc': 'ads1115', 'dac': 'mcp4725', 'adc_addr': None, 'dac_addr': None,
    'mcp4725_eeprom': 0x800, 'epoch_s': 1735689600, 'ctrl_poll_ms': 50,
    'stop_after_s': 0, 'max_boots': 0, 'heap_info': False, 'quiet': False,
    'idle_wait': True, 'ballast_kb': 0,
}
ST_RUNNING = _idle.ST_RUNNING

_FAR = 1 << 62


class BoardReset(BaseException):
    """Ends the firmware run (machine.reset(), watchdog, brown-out, control 'reset').
    A BaseException so that the firmware's ``except Exception`` does not swallow it;
    it is also sticky: every clock / machine call re-raises it until emuboot reboots."""

    def __init__(self, cause, why=''):
        super().__init__(cause, why)
        self.cause = cause
        self.why = why


class EmuExit(BaseException):
    """Ends the emulator process (control 'quit', stop_after_s)."""

    def __init__(self, code=0, why=''):
        super().__init__(code, why)
        self.code = code
        self.why = why


def load_config(path=None):
    cfg = {}
    for k in DEFAULTS:
        cfg[k] = DEFAULTS[k]
    if path is None:
        path = os.getenv('SICELL_EMU_CONFIG')
    if path:
        with open(path) as f:
            user = json.load(f)
        for k in user:
            cfg[k] = user[k]
    if not cfg['board_id']:
        cfg['board_id'] = os.getenv('SICELL_EMU_BOARD')
    if not cfg['board_id']:
        cfg['board_id'] = '%016x' % ((0xE661_4104_0000_0000 + cfg['seed']) & 0xFFFFFFFFFFFFFFFF)
    return cfg


class World(_idle.Idle, _ctrl.Ctrl):
    def __init__(self, cfg=None, real_time=None):
        if cfg is None:
            cfg = load_config()
        self.cfg = cfg
        if real_time is None:
            import utime as real_time  # the built-in stays reachable under this name
        self.rt = real_time          # the built-in time module (for realtime / pacing)
        self.seed = int(cfg['seed'])
        self.quiet = bool(cfg['quiet'])
        self.now = 0                 # virtual microseconds since the world was built
        self.t_cell = 0              # the cell is integrated up to this time
        self.max_dt_us = max(1, int(float(cfg['max_dt_s']) * 1e6))
        # a step may overshoot max_dt by 1/64: a slow tick's 1 s plus the few us its work
        # shifts the next sample is one step, not a second one of a few microseconds
        self.max_dt_tol = self.max_dt_us + self.max_dt_us // 64
        self.tick_cost_us = int(cfg['tick_cost_us'])
        self.i2c_timing = bool(cfg['i2c_timing'])
        self.epoch_s = int(cfg['epoch_s'])
        self.realtime = bool(cfg['realtime'])
        self.stop_at = int(float(cfg['stop_after_s']) * 1e6) or _FAR
        self.analog = analog.Analog(self.seed, bool(cfg['noise']))
        self.cell = None
        self.set_cell(cfg['cell'], **cfg['cell_overrides'])
        # chips
        self.bus = {}
        self.adc = chips.make(cfg['adc'], self, cfg['adc_addr'], self.seed)
        self.dac = chips.make(cfg['dac'], self, cfg['dac_addr'], self.seed)
        if self.dac.part == 'mcp4725':
            self.dac.ee_code = int(cfg['mcp4725_eeprom'])
            self.dac.power_on()
        self.bus[self.adc.addr] = self.adc
        self.bus[self.dac.addr] = self.dac
        self.pending = []            # ADC chips with a conversion in flight
        # gpio
        self.pin_mode = bytearray(N_PINS)
        self.pin_out = bytearray(N_PINS)
        self.pin_pull = bytearray(N_PINS)
        self._watched = set(analog.RANGE_GPIO)
        self._watched.add(analog.RELAY_GPIO)
        # watchdog, timers
        self.wdt_timeout = 0
        self.wdt_last = 0
        self.timers = []
        self.in_callback = False
        self.cpu_freq = 125000000
        # resets
        self.reset_cause = PWRON_RESET
        self.scratch = [0] * 8    # the watchdog's SCRATCH0..7: kept by every reset but power-on
        self.boots = 0
        self._reset = None
        # control channel
        self.ctrl = None
        self.ctrl_poll = None
        self.ctrl_every = max(1, int(cfg['ctrl_poll_ms'])) * 1000
        self.ctrl_next = _FAR
        self.ctrl_base = self.ctrl_every
        self.ctrl_wall = 0
        self.frozen_us = 0
        # idle detection: the firmware's engine, caught on its first tick
        self.idle_ok = bool(cfg['idle_wait']) and not self.realtime
        self.eng = None
        self._eng_cls = None
        # wall ms a host byte was last seen (idle.py): none yet
        self.host_seen = self.rt.ticks_add(self.rt.ticks_ms(), -2 * _idle.QUIET_MS)
        self.ballast = None
        self.run_state = -1
        self._idle_poll = None
        self.idle_waits = 0
        self.idle_logged = False    # the last idle/active line said 'idle'
        self.profiler = None         # profile.Profile when SICELL_EMU_PROFILE is set
        path = os.getenv('SICELL_EMU_CTRL')
        if path:
            self._open_ctrl(path)
        # realtime pacing
        self.wall0 = 0
        self.virt0 = 0
        if self.realtime:
            self._rt_anchor()
        self.dac_changed(self.dac)
        self._next = 0
        self.fast_until = 0          # advance() below this needs no slow path
        self._recompute_next()

    # -- logging --------------------------------------------------------------------------
    def log(self, msg):
        if not self.quiet:
            sys.stderr.write('emu: t=%.6f %s\n' % (self.now * 1e-6, msg))

    # -- cell -----------------------------------------------------------------------------
    def set_cell(self, name, **overrides):
        """swap the cell (tests, calibration fixtures); integration restarts now"""
        if self.cell is not None:
            self.sync()
        if _cells is not None:
            self.cell = _cells.make_cell(name, self.seed, **overrides)
        else:                                   # pragma: no cover
            self.cell = _StandIn(**overrides)
        self.analog.gen += 1
        self.cell_name = name
        self.t_cell = self.now

    def cell_current(self):
        """actual current through the cell now (A) - a bench DMM in series with the cell"""
        self.sync()
        return self.analog.cell_current(self.cell)

    def cell_voltage(self):
        """actual terminal voltage now (V) - a bench DMM across the cell"""
        self.sync()
        return self.cell.voltage(self.analog.cell_current(self.cell))

    # -- virtual time ---------------------------------------------------------------------
    def check(self):
        if self._reset is not None:
            raise self._reset

    def advance(self, dt_us):
        """let dt_us of virtual time pass (the firmware is sleeping or computing)"""
        t = self.now + dt_us
        if t < self.fast_until:
            self.now = t
            return
        self._slow_advance(t)

    def sleep(self, dt_us):
        """the firmware sleeps dt_us: an idle board first waits in wall time (see Idle)"""
        eng = self.eng
        if eng is None:
            self._find_engine()
        else:
            st = eng.state
            if st != self.run_state:
                self._state_changed(st)
            if st != ST_RUNNING and self.idle_ok:
                self.idle_wait(dt_us)
        t = self.now + dt_us
        if t < self.fast_until:
            self.now = t
            return
        self._slow_advance(t)

    def _slow_advance(self, target):
        r = self._reset
        if r is not None:
            raise r
        if self.realtime:
            w = self._wall()
            if w > target:
                target = w
        while True:
            if self.now >= self.ctrl_next:
                self._ctrl_pace()
                self.ctrl_next = self.now + self.ctrl_every
                target += self.poll_ctrl()
            nxt = self._next
            t = target if target < nxt else nxt
            if t > self.now:
                if self.realtime:
                    self._pace(t)
                self.now = t
            self._events()
            if self.now >= target:
                break
        self._recompute_next()

    def _events(self):
        now = self.now
        if now >= self.stop_at:
            self.sync()
            raise EmuExit(0, 'stop_after_s reached')
        if self.wdt_timeout and now >= self.wdt_last + self.wdt_timeout:
            self.now = self.wdt_last + self.wdt_timeout
            self.raise_reset(WDT_RESET, 'watchdog expired')
        if self.timers and not self.in_callback:
            for tm in self.timers[:]:
                if tm[0] <= now:
                    if tm[1]:
                        tm[0] += tm[1]
                        if tm[0] <= now:
                            tm[0] = now + tm[1]
                    else:
                        self.timers.remove(tm)
                    self.in_callback = True
                    try:
                        tm[2](tm[3])
                    except Exception as e:  # like a soft IRQ: report, carry on
                        sys.stderr.write('emu: timer callback raised %r\n' % (e,))
                    finally:
                        self.in_callback = False
        self._recompute_next()

    def _recompute_next(self):
        n = self.stop_at
        if self.wdt_timeout:
            d = self.wdt_last + self.wdt_timeout
            if d < n:
                n = d
        if not self.in_callback:
            for tm in self.timers:
                if tm[0] < n:
                    n = tm[0]
        if self.ctrl_next < n:
            n = self.ctrl_next
        self._next = n
        self.fast_until = -1 if (self.realtime or self._reset is not None) else n

    def tick(self):
        """the fixed cost of one ticks_*() call"""
        self.advance(self.tick_cost_us)

    def i2c_cost(self, nbytes, freq):
        if self.i2c_timing:
            self.advance(10 + (nbytes + 1) * 9000000 // freq)

    # realtime ----------------------------------------------------------------------------
    def _rt_anchor(self):
        self.wall0 = self.rt.time_ns() // 1000
        self.virt0 = self.now

    def _wall(self):
        return self.rt.time_ns() // 1000 - self.wall0 + self.virt0

    def _pace(self, t):
        while True:
            ahead = t - self._wall()
            if ahead <= 0:
                return
            self.rt.sleep_us(ahead if ahead < 50000 else 50000)

    # -- cell integration and sampling --------------------------------------------------
    def schedule_latch(self, chip):
        if chip not in self.pending:
            self.pending.append(chip)

    def sync(self):
        """integrate the cell up to now, latching ADC conversions that completed before"""
        self.latch_due()
        self._integrate(self.now)

    def latch_due(self):
        """latch the ADC conversions that completed by now, each with the cell integrated
        to its own completion time; the cell is left there (integrated on to the next
        instant anything reads or changes it: one integration step less per conversion)"""
        t = self.now
        pend = self.pending
        while pend:
            best = None
            for c in pend:
                if c.t_done <= t and (best is None or c.t_done < best.t_done):
                    best = c
            if best is None:
                break
            best.catch_up(t)
            self._integrate(best.t_done)
            if best.latch() is None:
                pend.remove(best)

    def _integrate(self, t):
        dt = t - self.t_cell
        if dt <= 0:
            return
        step = self.max_dt_us
        while dt > 0:
            h = dt if dt <= self.max_dt_tol else step
            self._step(h * 1e-6)
            dt -= h
        self.t_cell = t

    def _step(self, dt_s):
        cell = self.cell
        cell.advance(self.analog.cell_current(cell), dt_s)
        self.analog.gen += 1         # the cell moved: its voltages are new

    def sample_diff(self, mux):
        """differential input voltage for (p, n) node indexes, n = -1 for GND"""
        return self.analog.diff(self.cell, mux[0], mux[1])

    def noise_v(self, sps):
        return self.analog.noise_for_rate(sps)

    def dac_changed(self, chip):
        if chip is self.dac:
            self.analog.set_dac(chip.vout(), chip.vref)

    # -- GPIO ---------------------------------------------------------------------------
    def pin_level(self, n):
        if self.pin_mode[n] == OUT:
            return self.pin_out[n]
        if self.pin_mode[n] == OPEN_DRAIN:
            return 0 if self.pin_out[n] == 0 else (1 if self.pin_pull[n] == PULL_UP else 0)
        return 1 if self.pin_pull[n] == PULL_UP else 0

    def pin_config(self, n, mode=None, pull=None, value=None):
        self.check()
        if value is not None:
            self.pin_out[n] = 1 if value else 0
        if mode is not None:
            self.pin_mode[n] = mode
        if pull is not None:
            self.pin_pull[n] = pull
        if n in self._watched:
            self._switches_changed()

    def _switches_changed(self):
        mask = 0
        for k in range(len(analog.RANGE_GPIO)):
            if self.pin_level(analog.RANGE_GPIO[k]):
                mask |= 1 << k
        relay = self.pin_level(analog.RELAY_GPIO) == 1
        an = self.analog
        if mask != an.mask or relay != an.relay:
            self.sync()
            an.set_switches(mask, relay)

    def relay_closed(self):
        return self.analog.relay

    # -- watchdog / timers ------------------------------------------------------------
    def wdt_start(self, timeout_ms):
        self.check()
        self.wdt_timeout = int(timeout_ms) * 1000
        self.wdt_last = self.now
        self._recompute_next()

    def wdt_feed(self):
        # a feed only moves the deadline later: _next may stay early (the slow path
        # recomputes it), which saves a recompute on every main-loop pass
        if self._reset is not None:
            raise self._reset
        self.wdt_last = self.now

    def timer_add(self, tm):
        self.timers.append(tm)
        self._recompute_next()

    def timer_remove(self, owner):
        for tm in self.timers[:]:
            if tm[3] is owner:
                self.timers.remove(tm)
        self._recompute_next()

    # -- resets -----------------------------------------------------------------------
    def raise_reset(self, cause, why=''):
        self._reset = BoardReset(cause, why)
        self.fast_until = -1
        raise self._reset

    def power_fail(self, ms):
        """brown-out: supply lost for ms; relay de-energises, chips lose state, cell rests"""
        self.sync()
        self._pins_default()
        self.wdt_timeout = 0
        self.scratch = [0] * 8
        self.timers = []
        self.pending = []
        self.now += int(ms) * 1000
        self.sync()
        for c in self.bus.values():
            c.power_on()
        self.dac_changed(self.dac)
        if self.realtime:
            self._rt_anchor()
        self.raise_reset(PWRON_RESET, 'brownout %d ms' % int(ms))

    def _pins_default(self):
        for n in range(N_PINS):
            self.pin_mode[n] = IN
            self.pin_out[n] = 0
            self.pin_pull[n] = 0
        self._switches_changed()

    def boot(self, cause):
        """called by emuboot before (re)starting the firmware: the MCU's reset state"""
        self._reset = None
        self.sync()
        self._pins_default()          # all GPIO inputs: relay de-energised, no range
        self.wdt_timeout = 0
        self.timers = []
        self.in_callback = False
        self.cpu_freq = 125000000
        self.reset_cause = cause
        self.boots += 1
        self.eng = None               # the firmware's modules are new: catch its engine again
        self._eng_cls = None
        self._recompute_next()

    # -- diagnostics ----------------------------------------------------------------------
    def heap_line(self):
        gc.collect()
        return 'heap free=%d alloc=%d' % (gc.mem_free(), gc.mem_alloc())


class _StandIn:                    # pragma: no cover - only if cells.py is missing
    def __init__(self, r_ohm=1000.0, **kw):
        self.r = r_ohm

    def advance(self, i_a, dt_s):
        pass

    def voltage(self, i_a):
        return -i_a * self.r

    def reset(self):
        pass


_W = None


def get():
    """the singleton bench (built from SICELL_EMU_CONFIG on first use)"""
    global _W
    if _W is None:
        _W = World()
    return _W


def install(w):
    global _W
    _W = w
    return w
