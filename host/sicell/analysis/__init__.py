"""Cycling analysis of a run: half-cycles, cycle table, dQ/dV and peaks, resistance, rate test.

Conventions (DESIGN.md §5): positive current lithiates the Si working electrode; capacity
accumulates per half-cycle and resets at each half-cycle start; a cycle starts with a
lithiation. Which steps form a half-cycle, its cycle number (the first lithiation is cycle 1; a
delithiation before it is cycle 0 and never a complete cycle) and its capacity (the board's
coulomb count) are ``sicell.cyclemodel``'s rule, the one every view uses. Samples of rest/OCV
steps, and samples with the relay open (pause, hold, trip), belong to no half-cycle.

The samples' integral of current is the cross-check (``crosscheck``): beside each capacity
(``*_integral_mah``), with the half-cycles where the two differ by more than 0.1 %
(``CycleTable.discrepancies``) and where the integral was not taken (``CycleTable.skipped``).
Energies are ∫ V dQ over the board's count with V the working-electrode potential vs Li+/Li
(``we``) or the cell voltage (``cell``), so a mean voltage is energy / capacity.

Modules by job: ``halfcycles`` (the cycle model's half-cycles with their samples),
``crosscheck`` (the samples' integral), ``resistance`` (current interrupt, the resistance an
IR-free curve uses, IR compensation and its plausibility),
``cycles`` (the cycle table), ``smoothing``, ``differential`` (dQ/dV curves), ``peaks`` (dQ/dV
peaks and drift), ``rate`` (rate capability). This package re-exports their public names:
``from sicell.analysis import X``.
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
from .crosscheck import Discrepancy, SkippedStretch
from .cycles import SUMMARY_COLUMNS, CycleRow, CycleTable, cycle_table
from .differential import DqdvCurve, default_dqdv_cycles, dqdv, dqdv_curves
from .halfcycles import HalfCycle, half_cycles
from .peaks import (
    PeakDrift,
    PeakRow,
    find_peaks,
    main_peak,
    peak_drift,
    peak_rows,
    peak_table,
)
from .rate import (
    RateCurve,
    RateGroup,
    RatePoint,
    is_rate_test,
    rate_capability,
    rate_curves,
    rate_points,
)
from .resistance import (
    IrChoice,
    ResistancePoint,
    current_interrupt,
    has_reference,
    ir_choices,
    ir_compensate,
    ir_free_problems,
    measured_resistance,
    schedule_resistance,
)
from .smoothing import level_filter, moving_average, savgol_coefficients, savgol_smooth

__all__ = [
    "DEFAULT_REFERENCE_CYCLE",
    "DEFAULT_REST_CURRENT_A",
    "DELITH",
    "LITH",
    "SUMMARY_COLUMNS",
    "CycleRow",
    "CycleTable",
    "Discrepancy",
    "DqdvCurve",
    "HalfCycle",
    "IndexArray",
    "IrChoice",
    "Kind",
    "Normalize",
    "PeakDrift",
    "PeakRow",
    "Potential",
    "RateCurve",
    "RateGroup",
    "RatePoint",
    "ResistancePoint",
    "SkippedStretch",
    "current_interrupt",
    "cycle_table",
    "default_dqdv_cycles",
    "dqdv",
    "dqdv_curves",
    "find_peaks",
    "half_cycles",
    "has_reference",
    "ir_choices",
    "ir_compensate",
    "ir_free_problems",
    "is_rate_test",
    "level_filter",
    "main_peak",
    "measured_resistance",
    "moving_average",
    "peak_drift",
    "peak_rows",
    "peak_table",
    "rate_capability",
    "rate_curves",
    "rate_points",
    "savgol_coefficients",
    "savgol_smooth",
    "schedule_resistance",
]
