# The real engine and front end on the emulated rig (the rc dummy load), scripted through one
# run with a pause, a host-loss hold, a board reset and a safety trip; every record the board
# produces is printed as "R <type> <seq> <payload hex>" for tests/test_cycle_views.py.
#
# argv: schedule blob file. Virtual time (the emulator's clock): the pause lasts 20 s, the hold
# 10 s, the board is off 3 s at the reset.
import sys

_path = list(sys.path)
sys.path[:] = []
import time as _rt  # noqa: E402  (the host's time module, before the emulator's replaces it)

sys.path[:] = _path
if "time" in sys.modules:
    del sys.modules["time"]
import binascii  # noqa: E402

import ring  # noqa: E402

RINGS = [ring.Ring(256)]
import world  # noqa: E402

W = world.install(world.World(world.load_config(), _rt))
import time  # noqa: E402  (the emulator's clock, now that the world is installed)

import engine  # noqa: E402
import frontend  # noqa: E402

RC_WATCHDOG = 1  # messages.RC_WATCHDOG

fe = frontend.Frontend()
cfg = fe.cfg["limits"]
with open(sys.argv[1], "rb") as fh:
    blob = fh.read()
ENG = [engine.Engine(fe, cfg=cfg, ring=RINGS[0])]
ENG[0].load(blob)
ENG[0].start(7)
ACK = [True]


def drain():
    rg = RINGS[0]
    while True:
        off = rg.peek_send()
        if off < 0:
            break
        typ, seq, mv = rg.record(off)
        print("R", typ, seq, binascii.hexlify(bytes(mv)).decode())
        rg.mark_sent()
    if ACK[0] and rg.count:
        rg.ack(rg.last_seq())


def run_until(pred, limit_ms):
    # the board's main loop in virtual time until pred() or limit_ms passed
    eng = ENG[0]
    t_end = time.ticks_add(time.ticks_ms(), limit_ms)
    while not pred() and time.ticks_diff(t_end, time.ticks_ms()) > 0:
        d = eng.due_in(time.ticks_ms())
        if d > 0:
            time.sleep_ms(min(d, time.ticks_diff(t_end, time.ticks_ms()) + 1))
        eng.tick()
        drain()


def never():
    return False


# 1) PAUSE 10 s into the first CC lithiation (step 1), RESUME 20 s later
run_until(lambda: ENG[0].step == 1 and ENG[0].st_s >= 10, 600000)
time.sleep_ms(37)  # the command comes between two ticks
ENG[0].pause()
drain()
run_until(never, 20000)
ENG[0].resume()
drain()
# 2) the host goes away during step 7: nothing acked until the ring is full and the board holds
run_until(lambda: ENG[0].step == 7 and ENG[0].st_s >= 5, 600000)
ACK[0] = False
run_until(lambda: ENG[0].state == engine.ST_HOLD, 600000)
run_until(never, 10000)
ACK[0] = True
drain()
run_until(lambda: ENG[0].state == engine.ST_RUNNING, 60000)
# 3) a watchdog reset 10 s into step 8: the board comes back interrupted, the host resumes it
run_until(lambda: ENG[0].step == 8 and ENG[0].st_s >= 10, 600000)
snap = ENG[0].snapshot()
snap["t"] = ENG[0].rt_s + 5  # the run-time reserve the board had written to flash
fe.safe()
time.sleep_ms(3000)
RINGS[0] = ring.Ring(256, first_seq=RINGS[0].next_seq)  # seqs go on above all it had sent
ENG[0] = engine.Engine(fe, cfg=cfg, ring=RINGS[0])
ENG[0].load(blob)
ENG[0].interrupted(snap, RC_WATCHDOG)
drain()
run_until(never, 2000)
ENG[0].resume()
drain()
# 4) on to the end: the last step trips the safety window
run_until(lambda: ENG[0].state != engine.ST_RUNNING, 600000)
drain()
print("STATE", ENG[0].state)
