"""End to end: records per second sustained from the emulated board into SQLite.

A schedule with a dense recording criterion (a record every control tick) runs on a fresh
``emu://rc`` board through the real host session (``RunSession``: frames, deframer, commit, ACK
after commit). The run database is polled while it fills; the sustained rate is the slope over
the middle of the run (start-up and the tail left out).

Run: python bench/bench_endtoend.py [--seconds 600] [--tick-ms 10] [--batch 500]
Prints figures only; no pass/fail. The emulator stops when the benchmark ends.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import tempfile
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import sicell  # noqa: F401  (registers emu://)
from sicell import schema
from sicell.emulator import ControlError, EmulatorControl, find_emulator
from sicell.protocol import messages
from sicell.schedule import parse_schedule
from sicell.session import RunSession, SessionOptions
from sicell.store import read_events, read_extent

SCHEDULE = """
name = "bench-endtoend"
vs = "cell"
[cell]
name = "rc dummy"
[reference]
electrode = "none"
offset_v = 0.0
[safety]
v_min = -1.5
v_max = 1.5
i_max_ma = 2.0
[control]
tick_ms = {tick}
slow_tick_ms = {tick}
[recording]
dt_s = {dt}
dv_mv = 0
[[step]]
label = "lith"
kind = "cc"
current_ua = 100
duration_s = {half}
[[step]]
kind = "cc"
current_ua = -100
duration_s = {half}
[[step]]
kind = "loop"
to = "lith"
count = {loops}
"""


def rows(db: Path) -> int:
    """Samples + events stored so far (0 before the database has its tables)."""
    if not db.exists():
        return 0
    try:
        ext = read_extent(db)
    except sqlite3.Error:  # created but not yet laid out by the session
        return 0
    return ext.samples + ext.events


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=600.0, help="virtual run time of the schedule")
    ap.add_argument("--tick-ms", type=int, default=10, help="control tick = recording interval")
    ap.add_argument("--batch", type=int, default=500, help="session commit batch (records)")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    half = 5.0
    loops = max(1, round(args.seconds / (2 * half)))
    text = SCHEDULE.format(tick=args.tick_ms, dt=args.tick_ms / 1000, half=half, loops=loops)
    board = f"bench-e2e-{os.getpid()}"
    url = f"emu://rc?seed={args.seed}&board={board}&linger=60"
    opts = SessionOptions(batch_records=args.batch, batch_interval_s=0.25)
    with tempfile.TemporaryDirectory() as d:
        db = Path(d) / "run.db"
        session = RunSession.new(parse_schedule(text), url, db, options=opts)
        result: dict[str, Any] = {}

        def work() -> None:
            try:
                result["summary"] = session.run()
            except BaseException as e:  # reported below
                result["error"] = e

        th = threading.Thread(target=work, daemon=True)
        t0 = time.monotonic()
        th.start()
        trace: list[tuple[float, int]] = []
        try:
            while th.is_alive():
                trace.append((time.monotonic() - t0, rows(db)))
                th.join(0.5)
            wall = time.monotonic() - t0
            trace.append((wall, rows(db)))
        finally:
            info = find_emulator(board)
            if info is not None:
                with contextlib.suppress(ControlError):
                    EmulatorControl(str(info["control"])).shutdown()
        if "error" in result:
            raise SystemExit(f"run failed: {result['error']!r}")
        s = result["summary"]
        with closing(schema.connect_readonly(db)) as con:
            dec = [e.value for e in read_events(con) if e.code == messages.EV_DECIMATED]
        decimated = max(dec, default=0)
    total = trace[-1][1]
    started = [(t, n) for t, n in trace if n > 0]
    lo = started[0][1] + (total - started[0][1]) * 0.2 if started else 0
    hi = started[0][1] + (total - started[0][1]) * 0.9 if started else 0
    a = next(((t, n) for t, n in trace if n >= lo), trace[0])
    b = next(((t, n) for t, n in trace if n >= hi), trace[-1])
    sustained = (b[1] - a[1]) / (b[0] - a[0]) if b[0] > a[0] else float("nan")
    first_t = started[0][0] if started else float("nan")
    print(f"emu://rc end to end: record every {args.tick_ms} ms, {args.seconds:g} s of test time")
    print(f"  stored {s.samples} samples + {s.events} events = {total} records ({s.state})")
    print(f"  wall {wall:.1f} s (first record stored after {first_t:.1f} s)")
    print(f"  average            {total / wall:8.0f} records/s")
    print(f"  sustained (20-90%) {sustained:8.0f} records/s")
    print(f"  virtual/wall time  {(s.elapsed_s or 0) / wall:8.1f} x")
    print(
        f"  link: {s.replays} replays, {s.framing_errors} bad frames, {s.lost_seqs} not "
        f"recoverable (board decimated {decimated} while the host lagged), {s.reconnects} "
        "reconnects"
    )


if __name__ == "__main__":
    main()
