"""The chip's REPL and Ctrl-C on a board in flashed mode (emulator option flashed=1), on its
link (stdin/stdout), as the rp2 port serves them over USB CDC.

Ctrl-C. ``install()`` gives the firmware a ``micropython`` module whose ``kbd_intr`` is this
one. While the interrupt character is on (emuboot turns it on when main.py starts, as the
port does, and the REPL while it executes code) every virtual-time advance takes World's slow
path, which first reads what the host sent: the character among it raises KeyboardInterrupt
there and discards everything before it, as the port's USB CDC does; the other bytes wait for
the REPL. ``kbd_intr(-1)`` puts World's own methods back, so a firmware that turned Ctrl-C off
pays nothing. Not modelled: an interrupt inside code that never touches the clock or the bus
(it lands at the next such call), and bytes read in that window without the character are lost
to a firmware that then reads its link itself (on the chip it would read them).

REPL (``serve``), after main.py ended or was never there:

* friendly: ``>>> `` prompt, echo, backspace, Enter runs the line (one ending in ':' continues
  until an empty line), Ctrl-A raw REPL, Ctrl-B banner, Ctrl-C drops the line, Ctrl-D on an
  empty line soft-resets (main.py runs again);
* raw (Ctrl-A): code up to Ctrl-D, ``OK``, its output, 0x04, the exception, 0x04, ``>``;
  Ctrl-D on an empty line soft-resets without running main.py; Ctrl-B to the friendly REPL;
  raw-paste (Ctrl-E 'A' Ctrl-A, then ``R\\x01``, the window and flow control by 0x01 per window).

Time in the REPL passes as wall time (realtime pacing), so a running watchdog resets the board
as on the chip; machine.reset() and the other resets end it with world.BoardReset.
"""

import gc
import select
import sys

import micropython as _mp  # the built-in: imported before install() replaces it
import world

_W = world.get()
_World = type(_W)
_IN = sys.stdin.buffer
_OUT = sys.stdout.buffer
_b1 = bytearray(1)
_rx = bytearray()  # host bytes read while watching for Ctrl-C, not used yet
_RX_MAX = 4096
_scan = 0  # _rx from here on came while Ctrl-C was on
_kbd = -1
_poll = select.poll()
_poll.register(sys.stdin, select.POLLIN)
_wait = None  # stdin and the control FIFO (made at the first REPL)

WINDOW = 256  # raw-paste flow-control window
RAW = b'raw REPL; CTRL-B to exit\r\n'
BANNER = ('%s; sicell emulated board with RP2040\r\nType "help()" for more information.\r\n'
          % sys.version.split(';')[-1].strip()).encode()
SOFT = 'soft'
_FRIENDLY = 'friendly'
_TO_RAW = 'raw'


class _Micropython:
    pass


def install():
    """``micropython`` for the firmware: the built-in's names with this kbd_intr"""
    m = _Micropython()
    for k in dir(_mp):
        if k[0] != '_':
            setattr(m, k, getattr(_mp, k))
    m.kbd_intr = kbd_intr
    sys.modules['micropython'] = m


def kbd_intr(c):
    """micropython.kbd_intr: c >= 0 turns the interrupt character on, -1 off"""
    global _kbd, _scan
    w = _W
    if c >= 0:
        if _kbd < 0:
            _scan = len(_rx)
        _kbd = c
        w._slow_advance = _watched_advance
        w._recompute_next = _forced_next
        w.fast_until = -1
        return
    _kbd = -1
    if '_slow_advance' in w.__dict__:
        del w._slow_advance
        del w._recompute_next
        w._recompute_next()


def _watched_advance(target):
    w = _W
    _watch()
    if w.realtime:  # the REPL: the wait is wall time, which host bytes may interrupt
        while True:
            ahead = target - w._wall()
            if ahead <= 0:
                break
            for _o in _poll.ipoll(ahead // 1000 + 1):
                pass
            _watch()
    _World._slow_advance(w, target)


def _forced_next():
    _World._recompute_next(_W)
    _W.fast_until = -1


def _watch():
    global _scan
    _fill()
    k = _rx.rfind(bytes((_kbd,)), _scan)
    if k >= 0:
        _rx[:] = _rx[k + 1:]
        _scan = 0
        raise KeyboardInterrupt


def _fill():
    # read what the host sent so far into _rx (up to _RX_MAX)
    while len(_rx) < _RX_MAX:
        ready = False
        for _o, ev in _poll.ipoll(0):
            ready = ev
        if not ready:
            return
        if not (ready & 1) or _IN.readinto(_b1, 1) != 1:
            raise world.EmuExit(0, 'link closed')
        _rx.append(_b1[0])


def lost_link():
    """a hard reset: the port re-enumerates, what the host had sent is gone"""
    global _scan
    _rx[:] = b''
    _scan = 0
    while True:
        ready = False
        for _o, ev in _poll.ipoll(0):
            ready = ev & 1
        if not ready or _IN.readinto(_b1, 1) != 1:
            return


def _out(b):
    _OUT.write(b)


def _getc():
    global _wait, _scan
    if _rx:
        c = _rx[0]
        _rx[:] = _rx[1:]
        _scan = _scan - 1 if _scan else 0
        return c
    w = _W
    if _wait is None:
        _wait = select.poll()
        _wait.register(sys.stdin, select.POLLIN)
        if w.ctrl is not None:
            _wait.register(w.ctrl, select.POLLIN)
    while True:
        ms = 1000
        if w.wdt_timeout:
            left = (w.wdt_last + w.wdt_timeout - w.now) // 1000 + 1
            ms = 1 if left < 1 else (left if left < ms else ms)
        for o, ev in _wait.ipoll(ms):
            if o is w.ctrl:
                w.ctrl_next = w.now
            elif not (ev & 1) or _IN.readinto(_b1, 1) != 1:
                raise world.EmuExit(0, 'link closed')
            else:
                return _b1[0]
        w.advance(0)  # wall time passed: the watchdog, the control channel


def _run(src, g, mode):
    """compile and execute; None, or SOFT after SystemExit; errors go to the output"""
    try:
        code = compile(src, '<stdin>', mode)
        kbd_intr(3)
        try:
            exec(code, g)
        finally:
            kbd_intr(-1)
    except SystemExit:
        return SOFT
    except (Exception, KeyboardInterrupt) as e:  # the user's code failed: the REPL prints it
        return e
    return None


def _raw_exec(src, g):
    r = _run(src, g, 'exec')
    _out(b'\x04')
    if r is not None and r is not SOFT:
        sys.print_exception(r, sys.stdout)
    _out(b'\x04')
    if r is SOFT:
        return SOFT
    _out(b'>')
    return None


def _paste():
    # raw-paste: the code, with a window of flow control (None: the host gave up)
    _out(b'R\x01' + bytes((WINDOW & 0xFF, WINDOW >> 8)) + b'\x01')
    buf = bytearray()
    n = 0
    while True:
        c = _getc()
        if c == 4:
            _out(b'\x04')
            return bytes(buf)
        buf.append(c)
        n += 1
        if n == WINDOW:
            n = 0
            _out(b'\x01')


def _raw(g):
    line = bytearray()
    while True:
        c = _getc()
        if c == 1:
            if line == b'\x05A':
                if _raw_exec(_paste(), g) is SOFT:
                    return SOFT
            else:
                _out(RAW + b'>')
            line = bytearray()
        elif c == 2:
            _out(b'\r\n' + BANNER + b'>>> ')
            return _FRIENDLY
        elif c == 3:
            line = bytearray()
        elif c == 4:
            _out(b'OK')
            if not line:
                _out(b'\r\n')
                return SOFT
            if _raw_exec(bytes(line), g) is SOFT:
                return SOFT
            line = bytearray()
        else:
            line.append(c)


def _friendly(g):
    line = bytearray()
    block = bytearray()
    while True:
        c = _getc()
        if c == 1:
            _out(b'\r\n' + RAW + b'>')
            return _TO_RAW
        if c == 2 or c == 3:
            _out(b'\r\n' + (BANNER if c == 2 else b'') + b'>>> ')
            line = bytearray()
            block = bytearray()
        elif c == 4:
            if not line and not block:
                _out(b'\r\n')
                return SOFT
        elif c == 8 or c == 127:
            if line:
                line[:] = line[:-1]
                _out(b'\x08 \x08')
        elif c == 13:
            _out(b'\r\n')
            if line and (block or bytes(line).rstrip().endswith(b':')):
                block += line + b'\n'
                line = bytearray()
                _out(b'... ')
                continue
            src = bytes(block) if block else bytes(line)
            line = bytearray()
            block = bytearray()
            if src.strip():
                r = _run(src, g, 'single')
                if r is SOFT:
                    return SOFT
                if r is not None:
                    sys.print_exception(r, sys.stdout)
            _out(b'>>> ')
        elif c >= 32 or c == 9:
            line.append(c)
            _out(bytes((c,)))


def serve(raw):
    """The REPL until a soft reset; returns whether it came from the raw REPL (main.py is then
    not run). world.BoardReset and world.EmuExit pass through."""
    w = _W
    w.eng = None  # the firmware's engine (and its ring) is garbage now, as on the chip
    w._eng_cls = None
    w.ballast = None
    gc.collect()
    kbd_intr(-1)
    rt = w.realtime
    w.realtime = True
    w._rt_anchor()
    w._recompute_next()
    g = {'__name__': '__main__'}
    try:
        _out(RAW + b'>' if raw else BANNER + b'>>> ')
        while True:
            r = _raw(g) if raw else _friendly(g)
            if r is SOFT:
                return raw
            raw = r == _TO_RAW
    finally:
        w.realtime = rt
        w._recompute_next()
