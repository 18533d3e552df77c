"""bench/paper.py's runs: each job a real run (TOML → ``parse_schedule`` → ``RunSession`` →
``emu://<film>`` → SQLite), up to ``n_jobs`` emulated boards at once, every board it started
shut down at the end (also on Ctrl-C)."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import sicell  # noqa: F401  (registers emu://)
from sicell.emulator.handle import EmulatorHandle
from sicell.emulator.registry import find_emulator
from sicell.progress import Progress, fmt_duration
from sicell.schedule import parse_schedule
from sicell.session import RunSession, RunSummary


@dataclass
class Job:
    film: str
    protocol: str  # "cycling" | "rate"
    toml: str
    db: Path
    estimate_s: float

    @property
    def tag(self) -> str:
        return f"{self.film}/{self.protocol}"

    @property
    def board(self) -> str:
        """The emulated board's id: unique to this process, so other emulators are safe."""
        return f"paper-{self.film}-{self.protocol}-{os.getpid()}"


@dataclass
class JobResult:
    job: Job
    board: str
    summary: RunSummary | None = None
    error: str | None = None
    wall_s: float = 0.0
    sim_s: float | None = None

    @property
    def speed(self) -> float | None:
        if self.sim_s is None or self.wall_s <= 0:
            return None
        return self.sim_s / self.wall_s


def err(text: str) -> None:
    """A progress or trouble line on stderr (the tables go to stdout)."""
    print(text, file=sys.stderr, flush=True)


class QuietDisplay:
    """One progress line per board every ``interval`` s on stderr (notes always)."""

    def __init__(self, interval: float = 30.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def update(self, p: Progress) -> None:
        now = time.monotonic()
        with self._lock:
            if not p.final and now - self._last.get(p.board, -1e9) < self.interval:
                return
            self._last[p.board] = now
        cyc = "-" if p.cycle is None else p.cycle
        we = "-" if p.we_v is None else f"{p.we_v:.3f} V vs Li"
        err(
            f"[{p.board}] {p.state}: cycle {cyc}, step {p.step}, {we}, "
            f"test time {fmt_duration(p.elapsed_s)}, {p.samples} samples"
        )

    def note(self, board: str, text: str) -> None:
        err(f"[{board}] {text}")

    def __enter__(self) -> QuietDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def reap(board: str, rdir: Path) -> None:
    """Shut down ``board``'s launcher if it is still there."""
    info = find_emulator(board, rdir)
    if info is not None:
        EmulatorHandle(info, runtime=str(rdir)).shutdown()


def run_job(
    job: Job,
    rdir: Path,
    seed: int,
    display: QuietDisplay,
    sessions: dict[str, RunSession],
    stop: threading.Event,
) -> JobResult:
    board = job.board
    res = JobResult(job, board)
    if stop.is_set():
        res.error = "not started (interrupted)"
        return res
    url = f"emu://{job.film}?seed={seed}&board={board}&owner=1&linger=30"
    t0 = time.monotonic()
    try:
        sch = parse_schedule(job.toml, source=f"<bench/paper.py {job.tag}>")
        sess = RunSession.new(
            sch,
            url,
            job.db,
            name=job.tag,
            display=display,
            extra_meta={
                "bench": "bench/paper.py",
                "film": job.film,
                "protocol": job.protocol,
                "emulator_seed": seed,
            },
        )
        sessions[job.tag] = sess
        if stop.is_set():  # interrupted while this one was being set up
            sess.request_stop()
        res.summary = sess.run()
        res.sim_s = res.summary.elapsed_s
    except BaseException as e:  # reported in the tables; the other films go on
        res.error = f"{type(e).__name__}: {e}"
    finally:
        res.wall_s = time.monotonic() - t0
        sessions.pop(job.tag, None)
        reap(board, rdir)
    return res


def run_all(jobs: Sequence[Job], n_jobs: int, seed: int, rdir: Path) -> list[JobResult]:
    """Run the jobs on up to ``n_jobs`` emulated boards at once, longest first."""
    display = QuietDisplay()
    sessions: dict[str, RunSession] = {}
    stop = threading.Event()
    order = sorted(jobs, key=lambda j: -j.estimate_s)
    results: dict[str, JobResult] = {}
    pool = ThreadPoolExecutor(max_workers=max(1, n_jobs), thread_name_prefix="paper")
    futs: list[tuple[Job, Future[JobResult]]] = [
        (j, pool.submit(run_job, j, rdir, seed, display, sessions, stop)) for j in order
    ]
    pending = {f for _, f in futs}
    try:
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for f in done:
                r = f.result()
                results[r.job.tag] = r
                status = r.error or (r.summary.state if r.summary else "?")
                speed = f", {r.sim_s / r.wall_s:,.0f} sim-s/wall-s" if r.wall_s and r.sim_s else ""
                err(
                    f"[{r.job.tag}] finished in {r.wall_s / 60:.1f} min wall{speed}: {status} "
                    f"({len(results)}/{len(jobs)} done)"
                )
    except KeyboardInterrupt:
        stop.set()
        for s in list(sessions.values()):
            s.request_stop()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)
        for j in jobs:
            reap(j.board, rdir)
    return [results[j.tag] for j in jobs if j.tag in results]
