"""A self-contained HTML report of one or more runs (``sicell report RUN...``).

``write_report`` loads each run database, writes the figures as PNGs and each run's full cycle
table as CSV into ``out_dir``, and one HTML page (inline CSS, no scripts, images referenced by
relative path) with the cycle summary, fade rate, Coulombic efficiency, resistance and dQ/dV
peak drift.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from . import analysis as an
from . import plots
from .rundata import RunData, load_run

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: .88em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
figure { display: inline-block; margin: .5em 1em .5em 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #555; }
.note { color: #8a5a00; font-size: .9em; } .muted { color: #666; font-size: .9em; }
details > summary { cursor: pointer; margin: .4em 0; }
"""


def _fmt(x: Any, fmt: str = ".4g", unit: str = "") -> str:
    if x is None:
        return "–"
    if isinstance(x, float) and not math.isfinite(x):
        return "–"
    if isinstance(x, int | np.integer) and not isinstance(x, bool):
        s = str(int(x))
    elif isinstance(x, float | np.floating):
        s = format(float(x), fmt)
    else:
        s = str(x)
    return f"{s} {unit}".strip() if unit else s


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 0) -> str:
    """An HTML table; the first ``left`` columns are left-aligned. Cells are escaped."""

    def cell(tag: str, k: int, text: str) -> str:
        cls = ' class="l"' if k < left else ""
        return f"<{tag}{cls}>{html.escape(text)}</{tag}>"

    out = ["<table>"]
    if any(header):
        out.append("<tr>" + "".join(cell("th", k, h) for k, h in enumerate(header)) + "</tr>")
    for r in rows:
        out.append("<tr>" + "".join(cell("td", k, c) for k, c in enumerate(r)) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")
    return s or "run"


@dataclass
class _RunResult:
    run: RunData
    slug: str
    label: str
    hcs: list[an.HalfCycle]
    table: an.CycleTable
    resistance: list[an.ResistancePoint]
    peaks: list[an.PeakRow]
    drift: an.PeakDrift | None
    rate: list[an.RateGroup]
    rate_test: bool
    dqdv_cycles: list[int]


def _analyse(
    run: RunData, slug: str, reference_cycle: int, dqdv_cycles: Sequence[int] | None
) -> _RunResult:
    hcs = an.half_cycles(run)
    table = an.cycle_table(run, reference_cycle=reference_cycle, hcs=hcs)
    res = an.current_interrupt(run, hcs=hcs)
    cycles_present = [r.cycle for r in table.rows]
    dq_cycles = (
        list(dqdv_cycles) if dqdv_cycles is not None else an.default_dqdv_cycles(cycles_present)
    )
    peaks = an.peak_table(run, dq_cycles, hcs=hcs)
    return _RunResult(
        run=run,
        slug=slug,
        label=run.name,
        hcs=hcs,
        table=table,
        resistance=res,
        peaks=peaks,
        drift=an.peak_drift(peaks),
        rate=an.rate_capability(run, hcs=hcs),
        rate_test=an.is_rate_test(run, hcs=hcs),
        dqdv_cycles=dq_cycles,
    )


def _cap_unit(run: RunData) -> tuple[str, str]:
    """(attribute suffix, unit label) of the run's most specific capacity."""
    if run.mass_g is not None:
        return "_mah_g", "mAh/g"
    if run.area_cm2 is not None:
        return "_mah_cm2", "mAh/cm²"
    return "_mah", "mAh"


def _overview(results: Sequence[_RunResult]) -> str:
    header = [
        "run",
        "cycles",
        "first delith.",
        "ref. cycle",
        "ref. delith.",
        "last delith.",
        "retention",
        "fade %/cycle",
        "mean CE",
        "to 90 %",
        "to 80 %",
        "R median",
        "peak sep. drift",
    ]
    rows = []
    for r in results:
        t = r.table
        suf, unit = _cap_unit(r.run)
        first = getattr(t.rows[0], "delith" + suf) if t.rows else None
        last = getattr(t.rows[-1], "delith" + suf) if t.rows else None
        ref_row = t.row(t.reference_cycle) if t.reference_cycle is not None else None
        ref_cap = getattr(ref_row, "delith" + suf) if ref_row is not None else None
        rs = [p.r_ohm for p in r.resistance]
        r_med = float(np.median(rs)) if rs else None
        area = r.run.area_cm2
        r_txt = _fmt(r_med, ".0f", "Ω")
        if r_med is not None and area is not None:
            r_txt += f" ({r_med * area:.0f} Ω·cm²)"
        rows.append(
            [
                r.label,
                str(len(t)),
                _fmt(first, ".1f", unit),
                _fmt(t.reference_cycle),
                _fmt(ref_cap, ".1f", unit),
                _fmt(last, ".1f", unit),
                _fmt(None if t.final_retention is None else 100 * t.final_retention, ".2f", "%"),
                _fmt(t.fade_pct_per_cycle, ".4f"),
                _fmt(None if t.mean_ce is None else 100 * t.mean_ce, ".3f", "%"),
                _fmt(t.cycles_to_90) if t.cycles_to_90 is not None else "not reached",
                _fmt(t.cycles_to_80) if t.cycles_to_80 is not None else "not reached",
                r_txt,
                _fmt(None if r.drift is None else r.drift.separation_mv, ".1f", "mV"),
            ]
        )
    return _table(header, rows, left=1)


def _meta_table(run: RunData) -> str:
    m = run.meta
    items = [
        ("file", str(run.path) if run.path is not None else "–"),
        ("cell", _fmt(m.get("cell"))),
        ("started", _fmt(m.get("started_at"))),
        ("reference electrode", _fmt(m.get("reference_electrode"))),
        ("reference offset", _fmt(run.reference_offset_v, ".3f", "V vs Li+/Li")),
        ("area", _fmt(run.area_cm2, ".4g", "cm²")),
        ("active mass", _fmt(run.mass_mg, ".4g", "mg")),
        ("mass loading", _fmt(run.loading_mg_cm2, ".3g", "mg/cm²")),
        ("thickness", _fmt(run.thickness_um, ".3g", "µm")),
        ("density", _fmt(run.density_g_cm3, ".3g", "g/cm³")),
        ("firmware", _fmt(m.get("firmware_version"))),
        ("board", _fmt(m.get("board_id"))),
        ("samples", str(len(run))),
    ]
    return _table(["", ""], [[k, v] for k, v in items], left=2)


def _resistance_table(r: _RunResult) -> str:
    by: dict[int, dict[str, an.ResistancePoint]] = {}
    for p in r.resistance:
        by.setdefault(p.cycle, {}).setdefault(p.kind, p)
    if not by:
        return '<p class="muted">No rest → current boundary found.</p>'
    area = r.run.area_cm2
    rows = []
    for c in sorted(by):
        d = by[c]
        lp, dp = d.get(an.LITH), d.get(an.DELITH)
        windows = [p.window_s for p in d.values()]
        rows.append(
            [
                str(c),
                _fmt(None if lp is None else lp.r_ohm, ".1f"),
                _fmt(None if dp is None else dp.r_ohm, ".1f"),
                _fmt(None if lp is None or area is None else lp.r_ohm * area, ".1f"),
                _fmt(None if dp is None or area is None else dp.r_ohm * area, ".1f"),
                _fmt(max(windows), ".3g"),
            ]
        )
    header = ["cycle", "R lith / Ω", "R delith / Ω", "lith / Ω·cm²", "delith / Ω·cm²", "window / s"]
    note = (
        '<p class="muted">Current interrupt: R = −ΔV/ΔI between the last rest sample and the '
        "first sample of the current step; the window is the time between them.</p>"
    )
    return note + _details(f"Resistance per cycle ({len(rows)} cycles)", _table(header, rows))


def _crosscheck_section(t: an.CycleTable) -> str:
    """The board's count against the samples' integral: the half-cycles that differ by more
    than 0.1 % and the stretches not integrated across (nothing when both are empty)."""
    out = []
    if t.discrepancies:
        rows = [
            [
                str(d.cycle),
                d.kind,
                _fmt(1e3 * d.board_ah, ".6g"),
                _fmt(1e3 * d.integral_ah, ".6g"),
                _fmt(100.0 * d.rel, "+.3f"),
            ]
            for d in t.discrepancies
        ]
        header = ["cycle", "half-cycle", "board / mAh", "integral / mAh", "difference / %"]
        out.append(
            "<p class=\"note\">The samples' integral differs from the board's coulomb count by "
            "more than 0.1 % here (capacities are the board's count):</p>" + _table(header, rows)
        )
    if t.skipped:
        rows = [
            [
                str(s.cycle),
                s.kind,
                str(s.step),
                _fmt(s.t_start_s, ".1f"),
                _fmt(s.duration_s, ".1f"),
                s.reason,
            ]
            for s in t.skipped
        ]
        header = ["cycle", "half-cycle", "step", "from / s", "for / s", "why"]
        out.append(
            _details(
                f"Stretches not integrated across ({len(rows)}; the board's count covers them)",
                _table(header, rows, left=0),
            )
        )
    return "\n".join(out)


def _details(summary: str, body: str, open_: bool = False) -> str:
    o = " open" if open_ else ""
    return f"<details{o}><summary>{html.escape(summary)}</summary>\n{body}\n</details>"


def _peak_section(r: _RunResult) -> str:
    if not r.peaks:
        return '<p class="muted">No dQ/dV peaks found.</p>'
    rows = []
    for p in r.peaks:
        rows.append(
            [
                str(p.cycle),
                _fmt(p.lith_v, ".4f"),
                _fmt(p.lith_height, ".4g"),
                _fmt(p.delith_v, ".4f"),
                _fmt(p.delith_height, ".4g"),
                _fmt(p.separation_mv, ".1f"),
            ]
        )
    header = [
        "cycle",
        "lith. peak / V",
        "height",
        "delith. peak / V",
        "height",
        "separation / mV",
    ]
    out = _table(header, rows)
    d = r.drift
    if d is not None:

        def part(name: str, mv: float | None, sp: tuple[int, int] | None) -> str:
            if mv is None or sp is None:
                return f"{name} –"
            where = "" if sp == (d.first_cycle, d.last_cycle) else f" (cycles {sp[0]}–{sp[1]})"
            return f"{name} {mv:+.1f} mV{where}"

        out += (
            f"<p>Peak drift from cycle {d.first_cycle} to {d.last_cycle}: "
            + ", ".join(
                [
                    part("lithiation", d.lith_mv, d.lith_span),
                    part("delithiation", d.delith_mv, d.delith_span),
                    part("separation", d.separation_mv, d.separation_span),
                ]
            )
            + ".</p>"
            '<p class="muted">Each later cycle follows the peak nearest to the previous '
            "cycle's (a peak that moved past the cut-off is left blank).</p>"
        )
    return out


def _rate_section(r: _RunResult) -> str:
    suf, unit = _cap_unit(r.run)
    key = {"_mah_g": "delith_mah_g", "_mah_cm2": "delith_mah_cm2", "_mah": "delith_mah"}[suf]
    rows = [
        [
            _fmt(g.current_density_ma_cm2, ".3g"),
            _fmt(1e3 * g.current_a, ".4g"),
            ", ".join(map(str, g.cycles)),
            _fmt(g.delith_mah, ".4g"),
            _fmt(getattr(g, key), ".4g"),
            _fmt(g.delith_mah_cm2, ".4g"),
        ]
        for g in r.rate
    ]
    header = [
        "mA/cm²",
        "I / mA",
        "cycles",
        "delith. / mAh",
        f"delith. / {unit}",
        "delith. / mAh/cm²",
    ]
    return _table(header, rows)


def _figure(src: str, caption: str) -> str:
    return (
        f'<figure><img src="{html.escape(src)}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


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

    ``r_area_ohm_cm2`` sets the resistance subtracted from rate-test curves (the paper uses the
    electrolyte layer's ~150 Ω·cm²); by default each run's measured current-interrupt
    resistance is used.
    """
    paths = [Path(p) for p in run_paths]
    if not paths:
        raise ValueError("no run given")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    results: list[_RunResult] = []
    used: set[str] = set()
    for p in paths:
        run = load_run(p)
        slug = _slug(p.stem)
        base, k = slug, 2
        while slug in used:
            slug, k = f"{base}-{k}", k + 1
        used.add(slug)
        results.append(_analyse(run, slug, reference_cycle, dqdv_cycles))

    parts: list[str] = []
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts.append(f"<h1>{html.escape(title)}</h1>")
    parts.append(
        f'<p class="muted">Generated {now} from {len(results)} run(s). Conventions: positive '
        "current lithiates the Si working electrode; capacity accumulates per half-cycle and "
        "resets at each half-cycle start; a cycle is a lithiation and the delithiation after "
        "it (cycles counted from 1); capacities are the board's coulomb count (the samples' "
        "integral is its cross-check); CE = delithiation / lithiation capacity; retention is the "
        f"delithiation capacity relative to cycle {reference_cycle} (or the nearest available); "
        "fade rate = −slope of a least-squares line through retention (%) over the reference "
        "and later cycles. Potentials are of the working electrode vs Li+/Li.</p>"
    )
    parts.append("<h2>Overview</h2>")
    parts.append(_overview(results))
    cap_png = "capacity_ce.png"
    # Rate tests change the current every cycle: compare them only when nothing else is there.
    cyc = [r for r in results if not r.rate_test] or results
    plots.plot_capacity_ce(
        [r.run for r in cyc],
        labels=[r.label for r in cyc],
        tables=[r.table for r in cyc],
        path=out / cap_png,
    )
    parts.append(_figure(cap_png, "Capacity and Coulombic efficiency vs cycle"))

    for r in results:
        parts.append(f"<h2>{html.escape(r.label)}</h2>")
        parts.append(_meta_table(r.run))
        for note in r.table.notes:
            parts.append(f'<p class="note">{html.escape(note)}</p>')
        prof = f"{r.slug}_profiles.png"
        plots.plot_profiles(r.run, profile_cycles, hcs=r.hcs, path=out / prof)
        figs = [
            _figure(prof, f"Potential profiles, cycles {profile_cycles[0]}–{profile_cycles[-1]}")
        ]
        dq = f"{r.slug}_dqdv.png"
        plots.plot_dqdv(r.run, r.dqdv_cycles, hcs=r.hcs, path=out / dq)
        cyc_txt = ", ".join(map(str, r.dqdv_cycles)) or "none"
        figs.append(_figure(dq, f"dQ/dV, cycles {cyc_txt}"))
        if r.rate_test:
            rate = f"{r.slug}_rate.png"
            plots.plot_rate(r.run, r_area_ohm_cm2=r_area_ohm_cm2, hcs=r.hcs, path=out / rate)
            figs.append(_figure(rate, "Rate capability (IR-compensated delithiation curves)"))
        parts.append("\n".join(figs))

        parts.append("<h3>Cycle summary</h3>")
        s = r.table.summary()
        parts.append(_table(["", ""], [[k, v] for k, v in s.items()], left=2))
        csv_name = f"{r.slug}_cycles.csv"
        r.table.to_csv(out / csv_name)
        cols = list(an.SUMMARY_COLUMNS)
        rows = [r.table.format_row(row, cols) for row in r.table.rows]
        header = [_pretty(c) for c in cols]
        parts.append(
            _details(
                f"Cycle table ({len(rows)} cycles)",
                _table(header, rows)
                + f'<p class="muted">All columns: <a href="{html.escape(csv_name)}">'
                f"{html.escape(csv_name)}</a></p>",
                open_=len(rows) <= 30,
            )
        )
        parts.append(_crosscheck_section(r.table))
        parts.append("<h3>Resistance</h3>")
        parts.append(_resistance_table(r))
        parts.append("<h3>dQ/dV peaks</h3>")
        parts.append(_peak_section(r))
        if r.rate_test:
            parts.append("<h3>Rate capability</h3>")
            parts.append(_rate_section(r))

    doc = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(parts)
        + "\n</body>\n</html>\n"
    )
    html_path = out / "report.html"
    html_path.write_text(doc, encoding="utf-8")
    return html_path


_PRETTY = {
    "cycle": "cycle",
    "lith_mAh": "lith. / mAh",
    "delith_mAh": "delith. / mAh",
    "delith_mAh_g": "delith. / mAh/g",
    "delith_mAh_cm2": "delith. / mAh/cm²",
    "delith_mAh_cm3": "delith. / mAh/cm³",
    "ce_pct": "CE / %",
    "retention_pct": "retention / %",
    "delith_mean_we_V": "mean delith. E / V",
    "lith_mean_we_V": "mean lith. E / V",
    "r_lith_ohm": "R / Ω",
}


def _pretty(col: str) -> str:
    return _PRETTY.get(col, col)
