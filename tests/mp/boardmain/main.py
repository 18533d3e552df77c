# A stand-in firmware main.py for the emuboot tests (tests/test_emulated_board.py).
# The mode comes from env var SICELL_TEST_MAIN; results are JSON lines on stdout.
import json
import os
import sys
import time

import machine
import world

W = world.get()
MODE = os.getenv("SICELL_TEST_MAIN") or "sleep"


def say(**kw):
    kw["boot"] = W.boots
    kw["cause"] = machine.reset_cause()
    kw["t"] = W.now
    print(json.dumps(kw))


def state():
    return {
        "relay": W.relay_closed(),
        "i_nA": int(W.cell_current() * 1e9),
        "relay_pin": machine.Pin(15).value(),
        "dac": W.dac.code,
    }


def main():
    if MODE == "sleep":
        import utime  # the built-in clock: wall time

        W.analog.set_switches(1 << 2, True)  # the bench drives the cell directly: 1 mA range
        W.analog.set_dac(3.3 * 2253 / 4096, 3.3)  # ~ +0.1 mA
        w0 = utime.ticks_us()
        t0 = time.ticks_ms()
        time.sleep(3600)
        v = W.cell_voltage()  # the cell is integrated over the hour (1 s steps)
        say(
            slept_ms=time.ticks_diff(time.ticks_ms(), t0),
            wall_us=utime.ticks_diff(utime.ticks_us(), w0),
            v=v,
        )
        return
    say(boot_state=state())
    import frontend

    fe = frontend.Frontend()
    if MODE == "wdt":
        if machine.reset_cause() != machine.WDT_RESET:
            fe.set_current(2000000)
            fe.connect()
            machine.WDT(timeout=1000)
            time.sleep_ms(100)
            say(before=state())
            while True:  # hangs without feeding the watchdog
                time.sleep_ms(50)
        say(after=state())
        return
    if MODE == "ctrl":
        wdt = machine.WDT(timeout=2000)
        fe.set_current(-3000000)
        fe.connect()
        time.sleep_ms(10)
        say(ready=state())
        sys.stdin.readline()  # wait (in real time) until the test has sent a command
        for _ in range(6000):
            time.sleep_ms(100)
            wdt.feed()
        say(timeout=True)
        return
    if MODE == "crash":
        raise RuntimeError("firmware bug")
