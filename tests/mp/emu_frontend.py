# Frontend checks on the emulated bench (MicroPython unix port, emulator machine/time).
# usage: micropython emu_frontend.py <case>  (cwd = a scratch flash dir); prints one JSON
# line, tests/test_emulated_board.py asserts on it. The cases live in emu_frontend_cases.py:
# each import compiles from source, so the big one comes last, after a collection.
import gc
import json
import sys

import world

W = world.get()
gc.collect()
import time  # noqa: E402,F401

gc.collect()
import frontend  # noqa: E402,F401

gc.collect()
import emu_frontend_cases as C  # noqa: E402

print(json.dumps(getattr(C, "case_" + sys.argv[1])()))
