"""The paper's protocols on the emulated films, through the whole system, beside the paper.

Run: python bench/paper.py [--films thin-porous,thin-dense,thick-porous,thick-dense]
                           [--cycles 100] [--rate] [--jobs 2] [--out DIR] [--keep]

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

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import paper_targets as T  # noqa: E402
import sicell  # noqa: E402, F401  (registers emu://)
from sicell import analysis as an  # noqa: E402
from sicell.emulator import launcher  # noqa: E402
from sicell.progress import Progress, fmt_duration  # noqa: E402
from sicell.rundata import load_run  # noqa: E402
from sicell.schedule import parse_schedule  # noqa: E402
from sicell.session import RunSession, RunSummary  # noqa: E402

EXAMPLES = ROOT / "host" / "sicell" / "examples"
CYCLING_TOML = EXAMPLES / "paper-cycling.toml"
RATE_TOML = EXAMPLES / "paper-rate.toml"
D_SI_DENSE = 2.3  # g/cm³ (DESIGN §6)
Q_LI15SI4 = 3579.0  # mAh/g, for the lithiated volume
MODEL_DT_S = 10.0


# ---- the cell model in CPython ----------------------------------------------------------------
_cells_mod: ModuleType | None = None


def cells() -> Any:
    """``emulator/mp/cells.py`` (pure Python, the board's own cell model) loaded here."""
    global _cells_mod
    if _cells_mod is None:
        path = launcher.mp_dir() / "cells.py"
        spec = importlib.util.spec_from_file_location("_paper_cells", path)
        if spec is None or spec.loader is None:
            raise RuntimeError(f"cannot load {path}")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _cells_mod = mod
    return _cells_mod


def film_params(film: str) -> dict[str, Any]:
    return dict(cells().film_params(film))


# ---- TOML out (the subset the schedule vocabulary uses) ---------------------------------------
def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"cannot write {v} to TOML")
        return repr(v)
    if isinstance(v, str):
        out = ['"']
        for ch in v:
            if ch in '"\\':
                out.append("\\" + ch)
            elif ord(ch) < 0x20 or ch == "\x7f":
                out.append(f"\\u{ord(ch):04x}")
            else:
                out.append(ch)
        out.append('"')
        return "".join(out)
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dump_toml(doc: Mapping[str, Any], header: str = "") -> str:
    """TOML text for a schedule document: scalars, tables, arrays of tables (inline tables
    inside them). ``tomllib.loads(dump_toml(d)) == d`` for such documents."""
    lines = [f"# {h}" if h else "#" for h in header.splitlines()]
    scalars = {k: v for k, v in doc.items() if not isinstance(v, Mapping | list)}
    tables = {k: v for k, v in doc.items() if isinstance(v, Mapping)}
    arrays = {k: v for k, v in doc.items() if isinstance(v, list)}
    for k, v in scalars.items():
        lines.append(f"{k} = {_toml_value(v)}")
    for k, t in tables.items():
        lines += ["", f"[{k}]"]
        lines += [f"{kk} = {_toml_value(vv)}" for kk, vv in t.items()]
    for k, arr in arrays.items():
        if not all(isinstance(x, Mapping) for x in arr):
            lines.append(f"{k} = {_toml_value(arr)}")
            continue
        for item in arr:
            lines += ["", f"[[{k}]]"]
            lines += [f"{kk} = {_toml_value(vv)}" for kk, vv in item.items()]
    return "\n".join(lines) + "\n"


# ---- per-film schedules ------------------------------------------------------------------------
_DURATION_KEYS = {"duration_h": 3600.0, "duration_min": 60.0, "duration_s": 1.0}


def _duration_s(step: Mapping[str, Any]) -> float | None:
    for k, scale in _DURATION_KEYS.items():
        if k in step:
            return float(step[k]) * scale
    return None


def _set_duration_min(step: dict[str, Any], minutes: float) -> None:
    for k in _DURATION_KEYS:
        step.pop(k, None)
    step["duration_min"] = float(minutes) if minutes != int(minutes) else int(minutes)


def _film_doc(example: Path, film: str, protocol: str) -> tuple[dict[str, Any], float]:
    """The example's document with ``film``'s [cell] values; also the guard scale factor (the
    film's theoretical capacity over the example film's, at least 1)."""
    doc = tomllib.loads(example.read_text(encoding="utf-8"))
    p = film_params(film)
    cell = doc["cell"]
    base_loading = float(cell["loading_mg_cm2"])
    porous = "porous" if p["porous"] else "non-porous"
    size = film.split("-")[0]
    cell.update(
        name=(
            f"{porous} {size} a-Si film ({p['loading_mg_cm2']:g} mg/cm2, "
            f"{p['thickness_um']:g} um), emulated '{film}'"
        ),
        area_cm2=float(p["area_cm2"]),
        loading_mg_cm2=float(p["loading_mg_cm2"]),
        thickness_um=float(p["thickness_um"]),
        density_g_cm3=round(float(p["density_g_cm3"]), 3),
    )
    doc["name"] = f"paper-{protocol}-{film}"
    return doc, max(1.0, float(p["loading_mg_cm2"]) / base_loading)


def _scale_guards(steps: list[dict[str, Any]], scale: float, rest_min: float | None) -> None:
    for st in steps:
        kind = st.get("kind")
        d = _duration_s(st)
        if kind == "rest" and rest_min is not None:
            _set_duration_min(st, rest_min)
        elif kind in ("cc", "cccv", "cv") and d is not None and scale > 1.0:
            _set_duration_min(st, math.ceil(d * scale / 60.0))


def cycling_toml(film: str, cycles: int, rest_min: float | None = None) -> str:
    """The paper's cycling schedule for ``film``: ``cycles`` cycles (the loop's count)."""
    if cycles < 1:
        raise ValueError("cycles must be >= 1")
    doc, scale = _film_doc(CYCLING_TOML, film, "cycling")
    steps: list[dict[str, Any]] = doc["step"]
    _scale_guards(steps, scale, rest_min)
    for st in steps:
        if st.get("kind") == "loop":
            st["count"] = cycles
    doc["description"] = (
        f"{film}: 0.1 mA/cm2, {'1 h' if rest_min is None else f'{rest_min:g} min'} rests, "
        f"0.01-1.2 V vs Li, {cycles} cycles"
    )
    hdr = (
        f"Written by bench/paper.py from {CYCLING_TOML.name} for the emulated film '{film}':\n"
        f"[cell] from cells.film_params, guard durations x{scale:.3g}, {cycles} cycles"
        + (f", rests {rest_min:g} min" if rest_min is not None else "")
        + "."
    )
    return dump_toml(doc, hdr)


def rate_toml(
    film: str, rates: Sequence[float] | None = None, rest_min: float | None = None
) -> str:
    """The paper's rate test for ``film`` (blocks of CC-CV lithiation, rest, delithiation at
    one rate, rest); ``rates`` picks some of the example's delithiation current densities."""
    doc, scale = _film_doc(RATE_TOML, film, "rate")
    steps: list[dict[str, Any]] = doc["step"]
    blocks: list[list[dict[str, Any]]] = []
    for st in steps:
        if str(st.get("label", "")).startswith("lith-") or not blocks:
            blocks.append([])
        blocks[-1].append(st)
    have = [_block_rate(b) for b in blocks]
    if rates is not None:
        missing = [j for j in rates if not any(_same_j(j, h) for h in have if h is not None)]
        if missing:
            raise ValueError(
                f"rates {missing} are not in {RATE_TOML.name} "
                f"(it has {', '.join(f'{h:g}' for h in have if h is not None)} mA/cm2)"
            )
        blocks = [b for b, h in zip(blocks, have, strict=True) if h is None or _in(h, rates)]
    doc["step"] = [st for b in blocks for st in b]
    _scale_guards(doc["step"], scale, rest_min)
    kept = [h for h in (_block_rate(b) for b in blocks) if h is not None]
    doc["description"] = (
        f"{film}: CC-CV lithiation at 0.1 mA/cm2, delithiation at "
        f"{', '.join(f'{j:g}' for j in kept)} mA/cm2"
    )
    hdr = (
        f"Written by bench/paper.py from {RATE_TOML.name} for the emulated film '{film}':\n"
        f"[cell] from cells.film_params, guard durations x{scale:.3g}"
        + (f", rests {rest_min:g} min" if rest_min is not None else "")
        + (f", rates {', '.join(f'{j:g}' for j in kept)} mA/cm2" if rates is not None else "")
        + "."
    )
    return dump_toml(doc, hdr)


def _block_rate(block: Sequence[Mapping[str, Any]]) -> float | None:
    for st in block:
        if st.get("direction") == "delithiation" and "current_density_ma_cm2" in st:
            return float(st["current_density_ma_cm2"])
    return None


def _same_j(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(abs(a), abs(b), 1e-12)


def _in(j: float, rates: Sequence[float]) -> bool:
    return any(_same_j(j, r) for r in rates)


def rate_cutoffs(toml_text: str) -> list[tuple[float, float, bool]]:
    """(current density mA/cm², delithiation cutoff vs Li, IR-corrected) per rate block."""
    doc = tomllib.loads(toml_text)
    out = []
    for st in doc["step"]:
        if st.get("direction") == "delithiation" and "current_density_ma_cm2" in st:
            out.append(
                (
                    float(st["current_density_ma_cm2"]),
                    float(st["until_v"]),
                    bool(st.get("ir_corrected", False)),
                )
            )
    return out


# ---- runs -------------------------------------------------------------------------------------
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
        _err(
            f"[{p.board}] {p.state}: cycle {cyc}, step {p.step}, {we}, "
            f"test time {fmt_duration(p.elapsed_s)}, {p.samples} samples"
        )

    def note(self, board: str, text: str) -> None:
        _err(f"[{board}] {text}")

    def __enter__(self) -> QuietDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _reap(board: str, rdir: Path) -> None:
    """Shut down ``board``'s launcher if it is still there."""
    info = launcher.find_emulator(board, rdir)
    if info is not None:
        launcher.EmulatorHandle(info, runtime=str(rdir)).shutdown()


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
        _reap(board, rdir)
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
                _err(f"[{r.job.tag}] finished in {r.wall_s:.0f} s wall: {status}")
    except KeyboardInterrupt:
        stop.set()
        for s in list(sessions.values()):
            s.request_stop()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)
        for j in jobs:
            _reap(j.board, rdir)
    return [results[j.tag] for j in jobs if j.tag in results]


# ---- analysis of a run database ---------------------------------------------------------------
Metrics = dict[str, Any]


def _lithiated_mah_cm3(mah_cm2: float | None, mah_g: float | None, p: Mapping[str, Any]) -> Any:
    """Capacity over the lithiated film's volume (dense-Si volume × (1 + 3 q / 3579)), the
    basis under which the paper's porous figure (1900 mAh/cm³) and its 2.19 mAh/cm² agree."""
    if mah_cm2 is None or mah_g is None:
        return None
    v_lit = p["loading_mg_cm2"] * 1e-3 / D_SI_DENSE * (1.0 + 3.0 * mah_g / Q_LI15SI4)
    return mah_cm2 / max(v_lit, p["thickness_um"] * 1e-4)


def ce_start(ref: int, cycles: Sequence[int]) -> int:
    """First cycle of the mean CE: the reference cycle (10) when the run reached it, else the
    second cycle (the first one's irreversible loss left out), else the only one."""
    if ref > cycles[0] or len(cycles) < 2:
        return ref
    return cycles[1]


def analyse_cycling(db: Path, film: str) -> Metrics:
    run = load_run(db)
    hcs = an.half_cycles(run)
    tab = an.cycle_table(run, reference_cycle=T.CYCLING.reference_cycle, hcs=hcs)
    m: Metrics = {"cycles": len(tab.rows), "notes": list(tab.notes)}
    if not tab.rows:
        return m
    area = run.area_cm2 or 1.0
    first, last = tab.rows[0], tab.rows[-1]
    ref = tab.reference_cycle if tab.reference_cycle is not None else first.cycle
    m.update(
        first_cycle=first.cycle,
        last_cycle=last.cycle,
        reference_cycle=ref,
        first_delith_mah_g=first.delith_mah_g,
        first_delith_mah_cm2=first.delith_mah_cm2,
        first_ce_pct=100.0 * first.ce,
        last_delith_mah_g=last.delith_mah_g,
        last_delith_mah_cm2=last.delith_mah_cm2,
        retention_pct=None if last.retention is None else 100.0 * last.retention,
        fade_pct_per_cycle=tab.fade_pct_per_cycle,
        last_delith_mah_cm3=last.delith_mah_cm3,
        last_delith_mah_cm3_lithiated=_lithiated_mah_cm3(
            last.delith_mah_cm2, last.delith_mah_g, film_params(film)
        ),
    )
    ce_from = ce_start(ref, [r.cycle for r in tab.rows])
    ces = [r.ce for r in tab.rows if r.cycle >= ce_from]
    m["mean_ce_pct"] = 100.0 * sum(ces) / len(ces) if ces else None
    m["mean_ce_span"] = (ce_from, last.cycle)
    # dQ/dV peaks, tracked cycle by cycle from the reference cycle to the last
    if last.cycle > ref:
        try:
            rows = an.peak_table(run, range(ref, last.cycle + 1), hcs=hcs)
            d = an.peak_drift(rows)
        except Exception as e:  # analysis trouble is a finding, not a crash
            m["notes"].append(f"dQ/dV peaks: {type(e).__name__}: {e}")
            d = None
        if d is not None:
            m.update(
                peak_lith_drift_mv=d.lith_mv,
                peak_delith_drift_mv=d.delith_mv,
                peak_separation_growth_mv=d.separation_mv,
                peak_span=(d.first_cycle, d.last_cycle),
            )
            pr = {r.cycle: r for r in rows}
            p0, p1 = pr.get(d.first_cycle), pr.get(d.last_cycle)
            if p0 is not None and p1 is not None:
                m["peaks"] = (p0.lith_v, p0.delith_v, p1.lith_v, p1.delith_v)
    # current interrupt at the rest -> current boundaries
    r_ref = tab.row(ref)
    for kind in ("lith", "delith"):
        r0 = getattr(r_ref, f"r_{kind}_ohm") if r_ref is not None else None
        r1 = getattr(last, f"r_{kind}_ohm")
        if r0 is not None and r1 is not None:
            m[f"r_{kind}_ohm_cm2"] = (r0 * area, r1 * area)
            m[f"r_{kind}_growth_ohm_cm2"] = (r1 - r0) * area
    return m


def analyse_rate(db: Path) -> dict[float, tuple[float | None, float | None]]:
    """Delithiation capacity (mAh/g, mAh/cm²) per current density (mA/cm²)."""
    run = load_run(db)
    out: dict[float, tuple[float | None, float | None]] = {}
    for g in an.rate_capability(run):
        j = g.current_density_ma_cm2
        if j is None:
            continue
        nominal = min(T.RATE.discharge_ma_cm2, key=lambda x: abs(math.log(j / x)))
        out[nominal] = (g.delith_mah_g, g.delith_mah_cm2)
    return out


# ---- the cell model alone ---------------------------------------------------------------------
def _cc(cell: Any, i_a: float, v_stop: float, dt: float, r_comp: float, t_max: float) -> float:
    """Constant current until the (IR-compensated) cell voltage crosses v_stop; Ah moved, with
    the crossing interpolated inside the last step (the board checks its cutoffs every 0.1 s
    near a limit; a whole dt of overshoot would blur the small cycle-to-cycle differences)."""
    t = 0.0
    v = cell.voltage(i_a) + i_a * r_comp
    while t < t_max:
        v_prev = v
        cell.advance(i_a, dt)
        t += dt
        v = cell.voltage(i_a) + i_a * r_comp
        if (i_a > 0 and v <= v_stop) or (i_a < 0 and v >= v_stop):
            if v != v_prev:
                t -= dt * min(1.0, max(0.0, (v - v_stop) / (v - v_prev)))
            break
    return abs(i_a) * t / 3600.0


def model_cycling(film: str, cycles: int, rest_s: float, seed: int = 0) -> Metrics:
    """The cycling metrics from cells.py alone (0.1 mA/cm², 0.01–1.2 V vs Li)."""
    c = cells()
    p = film_params(film)
    cell = c.make_cell(film, seed)
    off = p["e_ce"]
    i = T.CYCLING.current_density_ma_cm2 * 1e-3 * p["area_cm2"]
    lo, hi = T.CYCLING.v_low_vs_li - off, T.CYCLING.v_high_vs_li - off
    mass_g, area = p["mass_g"], p["area_cm2"]
    ql: list[float] = []
    qd: list[float] = []
    rg: list[float] = []
    for _ in range(cycles):
        ql.append(_cc(cell, i, lo, MODEL_DT_S, 0.0, 1e6))
        cell.advance(0.0, rest_s)
        qd.append(_cc(cell, -i, hi, MODEL_DT_S, 0.0, 1e6))
        cell.advance(0.0, rest_s)
        rg.append(cell.r_grow * area)
    ref = T.CYCLING.reference_cycle if cycles >= T.CYCLING.reference_cycle else 1
    n = cycles
    ret = [qd[k] / qd[ref - 1] for k in range(ref - 1, n)]
    m: Metrics = {
        "first_delith_mah_g": 1e3 * qd[0] / mass_g,
        "first_delith_mah_cm2": 1e3 * qd[0] / area,
        "first_ce_pct": 100.0 * qd[0] / ql[0],
        "last_delith_mah_g": 1e3 * qd[-1] / mass_g,
        "last_delith_mah_cm2": 1e3 * qd[-1] / area,
        "retention_pct": 100.0 * qd[-1] / qd[ref - 1],
        "last_delith_mah_cm3": 1e3 * qd[-1] / area / (p["thickness_um"] * 1e-4),
        "r_lith_growth_ohm_cm2": rg[-1] - rg[ref - 1],
    }
    m["last_delith_mah_cm3_lithiated"] = _lithiated_mah_cm3(
        m["last_delith_mah_cm2"], m["last_delith_mah_g"], p
    )
    ce_from = ce_start(ref, list(range(1, n + 1)))
    ces = [qd[k] / ql[k] for k in range(ce_from - 1, n)]
    m["mean_ce_pct"] = 100.0 * sum(ces) / len(ces)
    if len(ret) >= 2:
        xs = list(range(ref, n + 1))
        ys = [100.0 * r for r in ret]
        xm, ym = sum(xs) / len(xs), sum(ys) / len(ys)
        sxx = sum((x - xm) ** 2 for x in xs)
        sxy = sum((x - xm) * (y - ym) for x, y in zip(xs, ys, strict=True))
        m["fade_pct_per_cycle"] = -sxy / sxx
    return m


def model_rate(
    film: str, cutoffs: Sequence[tuple[float, float, bool]], rest_s: float, seed: int = 0
) -> dict[float, tuple[float, float]]:
    """The rate test from cells.py alone: CC-CV lithiation at 0.1 mA/cm² to 0.01 V vs Li held
    to 1 µA/cm², delithiation at each rate to its (IR-corrected with 150 Ω·cm²) cutoff."""
    c = cells()
    p = film_params(film)
    cell = c.make_cell(film, seed)
    off, area, mass_g = p["e_ce"], p["area_cm2"], p["mass_g"]
    i_ch = T.RATE.charge_ma_cm2 * 1e-3 * area
    v_hold = T.RATE.hold_v_vs_li - off
    r_comp = T.RATE.ir_ohm_cm2 / area
    out: dict[float, tuple[float, float]] = {}
    for j, until_v, ir in cutoffs:
        _cc(cell, i_ch, v_hold, MODEL_DT_S, 0.0, 1e6)
        c.run_cv(cell, v_hold, T.RATE.hold_until_ua_cm2 * 1e-6 * area, MODEL_DT_S, 10 * i_ch)
        cell.advance(0.0, rest_s)
        dt = min(MODEL_DT_S, 3.0 / j)
        q = _cc(cell, -j * 1e-3 * area, until_v - off, dt, r_comp if ir else 0.0, 1e6)
        cell.advance(0.0, rest_s)
        out[j] = (1e3 * q / mass_g, 1e3 * q / area)
    return out


@dataclass
class RateModel:
    """The rate test from the cell model alone: with the schedule's cutoffs (what the board
    ran) and with the paper's 1.2 V vs Li at every rate (where the schedule had to differ)."""

    cutoff_v: dict[float, float]  # the schedule's IR-free cutoff vs Li per rate
    schedule: dict[float, tuple[float, float]]
    paper_cutoff: dict[float, tuple[float, float]]


def model_rate_both(film: str, toml_text: str, rest_s: float, seed: int = 0) -> RateModel:
    cut = rate_cutoffs(toml_text)
    paper_cut = [(j, T.CYCLING.v_high_vs_li, True) for j, _, _ in cut]
    return RateModel(
        cutoff_v={j: v for j, v, _ in cut},
        schedule=model_rate(film, cut, rest_s, seed),
        paper_cutoff=model_rate(film, paper_cut, rest_s, seed),
    )


# ---- tables -----------------------------------------------------------------------------------
def _f(x: Any, fmt: str) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return format(float(x), fmt)


def format_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()
) -> str:
    """A plain-text table with ' | ' between columns; the ``right`` columns right-aligned."""
    w = [max(len(str(r[k])) for r in [header, *rows]) for k in range(len(header))]

    def line(r: Sequence[str]) -> str:
        out = [c.rjust(w[k]) if k in right else c.ljust(w[k]) for k, c in enumerate(r)]
        return " | ".join(out).rstrip()

    sep = "-+-".join("-" * x for x in w)
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


@dataclass(frozen=True)
class Row:
    label: str
    metric: str
    fmt: str
    porous_only: bool = False


def cycling_rows(m: Metrics) -> list[Row]:
    ref = m.get("reference_cycle", T.CYCLING.reference_cycle)
    last = m.get("last_cycle", "N")
    ce0, ce1 = m.get("mean_ce_span", (ref, last))
    span = m.get("peak_span", (ref, last))
    return [
        Row(f"cycle {m.get('first_cycle', 1)} delithiation, mAh/g", "first_delith_mah_g", ".0f"),
        Row(
            f"cycle {m.get('first_cycle', 1)} delithiation, mAh/cm²",
            "first_delith_mah_cm2",
            ".3f",
        ),
        Row(f"cycle {m.get('first_cycle', 1)} CE, %", "first_ce_pct", ".2f"),
        Row(f"cycle {last} delithiation, mAh/g", "last_delith_mah_g", ".0f"),
        Row(f"cycle {last} delithiation, mAh/cm²", "last_delith_mah_cm2", ".3f"),
        Row(f"retention cycle {last} vs {ref}, %", "retention_pct", ".2f"),
        Row(f"mean CE cycles {ce0}–{ce1}, %", "mean_ce_pct", ".3f"),
        Row(f"fade rate cycles {ref}–{last}, %/cycle", "fade_pct_per_cycle", ".4f"),
        Row(f"cycle {last}, mAh/cm³ (pristine film)", "last_delith_mah_cm3", ".0f", True),
        Row(f"cycle {last}, mAh/cm³ (lithiated)", "last_delith_mah_cm3_lithiated", ".0f", True),
        Row(f"dQ/dV lith. peak drift {span[0]}→{span[1]}, mV", "peak_lith_drift_mv", "+.1f"),
        Row(f"dQ/dV delith. peak drift {span[0]}→{span[1]}, mV", "peak_delith_drift_mv", "+.1f"),
        Row(
            f"dQ/dV peak separation growth {span[0]}→{span[1]}, mV",
            "peak_separation_growth_mv",
            "+.1f",
        ),
        Row(f"R (rest→lith.) growth {ref}→{last}, Ω·cm²", "r_lith_growth_ohm_cm2", "+.1f"),
        Row(f"R (rest→delith.) growth {ref}→{last}, Ω·cm²", "r_delith_growth_ohm_cm2", "+.1f"),
    ]


def cycling_table(
    results: Mapping[str, Metrics], models: Mapping[str, Metrics], n_cycles: int
) -> str:
    header = ["film", "quantity", "paper", "ours", "model", "verdict", "note"]
    rows: list[list[str]] = []
    for film, m in results.items():
        if "error" in m:
            rows.append([film, "run failed", "", "–", "", "", str(m["error"])])
            continue
        done = int(m.get("cycles", 0))
        porous = bool(film_params(film)["porous"])
        mo = models.get(film, {})
        for r in cycling_rows(m):
            if r.porous_only and not porous:
                continue
            ours = m.get(r.metric)
            notes: list[str] = []
            if r.metric == "r_lith_growth_ohm_cm2" and "r_lith_ohm_cm2" in m:
                a, b = m["r_lith_ohm_cm2"]
                notes.append(f"{a:.0f} → {b:.0f} Ω·cm²")
            if r.metric == "r_delith_growth_ohm_cm2" and "r_delith_ohm_cm2" in m:
                a, b = m["r_delith_ohm_cm2"]
                notes.append(f"{a:.0f} → {b:.0f} Ω·cm²")
            if r.metric == "peak_separation_growth_mv" and "peaks" in m:
                l0, d0, l1, d1 = m["peaks"]
                notes.append(
                    f"lith/delith peaks {_f(l0, '.3f')}/{_f(d0, '.3f')} → "
                    f"{_f(l1, '.3f')}/{_f(d1, '.3f')} V vs Li"
                )
            if r.metric == "r_lith_growth_ohm_cm2":
                notes.append("model: R_grow only")
            tg = T.cycling_targets(film, r.metric)
            paper = "; ".join(t.text for t in tg)
            verdicts = []
            for t in tg:
                if t.at_cycle is not None and done < t.at_cycle:
                    verdicts.append(f"n/c ({done}<{t.at_cycle} cyc)")
                else:
                    verdicts.append(T.verdict(t, ours))
                if t.note:
                    notes.append(t.note)
            rows.append(
                [
                    film,
                    r.label,
                    paper,
                    _f(ours, r.fmt),
                    _f(mo.get(r.metric), r.fmt),
                    "; ".join(verdicts),
                    "; ".join(notes),
                ]
            )
    title = f"CYCLING (0.1 mA/cm², 0.01–1.2 V vs Li, {n_cycles} cycles asked)"
    return title + "\n" + format_table(header, rows, right=(2, 3, 4))


def rate_table(
    results: Mapping[str, dict[float, tuple[float | None, float | None]] | str],
    models: Mapping[str, RateModel],
    rates: Sequence[float],
) -> str:
    header = [
        "film",
        "mA/cm²",
        "paper",
        "ours mAh/g",
        "ours mAh/cm²",
        "model mAh/g",
        "model mAh/cm²",
        "verdict",
        "note",
    ]
    rows: list[list[str]] = []
    for film, res in results.items():
        if isinstance(res, str):
            rows.append([film, "run failed", "", "–", "–", "", "", res, ""])
            continue
        mo = models.get(film)
        for j in rates:
            g, a = res.get(j, (None, None))
            mg, ma = mo.schedule.get(j, (None, None)) if mo is not None else (None, None)
            note = ""
            cut = mo.cutoff_v.get(j) if mo is not None else None
            if mo is not None and cut is not None and cut != T.CYCLING.v_high_vs_li:
                pg, pa = mo.paper_cutoff.get(j, (None, None))
                note = (
                    f"cutoff {cut:g} V vs Li (board window); model at the paper's "
                    f"{T.CYCLING.v_high_vs_li:g} V: {_f(pg, '.0f')} mAh/g, {_f(pa, '.3f')} mAh/cm²"
                )
            tg_g = T.rate_targets(film, "rate_mah_g", j)
            tg_a = T.rate_targets(film, "rate_mah_cm2", j)
            paper = "; ".join([f"{t.text} {t.unit}" for t in tg_g + tg_a])
            verdicts = [T.verdict(t, g) for t in tg_g] + [T.verdict(t, a) for t in tg_a]
            rows.append(
                [
                    film,
                    f"{j:g}",
                    paper,
                    _f(g, ".0f"),
                    _f(a, ".3f"),
                    _f(mg, ".0f"),
                    _f(ma, ".3f"),
                    "; ".join(verdicts),
                    note,
                ]
            )
    title = (
        "RATE (CC–CV lithiation 0.1 mA/cm² to 0.01 V vs Li, held to 1 µA/cm²; delithiation "
        "to IR-free cutoffs, 150 Ω·cm²)"
    )
    return title + "\n" + format_table(header, rows, right=(1, 3, 4, 5, 6))


def speed_table(results: Sequence[JobResult]) -> str:
    header = [
        "film",
        "protocol",
        "state",
        "cycles",
        "test time / h",
        "wall / s",
        "sim-s/wall-s",
        "samples",
    ]
    rows = []
    for r in results:
        s = r.summary
        rows.append(
            [
                r.job.film,
                r.job.protocol,
                (s.state + (f" ({s.end_reason})" if s.end_reason else ""))
                if s
                else (f"error: {r.error}" if r.error else "–"),
                str(s.complete_cycles) if s else "–",
                _f(None if r.sim_s is None else r.sim_s / 3600.0, ".1f"),
                _f(r.wall_s, ".0f"),
                _f(r.speed, ".0f"),
                str(s.samples) if s else "–",
            ]
        )
    return "SPEED (wall time from port open to the last record stored)\n" + format_table(
        header, rows, right=(3, 4, 5, 6, 7)
    )


def shortened_notes(
    n_cycles: int, rest_min: float | None, rates: Sequence[float] | None, rate: bool
) -> list[str]:
    out: list[str] = []
    full = T.CYCLING.cycles
    if 0 < n_cycles < full:
        nc = sorted(
            {
                f"{t.text} {t.unit} ({t.metric})"
                for t in T.CYCLING_TARGETS
                if t.at_cycle is not None and t.at_cycle > n_cycles
            }
        )
        out.append(
            f"SHORTENED RUN: {n_cycles} of the paper's {full} cycles. Not comparable with the "
            f"paper (marked n/c): its after-{full}-cycle figures: " + ", ".join(nc) + ". "
            "Retention, fade and mean CE here are over the cycles run; comparable: the "
            "first-cycle capacities."
        )
    if rest_min is not None and rest_min != 60.0:
        out.append(
            f"SHORTENED RESTS: {rest_min:g} min instead of the paper's 1 h (the relaxation "
            "before each half-cycle is shorter; capacities shift slightly)."
        )
    if rate and rates is not None:
        left = [j for j in T.RATE.discharge_ma_cm2 if not _in(j, rates)]
        if left:
            out.append(
                "SHORTENED RATE TEST: delithiation at "
                + ", ".join(f"{j:g}" for j in rates)
                + " mA/cm² only (the paper also has "
                + ", ".join(f"{j:g}" for j in left)
                + "); each rate's lithiation follows the previous rate's delithiation."
            )
    return out


# ---- main -------------------------------------------------------------------------------------
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


def parse_args(argv: Sequence[str] | None = None) -> Args:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--films", default=",".join(T.FILMS), help="comma-separated film names")
    ap.add_argument(
        "--cycles", type=int, default=T.CYCLING.cycles, help="cycling: cycles (0 = no cycling)"
    )
    ap.add_argument("--rate", action="store_true", help="also run the rate test")
    ap.add_argument("--jobs", type=int, default=2, help="boards at once (default 2)")
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
    )


def make_jobs(a: Args, dbdir: Path, stamp: str) -> list[Job]:
    jobs: list[Job] = []
    for film in a.films:
        specs: list[tuple[str, str]] = []
        if a.cycles > 0:
            specs.append(("cycling", cycling_toml(film, a.cycles, a.rest_min)))
        if a.rate:
            specs.append(("rate", rate_toml(film, a.rates, a.rest_min)))
        for proto, text in specs:
            sch = parse_schedule(text, f"<{film} {proto}>")
            sch.compile()  # a schedule the board would refuse fails here, before any board
            est = sch.estimate_duration_s() or 0.0
            db = dbdir / f"{film}-{proto}-{stamp}.sqlite"
            jobs.append(Job(film, proto, text, db, est))
    return jobs


def toml_cycles(text: str) -> int:
    """The cycle count of a schedule: its loop's count (1 without a loop)."""
    loops = [st for st in tomllib.loads(text)["step"] if st.get("kind") == "loop"]
    return int(loops[0]["count"]) if loops else 1


def toml_rest_s(text: str) -> float:
    """The rest length of a schedule (its first rest step), s."""
    for st in tomllib.loads(text)["step"]:
        if st.get("kind") == "rest":
            d = _duration_s(st)
            if d is not None:
                return d
    return 3600.0


def compute_models(
    jobs: Sequence[Job], seed: int, model_c: dict[str, Metrics], model_r: dict[str, RateModel]
) -> None:
    """The cell model alone on each job's protocol (its cycle count, rests and cutoffs)."""
    for j in jobs:
        try:
            rest_s = toml_rest_s(j.toml)
            if j.protocol == "cycling":
                model_c[j.film] = model_cycling(j.film, toml_cycles(j.toml), rest_s, seed)
            else:
                model_r[j.film] = model_rate_both(j.film, j.toml, rest_s, seed)
        except Exception as e:
            _err(f"[{j.tag}] model alone failed: {type(e).__name__}: {e}")


def analyse_only(paths: Sequence[Path], model: bool) -> int:
    """Print the tables for run databases written by this bench (no emulator)."""
    results: list[JobResult] = []
    seeds = set()
    for p in paths:
        meta = load_run(p).meta
        film, proto, text = meta.get("film"), meta.get("protocol"), meta.get("schedule_toml")
        if not (isinstance(film, str) and isinstance(proto, str) and isinstance(text, str)):
            _err(f"{p}: not a bench/paper.py run (no film/protocol/schedule in its metadata)")
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


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    if a.analyse:
        return analyse_only(a.analyse, a.model)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _sigterm)
    t_start = time.monotonic()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    tmp = Path(tempfile.mkdtemp(prefix="sicell-paper-"))
    prev_rt = os.environ.get(launcher.RUNTIME_ENV)
    if prev_rt:
        rdir = Path(prev_rt)  # the caller's runtime directory (a test's private one)
    else:
        rdir = tmp / "rt"  # else a private one: our own emulator registry
        rdir.mkdir()
        os.environ[launcher.RUNTIME_ENV] = str(rdir)
    dbdir = a.out if a.out is not None else tmp / "runs"
    dbdir.mkdir(parents=True, exist_ok=True)
    keep_tmp = a.keep and a.out is None
    jobs: list[Job] = []
    try:
        jobs = make_jobs(a, dbdir, stamp)
        _err(
            f"paper.py: {len(jobs)} runs on up to {a.jobs} emulated boards; "
            f"{sum(j.estimate_s for j in jobs) / 3600:,.0f} simulated h by the schedules' "
            f"estimates; databases in {dbdir}"
        )
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
            _err(
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
                except Exception as e:
                    print(f"report failed: {type(e).__name__}: {e}")
            print(f"databases: {a.out}")
        elif keep_tmp:
            print(f"databases kept in {dbdir}")
        return 0 if all(r.error is None for r in results) else 1
    finally:
        for j in jobs:
            _reap(j.board, rdir)  # only the boards this run started
        if not prev_rt:
            os.environ.pop(launcher.RUNTIME_ENV, None)
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
    rate: dict[str, dict[float, tuple[float | None, float | None]] | str] = {}
    notes: list[str] = []
    for r in results:
        ok = r.error is None and r.job.db.exists()
        if r.job.protocol == "cycling":
            if not ok:
                cyc[r.job.film] = {"error": r.error or "no database"}
                continue
            try:
                cyc[r.job.film] = analyse_cycling(r.job.db, r.job.film)
            except Exception as e:
                cyc[r.job.film] = {"error": f"analysis: {type(e).__name__}: {e}"}
                continue
            for n in cyc[r.job.film].get("notes", []):
                notes.append(f"{r.job.film} cycling: {n}")
            s = r.summary
            if s is not None and (s.state != "done" or s.lost_seqs or s.decimated):
                notes.append(
                    f"{r.job.film} cycling: state {s.state} ({s.end_reason}), "
                    f"{s.lost_seqs} lost, {s.decimated} decimated records"
                )
        else:
            if not ok:
                rate[r.job.film] = r.error or "no database"
                continue
            try:
                rate[r.job.film] = analyse_rate(r.job.db)
            except Exception as e:
                rate[r.job.film] = f"analysis: {type(e).__name__}: {e}"
            s = r.summary
            if s is not None and (s.state != "done" or s.lost_seqs or s.decimated):
                notes.append(
                    f"{r.job.film} rate: state {s.state} ({s.end_reason}), "
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
