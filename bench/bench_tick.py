"""Control-tick time and jitter of the real engine + frontend on the emulated board.

Stages the firmware and the emulator's MicroPython modules like the launcher does
(``sicell.emulator.staging.stage_firmware``), compiles them with ``mpy-cross`` (on the RP2040
the large modules run precompiled; the unix port would otherwise spend most of its heap on the
compiler), and runs ``bench/tick_core.py`` under the MicroPython unix port: an ``rc`` dummy, a
CC / CC-CV / dV/dt-rest loop, the engine's own tick plan. Every ``engine.tick()`` (ADC reads
through the drivers and the emulator's register-level chip models, coulomb count, limits, CV
control, recording) is timed with the wall clock.

Run: python bench/bench_tick.py [n_ticks] [--tick-ms 10] [--heap 512K]
Prints mean, p50, p99, max and the jitter (standard deviation, p99 - p50) in µs; no pass/fail.
The figures are unix-port figures on this CPU, not RP2040 ones: they rank changes to the tick,
they do not predict the 133 MHz Cortex-M0+ (several times slower).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sicell.emulator.staging import stage_firmware  # noqa: E402
from sicell.flash import compile_mpy  # noqa: E402

from tests.mputil import run_mp  # noqa: E402

HERE = Path(__file__).resolve().parent


def compile_tree(*roots: Path) -> int:
    """Replace every .py under ``roots`` (but the entry scripts) by its .mpy."""
    n = 0
    for root in roots:
        for py in sorted(root.rglob("*.py")):
            if py.name in ("emuboot.py", "main.py"):
                continue
            compile_mpy(py, py.with_suffix(".mpy"), py.relative_to(root).as_posix())
            py.unlink()
            n += 1
    return n


def stats(xs: list[int]) -> dict[str, float]:
    s = sorted(xs)
    n = len(s)
    mean = sum(s) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in s) / n)

    def pct(p: float) -> float:
        return float(s[min(n - 1, int(p / 100 * n))])

    return {
        "n": n,
        "mean": mean,
        "p50": pct(50),
        "p99": pct(99),
        "max": float(s[-1]),
        "sd": sd,
        "jit": pct(99) - pct(50),
    }


def run(n: int, tick_ms: int, heap: str, seed: int) -> tuple[str, dict[str, list[int]]]:
    with tempfile.TemporaryDirectory() as d:
        dd = Path(d)
        emu, fw = stage_firmware(dd / "stage")
        compile_tree(emu, fw)
        cfg = dd / "emu.json"
        cfg.write_text(json.dumps({"cell": "rc", "seed": seed, "quiet": True}))
        flash = dd / "flash"
        flash.mkdir()
        p = run_mp(
            HERE / "tick_core.py",
            str(n),
            str(tick_ms),
            path=[emu, fw],
            heap=heap,
            cwd=flash,
            env={"SICELL_EMU_CONFIG": str(cfg)},
            timeout=600,
            text=True,
        )
    if p.returncode != 0:
        raise SystemExit(f"tick_core.py failed ({p.returncode}):\n{p.stdout[-2000:]}{p.stderr}")
    head = ""
    series: dict[str, list[int]] = {}
    for line in p.stdout.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] in ("tick", "measure"):
            series[parts[0]] = [int(x) for x in parts[1:]]
        else:
            head = line
    return head, series


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("n", nargs="?", type=int, default=5000, help="ticks to time")
    ap.add_argument("--tick-ms", type=int, default=10, help="schedule control tick")
    ap.add_argument("--heap", default="512K", help="MicroPython heap (-X heapsize)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    head, series = run(args.n, args.tick_ms, args.heap, args.seed)
    print(f"engine + frontend on the emulated board (unix port, heap {args.heap}, rc dummy)")
    print(f"  {head}")
    print(
        f"  {'':26}{'n':>6} {'mean':>8} {'p50':>8} {'p99':>8} {'max':>8} {'sd':>8} {'p99-p50':>8}"
    )
    labels = {
        "tick": "engine.tick() [us]",
        "measure": "frontend.measure() [us]",
    }
    for key, label in labels.items():
        xs = series.get(key)
        if not xs:
            continue
        s = stats(xs)
        print(
            f"  {label:<26}{s['n']:>6.0f} {s['mean']:>8.1f} {s['p50']:>8.0f} {s['p99']:>8.0f} "
            f"{s['max']:>8.0f} {s['sd']:>8.1f} {s['jit']:>8.0f}"
        )


if __name__ == "__main__":
    main()
