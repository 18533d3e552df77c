"""Where the board process spends its wall time (bench aid; off unless asked for).

Enabled by env var SICELL_EMU_PROFILE=1 (emuboot installs it before the firmware boots).
Wraps the emulator's entry points and charges the wall time between two entries/exits to
the innermost active category:

    i2c       machine.I2C transfers (bus cost, chip register models)
    cell      world.sync / latch_due: integration and latch bookkeeping
    model     the cell model's advance() and voltage()
    latch     the ADC models' latch(): analog nodes, noise (not the model inside)
    clock     the time shim (sleep_*, ticks_*, time*) and the world's slow path
    ctrl      control-channel polls and idle waits
    firmware  everything else: the unmodified firmware's own code
Garbage collections are charged to whatever allocated.

The wrappers cost ~1-2 us per call, charged to the wrapped category; ``line()`` also gives
the call counts so that cost can be judged.  emuboot prints ``line()`` at exit.
"""

import sys

_CATS = ('firmware', 'i2c', 'cell', 'clock', 'ctrl', 'model', 'latch')


class Profile:
    def __init__(self, rt):
        self.us = rt.ticks_us
        self.diff = rt.ticks_diff
        self.tot = {}
        self.calls = {}
        for c in _CATS:
            self.tot[c] = 0
            self.calls[c] = 0
        self.stack = ['firmware']
        self.t = self.us()

    def enter(self, cat):
        now = self.us()
        st = self.stack
        self.tot[st[-1]] += self.diff(now, self.t)
        self.t = now
        self.calls[cat] += 1
        st.append(cat)

    def leave(self):
        now = self.us()
        st = self.stack
        self.tot[st.pop()] += self.diff(now, self.t)
        self.t = now

    def wrap(self, fn, cat):
        enter = self.enter
        leave = self.leave

        def wrapped(*a):
            enter(cat)
            try:
                return fn(*a)
            finally:
                leave()

        return wrapped

    def line(self, vtime_s):
        self.enter('firmware')
        self.leave()
        total = sum(self.tot.values()) or 1
        parts = ['%s=%d' % (c, self.tot[c]) for c in _CATS]
        parts += ['n_%s=%d' % (c, self.calls[c]) for c in _CATS if c != 'firmware']
        return 'profile wall_us=%d sim_s=%.1f %s' % (total, vtime_s, ' '.join(parts))


def install(world_mod, W, machine, time_mod):
    """wrap the emulator's entry points; returns the Profile"""
    p = Profile(W.rt)
    for name in ('writeto', 'readfrom', 'readfrom_into', 'writeto_mem', 'readfrom_mem',
                 'readfrom_mem_into', 'writevto', 'scan'):
        setattr(machine.I2C, name, p.wrap(getattr(machine.I2C, name), 'i2c'))
    cls = world_mod.World
    cls.sync = p.wrap(cls.sync, 'cell')
    cls.latch_due = p.wrap(cls.latch_due, 'cell')
    cls._slow_advance = p.wrap(cls._slow_advance, 'clock')
    cls.poll_ctrl = p.wrap(cls.poll_ctrl, 'ctrl')
    if hasattr(cls, 'idle_wait'):
        cls.idle_wait = p.wrap(cls.idle_wait, 'ctrl')
    for name in ('sleep', 'sleep_ms', 'sleep_us', 'ticks_ms', 'ticks_us', 'ticks_cpu',
                 'time', 'time_ns'):
        setattr(time_mod, name, p.wrap(getattr(time_mod, name), 'clock'))
    cc = type(W.cell)
    cc.advance = p.wrap(cc.advance, 'model')
    cc.voltage = p.wrap(cc.voltage, 'model')
    type(W.adc).latch = p.wrap(type(W.adc).latch, 'latch')
    sys.stderr.write('emu: profiling on\n')
    return p
