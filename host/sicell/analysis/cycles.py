"""The per-cycle table: capacities, CE, retention, energies, resistance, fade."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..rundata import FloatArray, RunData
from .common import DEFAULT_REFERENCE_CYCLE, DELITH, LITH, per_unit
from .crosscheck import Discrepancy, SkippedStretch
from .halfcycles import HalfCycle, half_cycles
from .resistance import current_interrupt


@dataclass(frozen=True)
class CycleRow:
    """One complete cycle (a lithiation and the delithiation after it). Capacities are
    positive, the board's coulomb count (``*_board_mah`` repeats it beside the samples'
    integral ``*_integral_mah``, the cross-check); ``ce`` = delithiation / lithiation;
    ``retention`` = delithiation capacity / the reference cycle's (fractions, not %)."""

    cycle: int
    lith_mah: float
    delith_mah: float
    lith_mah_g: float | None
    delith_mah_g: float | None
    lith_mah_cm2: float | None
    delith_mah_cm2: float | None
    lith_mah_cm3: float | None
    delith_mah_cm3: float | None
    ce: float
    retention: float | None
    lith_energy_we_mwh: float
    delith_energy_we_mwh: float
    lith_energy_cell_mwh: float
    delith_energy_cell_mwh: float
    lith_mean_we_v: float
    delith_mean_we_v: float
    lith_mean_cell_v: float
    delith_mean_cell_v: float
    lith_board_mah: float
    delith_board_mah: float
    lith_integral_mah: float
    delith_integral_mah: float
    r_lith_ohm: float | None
    r_delith_ohm: float | None
    delith_current_a: float


# CSV / markdown column name, row attribute, scale (None = no scaling), format
_COLUMNS: tuple[tuple[str, str, float, str], ...] = (
    ("cycle", "cycle", 1.0, "d"),
    ("lith_mAh", "lith_mah", 1.0, ".6g"),
    ("delith_mAh", "delith_mah", 1.0, ".6g"),
    ("lith_mAh_g", "lith_mah_g", 1.0, ".1f"),
    ("delith_mAh_g", "delith_mah_g", 1.0, ".1f"),
    ("lith_mAh_cm2", "lith_mah_cm2", 1.0, ".4f"),
    ("delith_mAh_cm2", "delith_mah_cm2", 1.0, ".4f"),
    ("lith_mAh_cm3", "lith_mah_cm3", 1.0, ".0f"),
    ("delith_mAh_cm3", "delith_mah_cm3", 1.0, ".0f"),
    ("ce_pct", "ce", 100.0, ".3f"),
    ("retention_pct", "retention", 100.0, ".2f"),
    ("lith_energy_we_mWh", "lith_energy_we_mwh", 1.0, ".6g"),
    ("delith_energy_we_mWh", "delith_energy_we_mwh", 1.0, ".6g"),
    ("lith_energy_cell_mWh", "lith_energy_cell_mwh", 1.0, ".6g"),
    ("delith_energy_cell_mWh", "delith_energy_cell_mwh", 1.0, ".6g"),
    ("lith_mean_we_V", "lith_mean_we_v", 1.0, ".4f"),
    ("delith_mean_we_V", "delith_mean_we_v", 1.0, ".4f"),
    ("lith_mean_cell_V", "lith_mean_cell_v", 1.0, ".4f"),
    ("delith_mean_cell_V", "delith_mean_cell_v", 1.0, ".4f"),
    ("lith_board_mAh", "lith_board_mah", 1.0, ".6g"),
    ("delith_board_mAh", "delith_board_mah", 1.0, ".6g"),
    ("lith_integral_mAh", "lith_integral_mah", 1.0, ".6g"),
    ("delith_integral_mAh", "delith_integral_mah", 1.0, ".6g"),
    ("r_lith_ohm", "r_lith_ohm", 1.0, ".1f"),
    ("r_delith_ohm", "r_delith_ohm", 1.0, ".1f"),
    ("delith_current_mA", "delith_current_a", 1e3, ".4g"),
)

# The columns a paper's table shows (markdown/HTML default).
SUMMARY_COLUMNS = (
    "cycle",
    "lith_mAh",
    "delith_mAh",
    "delith_mAh_g",
    "delith_mAh_cm2",
    "delith_mAh_cm3",
    "ce_pct",
    "retention_pct",
    "delith_mean_we_V",
    "lith_mean_we_V",
    "r_lith_ohm",
)


@dataclass(frozen=True)
class CycleTable:
    """The per-cycle table and the figures derived from it."""

    run_name: str
    rows: tuple[CycleRow, ...]
    requested_reference: int
    reference_cycle: int | None
    notes: tuple[str, ...]
    discrepancies: tuple[Discrepancy, ...] = ()  # board count vs samples' integral > 0.1 %
    skipped: tuple[SkippedStretch, ...] = ()  # where the samples' integral was not taken

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def cycles(self) -> NDArray[np.int64]:
        return np.array([r.cycle for r in self.rows], dtype=np.int64)

    def column(self, attr: str) -> FloatArray:
        """A row attribute as a float array (None → NaN)."""
        vals = [getattr(r, attr) for r in self.rows]
        return np.array([math.nan if v is None else float(v) for v in vals], dtype=np.float64)

    def row(self, cycle: int) -> CycleRow | None:
        for r in self.rows:
            if r.cycle == cycle:
                return r
        return None

    @property
    def mean_ce(self) -> float | None:
        """Mean Coulombic efficiency over cycles 2.. (cycle 1's irreversible loss excluded
        when later cycles exist)."""
        if not self.rows:
            return None
        ce = self.column("ce")
        if len(ce) > 1:
            ce = ce[1:]
        ce = ce[np.isfinite(ce)]
        return float(np.mean(ce)) if ce.size else None

    @property
    def final_retention(self) -> float | None:
        return self.rows[-1].retention if self.rows else None

    @cached_property
    def _after_reference(self) -> list[CycleRow]:
        """The reference cycle and the later ones (those with a retention)."""
        ref = self.reference_cycle
        if ref is None:
            return []
        return [r for r in self.rows if r.cycle >= ref and r.retention is not None]

    @cached_property
    def _fade_fit(self) -> tuple[float, tuple[int, int]] | None:
        """Minus the slope of retention (%) against cycle, fitted from the reference cycle on,
        and the first and last cycle of the fit (None with fewer than two cycles)."""
        after = self._after_reference
        if len(after) < 2:
            return None
        x = np.array([r.cycle for r in after], dtype=np.float64)
        y = np.array([100.0 * float(r.retention or 0.0) for r in after])
        slope = float(np.polyfit(x, y, 1)[0])
        return -slope, (after[0].cycle, after[-1].cycle)

    @property
    def fade_pct_per_cycle(self) -> float | None:
        return None if self._fade_fit is None else self._fade_fit[0]

    @property
    def fade_fit_cycles(self) -> tuple[int, int] | None:
        return None if self._fade_fit is None else self._fade_fit[1]

    def _cycles_to(self, retention: float) -> int | None:
        """The first cycle from the reference on whose retention is at or below ``retention``
        (a fraction; None when never reached)."""
        after = self._after_reference
        return next((r.cycle for r in after if (r.retention or 0.0) <= retention + 1e-12), None)

    @property
    def cycles_to_80(self) -> int | None:
        return self._cycles_to(0.8)

    @property
    def cycles_to_90(self) -> int | None:
        return self._cycles_to(0.9)

    def to_structured(self) -> NDArray[np.void]:
        """The table as a numpy structured array (None → NaN, cycle as int64)."""
        dt = np.dtype(
            [(f.name, np.int64 if f.name == "cycle" else np.float64) for f in fields(CycleRow)]
        )
        arr = np.zeros(len(self.rows), dtype=dt)
        for f in fields(CycleRow):
            if f.name == "cycle":
                arr[f.name] = self.cycles
            else:
                arr[f.name] = self.column(f.name)
        return arr

    def format_row(self, r: CycleRow, names: Sequence[str]) -> list[str]:
        """The row's cells for the named columns, formatted for people ("" when unknown)."""
        spec = {c[0]: c for c in _COLUMNS}
        out = []
        for name in names:
            _, attr, scale, fmt = spec[name]
            v = getattr(r, attr)
            if v is None or (isinstance(v, float) and not math.isfinite(v)):
                out.append("")
            elif fmt == "d":
                out.append(str(int(v)))
            else:
                out.append(format(float(v) * scale, fmt))
        return out

    def to_csv(self, path: str | Path | None = None, columns: Sequence[str] | None = None) -> str:
        """CSV text (all columns by default, units in the header); also written to ``path``."""
        names = list(columns) if columns is not None else [c[0] for c in _COLUMNS]
        spec = {c[0]: c for c in _COLUMNS}
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(names)
        for r in self.rows:
            row: list[str] = []
            for name in names:
                _, attr, scale, _fmt = spec[name]
                v = getattr(r, attr)
                if v is None:
                    row.append("")
                elif attr == "cycle":
                    row.append(str(v))
                else:
                    row.append(repr(float(v) * scale))
            w.writerow(row)
        text = buf.getvalue()
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def to_markdown(self, columns: Sequence[str] = SUMMARY_COLUMNS) -> str:
        """A GitHub-flavoured markdown table followed by the summary figures."""
        names = list(columns)
        lines = ["| " + " | ".join(names) + " |", "|" + "|".join("---:" for _ in names) + "|"]
        for r in self.rows:
            lines.append("| " + " | ".join(self.format_row(r, names)) + " |")
        lines.append("")
        for k, v in self.summary().items():
            lines.append(f"- {k}: {v}")
        return "\n".join(lines) + "\n"

    def summary(self) -> dict[str, str]:
        """Headline figures, formatted for people."""

        def pct(x: float | None, nd: int = 2) -> str:
            return "n/a" if x is None else f"{100.0 * x:.{nd}f} %"

        fade = (
            "n/a" if self.fade_pct_per_cycle is None else f"{self.fade_pct_per_cycle:.4f} %/cycle"
        )
        if self.fade_fit_cycles is not None:
            fade += f" (fit over cycles {self.fade_fit_cycles[0]}–{self.fade_fit_cycles[1]})"
        return {
            "complete cycles": str(len(self.rows)),
            "reference cycle": "n/a" if self.reference_cycle is None else str(self.reference_cycle),
            "fade rate": fade,
            "final retention": pct(self.final_retention),
            "mean CE (cycles ≥ 2)": pct(self.mean_ce, 3),
            "cycles to 90 %": "not reached"
            if self.cycles_to_90 is None
            else str(self.cycles_to_90),
            "cycles to 80 %": "not reached"
            if self.cycles_to_80 is None
            else str(self.cycles_to_80),
        }


def cycle_table(
    run: RunData,
    *,
    reference_cycle: int = DEFAULT_REFERENCE_CYCLE,
    hcs: Sequence[HalfCycle] | None = None,
) -> CycleTable:
    """Per-cycle capacities (mAh, mAh/g, mAh/cm², mAh/cm³), CE, retention, energy, mean
    potentials and current-interrupt resistance, with fade rate and cycles to 80/90 %.

    Retention is the delithiation (reversible) capacity relative to ``reference_cycle``; when
    that cycle is missing, the next complete cycle after it is used, and when the run is
    shorter, its first complete cycle (both noted). The fade rate is minus the slope of a
    linear least-squares fit of retention (%) against cycle over the reference and later
    cycles. Cycles to 80/90 % is the first cycle after the reference whose retention is at or
    below the threshold (None when never reached).

    Capacities are the board's count (``sicell.cyclemodel``); ``discrepancies`` lists the
    half-cycles whose samples' integral differs from it by more than 0.1 %, ``skipped`` where
    that integral was not taken (both also summed up in ``notes``).
    """
    if hcs is None:
        hcs = half_cycles(run)
    notes: list[str] = []
    by_cycle: dict[int, dict[str, list[HalfCycle]]] = {}
    for h in hcs:
        by_cycle.setdefault(h.cycle, {LITH: [], DELITH: []})[h.kind].append(h)
    if 0 in by_cycle:
        notes.append("delithiation before the first lithiation ignored (cycle 0)")
    r_pts = current_interrupt(run, hcs=hcs)
    r_first: dict[tuple[int, str], float] = {}
    for p in r_pts:
        r_first.setdefault((p.cycle, p.kind), p.r_ohm)

    m_g, area, vol = run.mass_g, run.area_cm2, run.volume_cm3
    raw: list[dict[str, Any]] = []
    for c in sorted(by_cycle):
        parts = by_cycle[c]
        if c < 1 or not parts[LITH] or not parts[DELITH]:
            continue
        if not all(h.complete for h in parts[LITH] + parts[DELITH]):
            continue
        lq = 1e3 * sum(h.capacity_ah for h in parts[LITH])
        dq = 1e3 * sum(h.capacity_ah for h in parts[DELITH])
        if lq <= 0 or dq <= 0:
            continue
        le_we = 1e3 * sum(h.energy_we_wh for h in parts[LITH])
        de_we = 1e3 * sum(h.energy_we_wh for h in parts[DELITH])
        le_c = 1e3 * sum(h.energy_cell_wh for h in parts[LITH])
        de_c = 1e3 * sum(h.energy_cell_wh for h in parts[DELITH])
        raw.append(
            dict(
                cycle=c,
                lith_mah=lq,
                delith_mah=dq,
                lith_mah_g=per_unit(lq, m_g),
                delith_mah_g=per_unit(dq, m_g),
                lith_mah_cm2=per_unit(lq, area),
                delith_mah_cm2=per_unit(dq, area),
                lith_mah_cm3=per_unit(lq, vol),
                delith_mah_cm3=per_unit(dq, vol),
                ce=dq / lq,
                lith_energy_we_mwh=le_we,
                delith_energy_we_mwh=de_we,
                lith_energy_cell_mwh=le_c,
                delith_energy_cell_mwh=de_c,
                lith_mean_we_v=le_we / lq,
                delith_mean_we_v=de_we / dq,
                lith_mean_cell_v=le_c / lq,
                delith_mean_cell_v=de_c / dq,
                lith_board_mah=lq,
                delith_board_mah=dq,
                lith_integral_mah=1e3 * sum(h.integral_ah for h in parts[LITH]),
                delith_integral_mah=1e3 * sum(h.integral_ah for h in parts[DELITH]),
                r_lith_ohm=r_first.get((c, LITH)),
                r_delith_ohm=r_first.get((c, DELITH)),
                delith_current_a=float(np.median([h.median_abs_current_a for h in parts[DELITH]])),
            )
        )
    incomplete = sorted(c for c in by_cycle if c >= 1 and c not in {r["cycle"] for r in raw})
    if incomplete:
        notes.append("incomplete cycles left out: " + ", ".join(map(str, incomplete)))

    ref: int | None = None
    if raw:
        complete = [r["cycle"] for r in raw]
        later = [c for c in complete if c >= reference_cycle]
        if reference_cycle in complete:
            ref = reference_cycle
        elif later:
            ref = later[0]
            notes.append(f"cycle {reference_cycle} incomplete: retention relative to cycle {ref}")
        else:
            ref = complete[0]
            notes.append(
                f"run shorter than the reference cycle {reference_cycle}: "
                f"retention relative to cycle {ref}"
            )
    ref_cap = next((r["delith_mah"] for r in raw if r["cycle"] == ref), None)
    rows = tuple(
        CycleRow(retention=None if ref_cap is None else r["delith_mah"] / ref_cap, **r) for r in raw
    )

    disc = tuple(d for h in hcs if (d := h.discrepancy) is not None)
    skipped = tuple(s for h in hcs for s in h.skipped)
    notes.extend(_crosscheck_notes(disc, skipped))
    return CycleTable(run.name, rows, reference_cycle, ref, tuple(notes), disc, skipped)


def _crosscheck_notes(disc: Sequence[Discrepancy], skipped: Sequence[SkippedStretch]) -> list[str]:
    """One line each on the discrepancies and the stretches not integrated."""
    out = []
    if disc:
        out.append(
            f"the samples' integral differs from the board's count by more than 0.1 % in "
            f"{len(disc)} half-cycle(s) (capacities are the board's count): "
            + "; ".join(d.text() for d in disc[:3])
            + ("; ..." if len(disc) > 3 else "")
        )
    if skipped:
        kinds: dict[str, float] = {}
        for s in skipped:
            kinds[s.reason] = kinds.get(s.reason, 0.0) + s.duration_s
        out.append(
            "not integrated across (the board's count covers them): "
            + ", ".join(f"{r} {t:.1f} s" for r, t in kinds.items())
        )
    return out
