"""The paper's protocols on the emulated films, through the whole system, beside the paper.

Run: python bench/paper.py [--films thin-porous,thin-dense,thick-porous,thick-dense]
                           [--cycles 100] [--rate] [--jobs 2] [--out DIR] [--keep]
     python bench/paper.py --all [--out DIR]     the paper's whole study in one command

``--all``: the 100-cycle protocol on all four films and the rate test on both porous films
(the paper's study), as many boards at once as there are cores; before it starts it prints a
wall-time estimate (the schedules' simulated time at EST_SIM_PER_WALL simulated s per wall s
and board, longest runs first on the boards), each run is reported as it ends, and the final
tables stand beside the paper's figures.

For each film a schedule is written from the examples (``host/sicell/examples/paper-cycling.toml``
and ``paper-rate.toml``, both written for the thin porous film) with that film's mass loading,
thickness and density (``cells.film_params``), its guard durations scaled to its capacity, and
the cycle count asked for. Each schedule runs as a real run: TOML → ``parse_schedule`` →
``RunSession`` → ``emu://<film>`` (the unmodified firmware under the MicroPython unix port) →
SQLite, up to ``--jobs`` boards at once. Each database is then analysed (``sicell.analysis``)
and the paper's numbers (``bench/paper_targets.py``, quoted from DESIGN.md §6) are printed
beside ours, one table per protocol, with a third column from the cell model alone
(``cells.py`` integrated in CPython, no firmware, no host) so that a difference can be told
apart as the model's or the system's.

``--cycles 0`` skips the cycling protocol (``--cycles 0 --rate``: the rate test only).
``--rest-min`` and ``--rates`` shorten the protocols (smoke tests); the output says when a run
is shortened and which paper figures it therefore cannot be compared with.
Progress goes to stderr, the tables to stdout.
"""

# This file is the command line; the jobs live beside it: paper_schedules (per-film schedules),
# paper_runs (the runs through the system), paper_analysis (the run databases), paper_model
# (the cell model alone), paper_tables (the printed tables), paper_targets (the paper's figures).
from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the paper_* modules beside this one

import paper_targets as T
from paper_analysis import Metrics, RateResult, analyse_cycling, analyse_rate
from paper_model import MODEL_DT_S, RateModel, compute_models
from paper_runs import Job, JobResult, err, reap, run_all
from paper_schedules import (
    cycling_toml,
    rate_cutoffs,
    rate_toml,
    toml_cycles,
    toml_rest_s,
)
from paper_tables import cycling_table, rate_table, shortened_notes, speed_table
from sicell import schema
from sicell.emulator.registry import RUNTIME_ENV
from sicell.schedule import parse_schedule


@dataclass
class Args:
    analyse: list[Path] | None
    films: list[str]
    cycles: int
    rate: bool
    jobs: int
    out: Path | None
    keep: bool
    rest_min: float | None
    rates: list[float] | None
    seed: int
    model: bool
    report: bool
    rate_films: list[str] | None = None  # the films that get the rate test (None: all)


def parse_args(argv: Sequence[str] | None = None) -> Args:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--all",
        action="store_true",
        help="the paper's whole study: 100 cycles on all four films, the rate test on the "
        "porous films, one board per core",
    )
    ap.add_argument("--films", default=",".join(T.FILMS), help="comma-separated film names")
    ap.add_argument(
        "--cycles", type=int, default=T.CYCLING.cycles, help="cycling: cycles (0 = no cycling)"
    )
    ap.add_argument("--rate", action="store_true", help="also run the rate test")
    ap.add_argument(
        "--jobs", type=int, default=0, help="boards at once (default 2; --all: one per core)"
    )
    ap.add_argument("--out", type=Path, help="keep the databases here and write a report")
    ap.add_argument("--keep", action="store_true", help="keep the databases (without --out)")
    ap.add_argument("--rest-min", type=float, help="rest length in minutes (paper: 60)")
    ap.add_argument(
        "--rates", help="rate test: comma-separated delithiation mA/cm² (default all five)"
    )
    ap.add_argument("--seed", type=int, default=0, help="emulated board seed (0 = nominal cell)")
    ap.add_argument("--no-model", action="store_true", help="skip the cell-model-alone column")
    ap.add_argument("--no-report", action="store_true", help="with --out: no HTML report")
    ap.add_argument(
        "--analyse",
        nargs="+",
        type=Path,
        metavar="DB",
        help="print the tables for databases of earlier runs of this bench (no emulator)",
    )
    a = ap.parse_args(argv)
    rate_films = None
    if a.all:
        a.films = ",".join(T.FILMS)
        a.cycles = T.CYCLING.cycles
        a.rate = True
        rate_films = [f for f in T.FILMS if "porous" in f]
    if not a.jobs:
        a.jobs = (os.cpu_count() or 2) if a.all else 2
    films = [f.strip() for f in a.films.split(",") if f.strip()]
    for f in films:
        if f not in T.FILMS:
            ap.error(f"unknown film {f!r}; films: {', '.join(T.FILMS)}")
    if a.cycles < 0:
        ap.error("--cycles must be >= 0")
    if a.cycles == 0 and not a.rate:
        ap.error("nothing to run: --cycles 0 without --rate")
    rates = None
    if a.rates:
        rates = [float(x) for x in a.rates.split(",") if x.strip()]
    if a.rest_min is not None and a.rest_min <= 0:
        ap.error("--rest-min must be > 0")
    return Args(
        analyse=a.analyse,
        films=films,
        cycles=a.cycles,
        rate=a.rate,
        jobs=a.jobs,
        out=a.out,
        keep=a.keep,
        rest_min=a.rest_min,
        rates=rates,
        seed=a.seed,
        model=not a.no_model,
        report=not a.no_report,
        rate_films=rate_films,
    )


def make_jobs(a: Args, dbdir: Path, stamp: str) -> list[Job]:
    jobs: list[Job] = []
    for film in a.films:
        specs: list[tuple[str, str]] = []
        if a.cycles > 0:
            specs.append(("cycling", cycling_toml(film, a.cycles, a.rest_min)))
        if a.rate and (a.rate_films is None or film in a.rate_films):
            specs.append(("rate", rate_toml(film, a.rates, a.rest_min)))
        for proto, text in specs:
            sch = parse_schedule(text, f"<{film} {proto}>")
            sch.compile()  # a schedule the board would refuse fails here, before any board
            est = sch.estimate_duration_s() or 0.0
            db = dbdir / f"{film}-{proto}-{stamp}.sqlite"
            jobs.append(Job(film, proto, text, db, est))
    return jobs


def analyse_only(paths: Sequence[Path], model: bool) -> int:
    """Print the tables for run databases written by this bench (no emulator)."""
    results: list[JobResult] = []
    seeds = set()
    for p in paths:
        with closing(schema.connect_readonly(p)) as con:
            meta = schema.read_meta(con)
        film, proto, text = meta.get("film"), meta.get("protocol"), meta.get("schedule_toml")
        if not (isinstance(film, str) and isinstance(proto, str) and isinstance(text, str)):
            err(f"{p}: not a bench/paper.py run (no film/protocol/schedule in its metadata)")
            return 2
        results.append(JobResult(Job(film, proto, text, p, 0.0), "", wall_s=math.nan))
        seeds.add(int(meta.get("emulator_seed", 0) or 0))
    order = {f: k for k, f in enumerate(T.FILMS)}
    results.sort(key=lambda r: (order.get(r.job.film, 99), r.job.protocol))
    cyc = [r.job for r in results if r.job.protocol == "cycling"]
    rate = [r.job for r in results if r.job.protocol == "rate"]
    rest_s = {toml_rest_s(j.toml) for j in cyc + rate}
    rates = sorted({j for r in rate for j, _, _ in rate_cutoffs(r.toml)})
    a = Args(
        analyse=list(paths),
        films=sorted({r.job.film for r in results}),
        cycles=max((toml_cycles(j.toml) for j in cyc), default=0),
        rate=bool(rate),
        jobs=0,
        out=None,
        keep=True,
        rest_min=None if rest_s <= {3600.0} else min(rest_s) / 60.0,
        rates=None if rates == list(T.RATE.discharge_ma_cm2) else rates,
        seed=min(seeds, default=0),
        model=model,
        report=False,
    )
    model_c: dict[str, Metrics] = {}
    model_r: dict[str, RateModel] = {}
    if model:
        compute_models([r.job for r in results], a.seed, model_c, model_r)
    print(render(a, results, model_c, model_r, None), flush=True)
    return 0


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # the same clean-up as Ctrl-C: stop the sessions, reap the boards


# simulated s per wall s of one board, two boards on two cores: the whole study on 2026-12-02
# ran its cycling at 4,857-5,372 (73 min for what this estimated at 54 with 8,000)
EST_SIM_PER_WALL = 5000.0


def wall_estimate(jobs: Sequence[Job], n_boards: int) -> str:
    """The expected wall time: longest runs first, each on the board free soonest, at
    EST_SIM_PER_WALL per board (boards beyond the cores share them)."""
    cores = os.cpu_count() or 1
    rate = EST_SIM_PER_WALL * min(1.0, cores / max(1, n_boards))
    free = [0.0] * max(1, n_boards)
    for j in sorted(jobs, key=lambda j: -j.estimate_s):
        k = free.index(min(free))
        free[k] += j.estimate_s / rate
    lines = [f"  {j.tag}: {j.estimate_s / 3600:,.0f} simulated h" for j in jobs]
    return (
        f"estimated wall time ~{max(free) / 60:,.0f} min ({n_boards} boards on {cores} cores, "
        f"~{EST_SIM_PER_WALL:,.0f} simulated s per wall s and board):\n" + "\n".join(lines)
    )


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    if a.analyse:
        return analyse_only(a.analyse, a.model)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _sigterm)
    t_start = time.monotonic()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    tmp = Path(tempfile.mkdtemp(prefix="sicell-paper-"))
    prev_rt = os.environ.get(RUNTIME_ENV)
    if prev_rt:
        rdir = Path(prev_rt)  # the caller's runtime directory (a test's private one)
    else:
        rdir = tmp / "rt"  # else a private one: our own emulator registry
        rdir.mkdir()
        os.environ[RUNTIME_ENV] = str(rdir)
    dbdir = a.out if a.out is not None else tmp / "runs"
    dbdir.mkdir(parents=True, exist_ok=True)
    keep_tmp = a.keep and a.out is None
    jobs: list[Job] = []
    try:
        jobs = make_jobs(a, dbdir, stamp)
        err(
            f"paper.py: {len(jobs)} runs on up to {a.jobs} emulated boards; "
            f"{sum(j.estimate_s for j in jobs) / 3600:,.0f} simulated h by the schedules' "
            f"estimates; databases in {dbdir}"
        )
        err(wall_estimate(jobs, a.jobs))
        model_c: dict[str, Metrics] = {}
        model_r: dict[str, RateModel] = {}
        model_thread: threading.Thread | None = None
        if a.model:
            model_thread = threading.Thread(
                target=compute_models,
                args=(jobs, a.seed, model_c, model_r),
                name="paper-model",
                daemon=True,
            )
            model_thread.start()
        try:
            results = run_all(jobs, a.jobs, a.seed, rdir)
        except KeyboardInterrupt:
            err(
                "interrupted: the emulated boards are stopped"
                + (f"; databases so far in {dbdir}" if a.out is not None or a.keep else "")
            )
            return 130
        if model_thread is not None:
            model_thread.join()
        text = render(a, results, model_c, model_r, time.monotonic() - t_start)
        print(text, flush=True)
        if a.out is not None:
            (a.out / f"paper-{stamp}.txt").write_text(text + "\n", encoding="utf-8")
            dbs = [r.job.db for r in results if r.job.db.exists() and r.summary is not None]
            if a.report and dbs:
                try:
                    from sicell.report import write_report

                    html = write_report(
                        dbs,
                        a.out / f"report-{stamp}",
                        r_area_ohm_cm2=T.RATE.ir_ohm_cm2,
                        title="sicell: the paper's protocols on the emulated films",
                    )
                    print(f"report: {html}")
                except Exception as e:  # the tables are out already; say why there is no report
                    print(f"report failed: {type(e).__name__}: {e}")
            print(f"databases: {a.out}")
        elif keep_tmp:
            print(f"databases kept in {dbdir}")
        return 0 if all(r.error is None for r in results) else 1
    finally:
        for j in jobs:
            reap(j.board, rdir)  # only the boards this run started
        if not prev_rt:
            os.environ.pop(RUNTIME_ENV, None)
        if keep_tmp:
            shutil.rmtree(tmp / "rt", ignore_errors=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def render(
    a: Args,
    results: Sequence[JobResult],
    model_c: Mapping[str, Metrics],
    model_r: Mapping[str, RateModel],
    wall_s: float | None,
) -> str:
    parts: list[str] = []
    cyc: dict[str, Metrics] = {}
    rate: dict[str, RateResult | str] = {}
    notes: list[str] = []
    for r in results:
        film, cycling = r.job.film, r.job.protocol == "cycling"
        if r.error is not None or not r.job.db.exists():
            failed = r.error or "no database"
            if cycling:
                cyc[film] = {"error": failed}
            else:
                rate[film] = failed
            continue
        # an analysis failure is reported in the film's row of its table, not raised
        if cycling:
            try:
                cyc[film] = analyse_cycling(r.job.db, film)
            except Exception as e:
                cyc[film] = {"error": f"analysis: {type(e).__name__}: {e}"}
                continue
            notes += [f"{film} cycling: {n}" for n in cyc[film].get("notes", [])]
        else:
            try:
                rate[film] = analyse_rate(r.job.db)
            except Exception as e:
                rate[film] = f"analysis: {type(e).__name__}: {e}"
        s = r.summary
        if s is not None and (s.state != "done" or s.lost_seqs or s.decimated):
            notes.append(
                f"{film} {r.job.protocol}: state {s.state} ({s.end_reason}), "
                f"{s.lost_seqs} lost, {s.decimated} decimated records"
            )
    if cyc:
        parts.append(cycling_table(cyc, model_c, a.cycles))
    if rate:
        rates = a.rates if a.rates is not None else list(T.RATE.discharge_ma_cm2)
        parts.append(rate_table(rate, model_r, rates))
    if any(r.summary is not None or r.error is not None for r in results):
        parts.append(speed_table(results))
    lines = shortened_notes(a.cycles, a.rest_min, a.rates, a.rate) + notes
    lines.append(
        "paper: DESIGN.md §6 (bench/paper_targets.py). ours: the emulated film through the "
        "firmware, host session and SQLite, analysed by sicell.analysis. model: cells.py alone "
        f"in CPython (dt {MODEL_DT_S:g} s, same seed {a.seed}, no firmware). "
        "verdict: 'meets'/'misses' the paper's figure ('~' within the target's tolerance), "
        "'n/c' not comparable."
    )
    if wall_s is not None:
        lines.append(f"total wall time {wall_s:.0f} s ({wall_s / 60:.1f} min), {a.jobs} jobs")
    parts.append("\n".join(f"* {x}" for x in lines))
    return "\n\n".join(parts)


if __name__ == "__main__":
    sys.exit(main())
