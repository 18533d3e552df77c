"""Cycling analysis of a run: half-cycles, cycle table, dQ/dV and peaks, resistance, rate test.

Conventions (DESIGN.md §5): positive current lithiates the Si working electrode; capacity
accumulates per half-cycle and resets at each half-cycle start; a cycle starts with a
lithiation. Samples of rest/OCV steps (or with the relay open, or |I| ≤ 1 nA) belong to no
half-cycle.

Cycle numbers here count from 1 for people: cycle *n* is the n-th lithiation half-cycle of the
run and the delithiation that follows it (the database's ``cycle`` column counts from 0 and is
used only to split half-cycles). A delithiation before the first lithiation is cycle 0 and never
a complete cycle.

Capacities are integrated from the samples (trapezoid rule on current vs time); the board's
per-step ``charge_ah`` column is kept beside them as a cross-check (``*_board_mah``). Energies
are ∫ V·|I| dt = ∫ V dQ with V the working-electrode potential vs Li+/Li (``we``) or the cell
voltage (``cell``), so a mean voltage is energy / capacity.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from .rundata import F_CV, F_STEP_LAST, FloatArray, RunData

Kind = Literal["lith", "delith"]
LITH: Kind = "lith"
DELITH: Kind = "delith"
IndexArray = NDArray[np.intp]
Normalize = Literal["auto", "mass", "area", "none"]
Potential = Literal["we", "cell"]

DEFAULT_REST_CURRENT_A = 1e-9
DEFAULT_REFERENCE_CYCLE = 10


# ---------------------------------------------------------------------------------------------
# Half-cycles
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class HalfCycle:
    """A lithiation or delithiation half-cycle.

    ``idx`` are the sample indices (into the run's arrays) in order; ``q_ah`` is the capacity
    accumulated since the half-cycle start at each of those samples (≥ 0, starts at 0).
    """

    number: int
    cycle: int
    kind: Kind
    idx: IndexArray
    q_ah: FloatArray
    energy_we_wh: float
    energy_cell_wh: float
    board_ah: float
    t_start_s: float
    t_end_s: float
    median_abs_current_a: float
    steps: tuple[int, ...]
    complete: bool = True

    @property
    def capacity_ah(self) -> float:
        return float(self.q_ah[-1]) if self.q_ah.size else 0.0

    @property
    def sign(self) -> int:
        return 1 if self.kind == LITH else -1

    @property
    def mean_we_v(self) -> float:
        c = self.capacity_ah
        return self.energy_we_wh / c if c > 0 else math.nan

    @property
    def mean_cell_v(self) -> float:
        c = self.capacity_ah
        return self.energy_cell_wh / c if c > 0 else math.nan


def half_cycles(run: RunData, *, rest_current_a: float = DEFAULT_REST_CURRENT_A) -> list[HalfCycle]:
    """Split a run into half-cycles.

    A half-cycle is a sequence of non-rest samples of one current sign; a new one starts when
    the sign changes or the database cycle column changes (rests in between do not split it,
    so GITT pulses of one sign accumulate). It is ``complete`` when a sample follows it in the
    log or its last sample carries the step-last flag (a run still logging ends in an
    incomplete one). Capacity is the trapezoid of current over time
    between consecutive samples that both belong to the half-cycle and are adjacent in the log.
    """
    n = len(run)
    if n == 0:
        return []
    rest = run.rest_mask(rest_current_a)
    sign = np.sign(run.current_a).astype(np.int64)
    sign[rest] = 0
    a = np.flatnonzero(sign != 0)
    if a.size == 0:
        return []
    sa = sign[a]
    ca = run.cycle[a]
    new = np.ones(a.size, dtype=np.bool_)
    new[1:] = (sa[1:] != sa[:-1]) | (ca[1:] != ca[:-1])
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], a.size)

    t = run.t_s[a]
    cur = run.current_a[a]
    dt = np.diff(t)
    valid = (~new[1:]) & (np.diff(a) == 1)
    dq = np.where(valid, 0.5 * (cur[1:] + cur[:-1]) * dt, 0.0) / 3600.0
    p_we = run.we_v[a] * cur
    p_cell = run.voltage_v[a] * cur
    de_we = np.where(valid, 0.5 * (p_we[1:] + p_we[:-1]) * dt, 0.0) / 3600.0
    de_cell = np.where(valid, 0.5 * (p_cell[1:] + p_cell[:-1]) * dt, 0.0) / 3600.0

    step_a = run.step[a]
    cyc_a = run.cycle[a]
    charge_a = run.charge_ah[a]

    out: list[HalfCycle] = []
    n_lith = 0
    for k, (s, e) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        sgn = int(sa[s])
        kind: Kind = LITH if sgn > 0 else DELITH
        if kind == LITH:
            n_lith += 1
        q = np.empty(e - s, dtype=np.float64)
        q[0] = 0.0
        np.cumsum(dq[s : e - 1], out=q[1:])
        q *= sgn
        # Board charge: the step's charge since step start at the last sample of each run of
        # samples of one (step, cycle) inside the half-cycle.
        st = step_a[s:e]
        cy = cyc_a[s:e]
        last = np.flatnonzero(np.append((st[1:] != st[:-1]) | (cy[1:] != cy[:-1]), True))
        board = float(np.sum(np.abs(charge_a[s:e][last])))
        out.append(
            HalfCycle(
                number=k,
                cycle=n_lith,
                kind=kind,
                idx=a[s:e],
                q_ah=q,
                energy_we_wh=sgn * float(np.sum(de_we[s : e - 1])),
                energy_cell_wh=sgn * float(np.sum(de_cell[s : e - 1])),
                board_ah=board,
                t_start_s=float(t[s]),
                t_end_s=float(t[e - 1]),
                median_abs_current_a=float(np.median(np.abs(cur[s:e]))),
                steps=tuple(dict.fromkeys(st.tolist())),
                complete=bool(a[e - 1] < n - 1 or (int(run.flags[a[e - 1]]) & F_STEP_LAST) != 0),
            )
        )
    return out


def _half_cycle_of_sample(run: RunData, hcs: Sequence[HalfCycle]) -> NDArray[np.int64]:
    owner = np.full(len(run), -1, dtype=np.int64)
    for h in hcs:
        owner[h.idx] = h.number
    return owner


# ---------------------------------------------------------------------------------------------
# Resistance (current interrupt at rest → current boundaries) and IR compensation
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ResistancePoint:
    """Series resistance from the voltage jump at a rest → current boundary.

    ``R = −ΔV/ΔI`` between the last rest sample and the mean of the first ``n_points`` samples
    of the current step (positive current lowers the working-electrode potential, so a positive
    R is a loss). ``window_s`` is the time from the last rest sample to the last sample used.
    """

    cycle: int
    kind: Kind
    step: int
    t_s: float
    window_s: float
    v_rest_v: float
    v_on_v: float
    i_on_a: float
    r_ohm: float
    r_ohm_cm2: float | None


def current_interrupt(
    run: RunData,
    *,
    n_points: int = 1,
    max_window_s: float | None = None,
    rest_current_a: float = DEFAULT_REST_CURRENT_A,
    hcs: Sequence[HalfCycle] | None = None,
) -> list[ResistancePoint]:
    """Resistance at every rest → current boundary (one per half-cycle that starts after a
    rest, usually two per cycle). Boundaries whose window exceeds ``max_window_s`` are skipped:
    the further the first point is from the step start, the more polarisation it includes."""
    if n_points < 1:
        raise ValueError("n_points must be ≥ 1")
    if hcs is None:
        hcs = half_cycles(run, rest_current_a=rest_current_a)
    owner = _half_cycle_of_sample(run, hcs)
    is_rest = owner < 0
    bnd = np.flatnonzero(is_rest[:-1] & ~is_rest[1:])
    area = run.area_cm2
    out: list[ResistancePoint] = []
    for i in bnd.tolist():
        h = hcs[int(owner[i + 1])]
        j_end = i + 1
        # Take up to n_points samples of the same half-cycle and step.
        while (
            j_end < len(run)
            and j_end - (i + 1) < n_points
            and owner[j_end] == h.number
            and run.step[j_end] == run.step[i + 1]
        ):
            j_end += 1
        sl = slice(i + 1, j_end)
        window = float(run.t_s[j_end - 1] - run.t_s[i])
        if max_window_s is not None and window > max_window_s:
            continue
        v_on = float(np.mean(run.voltage_v[sl]))
        i_on = float(np.mean(run.current_a[sl]))
        d_i = i_on - float(run.current_a[i])
        if d_i == 0.0:
            continue
        r = -(v_on - float(run.voltage_v[i])) / d_i
        out.append(
            ResistancePoint(
                cycle=h.cycle,
                kind=h.kind,
                step=int(run.step[i + 1]),
                t_s=float(run.t_s[i + 1]),
                window_s=window,
                v_rest_v=float(run.voltage_v[i]),
                v_on_v=v_on,
                i_on_a=i_on,
                r_ohm=r,
                r_ohm_cm2=None if area is None else r * area,
            )
        )
    return out


def measured_resistance(run: RunData, **kwargs: Any) -> float | None:
    """Median current-interrupt resistance of the run (Ω), None when there is no boundary."""
    pts = current_interrupt(run, **kwargs)
    if not pts:
        return None
    return float(np.median([p.r_ohm for p in pts]))


def ir_compensate(potential_v: Any, current_a: Any, r_ohm: float) -> FloatArray:
    """Remove the ohmic drop from a measured potential: ``V_comp = V + I·R``.

    In the usual "discharge current is positive" textbook form this is ``V − I·R``; sicell's
    sign is the other way round (positive current lithiates the working electrode and pulls its
    potential *down* by I·R), hence the plus: a lithiation curve moves up, a delithiation curve
    moves down, both toward the open-circuit potential.
    """
    v = np.asarray(potential_v, dtype=np.float64)
    i = np.asarray(current_a, dtype=np.float64)
    return np.asarray(v + i * r_ohm, dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Cycle table
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CycleRow:
    """One complete cycle (a lithiation and the delithiation after it). Capacities are
    positive; ``ce`` = delithiation / lithiation; ``retention`` = delithiation capacity /
    the reference cycle's (fractions, not %)."""

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
    fade_pct_per_cycle: float | None
    fade_fit_cycles: tuple[int, int] | None
    cycles_to_80: int | None
    cycles_to_90: int | None
    notes: tuple[str, ...]

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


def _norm(x_mah: float, d: float | None) -> float | None:
    return None if d is None or d <= 0 else x_mah / d


def cycle_table(
    run: RunData,
    *,
    reference_cycle: int = DEFAULT_REFERENCE_CYCLE,
    rest_current_a: float = DEFAULT_REST_CURRENT_A,
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
    """
    if hcs is None:
        hcs = half_cycles(run, rest_current_a=rest_current_a)
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
                lith_mah_g=_norm(lq, m_g),
                delith_mah_g=_norm(dq, m_g),
                lith_mah_cm2=_norm(lq, area),
                delith_mah_cm2=_norm(dq, area),
                lith_mah_cm3=_norm(lq, vol),
                delith_mah_cm3=_norm(dq, vol),
                ce=dq / lq,
                lith_energy_we_mwh=le_we,
                delith_energy_we_mwh=de_we,
                lith_energy_cell_mwh=le_c,
                delith_energy_cell_mwh=de_c,
                lith_mean_we_v=le_we / lq,
                delith_mean_we_v=de_we / dq,
                lith_mean_cell_v=le_c / lq,
                delith_mean_cell_v=de_c / dq,
                lith_board_mah=1e3 * sum(h.board_ah for h in parts[LITH]),
                delith_board_mah=1e3 * sum(h.board_ah for h in parts[DELITH]),
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

    fade: float | None = None
    fit: tuple[int, int] | None = None
    to80: int | None = None
    to90: int | None = None
    if ref is not None:
        after = [r for r in rows if r.cycle >= ref and r.retention is not None]
        if len(after) >= 2:
            x = np.array([r.cycle for r in after], dtype=np.float64)
            y = np.array([100.0 * float(r.retention or 0.0) for r in after])
            slope = float(np.polyfit(x, y, 1)[0])
            fade = -slope
            fit = (after[0].cycle, after[-1].cycle)
        to80 = next((r.cycle for r in after if (r.retention or 0.0) <= 0.8 + 1e-12), None)
        to90 = next((r.cycle for r in after if (r.retention or 0.0) <= 0.9 + 1e-12), None)
    return CycleTable(
        run_name=run.name,
        rows=rows,
        requested_reference=reference_cycle,
        reference_cycle=ref,
        fade_pct_per_cycle=fade,
        fade_fit_cycles=fit,
        cycles_to_80=to80,
        cycles_to_90=to90,
        notes=tuple(notes),
    )


# ---------------------------------------------------------------------------------------------
# dQ/dV
# ---------------------------------------------------------------------------------------------
def level_filter(v: Any, min_dv: float) -> IndexArray:
    """Indices of the points kept when each kept point is at least ``min_dv`` (V) away from the
    previously kept one (the first point is always kept)."""
    arr = np.asarray(v, dtype=np.float64)
    if arr.size == 0:
        return np.zeros(0, dtype=np.intp)
    if min_dv <= 0:
        return np.arange(arr.size, dtype=np.intp)
    thr = min_dv * (1.0 - 1e-9)
    keep = [0]
    last = float(arr[0])
    for i, x in enumerate(arr.tolist()):
        if abs(x - last) >= thr:
            keep.append(i)
            last = x
    return np.asarray(keep, dtype=np.intp)


def savgol_coefficients(window: int, polyorder: int, deriv: int = 0) -> FloatArray:
    """Savitzky–Golay convolution weights (centre point) for an odd ``window``."""
    if window % 2 != 1 or window < 1:
        raise ValueError("window must be a positive odd number")
    if polyorder >= window:
        raise ValueError("polyorder must be less than window")
    half = window // 2
    x = np.arange(-half, half + 1, dtype=np.float64)
    a = np.vander(x, polyorder + 1, increasing=True)
    return np.asarray(np.linalg.pinv(a)[deriv] * math.factorial(deriv), dtype=np.float64)


def savgol_smooth(y: Any, window: int = 7, polyorder: int = 2) -> FloatArray:
    """Savitzky–Golay smoothing in numpy. Edges are filled by evaluating the polynomial fitted
    to the first/last window (like scipy's ``mode='interp'``). The window shrinks to the data
    length (kept odd); with too few points for the order the data comes back unchanged."""
    arr = np.asarray(y, dtype=np.float64)
    n = arr.size
    w = min(window, n if n % 2 == 1 else n - 1)
    if w <= polyorder or w < 3:
        return arr.copy()
    coef = savgol_coefficients(w, polyorder)
    half = w // 2
    out = np.empty_like(arr)
    out[half : n - half] = np.convolve(arr, coef[::-1], mode="valid")
    x = np.arange(w, dtype=np.float64)
    lo = np.polyval(np.polyfit(x, arr[:w], polyorder), x[:half])
    hi = np.polyval(np.polyfit(x, arr[n - w :], polyorder), x[w - half :])
    out[:half] = lo
    out[n - half :] = hi
    return out


def moving_average(y: Any, window: int = 5) -> FloatArray:
    """Centred moving average; the window shrinks symmetrically at the edges."""
    arr = np.asarray(y, dtype=np.float64)
    if window <= 1 or arr.size == 0:
        return arr.copy()
    half = window // 2
    c = np.concatenate(([0.0], np.cumsum(arr)))
    i = np.arange(arr.size)
    lo = np.maximum(i - half, 0)
    hi = np.minimum(i + half + 1, arr.size)
    # Symmetric shrink at the edges keeps the average centred.
    k = np.minimum(i - lo, hi - 1 - i)
    lo, hi = i - k, i + k + 1
    return np.asarray((c[hi] - c[lo]) / (hi - lo), dtype=np.float64)


@dataclass(frozen=True)
class DqdvCurve:
    """dQ/dV of one half-cycle against the potential (``we``: working electrode vs Li+/Li).

    Lithiation curves are negative (Q grows while the potential falls), delithiation curves
    positive. ``unit`` names the y unit (mAh/V, or per g or cm² when normalised)."""

    cycle: int
    kind: Kind
    potential_v: FloatArray
    dqdv: FloatArray
    unit: str
    min_dv_v: float
    smoothing: str


def _select_hcs(hcs: Sequence[HalfCycle], cycle: int, kind: Kind) -> list[HalfCycle]:
    return [h for h in hcs if h.cycle == cycle and h.kind == kind]


def _norm_factor(run: RunData, normalize: Normalize) -> tuple[float, str]:
    if normalize in ("auto", "mass") and run.mass_g is not None:
        return 1e3 / run.mass_g, "mAh g⁻¹ V⁻¹"
    if normalize == "mass":
        raise ValueError("mass unknown: cannot normalise per gram")
    if normalize in ("auto", "area") and run.area_cm2 is not None:
        return 1e3 / run.area_cm2, "mAh cm⁻² V⁻¹"
    if normalize == "area":
        raise ValueError("area unknown: cannot normalise per cm²")
    return 1e3, "mAh V⁻¹"


def dqdv(
    run: RunData,
    cycle: int,
    kind: Kind,
    *,
    min_dv_v: float = 0.005,
    smooth: Literal["none", "savgol", "moving"] = "none",
    window: int = 7,
    polyorder: int = 2,
    normalize: Normalize = "auto",
    potential: Potential = "we",
    exclude_cv: bool = True,
    hcs: Sequence[HalfCycle] | None = None,
) -> DqdvCurve:
    """dQ/dV of one half-cycle.

    Points are level-filtered (kept ≥ ``min_dv_v`` apart in potential), the derivative is the
    finite difference between consecutive kept points placed at their mid-potential, then
    optionally smoothed (Savitzky–Golay or moving average over ``window`` points). Samples in
    the CV phase (flag) carry capacity at constant potential and are dropped by default.
    """
    if hcs is None:
        hcs = half_cycles(run)
    sel = _select_hcs(hcs, cycle, kind)
    factor, unit = _norm_factor(run, normalize)
    col = run.we_v if potential == "we" else run.voltage_v
    if not sel:
        empty = np.zeros(0, dtype=np.float64)
        return DqdvCurve(cycle, kind, empty, empty.copy(), unit, min_dv_v, smooth)
    # Join the half-cycle's pieces (normally one) with continuous capacity.
    vs: list[FloatArray] = []
    qs: list[FloatArray] = []
    offset = 0.0
    for h in sel:
        keep = np.ones(h.idx.size, dtype=np.bool_)
        if exclude_cv:
            keep &= (run.flags[h.idx] & F_CV) == 0
        vs.append(col[h.idx][keep])
        qs.append(h.q_ah[keep] + offset)
        offset += h.capacity_ah
    v = np.concatenate(vs)
    q = np.concatenate(qs)
    k = level_filter(v, min_dv_v)
    vk, qk = v[k], q[k]
    if vk.size < 2:
        empty = np.zeros(0, dtype=np.float64)
        return DqdvCurve(cycle, kind, empty, empty.copy(), unit, min_dv_v, smooth)
    x = 0.5 * (vk[1:] + vk[:-1])
    y = np.diff(qk) / np.diff(vk) * factor
    if smooth == "savgol":
        y = savgol_smooth(y, window, polyorder)
    elif smooth == "moving":
        y = moving_average(y, window)
    label = smooth if smooth == "none" else f"{smooth}({window})"
    return DqdvCurve(cycle, kind, x, y, unit, min_dv_v, label)


def dqdv_curves(
    run: RunData,
    cycles: Iterable[int],
    kinds: Sequence[Kind] = (LITH, DELITH),
    **kwargs: Any,
) -> list[DqdvCurve]:
    """``dqdv`` for each present (cycle, kind)."""
    hcs = kwargs.pop("hcs", None) or half_cycles(run)
    present = {(h.cycle, h.kind) for h in hcs}
    return [dqdv(run, c, k, hcs=hcs, **kwargs) for c in cycles for k in kinds if (c, k) in present]


def _parabolic_vertex(x: FloatArray, y: FloatArray, i: int) -> tuple[float, float]:
    """Refine the extremum at ``i`` by the parabola through its neighbours."""
    if i <= 0 or i >= x.size - 1:
        return float(x[i]), float(y[i])
    xs, ys = x[i - 1 : i + 2], y[i - 1 : i + 2]
    try:
        a, b, c = np.polyfit(xs - xs[1], ys, 2)
    except (np.linalg.LinAlgError, ValueError):
        return float(x[i]), float(y[i])
    if a == 0:
        return float(x[i]), float(y[i])
    dx = -b / (2 * a)
    if not (xs[0] - xs[1] <= dx <= xs[2] - xs[1]):
        return float(x[i]), float(y[i])
    return float(xs[1] + dx), float(a * dx * dx + b * dx + c)


def _fit_vertex(
    x: FloatArray,
    y: FloatArray,
    i: int,
    level: float,
    bounds: tuple[int, int] | None = None,
) -> tuple[float, float]:
    """Refine the extremum at ``i`` from the contiguous points around it (within ``bounds``,
    the valleys towards neighbouring peaks) whose magnitude is at least ``level`` × the
    extremum's: a Gaussian fitted by weighted least squares to ln|y| (a parabola, weights y²,
    Guo's method), which uses the whole peak top and so is robust to point-to-point noise.
    Falls back to the three-point parabola when fewer than five points qualify or the fit has
    no maximum inside the region."""
    s = y if y[i] > 0 else -y  # > 0 on the peak's side
    thr = level * s[i]
    b_lo, b_hi = bounds if bounds is not None else (0, s.size - 1)
    lo = i
    while lo > b_lo and s[lo - 1] >= thr:
        lo -= 1
    hi = i
    while hi < b_hi and s[hi + 1] >= thr:
        hi += 1
    if hi - lo + 1 >= 5:
        xs = x[lo : hi + 1] - x[i]
        ys = s[lo : hi + 1]
        a, b, c = np.polyfit(xs, np.log(ys), 2, w=ys)  # polyfit weights multiply residuals
        if a < 0:
            dx = -b / (2 * a)
            if min(xs[0], xs[-1]) <= dx <= max(xs[0], xs[-1]):
                height = float(np.exp(a * dx * dx + b * dx + c))
                return float(x[i] + dx), height if y[i] > 0 else -height
    return _parabolic_vertex(x, y, i)


def _prominences(s: FloatArray, idx: IndexArray) -> FloatArray:
    """Topographic prominence of the maxima ``idx`` of ``s`` (height above the higher of the
    two lowest points between the peak and the nearest higher point on each side)."""
    out = np.empty(idx.size, dtype=np.float64)
    for k, i in enumerate(idx.tolist()):
        h = s[i]
        higher_l = np.flatnonzero(s[:i] > h)
        lo = int(higher_l[-1]) if higher_l.size else 0
        higher_r = np.flatnonzero(s[i + 1 :] > h)
        hi = i + 1 + int(higher_r[0]) if higher_r.size else s.size - 1
        out[k] = h - max(float(np.min(s[lo : i + 1])), float(np.min(s[i : hi + 1])))
    return out


def find_peaks(
    curve: DqdvCurve, *, min_prominence: float = 0.1, fit_level: float = 0.5
) -> list[tuple[float, float]]:
    """The half-cycle's dQ/dV peaks as (potential V, height), largest |height| first.

    Peaks are the interior extrema with the half-cycle's sign (minima for lithiation, maxima
    for delithiation) whose prominence is at least ``min_prominence`` × the largest |dQ/dV|
    (noise ripples on a flank are not peaks). Each is refined by a Gaussian fitted to the
    points of its top above ``fit_level`` × its height (weighted least squares on ln|y|), which
    uses the whole top and so resists point-to-point noise; ``fit_level`` 0 refines by the
    three-point parabola only."""
    x, y = curve.potential_v, curve.dqdv
    if y.size < 3:
        return []
    s = y if curve.kind == DELITH else -y
    top = float(np.max(s))
    if top <= 0:
        return []
    cand = np.flatnonzero((s[1:-1] >= s[:-2]) & (s[1:-1] >= s[2:]) & (s[1:-1] > 0)) + 1
    if cand.size == 0:
        return []
    cand = cand[_prominences(s, cand) >= min_prominence * top]
    # Each peak's region ends at the valley towards its neighbouring peaks.
    pos = cand.tolist()
    out: list[tuple[float, float, float]] = []
    for k, i in enumerate(pos):
        lo = pos[k - 1] + int(np.argmin(s[pos[k - 1] : i + 1])) if k > 0 else 0
        hi = i + int(np.argmin(s[i : pos[k + 1] + 1])) if k + 1 < len(pos) else s.size - 1
        if 0 < fit_level < 1:
            v, h = _fit_vertex(x, y, i, fit_level, (lo, hi))
        else:
            v, h = _parabolic_vertex(x, y, i)
        out.append((float(s[i]), v, h))
    out.sort(key=lambda t: -t[0])
    return [(v, h) for _, v, h in out]


def main_peak(curve: DqdvCurve, *, fit_level: float = 0.5) -> tuple[float, float] | None:
    """(potential V, height) of the largest dQ/dV peak of the half-cycle (``find_peaks``);
    None when the curve has no interior peak."""
    pk = find_peaks(curve, fit_level=fit_level)
    return pk[0] if pk else None


@dataclass(frozen=True)
class PeakRow:
    """Main dQ/dV peaks of one cycle (potentials vs Li+/Li in V, heights in the curve unit)."""

    cycle: int
    lith_v: float | None
    lith_height: float | None
    delith_v: float | None
    delith_height: float | None

    @property
    def separation_mv(self) -> float | None:
        if self.lith_v is None or self.delith_v is None:
            return None
        return 1e3 * (self.delith_v - self.lith_v)


@dataclass(frozen=True)
class PeakDrift:
    """Drift of the (tracked) peaks in mV, positive = moved up in potential; ``separation_mv``
    is the growth of the delith − lith gap. Each is taken between the first and the last
    selected cycle in which that peak was found (``*_span``; normally ``first_cycle`` and
    ``last_cycle``, shorter when a peak moved past the cut-off)."""

    first_cycle: int
    last_cycle: int
    lith_mv: float | None
    delith_mv: float | None
    separation_mv: float | None
    lith_span: tuple[int, int] | None = None
    delith_span: tuple[int, int] | None = None
    separation_span: tuple[int, int] | None = None


def peak_table(
    run: RunData,
    cycles: Iterable[int],
    *,
    track: bool = True,
    max_jump_v: float = 0.06,
    **kwargs: Any,
) -> list[PeakRow]:
    """Lithiation and delithiation dQ/dV peaks for each present cycle (``dqdv`` keyword
    arguments pass through; default light Savitzky–Golay smoothing).

    The first cycle's peaks are its largest ones. With ``track`` (default), each later cycle
    reports the peak nearest to the previous cycle's, so the drift follows one peak even when
    two of similar height swap rank as the film ages (a-Si has two of each); when none lies
    within ``max_jump_v`` of it (the peak moved past the cut-off) that peak is None for the
    cycle. Without ``track`` every cycle reports its largest peak."""
    kwargs.setdefault("smooth", "savgol")
    hcs = kwargs.pop("hcs", None) or half_cycles(run)
    present = {h.cycle for h in hcs}
    rows: list[PeakRow] = []
    prev: dict[Kind, float | None] = {LITH: None, DELITH: None}
    for c in cycles:
        if c not in present:
            continue
        found: dict[Kind, tuple[float, float] | None] = {}
        for kind in (LITH, DELITH):
            pks = find_peaks(dqdv(run, c, kind, hcs=hcs, **kwargs))
            p0 = prev[kind]
            if not pks:
                found[kind] = None
            elif track and p0 is not None:
                near = min(pks, key=lambda p: abs(p[0] - p0))
                found[kind] = near if abs(near[0] - p0) <= max_jump_v else None
            else:
                found[kind] = pks[0]
            pk = found[kind]
            if pk is not None:
                prev[kind] = pk[0]
        lp, dp = found[LITH], found[DELITH]
        rows.append(
            PeakRow(
                cycle=c,
                lith_v=None if lp is None else lp[0],
                lith_height=None if lp is None else lp[1],
                delith_v=None if dp is None else dp[0],
                delith_height=None if dp is None else dp[1],
            )
        )
    return rows


def peak_drift(rows: Sequence[PeakRow]) -> PeakDrift | None:
    """Peak drift over a ``peak_table``: last minus first cycle where each peak is known."""
    if len(rows) < 2:
        return None

    def span(vals: list[tuple[int, float | None]]) -> tuple[float | None, tuple[int, int] | None]:
        known = [(c, v) for c, v in vals if v is not None]
        if len(known) < 2:
            return None, None
        (c0, v0), (c1, v1) = known[0], known[-1]
        return v1 - v0, (c0, c1)

    lith, lith_span = span([(r.cycle, r.lith_v) for r in rows])
    delith, delith_span = span([(r.cycle, r.delith_v) for r in rows])
    sep, sep_span = span([(r.cycle, r.separation_mv) for r in rows])
    return PeakDrift(
        first_cycle=rows[0].cycle,
        last_cycle=rows[-1].cycle,
        lith_mv=None if lith is None else 1e3 * lith,
        delith_mv=None if delith is None else 1e3 * delith,
        separation_mv=sep,
        lith_span=lith_span,
        delith_span=delith_span,
        separation_span=sep_span,
    )


def default_dqdv_cycles(
    available: Iterable[int], wanted: Sequence[int] = (20, 40, 60, 80, 100)
) -> list[int]:
    """Cycles 20/40/60/80/100 that are present; for a shorter run, up to five cycles spread
    evenly over what is there (first and last included)."""
    have = sorted(set(available))
    chosen = [c for c in wanted if c in have]
    if chosen or not have:
        return chosen
    if len(have) <= 5:
        return have
    pick = np.unique(np.round(np.linspace(0, len(have) - 1, 5)).astype(np.int64))
    return [have[int(i)] for i in pick]


# ---------------------------------------------------------------------------------------------
# Rate capability
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RatePoint:
    """One delithiation of a rate test (the discharge of the Si anode)."""

    cycle: int
    current_a: float
    current_density_ma_cm2: float | None
    delith_mah: float
    delith_mah_g: float | None
    delith_mah_cm2: float | None


@dataclass(frozen=True)
class RateGroup:
    """Delithiations at one current (within the grouping tolerance), averaged."""

    current_a: float
    current_density_ma_cm2: float | None
    cycles: tuple[int, ...]
    delith_mah: float
    delith_mah_g: float | None
    delith_mah_cm2: float | None


def rate_points(run: RunData, *, hcs: Sequence[HalfCycle] | None = None) -> list[RatePoint]:
    """Delithiation capacity against its current (median |I| of the half-cycle) per cycle."""
    if hcs is None:
        hcs = half_cycles(run)
    area, m_g = run.area_cm2, run.mass_g
    out = []
    for h in hcs:
        if h.kind != DELITH or h.cycle < 1:
            continue
        cap = 1e3 * h.capacity_ah
        i = h.median_abs_current_a
        out.append(
            RatePoint(
                cycle=h.cycle,
                current_a=i,
                current_density_ma_cm2=None if area is None else 1e3 * i / area,
                delith_mah=cap,
                delith_mah_g=_norm(cap, m_g),
                delith_mah_cm2=_norm(cap, area),
            )
        )
    return out


def _group_currents(currents: Sequence[float], rel_tol: float) -> list[list[int]]:
    order = sorted(range(len(currents)), key=lambda k: currents[k])
    groups: list[list[int]] = []
    for k in order:
        if groups and currents[k] <= currents[groups[-1][0]] * (1.0 + rel_tol):
            groups[-1].append(k)
        else:
            groups.append([k])
    return groups


def rate_capability(
    run: RunData, *, rel_tol: float = 0.1, hcs: Sequence[HalfCycle] | None = None
) -> list[RateGroup]:
    """Rate-capability summary: delithiation capacity per current density (groups of
    delithiations whose currents agree within ``rel_tol``), sorted by current."""
    pts = rate_points(run, hcs=hcs)
    area = run.area_cm2
    out = []
    for g in _group_currents([p.current_a for p in pts], rel_tol):
        ps = [pts[k] for k in sorted(g, key=lambda k: pts[k].cycle)]
        i = float(np.mean([p.current_a for p in ps]))
        out.append(
            RateGroup(
                current_a=i,
                current_density_ma_cm2=None if area is None else 1e3 * i / area,
                cycles=tuple(p.cycle for p in ps),
                delith_mah=float(np.mean([p.delith_mah for p in ps])),
                delith_mah_g=_mean_opt([p.delith_mah_g for p in ps]),
                delith_mah_cm2=_mean_opt([p.delith_mah_cm2 for p in ps]),
            )
        )
    return out


def _mean_opt(vals: list[float | None]) -> float | None:
    xs = [v for v in vals if v is not None]
    return float(np.mean(xs)) if xs else None


def is_rate_test(run: RunData, *, hcs: Sequence[HalfCycle] | None = None) -> bool:
    """True when the delithiation currents span at least a factor of 2 (several rates)."""
    groups = rate_capability(run, hcs=hcs)
    return len(groups) >= 2 and groups[-1].current_a >= 2.0 * groups[0].current_a


@dataclass(frozen=True)
class RateCurve:
    """A delithiation curve of a rate test: capacity and IR-compensated potential."""

    cycle: int
    current_a: float
    current_density_ma_cm2: float | None
    capacity_mah: FloatArray
    potential_v: FloatArray
    potential_raw_v: FloatArray
    r_ohm: float


def rate_curves(
    run: RunData,
    *,
    r_ohm: float | None = None,
    r_area_ohm_cm2: float | None = None,
    potential: Potential = "we",
    rel_tol: float = 0.1,
    hcs: Sequence[HalfCycle] | None = None,
) -> list[RateCurve]:
    """One IR-compensated delithiation curve per current (the first cycle at that current).

    The resistance is ``r_ohm``, else ``r_area_ohm_cm2`` / area (the paper subtracts the
    electrolyte layer's ~150 Ω·cm²), else the run's median current-interrupt resistance, else 0.
    """
    if hcs is None:
        hcs = half_cycles(run)
    if r_ohm is None and r_area_ohm_cm2 is not None:
        area = run.area_cm2
        if area is None:
            raise ValueError("area unknown: give r_ohm instead of r_area_ohm_cm2")
        r_ohm = r_area_ohm_cm2 / area
    if r_ohm is None:
        r_ohm = measured_resistance(run, hcs=hcs) or 0.0
    col = run.we_v if potential == "we" else run.voltage_v
    groups = rate_capability(run, rel_tol=rel_tol, hcs=hcs)
    out = []
    for g in groups:
        c = g.cycles[0]
        sel = _select_hcs(hcs, c, DELITH)
        if not sel:
            continue
        h = sel[0]
        raw = col[h.idx]
        out.append(
            RateCurve(
                cycle=c,
                current_a=g.current_a,
                current_density_ma_cm2=g.current_density_ma_cm2,
                capacity_mah=1e3 * h.q_ah,
                potential_v=ir_compensate(raw, run.current_a[h.idx], r_ohm),
                potential_raw_v=raw.copy(),
                r_ohm=r_ohm,
            )
        )
    return out
