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

Modules by job: ``halfcycles`` (splitting a run into half-cycles; the only place that rule
lives), ``resistance`` (current interrupt, IR compensation), ``cycles`` (the cycle table),
``smoothing``, ``differential`` (dQ/dV curves), ``peaks`` (dQ/dV peaks and drift), ``rate``
(rate capability). This package re-exports their public names: ``from sicell.analysis import X``.
"""

from __future__ import annotations

from .common import (
    DEFAULT_REFERENCE_CYCLE,
    DEFAULT_REST_CURRENT_A,
    DELITH,
    LITH,
    IndexArray,
    Kind,
    Normalize,
    Potential,
)
from .cycles import SUMMARY_COLUMNS, CycleRow, CycleTable, cycle_table
from .differential import DqdvCurve, default_dqdv_cycles, dqdv, dqdv_curves
from .halfcycles import HalfCycle, half_cycles
from .peaks import PeakDrift, PeakRow, find_peaks, main_peak, peak_drift, peak_table
from .rate import (
    RateCurve,
    RateGroup,
    RatePoint,
    is_rate_test,
    rate_capability,
    rate_curves,
    rate_points,
)
from .resistance import ResistancePoint, current_interrupt, ir_compensate, measured_resistance
from .smoothing import level_filter, moving_average, savgol_coefficients, savgol_smooth

__all__ = [
    "DEFAULT_REFERENCE_CYCLE",
    "DEFAULT_REST_CURRENT_A",
    "DELITH",
    "LITH",
    "SUMMARY_COLUMNS",
    "CycleRow",
    "CycleTable",
    "DqdvCurve",
    "HalfCycle",
    "IndexArray",
    "Kind",
    "Normalize",
    "PeakDrift",
    "PeakRow",
    "Potential",
    "RateCurve",
    "RateGroup",
    "RatePoint",
    "ResistancePoint",
    "current_interrupt",
    "cycle_table",
    "default_dqdv_cycles",
    "dqdv",
    "dqdv_curves",
    "find_peaks",
    "half_cycles",
    "ir_compensate",
    "is_rate_test",
    "level_filter",
    "main_peak",
    "measured_resistance",
    "moving_average",
    "peak_drift",
    "peak_table",
    "rate_capability",
    "rate_curves",
    "rate_points",
    "savgol_coefficients",
    "savgol_smooth",
]
