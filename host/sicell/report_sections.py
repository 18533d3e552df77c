"""The report's pieces: each run's analysis for the report (``analyse``) and the HTML of its
sections (overview, run metadata, resistance, cross-check, dQ/dV peaks, rate capability),
with the small HTML helpers they share. ``sicell.report`` puts them on one page."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import analysis as an
from . import plots
from .rundata import RunData

CSS = """
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


def fmt(x: Any, fmt: str = ".4g", unit: str = "") -> str:
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


def table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 0) -> str:
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


@dataclass
class RunResult:
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
    rate_curves: list[an.RateCurve]


def analyse(
    run: RunData,
    slug: str,
    reference_cycle: int,
    dqdv_cycles: Sequence[int] | None,
    r_area_ohm_cm2: float | None,
) -> RunResult:
    hcs = an.half_cycles(run)
    table = an.cycle_table(run, reference_cycle=reference_cycle, hcs=hcs)
    res = an.current_interrupt(run, hcs=hcs)
    cycles_present = [r.cycle for r in table.rows]
    dq_cycles = (
        list(dqdv_cycles) if dqdv_cycles is not None else an.default_dqdv_cycles(cycles_present)
    )
    pot, _ = plots.potential_of(run)
    peaks = an.peak_table(run, dq_cycles, hcs=hcs, potential=pot)
    rate_test = an.is_rate_test(run, hcs=hcs)
    curves: list[an.RateCurve] = []
    if rate_test:
        curves = an.rate_curves(run, r_area_ohm_cm2=r_area_ohm_cm2, potential=pot, hcs=hcs)
    return RunResult(
        run=run,
        slug=slug,
        label=run.name,
        hcs=hcs,
        table=table,
        resistance=res,
        peaks=peaks,
        drift=an.peak_drift(peaks),
        rate=an.rate_capability(run, hcs=hcs),
        rate_test=rate_test,
        dqdv_cycles=dq_cycles,
        rate_curves=curves,
    )


def cap_unit(run: RunData) -> tuple[str, str]:
    """(attribute suffix, unit label) of the run's most specific capacity."""
    if run.mass_g is not None:
        return "_mah_g", "mAh/g"
    if run.area_cm2 is not None:
        return "_mah_cm2", "mAh/cm²"
    return "_mah", "mAh"


def overview(results: Sequence[RunResult]) -> str:
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
        suf, unit = cap_unit(r.run)
        first = getattr(t.rows[0], "delith" + suf) if t.rows else None
        last = getattr(t.rows[-1], "delith" + suf) if t.rows else None
        ref_row = t.row(t.reference_cycle) if t.reference_cycle is not None else None
        ref_cap = getattr(ref_row, "delith" + suf) if ref_row is not None else None
        rs = [p.r_ohm for p in r.resistance]
        r_med = float(np.median(rs)) if rs else None
        area = r.run.area_cm2
        r_txt = fmt(r_med, ".0f", "Ω")
        if r_med is not None and area is not None:
            r_txt += f" ({r_med * area:.0f} Ω·cm²)"
        rows.append(
            [
                r.label,
                str(len(t)),
                fmt(first, ".1f", unit),
                fmt(t.reference_cycle),
                fmt(ref_cap, ".1f", unit),
                fmt(last, ".1f", unit),
                fmt(None if t.final_retention is None else 100 * t.final_retention, ".2f", "%"),
                fmt(t.fade_pct_per_cycle, ".4f"),
                fmt(None if t.mean_ce is None else 100 * t.mean_ce, ".3f", "%"),
                fmt(t.cycles_to_90) if t.cycles_to_90 is not None else "not reached",
                fmt(t.cycles_to_80) if t.cycles_to_80 is not None else "not reached",
                r_txt,
                fmt(None if r.drift is None else r.drift.separation_mv, ".1f", "mV"),
            ]
        )
    return table(header, rows, left=1)


def meta_table(run: RunData) -> str:
    m = run.meta
    items = [
        ("file", str(run.path) if run.path is not None else "–"),
        ("cell", fmt(m.get("cell"))),
        ("started", fmt(m.get("started_at"))),
        ("reference electrode", fmt(m.get("reference_electrode"))),
        (
            "reference offset",
            fmt(run.reference_offset_v, ".3f", "V vs Li+/Li")
            if an.has_reference(run)
            else "– (no reference electrode: potentials are cell volts)",
        ),
        ("area", fmt(run.area_cm2, ".4g", "cm²")),
        ("active mass", fmt(run.mass_mg, ".4g", "mg")),
        ("mass loading", fmt(run.loading_mg_cm2, ".3g", "mg/cm²")),
        ("thickness", fmt(run.thickness_um, ".3g", "µm")),
        ("density", fmt(run.density_g_cm3, ".3g", "g/cm³")),
        ("firmware", fmt(m.get("firmware_version"))),
        ("board", fmt(m.get("board_id"))),
        ("samples", str(len(run))),
    ]
    return table(["", ""], [[k, v] for k, v in items], left=2)


def resistance_table(r: RunResult) -> str:
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
                fmt(None if lp is None else lp.r_ohm, ".1f"),
                fmt(None if dp is None else dp.r_ohm, ".1f"),
                fmt(None if lp is None or area is None else lp.r_ohm * area, ".1f"),
                fmt(None if dp is None or area is None else dp.r_ohm * area, ".1f"),
                fmt(max(windows), ".3g"),
            ]
        )
    header = ["cycle", "R lith / Ω", "R delith / Ω", "lith / Ω·cm²", "delith / Ω·cm²", "window / s"]
    note = (
        '<p class="muted">Current interrupt: R = −ΔV/ΔI between the last rest sample and the '
        "first sample of the current step; the window is the time between them.</p>"
    )
    return note + details(f"Resistance per cycle ({len(rows)} cycles)", table(header, rows))


def crosscheck_section(t: an.CycleTable) -> str:
    """The board's count against the samples' integral: the half-cycles that differ by more
    than 0.1 % and the stretches not integrated across (nothing when both are empty)."""
    out = []
    if t.discrepancies:
        rows = [
            [
                str(d.cycle),
                d.kind,
                fmt(1e3 * d.board_ah, ".6g"),
                fmt(1e3 * d.integral_ah, ".6g"),
                fmt(100.0 * d.rel, "+.3f"),
            ]
            for d in t.discrepancies
        ]
        header = ["cycle", "half-cycle", "board / mAh", "integral / mAh", "difference / %"]
        out.append(
            "<p class=\"note\">The samples' integral differs from the board's coulomb count by "
            "more than 0.1 % here (capacities are the board's count):</p>" + table(header, rows)
        )
    if t.skipped:
        rows = [
            [
                str(s.cycle),
                s.kind,
                str(s.step),
                fmt(s.t_start_s, ".1f"),
                fmt(s.duration_s, ".1f"),
                s.reason,
            ]
            for s in t.skipped
        ]
        header = ["cycle", "half-cycle", "step", "from / s", "for / s", "why"]
        out.append(
            details(
                f"Stretches not integrated across ({len(rows)}; the board's count covers them)",
                table(header, rows, left=0),
            )
        )
    return "\n".join(out)


def details(summary: str, body: str, open_: bool = False) -> str:
    o = " open" if open_ else ""
    return f"<details{o}><summary>{html.escape(summary)}</summary>\n{body}\n</details>"


def peak_section(r: RunResult) -> str:
    if not r.peaks:
        return '<p class="muted">No dQ/dV peaks found.</p>'
    rows = []
    for p in r.peaks:
        rows.append(
            [
                str(p.cycle),
                fmt(p.lith_v, ".4f"),
                fmt(p.lith_height, ".4g"),
                fmt(p.delith_v, ".4f"),
                fmt(p.delith_height, ".4g"),
                fmt(p.separation_mv, ".1f"),
            ]
        )
    unit = next((p.unit for p in r.peaks if p.unit), "mAh V⁻¹")
    vs = " vs Li" if an.has_reference(r.run) else " (cell)"
    header = [
        "cycle",
        f"lith. peak / V{vs}",
        f"lith. height / {unit}",
        f"delith. peak / V{vs}",
        f"delith. height / {unit}",
        "separation / mV",
    ]
    out = table(header, rows) + (
        '<p class="muted">The peaks marked ○ in the dQ/dV figure: the top of a Gaussian fitted '
        "to each peak (it may sit a little above the plotted points).</p>"
    )
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


def rate_section(r: RunResult) -> str:
    suf, unit = cap_unit(r.run)
    key = {"_mah_g": "delith_mah_g", "_mah_cm2": "delith_mah_cm2", "_mah": "delith_mah"}[suf]
    curve_of = {c.cycle: c for c in r.rate_curves}
    rows = []
    for g in r.rate:
        c = curve_of.get(g.cycles[0])
        rows.append(
            [
                fmt(g.current_density_ma_cm2, ".3g"),
                fmt(1e3 * g.current_a, ".4g"),
                ", ".join(map(str, g.cycles)),
                fmt(g.delith_mah, ".4g"),
                fmt(getattr(g, key), ".4g"),
                fmt(g.delith_mah_cm2, ".4g"),
                fmt(None if c is None else c.ir.r_ohm, ".4g"),
                fmt(None if c is None else c.ir.r_ohm_cm2, ".4g"),
                "–" if c is None else c.ir.source_text,
                "–" if c is None else ("impossible" if c.impossible else "ok"),
            ]
        )
    header = [
        "j / mA/cm²",
        "I / mA",
        "cycles",
        "delith. / mAh",
        f"delith. / {unit}",
        "delith. / mAh/cm²",
        "R / Ω",
        "R / Ω·cm²",
        "R from",
        "IR-free curve",
    ]
    out = table(header, rows)
    bad = [c for c in r.rate_curves if c.impossible]
    for c in bad:
        out += (
            f'<p class="note">The IR-free curve at {html.escape(plots.current_text(c))} (cycle '
            f"{c.cycle}, R = {html.escape(c.ir.r_text())}) is physically impossible: "
            f"{html.escape('; '.join(c.problems))}. R removes more than the current's "
            "instantaneous drop; the curve is drawn dashed and is not a result.</p>"
        )
    return out + (
        '<p class="muted">R of each IR-free curve: the current interrupt measured at that '
        "delithiation's own start where there is one, else the schedule's series resistance "
        "(the one its IR-corrected cutoffs used), unless the report was given one.</p>"
    )


def figure(src: str, caption: str) -> str:
    return (
        f'<figure><img src="{html.escape(src)}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


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


def pretty(col: str) -> str:
    return _PRETTY.get(col, col)
