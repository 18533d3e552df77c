"""Benchmark: sicell's cycle table + dQ/dV beside navani's on a synthetic 100-cycle run.

Run on demand (not a test):  python bench/bench_analysis.py [--cycles 100] [--points 1000]

Prints wall-clock times (best of ``--repeat``) for
  load        sicell: SQLite run file -> RunData;  navani: BDF CSV -> DataFrame (its loader)
  table       sicell: half_cycles + cycle_table;    navani: bdf_processing + cycle_summary
  dQ/dV       every half-cycle of the run:          sicell dqdv (5 mV level, Savitzky-Golay);
                                                    navani dqdv_single_cycle (defaults)
and the ratio navani / sicell. navani is optional: without it only sicell's figures print.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sicell import analysis as an  # noqa: E402
from sicell.rundata import RunData, load_run  # noqa: E402

from tests.synth_run import (  # noqa: E402
    build_run,
    export_bdf_csv,
    fade_cycles,
    write_synthetic_run,
)


def best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Best wall time of ``repeat`` calls and the last result."""
    times = []
    out: Any = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def sicell_table(run: RunData) -> an.CycleTable:
    return an.cycle_table(run, hcs=an.half_cycles(run))


def sicell_dqdv(run: RunData) -> int:
    hcs = an.half_cycles(run)
    n = 0
    for h in hcs:
        c = an.dqdv(run, h.cycle, h.kind, smooth="savgol", normalize="none", hcs=hcs)
        n += c.dqdv.size > 0
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=100)
    ap.add_argument("--points", type=int, default=1000, help="samples per CC step")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    src = build_run(
        fade_cycles(args.cycles, fade_per_cycle=0.0006, r_ohm=250.0, r_growth_ohm=2.0),
        hysteresis_v=0.1,
        noise_v=2e-4,
        points_per_step=args.points,
    )
    with tempfile.TemporaryDirectory() as d:
        db = write_synthetic_run(Path(d) / "run.db", src)
        csv = export_bdf_csv(src, Path(d) / "run.bdf.csv")
        print(f"synthetic run: {args.cycles} cycles, {len(src)} samples")

        rows: list[tuple[str, float, float | None]] = []
        t_load, run = best(lambda: load_run(db), args.repeat)
        t_table, table = best(lambda: sicell_table(run), args.repeat)
        t_dqdv, n_curves = best(lambda: sicell_dqdv(run), args.repeat)
        print(f"sicell: {len(table)} cycle rows, {n_curves} dQ/dV curves")

        try:
            import navani.echem as ec
            from navani.bdf import bdf_processing
        except ImportError as e:  # pragma: no cover - optional
            print(f"navani not importable ({e}); sicell only")
            ec = None

        if ec is None:
            for name, t in (("load", t_load), ("table", t_table), ("dQ/dV", t_dqdv)):
                print(f"{name:8s} sicell {1e3 * t:10.1f} ms")
            return 0

        import pandas as pd  # type: ignore[import-untyped]

        raw = pd.read_csv(csv)

        def nav_load() -> Any:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return ec.echem_file_loader(str(csv))

        def nav_table() -> Any:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                df = bdf_processing(raw.copy())
                return df, ec.cycle_summary(df)

        def nav_dqdv(df: Any) -> int:
            n = 0
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                active = df[df["state"] != "R"]
                for _, g in active.groupby("half cycle"):
                    if len(g) < 10:
                        continue
                    ec.dqdv_single_cycle(g["Capacity"].to_numpy(), g["Voltage"].to_numpy())
                    n += 1
            return n

        n_rep = max(1, args.repeat)
        tn_load, _ = best(nav_load, n_rep)
        tn_table, (df, summary) = best(nav_table, n_rep)
        tn_dqdv, n_nav = best(lambda: nav_dqdv(df), 1)
        print(f"navani: {int((summary.index >= 1).sum())} cycle rows, {n_nav} dQ/dV curves")
        rows = [
            ("load", t_load, tn_load),
            ("table", t_table, tn_table),
            ("dQ/dV", t_dqdv, tn_dqdv),
            ("table+dQ/dV", t_table + t_dqdv, tn_table + tn_dqdv),
        ]
        print(f"{'':12s} {'sicell':>12s} {'navani':>12s} {'navani/sicell':>14s}")
        for name, ours, theirs in rows:
            assert theirs is not None
            print(f"{name:12s} {1e3 * ours:9.1f} ms {1e3 * theirs:9.1f} ms {theirs / ours:13.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
