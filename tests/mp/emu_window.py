# The voltage channel's two ranges and its reach on the emulated bench (MicroPython unix
# port, emulator machine/time first on the path). usage: micropython emu_window.py <case>;
# cwd = a scratch flash dir (a board.json there wins); prints one JSON line,
# tests/test_voltage_window.py asserts on it.
import gc
import json
import sys
import time

import world

W = world.get()
gc.collect()
import frontend  # noqa: E402

gc.collect()


def case_reach():
    # a 1 kohm resistor: -/+2.2 mA gives +/-2.2 V, beyond the old +-2.048 V full scale
    W.set_cell("resistor", r_ohm=1000.0)
    fe = frontend.Frontend()
    fe.connect()
    rows = []
    for i in (-1000000, -2200000, -1850000, -1700000, -1700000, 2200000, 1000000):
        fe.set_current(i)
        time.sleep_ms(5)
        fe.measure()
        v_true = int(W.cell_voltage() * 1e6)
        rows.append([i, fe.v_uV, v_true, fe.v_clipped, fe.v_raw_uV, fe.v_wide])
    # 2 kohm: +2.2 mA would put the cell at -4.4 V, past the inputs' reach of the rails
    # (the clamps bend the reading to about -2.8 V): counted as clipped
    W.set_cell("resistor", r_ohm=2000.0)
    fe.set_current(2200000)
    time.sleep_ms(5)
    fe.measure()
    beyond = [fe.v_uV, int(W.cell_voltage() * 1e6), fe.v_clipped, fe.adc.clipped]
    fe.safe()
    return {
        "window": [fe.v_min_uV, fe.v_max_uV],
        "rows": rows,
        "spans": [fe.adc.span_uv(0), fe.adc.span_uv(2)],
        "beyond": beyond,
    }


def case_narrow():
    # board.json in the flash dir selects the ADS1219 (+-2.048 V): the window narrows
    import board

    cfg = board.load()
    fe = frontend.Frontend(cfg)
    return {
        "part": cfg["adc"]["part"],
        "window": [fe.v_min_uV, fe.v_max_uV],
        "limits": [cfg["limits"]["v_min_uV"], cfg["limits"]["v_max_uV"]],
        "span": fe.adc.span_uv(0),
    }


print(json.dumps(globals()["case_" + sys.argv[1]]()))
