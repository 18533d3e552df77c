# Control-tick cost of the real engine + frontend on the emulated board (MicroPython unix port).
# Run by bench/bench_tick.py:
#   MICROPYPATH=<emulator mp>:<firmware>:<repo root> SICELL_EMU_CONFIG=<cfg.json> \
#   micropython -X heapsize=200K bench/tick_core.py <n_ticks> <tick_ms>      (cwd = scratch dir)
# Prints "tick <us...>": every engine.tick()'s wall time (read ADC, integrate, limits, control,
# record), and "measure <us...>": frontend.measure() alone (drivers + the emulator's chip models),
# timed on every 8th tick. The loop sleeps to each tick's due time like main.py (virtual time:
# sleeping costs no wall time) and acks the ring like a host would.
import sys
from array import array

# the built-in time module (wall clock) before the emulator's time.py shadows it, as emuboot.py
_path = list(sys.path)
sys.path[:] = []
import time as _rt  # noqa: E402

sys.path[:] = _path
if "time" in sys.modules:
    del sys.modules["time"]

import gc  # noqa: E402

import ring  # noqa: E402

gc.collect()
RING = ring.Ring()  # 48 KB in one piece: allocate it first, as main.py does on the board

import world  # noqa: E402

W = world.install(world.World(world.load_config(), _rt))

import time  # noqa: E402  (the emulator's virtual clock)

import engine  # noqa: E402
import frontend  # noqa: E402

from protocol import schedule as S  # noqa: E402


def blob(tick_ms):
    hdr = (S.P_DECIMATE, tick_ms, tick_ms, 100, -1500000, 1500000, 2000000, S.TEMP_OFF)
    dt, dv, di, dq = 20, 1000, 2000, 0  # recording: dt ms, dV uV, dI nA, dQ nAh
    steps = [
        # CC 200 uA for 2 s
        (
            (S.K_CC, 0xFF, 0, 200000, 0, 0, 0, dt, dv, di, dq),
            [(S.Q_TIME, S.OP_GE, S.A_NEXT, 2000, 0)],
        ),
        # CC-CV 400 uA to -0.3 V, hold until 260 uA (or 5 s)
        (
            (S.K_CCCV, 0xFF, 0, 400000, -300000, 0, 0, dt, dv, di, dq),
            [
                (S.Q_ABS_I, S.OP_LE, S.A_NEXT, 260000, 0),
                (S.Q_TIME, S.OP_GE, S.A_NEXT, 5000, 0),
            ],
        ),
        # rest until |dV/dt| <= 20 mV/s (or 3 s)
        (
            (S.K_REST, 0xFF, 0, 0, 0, 0, 0, dt, dv, di, dq),
            [(S.Q_DVDT, S.OP_LE, S.A_NEXT, 20000, 0), (S.Q_TIME, S.OP_GE, S.A_NEXT, 3000, 0)],
        ),
        ((S.K_LOOP, 0xFF, 0, 0, 0, 0, 1000, dt, dv, di, dq), []),
    ]
    return S.encode(hdr, steps)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    tick_ms = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    fe = frontend.Frontend()
    eng = engine.Engine(fe, cfg=fe.cfg["limits"], ring=RING)
    eng.load(blob(tick_ms))
    eng.start(1)
    ring = eng.ring
    tick_us = array("i", bytes(4 * n))  # preallocated: the loop itself must not allocate
    meas_us = array("i", bytes(4 * (n // 8 + 1)))
    nt = 0
    nm = 0
    t_us = _rt.ticks_us
    diff = _rt.ticks_diff
    for k in range(n):
        now = time.ticks_ms()
        d = eng.due_in(now)
        if d > 0:
            time.sleep_ms(d)
        a = t_us()
        eng.tick()
        b = t_us()
        tick_us[nt] = diff(b, a)
        nt += 1
        if k % 8 == 0:
            a = t_us()
            fe.measure()
            meas_us[nm] = diff(t_us(), a)
            nm += 1
        if ring.count > ring.capacity // 2:
            ring.ack(ring.last_seq())
        if eng.state != engine.ST_RUNNING:
            break
    fe.safe()
    print("state", eng.state, "ticks", nt, "records", ring.last_seq())
    dump("tick", tick_us, nt)
    dump("measure", meas_us, nm)


def dump(name, arr, n):
    sys.stdout.write(name)
    for k in range(n):
        sys.stdout.write(" " + str(arr[k]))
    sys.stdout.write("\n")


main()
