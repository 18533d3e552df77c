"""Entry script of the emulated board.

    MICROPYPATH=<this dir>:<firmware dir>:<dir holding the protocol package> \\
    SICELL_EMU_CONFIG=<config.json> [SICELL_EMU_CTRL=<fifo>] \\
    micropython -X heapsize=200K <this dir>/emuboot.py          (cwd = the board's flash dir)

Builds the world (world.py: cell, analog front end, chips, clock), then boots the
firmware like the RP2040 does: ``import main`` and call ``main.main()`` if it exists.
stdout/stdin belong to the firmware (the USB CDC link); the emulator writes only
'emu: ...' status lines to stderr.

A board reset - machine.reset() / soft_reset(), watchdog expiry, a brown-out or 'reset'
from the control channel - ends the firmware run with world.BoardReset (a BaseException,
sticky until reboot).  emuboot then drops every module the firmware imported from
sys.modules, runs gc.collect(), puts the MCU in its reset state (all GPIO inputs: relay
open, no range selected; watchdog stopped; reset_cause set) and imports main again.
The world (cell, clock, chips, calibration files in cwd) persists; RAM state does not.
Heap: the emulator itself (world, chips, analog, cells, machine, time) holds ~75 KB of the
interpreter's heap, and the names the firmware interned (qstrs) survive a reset (~20 KB
with the current firmware): a board with -X heapsize=H leaves the firmware about H - 75K
at the first boot and H - 95K after a reset ('heap_info' prints the numbers).

If main returns (or raises, calls sys.exit, or gets a Ctrl-C) the board sits in the REPL: with a
running watchdog virtual time runs on (in wall time, as an idle board) until it resets the board, otherwise the process
exits (code 0 after a return / sys.exit, 1 after an uncaught exception, with the
traceback on stderr).  Exit code 0 also for the control command 'quit', stop_after_s and
max_boots.

Flashed mode (config 'flashed', emulator option flashed=1): the board boots what its flash
directory (cwd) holds, as a chip does: main.py if there is one, with Ctrl-C on until the
firmware turns it off (repl.py); then, whatever way main ended, the MicroPython REPL on the
link (an uncaught exception's traceback goes there too, as on the chip). A soft reset from the
REPL prints 'MPY: soft reboot' and boots again, without main.py when it came from the raw REPL;
any other reset also drops what the host had sent (its USB port re-enumerates: the launcher
hangs the pty up until the next boot line). A running watchdog runs on through a soft reset,
as the RP2040's does (main.py stops it before it hands the port to the REPL).

Status lines on stderr:
    emu: t=<virtual s> boot <n> cause=<NAME>
    emu: t=<virtual s> reset cause=<NAME> (<why>)
    emu: t=<virtual s> main ended (<why>): REPL                   (flashed mode)
    emu: t=<virtual s> heap free=<bytes> alloc=<bytes>      (config heap_info)
    emu: t=<virtual s> exit <code> (<why>)
"""

import gc
import sys

# Capture the built-in time module before the override (time.py beside this file) is
# importable: with an empty sys.path only built-ins are found.
_path = list(sys.path)
sys.path[:] = []
import time as _rt        # noqa: E402  (the built-in)
sys.path[:] = _path
if 'time' in sys.modules:
    del sys.modules['time']

import world              # noqa: E402

W = world.install(world.World(world.load_config(), _rt))

import machine            # noqa: E402,F401  (the emulator's; loaded once, kept across resets)
import time               # noqa: E402,F401

_PROF = None
if W.cfg.get('profile') or __import__('os').getenv('SICELL_EMU_PROFILE'):
    import profile        # noqa: E402
    _PROF = profile.install(world, W, machine, time)
    W.profiler = _PROF
if __import__('os').getenv('SICELL_EMU_CANNED'):
    import canned         # noqa: E402  (the bench's ceiling: a zero-cost I2C bus)
    canned.install(machine)
REPL = None
if W.cfg.get('flashed'):
    import repl as REPL   # noqa: E402  (the chip's REPL and Ctrl-C)
    REPL.install()

_KEEP = set(sys.modules.keys())
_PATH = list(sys.path)


def _drop_firmware():
    for name in list(sys.modules.keys()):
        if name not in _KEEP:
            del sys.modules[name]
    sys.path[:] = _PATH
    gc.collect()


def _repl_idle():
    """main has ended: the board sits in the REPL; only the watchdog can reset it"""
    if not W.wdt_timeout:
        return False
    while True:
        if W.idle_ok:               # a board in the REPL is idle: wall time (stdin is not
            W.rt.sleep_ms(10)        # read here, so waiting on it would spin)
        W.advance(10000)


def _exit(code, why):
    if _PROF is not None:
        W.log(_PROF.line(W.now * 1e-6))
    W.log('exit %d (%s)' % (code, why))
    try:
        sys.stdout.flush()
    except Exception:  # the host end may be gone; exiting is what matters
        pass
    sys.exit(code)


def _main():
    """import main and run main.main(); (exit code, why it ended)"""
    try:
        import main
        f = getattr(main, 'main', None)
        if f is not None:
            f()
    except (world.BoardReset, world.EmuExit):
        raise
    except SystemExit:
        return 0, 'main called sys.exit'
    except KeyboardInterrupt as e:
        if REPL is not None:
            sys.print_exception(e, sys.stdout)
        return 0, 'main interrupted (Ctrl-C)'
    except Exception as e:  # a firmware crash: printed and reported, as a board does
        sys.print_exception(e, sys.stderr)
        if REPL is not None:
            sys.print_exception(e, sys.stdout)
        return 1, 'main raised ' + type(e).__name__
    return 0, 'main returned'


def _flashed(raw):
    """a chip's boot: main.py unless the raw REPL soft-reset, then the REPL; returns the
    raw flag for the soft reset that ends it"""
    if not raw:
        code, why = 0, 'no main.py'
        if _on_path('main.py'):
            REPL.kbd_intr(3)  # the port runs main.py with Ctrl-C on
            code, why = _main()
            REPL.kbd_intr(-1)
        if W.ctrl is None:  # no launcher, so no host (the launcher's heap probe): end here
            _exit(code, why)
        W.log('main ended (%s): REPL' % why)
    raw = REPL.serve(raw)
    W.log('reset cause=SOFT_RESET (REPL)')
    return raw


def _on_path(name):
    # a file of the module path (the flash directory is '.' on it)
    for d in sys.path:
        try:
            __import__('os').stat(d + '/' + name if d else name)
            return True
        except OSError:
            pass
    return False


def run():
    cause = world.PWRON_RESET
    raw = False  # flashed mode: the last soft reset came from the raw REPL
    max_boots = int(W.cfg['max_boots'])
    while True:
        if max_boots and W.boots >= max_boots:
            _exit(0, 'max_boots reached')
        wdt = (W.wdt_timeout, W.wdt_last)
        W.boot(cause)
        if REPL is not None and cause == world.SOFT_RESET and wdt[0]:
            W.wdt_timeout, W.wdt_last = wdt  # the RP2040's watchdog runs on through a soft reset
            W._recompute_next()
        W.log('boot %d cause=%s' % (W.boots, world.CAUSE_NAMES.get(cause, str(cause))))
        if W.cfg['heap_info']:
            W.log(W.heap_line())
        W.take_ballast()
        try:
            if REPL is not None:
                raw = _flashed(raw)
                cause = world.SOFT_RESET
                sys.stdout.write('MPY: soft reboot\r\n')
            else:
                code, why = _main()
                if not _repl_idle():
                    _exit(code, why)
        except world.BoardReset as r:
            cause = r.cause
            W.log('reset cause=%s (%s)' % (world.CAUSE_NAMES.get(cause, str(cause)), r.why))
            if REPL is not None:
                REPL.kbd_intr(-1)
                if cause == world.SOFT_RESET:
                    sys.stdout.write('MPY: soft reboot\r\n')
                else:
                    raw = False
                    REPL.lost_link()
        except world.EmuExit as e:
            _exit(e.code, e.why)
        _drop_firmware()


run()
