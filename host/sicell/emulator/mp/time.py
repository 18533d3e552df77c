"""Virtual clock replacing the built-in ``time`` module for the emulated board.

This file sits in the first MICROPYPATH directory, so ``import time`` in the firmware
gets it instead of the built-in.  Time only advances when the firmware sleeps (by the
requested amount) or asks for the time (a small fixed cost per call, world.tick_cost_us,
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
        _W.advance(int(seconds * 1000000))
    else:
        _W.check()


def sleep_ms(ms):
    if ms > 0:
        _W.advance(int(ms) * 1000)
    else:
        _W.check()


def sleep_us(us):
    if us > 0:
        _W.advance(int(us))
    else:
        _W.check()


def ticks_ms():
    _W.advance(_W.tick_cost_us)
    return (_W.now // 1000) & _MASK


def ticks_us():
    _W.advance(_W.tick_cost_us)
    return _W.now & _MASK


def ticks_cpu():
    _W.advance(_W.tick_cost_us)
    return _W.now & _MASK


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
