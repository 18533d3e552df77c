"""The words of the schedule file: step kinds, value keys with their units, the keys each table
accepts, limit operators. ``docs/schedule.md`` documents exactly these (a test checks it)."""

from __future__ import annotations

from collections.abc import Mapping

from sicell.protocol import schedule as wire
from sicell.schedule.model import ChargeKind, CurrentKind

__all__ = [
    "CELL_KEYS",
    "CHARGE_KEYS",
    "CONTROL_KEYS",
    "CURRENT_KEYS",
    "DURATION_KEYS",
    "DVDT_KEYS",
    "I32",
    "KIND_CODES",
    "LIMIT_ABS_CURRENT_KEYS",
    "LIMIT_CURRENT_KEYS",
    "LIMIT_KEYS",
    "LIMIT_VALUE_KEYS",
    "LOOP_KEYS",
    "OPS",
    "RECORDING_KEYS",
    "RECORD_KEYS",
    "REFERENCE_KEYS",
    "SAFETY_KEYS",
    "STEP_KEYS",
    "TIME_KEYS",
    "TOP_KEYS",
    "U16",
    "U32",
    "UNTIL_CHARGE_KEYS",
    "UNTIL_CURRENT_KEYS",
    "UNTIL_DVDT_KEYS",
    "ChargeKeys",
    "ChargeKind",
    "CurrentKeys",
    "CurrentKind",
]

I32 = 2**31 - 1
U32 = 2**32 - 1
U16 = 2**16 - 1

KIND_CODES: dict[str, int] = {
    "rest": wire.K_REST,
    "cc": wire.K_CC,
    "cv": wire.K_CV,
    "cccv": wire.K_CCCV,
    "ocv": wire.K_OCV,
    "loop": wire.K_LOOP,
}
"""Step kinds (the order is the one error messages list) → wire codes."""

CurrentKeys = Mapping[str, tuple[CurrentKind, float]]
"""A table of current keys → (kind, scale to A, A/cm² or multiples of 1C)."""
ChargeKeys = Mapping[str, tuple[ChargeKind, float]]
"""A table of charge keys → (kind, scale to Ah, Ah/g or Ah/cm²)."""

CURRENT_KEYS: CurrentKeys = {
    "current_a": ("abs", 1.0),
    "current_ma": ("abs", 1e-3),
    "current_ua": ("abs", 1e-6),
    "current_density_ma_cm2": ("density", 1e-3),
    "current_density_ua_cm2": ("density", 1e-6),
    "c_rate": ("c_rate", 1.0),
}
"""Set-current keys → (kind, scale to A, A/cm² or multiples of 1C)."""
UNTIL_CURRENT_KEYS = {"until_" + k: v for k, v in CURRENT_KEYS.items()}
LIMIT_CURRENT_KEYS = {k: v for k, v in CURRENT_KEYS.items() if k != "c_rate"}
LIMIT_ABS_CURRENT_KEYS = {"abs_" + k: v for k, v in LIMIT_CURRENT_KEYS.items()}
CHARGE_KEYS: ChargeKeys = {
    "charge_mah": ("abs", 1e-3),
    "charge_uah": ("abs", 1e-6),
    "capacity_mah_g": ("per_g", 1e-3),
    "capacity_mah_cm2": ("per_cm2", 1e-3),
}
"""Charge keys → (kind, scale to Ah, Ah/g or Ah/cm²)."""
UNTIL_CHARGE_KEYS = {"until_" + k: v for k, v in CHARGE_KEYS.items()}
DURATION_KEYS = {"duration_h": 3600.0, "duration_min": 60.0, "duration_s": 1.0}
TIME_KEYS = {"time_h": 3600.0, "time_min": 60.0, "time_s": 1.0}
DVDT_KEYS = {"dvdt_mv_h": 1e-3 / 3600.0, "dvdt_uv_s": 1e-6}  # → V/s
UNTIL_DVDT_KEYS = {"until_" + k: v for k, v in DVDT_KEYS.items()}
RECORD_KEYS = ("dt_s", "dv_mv", "di_ua", "dq_uah")

STEP_KEYS = (
    {
        "kind",
        "label",
        "comment",
        "step",
        "direction",
        "vs",
        "until_v",
        "hold_v",
        "duration",
        "limit",
        "to",
        "count",
        "repeat",
        "record",
        "range",
        "new_cycle",
        "ir_corrected",
    }
    | set(CURRENT_KEYS)
    | set(UNTIL_CURRENT_KEYS)
    | set(UNTIL_CHARGE_KEYS)
    | set(DURATION_KEYS)
    | set(UNTIL_DVDT_KEYS)
)
"""Every key a ``[[step]]`` table may hold."""
LOOP_KEYS = {"kind", "label", "comment", "to", "count", "repeat", "new_cycle"}
"""The keys a loop step may hold."""

LIMIT_VALUE_KEYS = (
    "v",
    "temp_c",
    *LIMIT_CURRENT_KEYS,
    *LIMIT_ABS_CURRENT_KEYS,
    *CHARGE_KEYS,
    *TIME_KEYS,
    *DVDT_KEYS,
)
"""The keys that name a ``[[step.limit]]``'s quantity (exactly one per limit)."""
LIMIT_KEYS = {"vs", "op", "goto", "action", *LIMIT_VALUE_KEYS}
"""Every key a ``[[step.limit]]`` table may hold."""

TOP_KEYS = {
    "name",
    "description",
    "vs",
    "charge_means",
    "cell",
    "reference",
    "safety",
    "recording",
    "control",
    "step",
}
CELL_KEYS = {
    "name",
    "area_cm2",
    "mass_mg",
    "loading_mg_cm2",
    "thickness_um",
    "density_g_cm3",
    "capacity_mah_g",
    "theoretical_capacity_mah_g",
    "resistance_ohm",
    "resistance_ohm_cm2",
    "comment",
}
REFERENCE_KEYS = {"electrode", "offset_v", "comment"}
SAFETY_KEYS = {
    "v_min",
    "v_max",
    "vs",
    "i_max_ma",
    "i_max_ua",
    "temp_max_c",
    "debounce_s",
    "comment",
}
CONTROL_KEYS = {"tick_ms", "slow_tick_ms", "host_loss", "comment"}
RECORDING_KEYS = {*RECORD_KEYS, "comment"}

OPS = {
    "<=": wire.OP_LE,
    "<": wire.OP_LE,
    "≤": wire.OP_LE,
    ">=": wire.OP_GE,
    ">": wire.OP_GE,
    "≥": wire.OP_GE,
}
"""Limit operators as written → wire codes ("<" and ">" mean the same at the resolution)."""
