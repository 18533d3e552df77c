# Boot and main loop of the sicell board.
#
# Boot: before anything slow, Ctrl-C off (a host's HELLO holds 0x03) and the watchdog armed
# (8000 ms, then the board config's); front end safe (relay open, DAC zero),
# run state from flash: a run active at reset stays safe in ST_INTERRUPTED with EV_INTERRUPTED
# queued (reason = reset cause, value = run id); RESUME restarts the interrupted step.
# Loop: engine.tick() when due, link.poll() between ticks, flash housekeeping, watchdog feed,
# then time.sleep_ms until the next tick or link poll (the emulator's virtual clock advances on
# sleeps, so the loop never waits inside select.poll). Any unexpected exception: front end
# safe, EV_ERROR, keep serving the link. ENTER_REPL returns from main() with Ctrl-C restored.
#
# Memory: modules are imported one by one with a collection in between (each compiles from
# source within the heap left over), and the ring takes what is free after that, minus
# HEAP_KEEP bytes for run time (clamped to RING_MIN..RING_MAX slots; board config "ring_slots"
# overrides).
#
# Garbage: the loop collects between ticks, never inside one: after GC_FRAMES frames in and out
# (or GC_TICKS ticks) since the last collection, and only when the next tick is due later than a
# collection takes (timed on each one with ticks_us: ~15 ms on the RP2040's 240 KB heap, longer
# than a 10 ms tick). Automatic collection stays on, with no threshold (the ports' default): it
# runs only when an allocation finds the heap full, and the tick allocates nothing, so it cannot
# land inside a tick either; when ticks never leave room for a collection, the heap fills up in
# the link's code and MicroPython collects there (one late tick). gc.disable() would turn that
# into MemoryError.

import gc
import time

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]
        return x


HEAP_KEEP = 32000  # bytes left free after boot: schedule.decode of a 64-step, 4-limit schedule
# builds ~30 KB of tuples on a 64-bit port (~15 KB on the RP2040), plus flash writes and frames
BOOT_REST = 8000  # what the link takes after the ring is sized
RING_MIN = 256
RING_MAX = 4096
POLL_ACTIVE_MS = 20  # link poll period while the host is talking
POLL_IDLE_MS = 100  # ... and when it has been quiet for ACTIVE_WINDOW_MS
ACTIVE_WINDOW_MS = 2000
WDT_MS = 8000  # watchdog timeout until the board config's "wdt_ms" is read
GC_FRAMES = 128  # frames in + out between collections (~8 KB of garbage)
GC_TICKS = 1000  # ... or ticks (the tick allocates nothing: a backstop)
GC_MARGIN_US = 1000  # slack a collection must leave before the next tick

# wire ids: const() copies of the protocol names (tests/test_wire_ids.py ties them)
_FAULT_TICK = const(1)  # messages.FAULT_* (EV_ERROR reason)
_FAULT_LINK = const(2)
_FAULT_FLASH = const(3)
_FAULT_FRONTEND = const(4)
_RC_POWER_ON = const(0)  # messages.RC_* (INFO.reset_cause, EV_INTERRUPTED reason)
_RC_WATCHDOG = const(1)
_RC_SOFT = const(2)
_RC_BROWNOUT = const(3)
# messages.RESET_NOTE: left in the watchdog's SCRATCH0 before a reset the host asked for, so
# the boot after machine.reset() (a watchdog reboot on the RP2040) reports a soft reset
_RESET_NOTE = const(0x2E5E7A5C)
_RESET_NOTE_ADDR = 0x4005800C  # messages.RESET_NOTE_ADDR (above the small-int range: no const)
_CAP_EMULATOR = const(0x40)  # messages.CAP_* (INFO.caps)
_CAP_WDT = const(0x80)


class _DeadFrontend:
    # stands in when the real front end cannot be built: the link still answers (HELLO shows
    # the board), runs fail to start with EV_ERROR
    n_ranges = 1
    full_scale_nA = (1000,)
    range = 0
    autorange = False
    v_uV = 0
    i_nA = 0
    clipped = False
    connected = False

    def connect(self):
        raise OSError("front end missing")

    def disconnect(self):
        pass

    def set_range(self, idx):
        raise OSError("front end missing")

    def set_current(self, i_nA):
        raise OSError("front end missing")

    def measure(self):
        return False

    def safe(self):
        pass

    def get_cal(self, rng, channel):
        return 0, 1000000

    def set_cal(self, rng, channel, offset, gain_ppm):
        raise OSError("front end missing")

    def save_cal(self):
        raise OSError("front end missing")


def _line(e):
    # line number of the innermost frame of an exception (EV_ERROR detail), 0 if unknown
    try:
        import io
        import sys

        s = io.StringIO()
        sys.print_exception(e, s)
        t = s.getvalue()
        k = t.rfind("line ")
        if k >= 0:
            j = k + 5
            n = 0
            while j < len(t) and "0" <= t[j] <= "9":
                n = n * 10 + ord(t[j]) - 48
                j += 1
            return n
    except Exception:
        pass
    return 0


def _errno(e):
    # an OSError's errno (EV_ERROR detail of FAULT_FRONTEND: ETIMEDOUT 110 from a chip that does
    # not answer in time, ENODEV 19 from one missing on the bus), 0 for any other exception
    if isinstance(e, OSError) and e.args and isinstance(e.args[0], int):
        return e.args[0]
    return 0


def _wdt_regs(machine):
    # the RP2040's registers through machine.mem32 (the emulator models the watchdog's), or
    # None elsewhere: mem32 on another port would touch unrelated memory
    import sys

    try:
        if sys.platform == "rp2" and "RP2040" in sys.implementation._machine:
            return machine.mem32
        if hasattr(machine, "_W") and hasattr(machine, "mem32"):  # (emulated)
            return machine.mem32
    except Exception:
        pass
    return None


def _asked_for_reset(machine):
    # whether the last reset was a RESET command's (its note read and cleared)
    m = _wdt_regs(machine)
    if m is None:
        return False
    try:
        asked = m[_RESET_NOTE_ADDR] == _RESET_NOTE
        m[_RESET_NOTE_ADDR] = 0
        return asked
    except Exception:
        return False


def _reset_cause(machine):
    try:
        rc = machine.reset_cause()
    except Exception:
        return _RC_POWER_ON
    if _asked_for_reset(machine):
        return _RC_SOFT
    if rc == getattr(machine, "WDT_RESET", -1):
        return _RC_WATCHDOG
    if rc == getattr(machine, "SOFT_RESET", -1) or rc == getattr(machine, "HARD_RESET", -1):
        return _RC_SOFT
    if rc == getattr(machine, "BROWNOUT_RESET", -1):
        return _RC_BROWNOUT
    return _RC_POWER_ON


def _wdt(machine, ms):
    # machine.WDT(timeout=ms), or None where there is none (or it refuses ms)
    try:
        return machine.WDT(timeout=ms)
    except Exception:
        return None


def _board_id(machine, cfg):
    try:
        return bytes(machine.unique_id())[:8]
    except Exception:
        pass
    try:
        return str(cfg.get("board_id", cfg.get("board", ""))).encode()[:8]
    except Exception:
        return b""


def boot(fe=None, cfg=None, io=None, clock=None, machine=None, wdt=True):
    # Build everything; returns a dict with fe, eng, ring, link, rs, wdt (tests pass fakes).
    if machine is None:
        import machine
    # 0. the watchdog first, at its default: nothing slow below (front end, imports, flash
    # reads, the ring) runs unwatched; the board config's timeout replaces it in 2.
    w = _wdt(machine, WDT_MS) if wdt else None
    gc.collect()
    # 1. front end safe, before anything else can fail
    fe_err = None
    if cfg is None:
        try:
            import board

            cfg = board.load()
        except Exception as e:
            cfg = {}
            fe_err = e
    if fe is None:
        try:
            import frontend

            fe = frontend.Frontend(cfg if cfg else None)
        except Exception as e:
            fe = _DeadFrontend()
            fe_err = e
    try:
        fe.safe()
    except Exception:
        pass
    gc.collect()
    import engine

    gc.collect()
    import ring as ringmod

    gc.collect()
    import runstate

    gc.collect()
    import link as linkmod

    gc.collect()
    # 2. watchdog: the board config's timeout, if it sets another one
    if w is not None:
        try:
            ms = int(engine.cfg_get(cfg, "wdt_ms", WDT_MS, "watchdog_ms"))
        except Exception:
            ms = WDT_MS
        if ms != WDT_MS:
            w = _wdt(machine, ms) or w
    # 3. run state, engine, then the ring sized to what is left of the heap
    rs = runstate.RunState()
    try:
        snap = rs.load()
    except Exception:
        snap = {}
    eng = engine.Engine(fe, clock=clock, cfg=cfg, ring=0)  # ring attached below
    gc.collect()
    slots = engine.cfg_get(cfg, "ring_slots", 0)
    if not slots:
        slots = (gc.mem_free() - HEAP_KEEP - BOOT_REST) // ringmod.SLOT
        slots -= slots % ringmod.CHUNK_SLOTS  # whole 4 KB chunks, rounded down
        slots = RING_MIN if slots < RING_MIN else (RING_MAX if slots > RING_MAX else slots)
    rg = ringmod.Ring(slots, first_seq=rs.seq_limit)
    eng.ring = rg
    cause = _reset_cause(machine)
    eng.reset_cause = cause
    blob = None
    try:
        blob = rs.load_blob()
        if blob:
            eng.load(blob)
    except Exception:
        blob = None
    blob = None
    gc.collect()
    if snap.get("active") and eng.has_sched:
        # a run was active at the reset: stay safe, ST_INTERRUPTED, EV_INTERRUPTED queued (its
        # seq is above everything reserved before, and nothing is sent before the host asks)
        eng.interrupted(snap, cause)
    # reserve the next seq block (and keep the run state) on flash before anything is sent
    try:
        rs.save(eng, rg.next_seq)
    except Exception:
        pass
    if fe_err is not None:
        eng.fault(_FAULT_FRONTEND, _errno(fe_err))
    caps = 0
    if w is not None:
        caps |= _CAP_WDT
    if cfg and ("emulator" in cfg or hasattr(machine, "_W")):
        caps |= _CAP_EMULATOR
    lk = linkmod.Link(eng, fe, io=io, board_id=_board_id(machine, cfg or {}), caps=caps, rs=rs)
    gc.collect()
    return {"fe": fe, "eng": eng, "ring": rg, "link": lk, "rs": rs, "wdt": w, "cfg": cfg}


def loop(b, clock=None, max_passes=-1):
    # the main loop; returns when the host asked for the REPL (or after max_passes, for tests)
    fe = b["fe"]
    eng = b["eng"]
    rg = b["ring"]
    lk = b["link"]
    rs = b["rs"]
    w = b["wdt"]
    clk = clock if clock is not None else time
    sleep_ms = clk.sleep_ms
    ticks_ms = clk.ticks_ms
    ticks_diff = clk.ticks_diff
    last = ticks_ms()
    last_rx = last
    tick_errors = 0
    passes = 0
    # the µs clock a collection is timed with (None on CPython: a collection counts as free)
    ut = clk if hasattr(clk, "ticks_us") else (time if hasattr(time, "ticks_us") else None)
    gc_us = _collect(ut)  # what a collection takes, µs (updated on each)
    gc_work = lk.rx_frames + lk.tx_frames
    gc_ticks = eng.n_ticks
    while max_passes < 0 or passes < max_passes:
        passes += 1
        now = ticks_ms()
        lk.uptime_ms += ticks_diff(now, last)
        last = now
        if ticks_diff(now, eng.due) >= 0:
            try:
                eng.tick()
            except Exception as e:
                tick_errors += 1
                try:
                    fe.safe()
                except Exception:
                    pass
                if tick_errors <= 4 or not (tick_errors & (tick_errors - 1)):
                    eng.fault(_FAULT_TICK, _line(e))
                d = 1000 * tick_errors
                eng.t_last = ticks_ms()
                eng._due(60000 if d > 60000 else d)
        try:
            if lk.poll():
                last_rx = ticks_ms()
        except Exception as e:
            lk.errors += 1
            lk.dfr.reset()
            eng.fault(_FAULT_LINK, _line(e))
        if lk.want_repl or lk.want_reset:
            # leaving: what the host did last (a STOP just before ENTER_REPL or RESET) reaches
            # flash first, so the board does not come back with that run INTERRUPTED
            rs.skip = 0
            if rs.housekeeping(eng, rg.next_seq) < 0:
                eng.fault(_FAULT_FLASH, rs.failures)
            if lk.want_repl:
                fe.safe()
                return
            _reset(fe)
        if rs.housekeeping(eng, rg.next_seq) < 0:
            eng.fault(_FAULT_FLASH, rs.failures)
        if w is not None:
            w.feed()
        now = ticks_ms()
        d = ticks_diff(eng.due, now)
        work = lk.rx_frames + lk.tx_frames - gc_work
        if (work >= GC_FRAMES or eng.n_ticks - gc_ticks >= GC_TICKS) and (
            d * 1000 > gc_us + GC_MARGIN_US
        ):
            # garbage, here between ticks: the next one is due later than a collection takes
            c = _collect(ut)
            gc_us = c if c > gc_us else gc_us - ((gc_us - c) >> 3)
            gc_work = lk.rx_frames + lk.tx_frames
            gc_ticks = eng.n_ticks
            now = ticks_ms()
            d = ticks_diff(eng.due, now)
        if lk.hello and rg.pending():
            continue  # records still to send: come straight back
        p = POLL_ACTIVE_MS if ticks_diff(now, last_rx) < ACTIVE_WINDOW_MS else POLL_IDLE_MS
        if d > p:
            d = p
        if d > 0:
            sleep_ms(d)


def _collect(ut):
    # gc.collect(); returns how long it took by ut's ticks_us, µs (0 without a clock)
    if ut is None:
        gc.collect()
        return 0
    t0 = ut.ticks_us()
    gc.collect()
    t = ut.ticks_diff(ut.ticks_us(), t0)
    return t if t > 0 else 0


def _reset(fe):
    try:
        fe.safe()
    except Exception:
        pass
    import machine

    m = _wdt_regs(machine)
    if m is not None:
        m[_RESET_NOTE_ADDR] = _RESET_NOTE  # the next boot reports a soft reset (see _RESET_NOTE)
    time.sleep_ms(20)  # let the OK leave
    machine.reset()


def _stop_wdt():
    # machine.WDT cannot be stopped, and in the REPL nobody feeds it: on the RP2040 clear the
    # watchdog's CTRL.ENABLE (bit 30 of WATCHDOG_BASE 0x40058000) so mpremote is not reset
    # under the host's hands (the emulator's flashed boards model that register). Elsewhere
    # (other ports) nothing to do.
    try:
        import sys

        import machine

        rp2040 = sys.platform == "rp2" and "RP2040" in sys.implementation._machine
        if rp2040 or (hasattr(machine, "_W") and hasattr(machine, "mem32")):  # (emulated)
            machine.mem32[0x40058000] &= ~(1 << 30)
    except Exception:
        pass


def main():
    import micropython

    micropython.kbd_intr(-1)  # first: a host's 0x03 (in every HELLO) is data, also while booting
    b = boot()
    try:
        loop(b)
        if b["link"].want_repl:
            _stop_wdt()
    finally:
        try:
            b["fe"].safe()
        except Exception:
            pass
        micropython.kbd_intr(3)


if __name__ == "__main__":
    main()
