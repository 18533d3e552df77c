# Driver-against-chip-model checks, run under the MicroPython unix port with the
# emulator's machine/time in front (MICROPYPATH = emulator mp dir, firmware dir).
# usage: micropython emu_drivers.py <case>; prints one JSON line of measured numbers,
# the pytest side (tests/test_drivers.py) asserts on them. The cases live in
# emu_drivers_cases.py: every import compiles from source, on a heap the emulator has already
# fragmented, so each one starts from a collection and the big one comes last.
import gc
import json
import sys

import world

W = world.get()
gc.collect()
import machine  # noqa: E402,F401

gc.collect()
import time  # noqa: E402,F401

CASE = sys.argv[1]
for part in ("ads1115", "ads1219", "mcp4725", "dac8571"):
    if part in CASE or (part == "ads1115" and CASE == "noise_continuous"):
        gc.collect()
        __import__("drivers." + part)
gc.collect()
import emu_drivers_cases as C  # noqa: E402

print(json.dumps(getattr(C, "case_" + CASE)()))
