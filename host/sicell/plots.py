"""Paper-style figures of runs (matplotlib, no display needed).

Each function returns a ``matplotlib.figure.Figure`` built without pyplot (so nothing global
changes and nothing needs a GUI backend) and saves it as a PNG when ``path`` is given.
Potentials are the working electrode's vs Li+/Li; capacities are normalised per gram when the
active mass is known, else per cm², else plain mAh.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from . import analysis as an
from .rundata import RunData

CapUnit = Literal["mAh/g", "mAh/cm²", "mAh"]
_CMAP = "viridis"
_DPI = 150


def capacity_unit(runs: Sequence[RunData]) -> tuple[CapUnit, list[float]]:
    """The common capacity unit for ``runs`` and each run's factor from Ah to it."""
    if runs and all(r.mass_g is not None for r in runs):
        return "mAh/g", [1e3 / float(r.mass_g or 1.0) for r in runs]
    if runs and all(r.area_cm2 is not None for r in runs):
        return "mAh/cm²", [1e3 / float(r.area_cm2 or 1.0) for r in runs]
    return "mAh", [1e3 for _ in runs]


_UNIT_LABEL = {"mAh/g": "mAh g$^{-1}$", "mAh/cm²": "mAh cm$^{-2}$", "mAh": "mAh"}
_WE_LABEL = "Potential / V vs Li$^+$/Li"


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
    """Right-hand axis with the cell voltage (vs the counter/reference electrode)."""
    off = run.reference_offset_v
    if off == 0.0:
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
    """Potential profiles (lithiation and delithiation) of the given cycles: capacity on x,
    working-electrode potential vs Li+/Li on y."""
    if hcs is None:
        hcs = an.half_cycles(run)
    unit, (factor,) = capacity_unit([run])
    fig = Figure(figsize=(6.0, 4.5), layout="constrained")
    ax = fig.add_subplot()
    present = [c for c in cycles if any(h.cycle == c for h in hcs)]
    for color, c in zip(_colors(len(present)), present, strict=True):
        first = True
        for h in hcs:
            if h.cycle != c:
                continue
            ax.plot(
                h.q_ah * factor,
                run.we_v[h.idx],
                color=color,
                lw=1.4,
                ls="-" if h.kind == an.LITH else "--",
                label=f"cycle {c}" if first else None,
            )
            first = False
    if not present:
        _no_data(ax)
    ax.set_xlabel(f"Capacity / {_UNIT_LABEL[unit]}")
    ax.set_ylabel(_WE_LABEL)
    ax.set_xlim(left=0)
    _cell_axis(ax, run)
    if present:
        leg = ax.legend(frameon=False, title="— lith.  -- delith.", fontsize="small")
        leg.get_title().set_fontsize("small")
    ax.set_title(title if title is not None else f"{run.name}: potential profiles")
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
    cycle for one or more runs side by side, sharing the cycle axis."""
    if tables is None:
        tables = [an.cycle_table(r, reference_cycle=reference_cycle) for r in runs]
    names = list(labels) if labels is not None else [r.name for r in runs]
    unit, _ = capacity_unit(runs)
    attr = {"mAh/g": "_mah_g", "mAh/cm²": "_mah_cm2", "mAh": "_mah"}[unit]
    fig = Figure(figsize=(6.5, 6.0), layout="constrained")
    ax_c, ax_e = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    ce_vals: list[float] = []
    all_ce: list[float] = []
    any_rows = False
    for color, t, name in zip(_run_colors(len(tables)), tables, names, strict=True):
        if not t.rows:
            continue
        any_rows = True
        cyc = t.cycles
        ms = 4 if len(cyc) <= 60 else 3
        ax_c.plot(cyc, t.column("delith" + attr), "o", color=color, ms=ms, label=f"{name}")
        ax_c.plot(cyc, t.column("lith" + attr), "o", mfc="none", color=color, ms=ms, alpha=0.7)
        ce = 100.0 * t.column("ce")
        ax_e.plot(cyc, ce, "o-", color=color, ms=ms - 1, lw=0.8, label=name)
        ce_vals.extend(ce[1:].tolist() if len(ce) > 1 else ce.tolist())
        all_ce.extend(ce[np.isfinite(ce)].tolist())
    if not any_rows:
        _no_data(ax_c)
    ax_c.set_ylabel(f"Capacity / {_UNIT_LABEL[unit]}")
    ax_c.set_ylim(bottom=0)
    if any_rows:
        h, _ = ax_c.get_legend_handles_labels()
        from matplotlib.lines import Line2D

        h += [
            Line2D([], [], marker="o", ls="none", color="0.3", label="delithiation"),
            Line2D([], [], marker="o", ls="none", mfc="none", color="0.3", label="lithiation"),
        ]
        ax_c.legend(handles=h, frameon=False, fontsize="small", ncols=2)
    ax_e.set_ylabel("Coulombic efficiency / %")
    ax_e.set_xlabel("Cycle number")
    finite = np.array([v for v in ce_vals if np.isfinite(v)])
    if finite.size:
        # Zoom on the steady state: the first cycles' low CE (SEI) would flatten the rest.
        # The axis starts near the 10th percentile of cycles ≥ 2; points below are counted.
        hi = float(finite.max())
        lo = float(np.percentile(finite, 10))
        pad = max(0.05, 0.15 * (max(100.0, hi) - lo))
        bottom = lo - pad
        if float(finite.min()) >= bottom - pad:
            bottom = float(finite.min()) - pad
        ax_e.set_ylim(bottom, max(100.0, hi) + pad)
        n_below = int(np.sum(np.array(all_ce) < bottom))
        if n_below:
            ax_e.text(
                0.99,
                0.03,
                f"{n_below} point{'s' if n_below > 1 else ''} below the axis (early cycles)",
                transform=ax_e.transAxes,
                ha="right",
                fontsize="x-small",
                color="0.4",
            )
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
    **dqdv_kwargs: Any,
) -> Figure:
    """dQ/dV vs working-electrode potential for cycles 20/40/60/80/100 (those present, or an
    even spread for shorter runs); lithiation negative, delithiation positive."""
    if hcs is None:
        hcs = an.half_cycles(run)
    if cycles is None:
        cycles = an.default_dqdv_cycles(h.cycle for h in hcs if h.cycle >= 1)
    dqdv_kwargs.setdefault("smooth", "savgol")
    curves = an.dqdv_curves(run, cycles, hcs=hcs, **dqdv_kwargs)
    fig = Figure(figsize=(6.0, 4.5), layout="constrained")
    ax = fig.add_subplot()
    present = sorted({c.cycle for c in curves})
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
    if not curves:
        _no_data(ax)
        unit = "mAh V$^{-1}$"
    else:
        unit = curves[0].unit.replace("⁻¹", "$^{-1}$").replace("⁻²", "$^{-2}$")
    ax.axhline(0.0, color="0.6", lw=0.6)
    ax.set_xlabel(_WE_LABEL)
    ax.set_ylabel(f"dQ/dV / {unit}")
    if curves:
        ax.legend(frameon=False, fontsize="small")
        ax.text(
            0.02,
            0.03,
            "lithiation < 0 < delithiation",
            transform=ax.transAxes,
            fontsize="x-small",
            color="0.4",
        )
    ax.set_title(title if title is not None else f"{run.name}: dQ/dV")
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
) -> Figure:
    """Rate capability: IR-compensated delithiation curves per current density (left) and
    delithiation capacity vs current density (right, log axis)."""
    if hcs is None:
        hcs = an.half_cycles(run)
    curves = an.rate_curves(run, r_ohm=r_ohm, r_area_ohm_cm2=r_area_ohm_cm2, hcs=hcs)
    groups = an.rate_capability(run, hcs=hcs)
    unit, (factor,) = capacity_unit([run])
    fig = Figure(figsize=(10.0, 4.2), layout="constrained")
    ax, ax_r = fig.subplots(1, 2, width_ratios=(3, 2))
    for color, c in zip(_colors(len(curves)), curves, strict=True):
        lab = (
            f"{c.current_density_ma_cm2:g} mA cm$^{{-2}}$"
            if c.current_density_ma_cm2 is not None
            else f"{1e3 * c.current_a:.3g} mA"
        )
        ax.plot(c.capacity_mah * factor / 1e3, c.potential_v, color=color, lw=1.4, label=lab)
    if curves:
        r = curves[0].r_ohm
        area = run.area_cm2
        r_txt = f"IR-compensated, R = {r:.0f} Ω" + (
            f" ({r * area:.0f} Ω cm$^2$)" if area is not None else ""
        )
        ax.legend(frameon=False, fontsize="small", title=r_txt, title_fontsize="small")
    else:
        _no_data(ax)
    ax.set_xlabel(f"Delithiation capacity / {_UNIT_LABEL[unit]}")
    ax.set_ylabel(_WE_LABEL)
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
    fig.suptitle(title if title is not None else f"{run.name}: rate capability")
    save(fig, path)
    return fig
