"""A run's Battery Data Format (BDF) columns: the one table of names, meanings and number
formats, filled exactly from the board's integers. The export (CSV, Parquet) and the notebook
view (``sicell.open_run``) both read runs through :func:`bdf_columns`.

Exact values: the database holds each reading as the double nearest to the board's integer
(µV, nA, nAh, ms; ``schema.py``), so rounding recovers the integer. An *exact* column is an
integer count of a decimal unit (``decimals``): CSV writes it as that decimal with no float
noise (1 380 438 µV → ``1.380438``), Parquet and pandas hold the float64 nearest to it, which
every shortest round-trip printer (Python's ``repr``) turns back into the same decimal (at most
15 significant digits). *Computed* columns (energies, resistance) are rounded to
``COMPUTED_DIGITS`` significant digits in every format.

Cycles, half-cycles and capacities are ``sicell.cyclemodel``'s: lithiation (positive current)
is the Si anode's "charging". Energies integrate cell voltage × current over each half-cycle by
the cross-check's rules (``analysis.crosscheck``: never across a relay-open stretch, missing
records, a reset or a gap); resistance is the current-interrupt value
(``analysis.resistance.current_interrupt``) at the first sample under current after a rest.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from sicell.cyclemodel import CycleModel
from sicell.rundata import RunData

__all__ = [
    "BDF_COLUMNS",
    "COLUMNS",
    "COMPUTED_DIGITS",
    "CYCLE_COLUMNS",
    "ENERGY_CONVENTION",
    "EVENT_COLUMNS",
    "NUMBER_FORMAT",
    "BdfColumns",
    "ColumnSpec",
    "HalfCycleEnd",
    "bdf_columns",
    "computed_string",
    "cycle_table",
    "decimal_strings",
    "event_table",
    "round_computed",
    "scaled",
]

COMPUTED_DIGITS = 10


@dataclass(frozen=True)
class ColumnSpec:
    """One exported column: ``kind`` "int" (a count), "exact" (an integer number of
    10**-``decimals`` units) or "computed" (a float, ``COMPUTED_DIGITS`` significant digits)."""

    name: str
    description: str
    kind: Literal["int", "exact", "computed"]
    decimals: int = 0


COLUMNS: tuple[ColumnSpec, ...] = (
    ColumnSpec("Test Time / s", "time since the run started (the board's clock, 1 ms)", "exact", 3),
    ColumnSpec(
        "Unix Time / s",
        "wall-clock time, s since 1970-01-01 UTC: the run's start time (metadata "
        "unix_time_origin) + Test Time; empty when the run recorded no start time",
        "exact",
        3,
    ),
    ColumnSpec("Voltage / V", "cell voltage, working minus counter electrode (1 µV)", "exact", 6),
    ColumnSpec(
        "Current / A", "current (1 nA); positive = lithiation of the working electrode", "exact", 9
    ),
    ColumnSpec(
        "Cycle Count / 1",
        "cycle number: the first lithiation starts cycle 1, each lithiation half-cycle the next "
        "(0 before the first lithiation)",
        "int",
    ),
    ColumnSpec(
        "Step Count / 1",
        "sequential step-execution counter, +1 at every step start (1-based)",
        "int",
    ),
    ColumnSpec("Step Index / 1", "schedule step index (0-based, as compiled for the board)", "int"),
    ColumnSpec(
        "Step Capacity / Ah",
        "charge since the step started, signed (positive = lithiation): the board's coulomb "
        "count (1 nAh)",
        "exact",
        9,
    ),
    ColumnSpec(
        "Charging Capacity / Ah",
        "lithiation ('charging' of the Si anode) capacity of the current half-cycle (the "
        "board's coulomb count, 1 nAh); from 0 at each half-cycle start, held through the rests "
        "after it, 0 while a delithiation runs",
        "exact",
        9,
    ),
    ColumnSpec(
        "Discharging Capacity / Ah",
        "delithiation capacity of the current half-cycle (the board's coulomb count, 1 nAh); "
        "from 0 at each half-cycle start, held through the rests after it, 0 while a "
        "lithiation runs",
        "exact",
        9,
    ),
    ColumnSpec(
        "Charging Energy / Wh",
        "energy of the current lithiation half-cycle: the integral of Voltage over the board's "
        "coulomb count (∫ V dQ, trapezoids between samples; it has the sign of the cell "
        "voltage), the report's figure; from 0 at each half-cycle start, never integrated "
        "across a relay-open stretch; held and reset like Charging Capacity",
        "computed",
    ),
    ColumnSpec(
        "Discharging Energy / Wh",
        "energy of the current delithiation half-cycle: the integral of Voltage over the "
        "delithiated charge (the sign of the cell voltage), by the same rules as Charging "
        "Energy",
        "computed",
    ),
    ColumnSpec(
        "Internal Resistance / ohm",
        "the half-cycle's measured series resistance, the one the report's IR-free curves use "
        "(analysis.resistance.ir_choices): current interrupt, −ΔV/ΔI from the last rest sample "
        "to the first sample under current, on that first sample; empty elsewhere and for "
        "half-cycles without a usable measurement",
        "computed",
    ),
    ColumnSpec(
        "Working Electrode Potential vs Li / V",
        "working electrode potential vs Li+/Li = Voltage + reference_offset_v (1 µV); not a "
        "BDF column",
        "exact",
        6,
    ),
)
"""The exported columns, in order."""

BDF_COLUMNS: dict[str, str] = {c.name: c.description for c in COLUMNS}
"""Column name → meaning, in order (written into every export's metadata)."""

_SPEC = {c.name: c for c in COLUMNS}

EVENT_COLUMNS: tuple[str, ...] = (
    "Test Time / s",
    "Unix Time / s",
    "Cycle Count / 1",
    "Step Index / 1",
    "Event",
    "Reason",
    "Value",
    "Aux",
    "Sequence Number / 1",
)
"""The notebook view's events: times and cycle as in the samples, the event's name, the raw
reason/value/aux fields as on the wire, and its sequence number."""

CYCLE_COLUMNS: tuple[str, ...] = (
    "Cycle Count / 1",
    "Test Time / s",
    "Unix Time / s",
    "Charging Capacity / Ah",
    "Discharging Capacity / Ah",
    "Coulombic Efficiency / 1",
    "Charging Energy / Wh",
    "Discharging Energy / Wh",
)
"""The notebook view's cycle table: per cycle, its start time and the sums over its half-cycles
of the same capacities and energies as the samples' columns; efficiency = discharging /
charging capacity (empty when either is missing)."""

ENERGY_CONVENTION = (
    "Charging Energy is the lithiation half-cycle's integral of Voltage over the lithiated "
    "charge, Discharging Energy the delithiation's over the delithiated charge, both with the "
    "charge from the board's coulomb count (∫ V dQ, analysis.halfcycles.energy_curve, the "
    "same numbers as the report): positive current lithiates the working electrode (the Si "
    "anode's 'charge'), Voltage is the cell voltage (working − counter electrode), so each "
    "energy has the sign of the cell voltage (negative against a counter electrode above the "
    "working electrode's potential); relay-open samples are never integrated across"
)
"""The energies' sign convention (export metadata ``energy_convention``)."""

NUMBER_FORMAT = {
    "csv": "exact columns are exact decimals of the board's integers (1 ms, 1 µV, 1 nA, 1 nAh); "
    f"energies and resistance are rounded to {COMPUTED_DIGITS} significant digits; an empty "
    "cell is a value that is not known (no start time, no resistance measured there)",
    "parquet": "float64 nearest to the CSV's decimal (a shortest round-trip printer such as "
    "Python's repr gives the decimal back); counts are int64; null where the CSV is empty",
}
"""How numbers are written (export metadata ``number_format``)."""


@dataclass(frozen=True)
class HalfCycleEnd:
    """A half-cycle as the exports show it at its end: capacity (nAh, the board's count) and
    energy (Wh)."""

    cycle: int
    direction: int
    capacity_nah: int
    energy_wh: float
    t_start_ms: int


@dataclass
class BdfColumns:
    """A run's columns: ``exact`` (name → integer array in the column's unit, or None when the
    run cannot fill it), ``computed`` (name → float64, NaN where unknown), and what the
    notebook view needs besides."""

    run: RunData
    exact: dict[str, NDArray[np.int64] | None]
    computed: dict[str, NDArray[np.float64]]
    half_cycles: list[HalfCycleEnd]
    start_unix_ms: int | None
    unix_time_origin: dict[str, Any]

    def __len__(self) -> int:
        return len(self.run)

    def values(self, name: str) -> NDArray[Any]:
        """The column as numbers: int64 for counts, float64 (NaN = unknown) otherwise."""
        spec = _SPEC[name]
        if spec.kind == "computed":
            return self.computed[name]
        col = self.exact[name]
        if col is None:
            return np.full(len(self), np.nan)
        if spec.kind == "int":
            return col
        return scaled(col, spec.decimals)

    def strings(self, name: str) -> list[str]:
        """The column as CSV cells (exact decimals; "" where unknown)."""
        spec = _SPEC[name]
        if spec.kind == "computed":
            return [computed_string(x) for x in self.computed[name].tolist()]
        col = self.exact[name]
        if col is None:
            return [""] * len(self)
        if spec.kind == "int":
            return [str(v) for v in col.tolist()]
        return decimal_strings(col, spec.decimals)


def scaled(n: NDArray[np.int64], decimals: int) -> NDArray[np.float64]:
    """Integers of 10**-decimals units as float64: the double nearest to each exact decimal
    (one correctly rounded division of two exactly representable numbers)."""
    return np.asarray(n, dtype=np.float64) / float(10**decimals)


def decimal_strings(n: NDArray[np.int64], decimals: int) -> list[str]:
    """Integers of 10**-decimals units as exact decimal strings without trailing zeros
    (1380438, 6 → "1.380438"; -290000, 6 → "-0.29"; 0 → "0")."""
    unit = 10**decimals
    out: list[str] = []
    for v in n.tolist():
        q, r = divmod(abs(v), unit)
        s = f"{q}.{str(r).rjust(decimals, '0').rstrip('0')}" if r else str(q)
        out.append("-" + s if v < 0 else s)
    return out


def computed_string(x: float) -> str:
    """A computed value as a plain decimal of ``COMPUTED_DIGITS`` significant digits ("" for
    NaN)."""
    if math.isnan(x):
        return ""
    s = format(Decimal(format(x, f".{COMPUTED_DIGITS}g")), "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def round_computed(x: float) -> float:
    """Rounded to ``COMPUTED_DIGITS`` significant digits: the value the CSV's string holds."""
    return x if math.isnan(x) else float(format(x, f".{COMPUTED_DIGITS}g"))


def _computed(x: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.array([round_computed(v) for v in x.tolist()], dtype=np.float64)


def _grid(x: NDArray[np.float64], per_si: int) -> NDArray[np.int64]:
    """The board's integers back from the database's SI floats (``per_si`` units per SI unit)."""
    return np.asarray(np.rint(x * float(per_si)), dtype=np.int64)


def start_time(meta: dict[str, Any]) -> tuple[int | None, dict[str, Any]]:
    """The wall-clock time of test time 0 (ms since 1970 UTC) and where it comes from."""
    ms = meta.get("start_unix_ms")
    if isinstance(ms, int) and not isinstance(ms, bool):
        unc = meta.get("start_unix_uncertainty_ms")
        return ms, {
            "source": "start_unix_ms (host clock around the START request)",
            "unix_ms": ms,
            "uncertainty_s": unc / 1000.0 if isinstance(unc, int | float) else None,
        }
    started = meta.get("started_at")
    if isinstance(started, str):
        try:
            t = _dt.datetime.fromisoformat(started)
        except ValueError:
            t = None
        if t is not None:
            if t.tzinfo is None:
                t = t.replace(tzinfo=_dt.UTC)
            ms = round(t.timestamp() * 1000.0)
            return ms, {
                "source": "started_at (whole seconds, taken just before START)",
                "unix_ms": ms,
                "uncertainty_s": 1.0,
            }
    return None, {"source": None, "note": "the run recorded no start time"}


def _carry_forward(a: NDArray[np.float64]) -> NDArray[np.float64]:
    """Each NaN replaced by the last number before it (0 before the first)."""
    known = ~np.isnan(a)
    at = np.where(known, np.arange(len(a)), -1)
    np.maximum.accumulate(at, out=at)
    return np.where(at >= 0, a[np.maximum(at, 0)], 0.0)


def bdf_columns(run: RunData) -> BdfColumns:
    """Fill every column of ``COLUMNS`` for a stored run."""
    from sicell.analysis.halfcycles import half_cycles
    from sicell.analysis.resistance import ir_choices

    n = len(run)
    t_ms = _grid(run.t_s, 1000)
    q_nah = _grid(run.charge_ah, 10**9)
    model = CycleModel(run.step_table()).feed(
        run.step.tolist(), run.cycle.tolist(), run.flags.tolist(), q_nah.tolist()
    )
    runs = model.runs
    counts = np.array([r.last - r.first + 1 for r in runs], dtype=np.int64)
    run_id = np.repeat(np.arange(len(runs), dtype=np.int64), counts)
    step_count = run_id + 1
    cycle = np.repeat(np.array([r.cycle for r in runs], dtype=np.int64), counts)
    direction = np.repeat(np.array([r.hold_direction for r in runs], dtype=np.int64), counts)
    cap = np.asarray(np.rint(model.capacities(q_nah.tolist())), dtype=np.int64).reshape(n)
    zero = np.zeros(n, dtype=np.int64)

    # energies: the half-cycles' ∫ V dQ (analysis.halfcycles.energy_curve, the report's
    # figure), carried over relay-open points and the rests after a half-cycle
    hcs = half_cycles(run)
    energy = np.full(n, np.nan)
    for hc in hcs:
        energy[hc.idx] = hc.cell_wh
        first = model.half_cycles[hc.number].runs[0].first
        if np.isnan(energy[first]):
            energy[first] = 0.0  # a half-cycle that starts relay-open starts from nothing
    energy = _carry_forward(energy)
    hc_energy = [h.energy_cell_wh for h in hcs]
    energy = _computed(energy)

    resistance = np.full(n, np.nan)
    for choice in ir_choices(run, hcs).values():  # the report's R, where it was measured
        p = choice.point
        if choice.source == "measured" and p is not None:
            at = np.flatnonzero((run.t_s == p.t_s) & (run.step == p.step))
            if at.size:
                resistance[int(at[0])] = p.r_ohm
    start_ms, origin = start_time(run.meta)
    ends = [
        HalfCycleEnd(
            h.cycle,
            h.direction,
            round(h.capacity_ah),
            round_computed(hc_energy[h.number]),
            int(t_ms[h.runs[0].first]),
        )
        for h in model.half_cycles
    ]
    exact: dict[str, NDArray[np.int64] | None] = {
        "Test Time / s": t_ms,
        "Unix Time / s": None if start_ms is None else t_ms + start_ms,
        "Voltage / V": _grid(run.voltage_v, 10**6),
        "Current / A": _grid(run.current_a, 10**9),
        "Cycle Count / 1": cycle,
        "Step Count / 1": step_count,
        "Step Index / 1": np.asarray(run.step, dtype=np.int64),
        "Step Capacity / Ah": q_nah,
        "Charging Capacity / Ah": np.where(direction > 0, cap, zero),
        "Discharging Capacity / Ah": np.where(direction < 0, cap, zero),
        "Working Electrode Potential vs Li / V": _grid(run.we_v, 10**6),
    }
    computed = {
        "Charging Energy / Wh": np.where(direction > 0, energy, 0.0),
        "Discharging Energy / Wh": np.where(direction < 0, energy, 0.0),
        "Internal Resistance / ohm": _computed(resistance),
    }
    return BdfColumns(run, exact, computed, ends, start_ms, origin)


def _times(t_ms: NDArray[np.int64], start_ms: int | None) -> tuple[NDArray[Any], NDArray[Any]]:
    """(Test Time / s, Unix Time / s) of integer ms times."""
    unix = np.full(len(t_ms), np.nan) if start_ms is None else scaled(t_ms + start_ms, 3)
    return scaled(t_ms, 3), unix


def event_table(cols: BdfColumns) -> dict[str, NDArray[Any]]:
    """The run's events as ``EVENT_COLUMNS``: the cycle is the cycle model's at the last sample
    recorded before the event (0 before any)."""
    evs = cols.run.events
    t_ms = np.array([round(e.t_s * 1000.0) for e in evs], dtype=np.int64)
    seq = np.array([e.seq for e in evs], dtype=np.int64)
    before = np.searchsorted(cols.run.seq, seq) - 1
    cyc = cols.values("Cycle Count / 1")
    cycle = np.where(before >= 0, cyc[np.maximum(before, 0)] if len(cyc) else 0, 0)
    test, unix = _times(t_ms, cols.start_unix_ms)
    return {
        "Test Time / s": test,
        "Unix Time / s": unix,
        "Cycle Count / 1": np.asarray(cycle, dtype=np.int64),
        "Step Index / 1": np.array([e.step for e in evs], dtype=np.int64),
        "Event": np.array([e.name for e in evs], dtype=object),
        "Reason": np.array([e.reason for e in evs], dtype=np.int64),
        "Value": np.array([e.value for e in evs], dtype=np.int64),
        "Aux": np.array([e.aux for e in evs], dtype=np.int64),
        "Sequence Number / 1": seq,
    }


def cycle_table(cols: BdfColumns) -> dict[str, NDArray[Any]]:
    """One row per cycle that has a half-cycle, as ``CYCLE_COLUMNS``."""
    cycles = sorted({h.cycle for h in cols.half_cycles})
    chg = {c: 0 for c in cycles}
    dis = {c: 0 for c in cycles}
    e_chg = {c: 0.0 for c in cycles}
    e_dis = {c: 0.0 for c in cycles}
    start: dict[int, int] = {}
    for h in cols.half_cycles:
        if h.direction > 0:
            chg[h.cycle] += h.capacity_nah
            e_chg[h.cycle] += h.energy_wh
        else:
            dis[h.cycle] += h.capacity_nah
            e_dis[h.cycle] += h.energy_wh
        start.setdefault(h.cycle, h.t_start_ms)
    q_chg = scaled(np.array([chg[c] for c in cycles], dtype=np.int64), 9)
    q_dis = scaled(np.array([dis[c] for c in cycles], dtype=np.int64), 9)
    with np.errstate(divide="ignore", invalid="ignore"):
        ce = np.where((q_chg > 0) & (q_dis > 0), q_dis / np.where(q_chg > 0, q_chg, 1.0), np.nan)
    test, unix = _times(np.array([start[c] for c in cycles], dtype=np.int64), cols.start_unix_ms)
    return {
        "Cycle Count / 1": np.array(cycles, dtype=np.int64),
        "Test Time / s": test,
        "Unix Time / s": unix,
        "Charging Capacity / Ah": q_chg,
        "Discharging Capacity / Ah": q_dis,
        "Coulombic Efficiency / 1": ce,
        "Charging Energy / Wh": np.array([round_computed(e_chg[c]) for c in cycles]),
        "Discharging Energy / Wh": np.array([round_computed(e_dis[c]) for c in cycles]),
    }
