"""A self-contained HTML report of one or more runs (``sicell report RUN...``).

``write_report`` loads and analyses every run database first (a database that is not a sicell
run fails here, before anything is written), then writes the figures as PNGs, each run's full
cycle table as CSV and one HTML page (inline CSS, no scripts, images referenced by relative
path) with the cycle summary, fade rate, Coulombic efficiency, resistance and dQ/dV peak drift
into a temporary folder beside ``out_dir`` and moves them into ``out_dir`` at the end: a report
that fails leaves nothing behind.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from . import analysis as an
from . import plots
from . import report_sections as sec
from .errors import UsageError
from .rundata import load_run


def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")
    return s or "run"


def write_report(
    run_paths: Sequence[str | Path],
    out_dir: str | Path,
    *,
    reference_cycle: int = an.DEFAULT_REFERENCE_CYCLE,
    profile_cycles: Sequence[int] = (1, 2, 3, 4, 5),
    dqdv_cycles: Sequence[int] | None = None,
    r_area_ohm_cm2: float | None = None,
    title: str = "sicell cycling report",
) -> Path:
    """Analyse the runs, write PNGs, CSVs and ``report.html`` into ``out_dir``; return the
    HTML path.

    Every run is loaded and analysed before anything is written (a database that is not a
    sicell run raises ``StoreSchemaError`` with nothing created); the files are written into a
    temporary folder beside ``out_dir`` and moved into it at the end (``report.html`` last), so
    a report that fails leaves nothing behind. An existing ``out_dir`` keeps files the report
    does not write.

    ``r_area_ohm_cm2`` sets the resistance subtracted from rate-test curves (the paper uses the
    electrolyte layer's ~150 Ω·cm²); by default each curve's follows ``analysis.ir_choices``
    (measured at its own start, else the schedule's).
    """
    paths = [Path(p) for p in run_paths]
    if not paths:
        raise ValueError("no run given")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder; expected a folder for the report")

    results: list[sec.RunResult] = []
    used: set[str] = set()
    for p in paths:
        run = load_run(p)
        slug = _slug(p.stem)
        base, k = slug, 2
        while slug in used:
            slug, k = f"{base}-{k}", k + 1
        used.add(slug)
        results.append(sec.analyse(run, slug, reference_cycle, dqdv_cycles, r_area_ohm_cm2))
    for r, label in zip(results, plots.run_labels([r.run for r in results]), strict=True):
        r.label = label

    created = _first_missing(out.parent)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent))
    try:
        _write(results, tmp, title, reference_cycle, profile_cycles)
        _publish(tmp, out)
    except BaseException:
        # leave nothing behind; a failure while cleaning up must not hide the one raised here
        shutil.rmtree(tmp, ignore_errors=True)
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
    return out / "report.html"


def _first_missing(folder: Path) -> Path | None:
    """The outermost of ``folder`` and its parents that does not exist (None: all do)."""
    missing = None
    p = folder.absolute()
    while not p.exists():
        missing = p
        if p.parent == p:
            break
        p = p.parent
    return missing


def _publish(tmp: Path, out: Path) -> None:
    """Move the finished report from ``tmp`` to ``out``: a rename when ``out`` does not exist,
    else file by file (``report.html`` last) into it."""
    if not out.exists():
        os.rename(tmp, out)
        return
    names = sorted(p.name for p in tmp.iterdir())
    names.sort(key=lambda n: n == "report.html")
    for name in names:
        os.replace(tmp / name, out / name)
    tmp.rmdir()


def _write(
    results: Sequence[sec.RunResult],
    out: Path,
    title: str,
    reference_cycle: int,
    profile_cycles: Sequence[int],
) -> None:
    """The report's files (PNGs, CSVs, report.html) into the folder ``out``."""
    parts: list[str] = []
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    refs = [an.has_reference(r.run) for r in results]
    if all(refs):
        pot_txt = "Potentials are of the working electrode vs Li+/Li."
    elif not any(refs):
        pot_txt = "Potentials are cell volts (no reference electrode)."
    else:
        pot_txt = (
            "Potentials are of the working electrode vs Li+/Li for runs with a reference "
            "electrode, cell volts for runs without one."
        )
    parts.append(f"<h1>{html.escape(title)}</h1>")
    parts.append(
        f'<p class="muted">Generated {now} from {len(results)} run(s). Conventions: positive '
        "current lithiates the Si working electrode; capacity accumulates per half-cycle and "
        "resets at each half-cycle start; a cycle is a lithiation and the delithiation after "
        "it (cycles counted from 1); capacities are the board's coulomb count (the samples' "
        "integral is its cross-check); CE = delithiation / lithiation capacity; retention is the "
        f"delithiation capacity relative to cycle {reference_cycle} (or the nearest available); "
        "fade rate = −slope of a least-squares line through retention (%) over the reference "
        f"and later cycles. {pot_txt}</p>"
    )
    parts.append("<h2>Overview</h2>")
    parts.append(sec.overview(results))
    cap_png = "capacity_ce.png"
    # Rate tests change the current every cycle: compare them only when nothing else is there.
    cyc = [r for r in results if not r.rate_test] or results
    plots.plot_capacity_ce(
        [r.run for r in cyc],
        labels=[r.label for r in cyc],
        tables=[r.table for r in cyc],
        path=out / cap_png,
    )
    shown = ", ".join(r.label for r in cyc)
    parts.append(
        sec.figure(
            cap_png,
            f"Capacity and Coulombic efficiency vs cycle ({shown}); open markers "
            "lithiation, filled delithiation",
        )
    )

    for r in results:
        parts.append(f"<h2>{html.escape(r.label)}</h2>")
        parts.append(sec.meta_table(r.run))
        for note in r.table.notes:
            parts.append(f'<p class="note">{html.escape(note)}</p>')
        prof = f"{r.slug}_profiles.png"
        plots.plot_profiles(r.run, profile_cycles, hcs=r.hcs, path=out / prof)
        figs = [sec.figure(prof, plots.profile_caption(r.hcs, profile_cycles))]
        dq = f"{r.slug}_dqdv.png"
        plots.plot_dqdv(r.run, r.dqdv_cycles, hcs=r.hcs, peaks=r.peaks, path=out / dq)
        drawn = plots.profile_cycles(r.hcs, r.dqdv_cycles)
        figs.append(sec.figure(dq, f"dQ/dV, {plots.cycles_text(drawn)}; ○ the peak table's peaks"))
        if r.rate_test:
            rate = f"{r.slug}_rate.png"
            plots.plot_rate(r.run, hcs=r.hcs, curves=r.rate_curves, path=out / rate)
            figs.append(sec.figure(rate, plots.rate_caption(r.rate_curves)))
        parts.append("\n".join(figs))

        parts.append("<h3>Cycle summary</h3>")
        s = r.table.summary()
        parts.append(sec.table(["", ""], [[k, v] for k, v in s.items()], left=2))
        csv_name = f"{r.slug}_cycles.csv"
        r.table.to_csv(out / csv_name)
        cols = list(an.SUMMARY_COLUMNS)
        rows = [r.table.format_row(row, cols) for row in r.table.rows]
        header = [sec.pretty(c) for c in cols]
        parts.append(
            sec.details(
                f"Cycle table ({len(rows)} cycles)",
                sec.table(header, rows)
                + f'<p class="muted">All columns: <a href="{html.escape(csv_name)}">'
                f"{html.escape(csv_name)}</a></p>",
                open_=len(rows) <= 30,
            )
        )
        parts.append(sec.crosscheck_section(r.table))
        parts.append("<h3>Resistance</h3>")
        parts.append(sec.resistance_table(r))
        parts.append("<h3>dQ/dV peaks</h3>")
        parts.append(sec.peak_section(r))
        if r.rate_test:
            parts.append("<h3>Rate capability</h3>")
            parts.append(sec.rate_section(r))

    doc = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{sec.CSS}</style>\n</head>\n<body>\n"
        + "\n".join(parts)
        + "\n</body>\n</html>\n"
    )
    (out / "report.html").write_text(doc, encoding="utf-8")
