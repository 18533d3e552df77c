"""Cell-model hot path under MicroPython: µs per call with a 192K heap beside a 16M heap.

MicroPython puts the frame of a function with more than ~11 words of locals + stack on the heap,
and that allocation scans all garbage since the last collection, so its cost grows with the heap
size. A healthy hot path costs the same at both sizes; a ratio well above 1 flags a regression.
Run: python bench/bench_cells.py (prints figures, never fails on time).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sicell.emulator.staging import mp_dir  # noqa: E402

from tests.mputil import run_mp  # noqa: E402

CELLS_PY = mp_dir() / "cells.py"
HEAPS = ("192K", "16M")  # a board-sized heap beside a large one
CALLS = ("advance", "voltage", "both")

HOTPATH = """
import time, gc
import cells
c = cells.make_cell("thick-porous")
c.advance(5e-5, 20000.0)
n = 10000
cur = [5.67e-5 * (1.0 + 0.001 * k) * (1 if k < 8 else -1) for k in range(16)]
adv = c.advance
vol = c.voltage
for what in ("advance", "voltage", "both"):
    best = 1e9
    for rep in range(3):
        gc.collect()
        t = time.ticks_us()
        if what == "advance":
            for k in range(n):
                adv(cur[k & 15], 0.5 + 0.01 * (k & 7))
        elif what == "voltage":
            for k in range(n):
                vol(cur[k & 15])
        else:
            for k in range(n):
                i = cur[k & 15]
                adv(i, 0.5)
                vol(i)
        best = min(best, time.ticks_diff(time.ticks_us(), t) / n)
    print(what, best)
"""


def hot_path_us(work: Path, timeout: float) -> dict[str, dict[str, float]]:
    """µs per call of each hot-path loop, per heap size (cells.py is copied into ``work``)."""
    shutil.copy(CELLS_PY, work / "cells.py")  # no emulator time.py on this path
    script = work / "hot.py"
    script.write_text(HOTPATH)
    us: dict[str, dict[str, float]] = {}
    for heap in HEAPS:
        res = run_mp(script, path=[work], heap=heap, timeout=timeout)
        if res.returncode:
            raise RuntimeError(f"hot.py with a {heap} heap failed:\n{res.stderr.decode()}")
        lines = res.stdout.decode().splitlines()
        us[heap] = {w: float(t) for w, t in (ln.split() for ln in lines)}
    return us


def test_micropython_hot_path_frames_stay_on_the_c_stack(tmp_path: Path) -> None:
    # A healthy hot path costs the same with a 192K and a 16M heap (see the module docstring).
    us = hot_path_us(tmp_path, timeout=60)
    for what in CALLS:
        assert us["16M"][what] < 3.0 * us["192K"][what], us


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        try:
            us = hot_path_us(Path(d), timeout=120)
        except RuntimeError as e:
            raise SystemExit(str(e)) from None
    print("thick-porous cell model, best of 3 x 10,000 calls, us per call")
    print(f"  {'call':<10}{'192K heap':>12}{'16M heap':>12}{'16M/192K':>10}")
    for what in CALLS:
        a, b = us["192K"][what], us["16M"][what]
        print(f"  {what:<10}{a:12.2f}{b:12.2f}{b / a:10.2f}")


if __name__ == "__main__":
    main()
