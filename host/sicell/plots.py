"""Paper-style figures of runs (matplotlib, no display needed).

Each function returns a ``matplotlib.figure.Figure`` built without pyplot (so nothing global
changes and nothing needs a GUI backend) and saves it as a PNG when ``path`` is given.
Potentials are the working electrode's vs Li+/Li when the run names a reference electrode,
else the cell voltage (a dummy load has no reference); capacities are normalised per gram
when the active mass is known, else per cm², else plain mAh. The helpers for what a figure
shows (``run_labels``, ``cycles_text``, ``profile_caption``, ``rate_caption``) give the words
the report's captions use, so a caption and its figure say the same.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from . import analysis as an
from .rundata import RunData

CapUnit = Literal["mAh/g", "mAh/cm²", "mAh"]
_CMAP = "viridis"
_DPI = 150
_LABEL_WIDTH = 48  # legend labels longer than this wrap
_TITLE_WIDTH = 64


def capacity_unit(runs: Sequence[RunData]) -> tuple[CapUnit, list[float]]:
    """The common capacity unit for ``runs`` and each run's factor from Ah to it."""
    if runs and all(r.mass_g is not None for r in runs):
        return "mAh/g", [1e3 / float(r.mass_g or 1.0) for r in runs]
    if runs and all(r.area_cm2 is not None for r in runs):
        return "mAh/cm²", [1e3 / float(r.area_cm2 or 1.0) for r in runs]
    return "mAh", [1e3 for _ in runs]


_UNIT_LABEL = {"mAh/g": "mAh g$^{-1}$", "mAh/cm²": "mAh cm$^{-2}$", "mAh": "mAh"}
_WE_LABEL = "Potential / V vs Li$^+$/Li"
_CELL_LABEL = "Cell voltage / V"


def potential_of(run: RunData) -> tuple[an.Potential, str]:
    """Which potential the figures draw and its axis label: the working electrode's vs Li+/Li
    when the run names a reference electrode, else the cell voltage."""
    if an.has_reference(run):
        return "we", _WE_LABEL
    return "cell", _CELL_LABEL


def _column(run: RunData, potential: an.Potential) -> Any:
    return run.we_v if potential == "we" else run.voltage_v


def run_labels(runs: Sequence[RunData]) -> list[str]:
    """One distinct label per run: its name (the ``cell`` metadata or the file's stem); where
    names repeat, the name with the board, else the database's stem, else its folder and stem,
    else the name numbered."""
    cands: list[list[str]] = []
    for r in runs:
        name = r.name
        board = r.meta.get("board_name") or r.meta.get("board_id")
        c = [name]
        if isinstance(board, str) and board.strip():
            c.append(f"{name} ({board.strip()})")
        if r.path is not None:
            c.append(r.path.stem)
            if r.path.parent.name:
                c.append(f"{r.path.parent.name}/{r.path.stem}")
        cands.append(list(dict.fromkeys(c)))
    pick = [0] * len(runs)
    for _ in range(5):
        labels = [c[k] for c, k in zip(cands, pick, strict=True)]
        dup = {s for s in labels if labels.count(s) > 1}
        if not dup:
            return labels
        moved = False
        for j, s in enumerate(labels):
            if s in dup and pick[j] + 1 < len(cands[j]):
                pick[j] += 1
                moved = True
        if not moved:
            break
    labels = [c[k] for c, k in zip(cands, pick, strict=True)]
    seen: dict[str, int] = {}
    out = []
    for s in labels:
        seen[s] = seen.get(s, 0) + 1
        out.append(s if labels.count(s) == 1 else f"{s} #{seen[s]}")
    return out


def cycles_text(cycles: Iterable[int]) -> str:
    """ "cycles 1–3", "cycle 2", "cycles 1, 3, 5" or "no cycles"."""
    cs = sorted(set(cycles))
    if not cs:
        return "no cycles"
    if len(cs) == 1:
        return f"cycle {cs[0]}"
    if cs == list(range(cs[0], cs[-1] + 1)):
        return f"cycles {cs[0]}–{cs[-1]}"
    return "cycles " + ", ".join(map(str, cs))


def profile_cycles(hcs: Sequence[an.HalfCycle], cycles: Iterable[int]) -> list[int]:
    """The ones of ``cycles`` the run has a half-cycle of (what ``plot_profiles`` draws)."""
    have = {h.cycle for h in hcs}
    return [c for c in dict.fromkeys(cycles) if c in have]


def profile_caption(hcs: Sequence[an.HalfCycle], cycles: Iterable[int]) -> str:
    """What ``plot_profiles`` draws: the cycles present, and those with one half-cycle only or
    one cut short."""
    present = profile_cycles(hcs, cycles)
    notes = []
    for c in present:
        kinds = [h for h in hcs if h.cycle == c]
        if {h.kind for h in kinds} != {an.LITH, an.DELITH}:
            only = "lithiation" if kinds[0].kind == an.LITH else "delithiation"
            notes.append(f"cycle {c}: {only} only")
        elif not all(h.complete for h in kinds):
            notes.append(f"cycle {c}: cut short")
    extra = f" ({'; '.join(notes)})" if notes else ""
    return f"Potential profiles, {cycles_text(present)}{extra}"


def rate_caption(curves: Sequence[an.RateCurve]) -> str:
    """What ``plot_rate``'s curves are: the resistance each uses and where it comes from, and
    which are physically impossible (drawn grey, dashed)."""
    if not curves:
        return "Rate capability: no delithiation curves"
    irs = {c.ir.text() for c in curves}
    if len(irs) == 1:
        what = f"delithiation curves {irs.pop()}"
    else:
        each = [f"{current_text(c)}: {c.ir.text()}" for c in curves]
        what = "delithiation curves " + "; ".join(each)
    bad = [c for c in curves if c.impossible]
    note = ""
    if bad:
        note = (
            "; grey dashed: physically impossible after the compensation (R too large): "
            + "; ".join(f"{current_text(c)}: {', '.join(c.problems)}" for c in bad)
        )
    return f"Rate capability: {what}{note}"


def current_text(c: an.RateCurve) -> str:
    """A rate curve's current: ``10 mA/cm²``, or ``5.67 mA`` without an area."""
    if c.current_density_ma_cm2 is not None:
        return f"{c.current_density_ma_cm2:.3g} mA/cm²"
    return f"{1e3 * c.current_a:.3g} mA"


def _wrap(text: str, width: int = _LABEL_WIDTH) -> str:
    return textwrap.fill(text, width, break_on_hyphens=False) if len(text) > width else text


def save(fig: Figure, path: str | Path | None) -> None:
    """Save ``fig`` as a PNG (parent folders created) when ``path`` is given."""
    if path is None:
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=_DPI, format="png")


def _colors(n: int) -> list[tuple[float, float, float, float]]:
    from matplotlib import colormaps

    cmap = colormaps[_CMAP]
    if n <= 0:
        return []
    if n == 1:
        return [cmap(0.15)]
    return [cmap(0.9 * k / (n - 1)) for k in range(n)]


def _run_colors(n: int) -> list[tuple[float, float, float, float]]:
    """Distinct colours for runs compared in one figure."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(k % 10) for k in range(n)]


def _no_data(ax: Axes, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


def _cell_axis(ax: Axes, run: RunData) -> None:
    """Right-hand axis with the cell voltage (vs the counter/reference electrode), for a run
    drawn vs Li+/Li whose reference is not Li itself."""
    off = run.reference_offset_v
    if off == 0.0 or not an.has_reference(run):
        return
    ref = run.meta.get("reference_electrode")
    name = ref if isinstance(ref, str) and ref else "CE"

    def to_cell(v: Any) -> Any:
        return np.asarray(v, dtype=np.float64) - off

    def to_we(v: Any) -> Any:
        return np.asarray(v, dtype=np.float64) + off

    sec = ax.secondary_yaxis("right", functions=(to_cell, to_we))
    sec.set_ylabel(f"Cell voltage / V vs {name}")


def plot_profiles(
    run: RunData,
    cycles: Sequence[int] = (1, 2, 3, 4, 5),
    *,
    path: str | Path | None = None,
    hcs: Sequence[an.HalfCycle] | None = None,
    title: str | None = None,
) -> Figure:
    """Potential profiles (lithiation and delithiation) of the given cycles that the run has:
    capacity on x, the potential (``potential_of``) on y."""
    if hcs is None:
        hcs = an.half_cycles(run)
    unit, (factor,) = capacity_unit([run])
    pot, ylabel = potential_of(run)
    col = _column(run, pot)
    fig = Figure(figsize=(6.0, 4.5), layout="constrained")
    ax = fig.add_subplot()
    present = profile_cycles(hcs, cycles)
    for color, c in zip(_colors(len(present)), present, strict=True):
        first = True
        for h in hcs:
            if h.cycle != c:
                continue
            ax.plot(
                h.q_ah * factor,
                col[h.idx],
                color=color,
                lw=1.4,
                ls="-" if h.kind == an.LITH else "--",
                label=f"cycle {c}" if first else None,
            )
            first = False
    if not present:
        _no_data(ax)
    ax.set_xlabel(f"Capacity / {_UNIT_LABEL[unit]}")
    ax.set_ylabel(ylabel)
    ax.set_xlim(left=0)
    _cell_axis(ax, run)
    if present:
        leg = ax.legend(frameon=False, title="— lith.  -- delith.", fontsize="small")
        leg.get_title().set_fontsize("small")
    text = title if title is not None else f"{run.name}: potential profiles"
    ax.set_title(_wrap(text, _TITLE_WIDTH))
    save(fig, path)
    return fig


def plot_capacity_ce(
    runs: Sequence[RunData],
    *,
    labels: Sequence[str] | None = None,
    path: str | Path | None = None,
    tables: Sequence[an.CycleTable] | None = None,
    reference_cycle: int = an.DEFAULT_REFERENCE_CYCLE,
) -> Figure:
    """Capacity (delithiation filled, lithiation open markers) and Coulombic efficiency vs
    cycle for one or more runs side by side, sharing the cycle axis (integer ticks). The CE
    axis holds every cycle's CE, the first one (SEI formation) included. One legend entry per
    run (``run_labels`` unless ``labels`` are given), below the axes inside the figure."""
    if tables is None:
        tables = [an.cycle_table(r, reference_cycle=reference_cycle) for r in runs]
    names = list(labels) if labels is not None else run_labels(runs)
    unit, _ = capacity_unit(runs)
    attr = {"mAh/g": "_mah_g", "mAh/cm²": "_mah_cm2", "mAh": "_mah"}[unit]
    fig = Figure(figsize=(6.5, 6.0), layout="constrained")
    ax_c, ax_e = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    all_ce: list[float] = []
    top = 0.0
    handles: list[Any] = []
    for color, t, name in zip(_run_colors(len(tables)), tables, names, strict=True):
        if not t.rows:
            continue
        cyc = t.cycles
        ms = 4 if len(cyc) <= 60 else 3
        (line,) = ax_c.plot(cyc, t.column("delith" + attr), "o", color=color, ms=ms)
        ax_c.plot(cyc, t.column("lith" + attr), "o", mfc="none", color=color, ms=ms, alpha=0.7)
        caps = np.concatenate([t.column("delith" + attr), t.column("lith" + attr)])
        caps = caps[np.isfinite(caps)]
        top = max([top, *caps.tolist()])
        ce = 100.0 * t.column("ce")
        ax_e.plot(cyc, ce, "o-", color=color, ms=ms - 1, lw=0.8)
        all_ce.extend(ce[np.isfinite(ce)].tolist())
        line.set_label(_wrap(name))
        handles.append(line)
    if not handles:
        _no_data(ax_c)
    ax_c.set_ylabel(f"Capacity / {_UNIT_LABEL[unit]}")
    ax_c.set_ylim(0.0, 1.08 * top if top > 0 else None)
    ax_e.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if handles:
        key = [
            Line2D([], [], marker="o", ls="none", color="0.3", label="delithiation"),
            Line2D([], [], marker="o", ls="none", mfc="none", color="0.3", label="lithiation"),
        ]
        ax_c.legend(handles=key, frameon=False, fontsize="small", loc="lower left")
        fig.legend(
            handles=handles,
            loc="outside lower center",
            frameon=False,
            fontsize="small",
            ncols=1 if len(handles) < 2 or any(len(n) > 30 for n in names) else 2,
        )
    ax_e.set_ylabel("Coulombic efficiency / %")
    ax_e.set_xlabel("Cycle number")
    if all_ce:
        lo, hi = min(all_ce), max(max(all_ce), 100.0)
        pad = max(0.05, 0.06 * (hi - lo))
        ax_e.set_ylim(lo - pad, hi + pad)
    ax_e.axhline(100.0, color="0.6", lw=0.6, ls=":")
    ax_c.set_title("Capacity and Coulombic efficiency")
    save(fig, path)
    return fig


def plot_dqdv(
    run: RunData,
    cycles: Sequence[int] | None = None,
    *,
    path: str | Path | None = None,
    hcs: Sequence[an.HalfCycle] | None = None,
    title: str | None = None,
    peaks: Sequence[an.PeakRow] | None = None,
    **dqdv_kwargs: Any,
) -> Figure:
    """dQ/dV vs the potential (``potential_of``) for cycles 20/40/60/80/100 (those present, or
    an even spread for shorter runs); lithiation negative, delithiation positive. Markers sit
    at the peak table's points: ``peaks`` (a ``peak_table`` of the same cycles) or, without
    it, ``peak_rows`` of the curves drawn."""
    if hcs is None:
        hcs = an.half_cycles(run)
    if cycles is None:
        cycles = an.default_dqdv_cycles(h.cycle for h in hcs if h.cycle >= 1)
    dqdv_kwargs.setdefault("smooth", "savgol")
    pot, xlabel = potential_of(run)
    dqdv_kwargs.setdefault("potential", pot)
    curves = an.dqdv_curves(run, cycles, hcs=hcs, **dqdv_kwargs)
    rows = list(peaks) if peaks is not None else an.peak_rows(curves)
    fig = Figure(figsize=(6.0, 4.5), layout="constrained")
    ax = fig.add_subplot()
    present = sorted({c.cycle for c in curves} | {r.cycle for r in rows})
    colors = dict(zip(present, _colors(len(present)), strict=True))
    seen: set[int] = set()
    for c in curves:
        ax.plot(
            c.potential_v,
            c.dqdv,
            color=colors[c.cycle],
            lw=1.3,
            label=None if c.cycle in seen else f"cycle {c.cycle}",
        )
        seen.add(c.cycle)
    for r in rows:
        pts = [(r.lith_v, r.lith_height), (r.delith_v, r.delith_height)]
        xy = [(v, h) for v, h in pts if v is not None and h is not None]
        if xy:
            xs, ys = zip(*xy, strict=True)
            ax.plot(xs, ys, "o", color=colors[r.cycle], mfc="white", ms=5, gid=f"peaks {r.cycle}")
    if not curves:
        _no_data(ax)
        unit = "mAh V$^{-1}$"
    else:
        unit = curves[0].unit.replace("⁻¹", "$^{-1}$").replace("⁻²", "$^{-2}$")
    ax.axhline(0.0, color="0.6", lw=0.6)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"dQ/dV / {unit}")
    if curves:
        ax.legend(frameon=False, fontsize="small")
        ax.text(
            0.02,
            0.03,
            "lithiation < 0 < delithiation; ○ peaks of the table",
            transform=ax.transAxes,
            fontsize="x-small",
            color="0.4",
        )
    ax.set_title(_wrap(title if title is not None else f"{run.name}: dQ/dV", _TITLE_WIDTH))
    save(fig, path)
    return fig


def plot_rate(
    run: RunData,
    *,
    r_ohm: float | None = None,
    r_area_ohm_cm2: float | None = None,
    path: str | Path | None = None,
    hcs: Sequence[an.HalfCycle] | None = None,
    title: str | None = None,
    curves: Sequence[an.RateCurve] | None = None,
) -> Figure:
    """Rate capability: IR-free delithiation curves per current density (left; the resistance
    of each, ``analysis.ir_choices``, in the legend; a curve that the compensation made
    physically impossible grey and dashed, with a note) and delithiation capacity vs current
    density (right, log axis). ``curves`` (``rate_curves``) saves computing them again."""
    if hcs is None:
        hcs = an.half_cycles(run)
    pot, ylabel = potential_of(run)
    if curves is None:
        curves = an.rate_curves(
            run, r_ohm=r_ohm, r_area_ohm_cm2=r_area_ohm_cm2, potential=pot, hcs=hcs
        )
    groups = an.rate_capability(run, hcs=hcs)
    unit, (factor,) = capacity_unit([run])
    fig = Figure(figsize=(10.0, 4.2), layout="constrained")
    ax, ax_r = fig.subplots(1, 2, width_ratios=(3, 2))
    same_ir = len({c.ir.text() for c in curves}) == 1
    for color, c in zip(_colors(len(curves)), curves, strict=True):
        lab = current_text(c).replace("mA/cm²", "mA cm$^{-2}$")
        if not same_ir:
            lab += f", R = {c.ir.r_text()}"
        style: dict[str, Any] = {"lw": 1.4, "ls": "-", "color": color}
        if c.impossible:
            style = {"lw": 1.2, "ls": "--", "color": "0.55"}
            lab += " (impossible)"
        ax.plot(c.capacity_mah * factor / 1e3, c.potential_v, label=lab, **style)
    if curves:
        ax.legend(
            frameon=False,
            fontsize="small",
            title=_wrap(curves[0].ir.text(), 60) if same_ir else "IR-free, R per curve",
            title_fontsize="small",
        )
        if any(c.impossible for c in curves):
            ax.text(
                0.98,
                0.03,
                "grey dashed: physically impossible after\nIR compensation (R too large)",
                transform=ax.transAxes,
                ha="right",
                fontsize="x-small",
                color="#8a5a00",
            )
    else:
        _no_data(ax)
    ax.set_xlabel(f"Delithiation capacity / {_UNIT_LABEL[unit]}")
    ir_free = any(c.ir.source != "none" for c in curves)
    ax.set_ylabel(("IR-free " + ylabel[0].lower() + ylabel[1:]) if ir_free else ylabel)
    ax.set_xlim(left=0)
    if groups:
        use_density = all(g.current_density_ma_cm2 is not None for g in groups)
        x = np.array(
            [
                float(g.current_density_ma_cm2 or 0.0) if use_density else 1e3 * g.current_a
                for g in groups
            ]
        )
        y = np.array([g.delith_mah for g in groups]) * factor / 1e3
        ax_r.plot(x, y, "o-", color=_colors(1)[0])
        ax_r.set_xscale("log")
        ax_r.set_xlabel("Current density / mA cm$^{-2}$" if use_density else "Current / mA")
        ax_r.set_ylim(0.0, 1.1 * float(np.max(y)) if y.size and np.max(y) > 0 else None)
    else:
        _no_data(ax_r)
    ax_r.set_ylabel(f"Delithiation capacity / {_UNIT_LABEL[unit]}")
    fig.suptitle(_wrap(title if title is not None else f"{run.name}: rate capability", 90))
    save(fig, path)
    return fig
