# Heap allocation of the Frontend hot paths with a do-nothing I2C bus (so that only the
# firmware's own allocations count). Prints bytes allocated per call.
import gc
import json

import world

world.get()  # the emulator first, then each import from a collected heap (all compile from
gc.collect()  # source, and the emulator leaves the heap fragmented)
import machine  # noqa: E402,F401

gc.collect()
import time  # noqa: E402,F401

gc.collect()
import frontend  # noqa: E402


class StubI2C:
    # answers like an idle ADS1115 / DAC: config reads OS=1, conversions 0x1234
    def writeto(self, addr, buf, stop=True):
        return len(buf)

    def readfrom_mem_into(self, addr, reg, buf, addrsize=8):
        buf[0] = 0x80 if reg == 1 else 0x12
        buf[1] = 0x34


fe = frontend.Frontend(i2c=StubI2C())
fe.autorange = False
fe.set_range(3)
for _ in range(5):  # warm up: one-off allocations (first calls into the emulator) do not count
    fe.measure()
fe.set_current(1234567)
out = {}
for name in ("measure", "set_current"):
    gc.collect()
    gc.disable()
    a0 = gc.mem_alloc()
    for _ in range(100):
        if name == "measure":
            fe.measure()
        else:
            fe.set_current(1234567)
    out[name] = (gc.mem_alloc() - a0) / 100
    gc.enable()
out["v_uV"] = fe.v_uV
print(json.dumps(out))
