"""Virtual clock replacing the built-in ``time`` module for the emulated board.

This file sits in the first MICROPYPATH directory, so ``import time`` in the firmware
gets it instead of the built-in.  Time only advances when the firmware sleeps (by the
requested amount; an idle board first waits that long in wall time, world.World.sleep) or asks for the time (a small fixed cost per call, world.tick_cost_us,
so that a busy ``while ticks_diff(...)`` loop terminates).  Each advance integrates
the cell, checks the watchdog and polls the control channel (world.py).

Same names and semantics as MicroPython's time on rp2: ticks_ms/ticks_us/ticks_cpu wrap
at 2**30 (use ticks_diff/ticks_add!), time()/time_ns() are seconds/ns since 1970
(world epoch_s at virtual t = 0), localtime()/gmtime() are UTC.
"""

import world as _world

_W = _world.get()

_PERIOD = 1 << 30
_MASK = _PERIOD - 1
_HALF = _PERIOD >> 1


def _real():
    rt = _W.rt
    if rt is None:
        import utime as rt          # the built-in module is still reachable by this name
    return rt


def sleep(seconds):
    if seconds > 0:
        _W.sleep(int(seconds * 1000000))
    else:
        _W.check()


def sleep_ms(ms):
    if ms > 0:
        _W.sleep(int(ms) * 1000)
    else:
        _W.check()


def sleep_us(us):
    if us > 0:
        _W.sleep(int(us))
    else:
        _W.check()


# the ticks_* below inline World.advance's fast path (they are the firmware's hottest calls)
def ticks_ms():
    w = _W
    t = w.now + w.tick_cost_us
    if t < w.fast_until:
        w.now = t
    else:
        w.advance(w.tick_cost_us)
        t = w.now
    return (t // 1000) & _MASK


def ticks_us():
    w = _W
    t = w.now + w.tick_cost_us
    if t < w.fast_until:
        w.now = t
    else:
        w.advance(w.tick_cost_us)
        t = w.now
    return t & _MASK


ticks_cpu = ticks_us


def ticks_add(ticks, delta):
    return (ticks + delta) & _MASK


def ticks_diff(ticks1, ticks2):
    return ((ticks1 - ticks2 + _HALF) & _MASK) - _HALF


def time():
    _W.advance(_W.tick_cost_us)
    return _W.epoch_s + _W.now // 1000000


def time_ns():
    _W.advance(_W.tick_cost_us)
    return (_W.epoch_s * 1000000 + _W.now) * 1000


def gmtime(secs=None):
    if secs is None:
        secs = time()
    return _real().gmtime(secs)


localtime = gmtime


def mktime(t):
    return _real().mktime(t)
