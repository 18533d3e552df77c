# Frontend cases on the emulated bench: imported by emu_frontend.py once the emulator and the
# firmware are loaded.
import json
import os
import time

import frontend
import world

W = world.get()


def emit(key, value):
    # one JSON line per result keeps the peak heap small (192K, shared with the emulator)
    print(json.dumps({key: value}))


def dmm():
    """the bench reference: true cell voltage (uV) and current (nA)"""
    return int(W.cell_voltage() * 1e6), int(W.cell_current() * 1e9)


def fixture(fe, rng):
    # precision load: R = the range's sense resistance -> +-0.8 V at +-80 % FS
    W.set_cell("resistor", r_ohm=1e15 / fe.full_scale_nA[rng] / 1e6)


def errors(fe, rng, fracs=(-90, -50, -10, 10, 50, 90)):
    fs = fe.full_scale_nA[rng]
    rows = []
    for f in fracs:
        want = fs * f // 100
        cmd = fe.set_current(want)
        time.sleep_ms(5)
        fe.measure()
        tv, ti = dmm()
        rows.append([want, cmd, fe.i_nA, ti, fe.v_uV, tv, fe.range])
    return rows


def case_calibrate():
    fe = frontend.Frontend()
    fe.connect()
    fe.autorange = False
    emit("status", fe.cal.status)
    emit("fs", fe.full_scale_nA)
    for r in range(fe.n_ranges):
        fixture(fe, r)
        fe.set_range(r)
        emit("before%d" % r, errors(fe, r))
        emit("cal%d" % r, fe.calibrate(r, dmm))
        fe.set_range(r)
        emit("after%d" % r, errors(fe, r))
    fe.safe()
    fe.save_cal()
    return {"saved": open("calibration.json").read()}


def case_autorange():
    W.set_cell("resistor", r_ohm=100.0)
    fe = frontend.Frontend()
    fe.connect()
    out = {"select": []}
    for i in (5000, 9000, 9500, 50000, 95000, 500000, 2000000, 9000000, -8000, 0):
        fe.set_current(i)
        out["select"].append([i, fe.range])
    # measurement driven: the load changes under a fixed set point (compliance-limited)
    W.set_cell("resistor", r_ohm=100.0)
    fe.set_current(800000)  # 0.8 mA -> range 2 (1 mA FS)
    seq = []
    for _ in range(3):
        ch = fe.measure()
        seq.append([fe.range, fe.i_nA, ch])
    # a load the source cannot drive: 0.8 mA * 1 Mohm >> 4.5 V compliance -> current
    # collapses to ~4.5 uA; set point still needs range 2, so no step down
    W.set_cell("resistor", r_ohm=1e6)
    for _ in range(3):
        ch = fe.measure()
        seq.append([fe.range, fe.i_nA, ch])
    # set point removed while the current is small: steps down one range per measure
    W.set_cell("resistor", r_ohm=100.0)
    fe.autorange = False
    fe.set_current(0)
    fe.autorange = True
    for _ in range(4):
        ch = fe.measure()
        seq.append([fe.range, fe.i_nA, ch])
    out["seq"] = seq
    # hysteresis at a range boundary: 9.3 uA on range 0 stays (< 95 %), 10 uA does not exist
    # on range 0 (clamped by select) ... emulate an overshoot with a manual range
    fe.autorange = False
    fe.set_range(0)
    fe.set_current(9600)  # 96 % FS on range 0
    fe.autorange = True
    ch = fe.measure()
    out["overshoot"] = [ch, fe.range, fe.i_nA]
    ch2 = fe.measure()  # 9.6 uA = 9.6 % of range 1: above 8 %, stays
    out["after_up"] = [ch2, fe.range, fe.i_nA]
    try:
        fe.set_current(10000001)
        out["too_big"] = None
    except ValueError as e:
        out["too_big"] = str(e)
    fe.autorange = False
    fe.set_range(1)
    try:
        fe.set_current(200000)
        out["manual_too_big"] = None
    except ValueError as e:
        out["manual_too_big"] = str(e)
    return out


def case_safe():
    W.set_cell("resistor", r_ohm=100.0)
    fe = frontend.Frontend()
    out = {"init_relay": W.relay_closed(), "init_dac": W.dac.code}
    fe.connect()
    fe.set_current(-4000000)
    time.sleep_ms(10)
    out["flowing"] = int(W.cell_current() * 1e9)
    out["dac_on"] = W.dac.code
    fe.safe()
    out["after"] = [W.relay_closed(), W.dac.code, int(W.cell_current() * 1e9), fe.connected]
    # safe() with a dead I2C bus does not raise and still opens the relay
    fe.connect()

    class Dead:
        def writeto(self, *a):
            raise OSError(5)

    fe.dac.i2c = Dead()
    try:
        fe.safe()
        out["dead_bus"] = [True, W.relay_closed()]
    except Exception as e:
        out["dead_bus"] = [False, repr(e)]
    return out


def case_calfile():
    out = {}
    fe = frontend.Frontend()
    out["missing"] = [fe.cal.status, fe.cal.is_default]
    fe.set_cal(1, 0, -123, 1001234)
    fe.set_cal(2, 1, 45, 998000)
    fe.set_cal(3, 2, -6789, 1003000)
    fe.save_cal()
    out["files"] = sorted(f for f in os.listdir(".") if f.startswith("calibration"))
    fe2 = frontend.Frontend()
    out["loaded"] = [
        fe2.cal.status,
        fe2.get_cal(1, 0),
        fe2.get_cal(2, 1),
        fe2.get_cal(3, 2),
        fe2.get_cal(0, 0),
    ]
    for bad in (
        '{"format": "sicell-cal", "n_ranges": 4, "cal": [[1, 2]]}',
        "{not json",
        "",
        '{"format": "sicell-cal", "n_ranges": 3, "cal": []}',
        '{"format": "sicell-cal", "n_ranges": 4, "cal": [[[0, 5], [0, 1000000], '
        "[0, 1000000]], [], [], []]}",
    ):
        with open("calibration.json", "w") as f:
            f.write(bad)
        fe3 = frontend.Frontend()
        out.setdefault("corrupt", []).append(
            [fe3.cal.status, fe3.cal.is_default, fe3.get_cal(1, 0), fe3.cal.error]
        )
    try:
        fe3.set_cal(0, 1, 0, 1200000)
        out["gain_limit"] = None
    except ValueError as e:
        out["gain_limit"] = str(e)
    return out


def case_alt_parts():
    # board.json variant in the flash dir selecting ADS1219 + DAC8571 (world config too)
    W.set_cell("resistor", r_ohm=1000.0)
    import board

    cfg = board.load()
    out = {"parts": [cfg["adc"]["part"], cfg["dac"]["part"]]}
    fe = frontend.Frontend(cfg)
    fe.connect()
    rows = []
    for i in (-900000, -100000, 0, 300000, 700000):
        cmd = fe.set_current(i)
        time.sleep_ms(5)
        fe.measure()
        rows.append([i, cmd, fe.i_nA, dmm()[1], fe.v_uV, dmm()[0], fe.range])
    out["rows"] = rows
    return out


def case_rc_charge():
    # ideal 1 mF capacitor (no leak) behind 250 ohm: +1 mA for 1 s -> -1.000 V at rest
    W.set_cell("rc", c_farad=1e-3, r_series=250.0, r_parallel=0)
    fe = frontend.Frontend()
    fe.set_current(1000000)
    t0 = W.now
    fe.connect()
    time.sleep(1.0)
    fe.measure()
    under = [fe.v_uV, fe.i_nA, fe.range]
    fe.disconnect()
    t1 = W.now
    fe.set_current(0)
    fe.measure()
    return {
        "under": under,
        "rest": fe.v_uV,
        "on_s": (t1 - t0) * 1e-6,
        "true_rest": int(W.cell_voltage() * 1e6),
        "i_dmm": int(W.cell_current() * 1e9),
    }


def case_bench():
    import utime

    W.set_cell("resistor", r_ohm=100.0)
    fe = frontend.Frontend()
    fe.connect()
    n = 2000
    res = {}
    for name in ("measure", "set_current", "both"):
        t0 = utime.ticks_us()
        v0 = W.now
        for k in range(n):
            if name == "measure":
                fe.measure()
            elif name == "set_current":
                fe.set_current(3000000 + (k & 7) * 1000)
            else:
                fe.set_current(3000000 + (k & 7) * 1000)
                fe.measure()
        res[name] = [utime.ticks_diff(utime.ticks_us(), t0) / n, (W.now - v0) / n]
    # one hour of 1 s ticks (3600 x (sleep 1 s + measure)), RC cell
    W.set_cell("rc")
    fe.set_current(500000)
    t0 = utime.ticks_ms()
    for _ in range(3600):
        time.sleep(1)
        fe.measure()
    res["hour_1s_ticks_wall_ms"] = utime.ticks_diff(utime.ticks_ms(), t0)
    import gc

    gc.collect()
    res["mem_free"] = gc.mem_free()
    return res


def case_range_gpio():
    W.set_cell("resistor", r_ohm=100.0)
    fe = frontend.Frontend()
    fe.autorange = False
    fe.set_range(2)
    fe.set_current(500000)
    fe.connect()
    out = {"one": int(W.cell_current() * 1e9)}
    import machine

    machine.Pin(12, machine.Pin.OUT, value=0)  # no range selected: the path is open
    out["none"] = [int(W.cell_current() * 1e9), fe.measure() or fe.i_nA]
    machine.Pin(12, machine.Pin.OUT, value=1)
    machine.Pin(13, machine.Pin.OUT, value=1)  # 1 k || 100 R: Vin / R_parallel
    out["two"] = int(W.cell_current() * 1e9)
    machine.Pin(13, machine.Pin.OUT, value=0)
    # compliance: 0.5 mA into 1 Mohm would need 500 V; the stage sits at 4.5 V
    W.set_cell("resistor", r_ohm=1e6)
    fe.measure()
    out["compliance"] = [W.cell_current(), W.cell_voltage(), fe.v_clipped]
    return out
