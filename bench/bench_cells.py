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

from tests.mputil import run_mp  # noqa: E402

CELLS_PY = ROOT / "host/sicell/emulator/mp/cells.py"

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


def test_micropython_hot_path_frames_stay_on_the_c_stack(tmp_path: Path) -> None:
    # MicroPython puts the frame of a function with > 11 words of locals + stack on the heap,
    # and that allocation scans all garbage since the last GC: the cost then grows with the
    # heap size.  A healthy hot path costs the same with a 192K and a 16M heap.
    shutil.copy(CELLS_PY, tmp_path / "cells.py")  # no emulator time.py on this path
    script = tmp_path / "hot.py"
    script.write_text(HOTPATH)
    us: dict[str, dict[str, float]] = {}
    for heap in ("192K", "16M"):
        res = run_mp(script, path=[tmp_path], heap=heap, timeout=60)
        assert res.returncode == 0, res.stderr.decode()
        us[heap] = {w: float(t) for w, t in (ln.split() for ln in res.stdout.decode().splitlines())}
    for what in ("advance", "voltage", "both"):
        assert us["16M"][what] < 3.0 * us["192K"][what], us


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        shutil.copy(CELLS_PY, tmp / "cells.py")  # no emulator time.py on this path
        script = tmp / "hot.py"
        script.write_text(HOTPATH)
        us: dict[str, dict[str, float]] = {}
        for heap in ("192K", "16M"):
            res = run_mp(script, path=[tmp], heap=heap, timeout=120)
            if res.returncode:
                raise SystemExit(res.stderr.decode())
            lines = res.stdout.decode().splitlines()
            us[heap] = {w: float(t) for w, t in (ln.split() for ln in lines)}
    print("thick-porous cell model, best of 3 x 10,000 calls, us per call")
    print(f"  {'call':<10}{'192K heap':>12}{'16M heap':>12}{'16M/192K':>10}")
    for what in ("advance", "voltage", "both"):
        a, b = us["192K"][what], us["16M"][what]
        print(f"  {what:<10}{a:12.2f}{b:12.2f}{b / a:10.2f}")


if __name__ == "__main__":
    main()
