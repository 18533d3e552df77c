"""Schedule files: what the cell sees, written in TOML, checked and compiled for the board.

A schedule is a TOML file (read with ``tomllib``) with a vocabulary close to what battery
people already write in EC-Lab (GCPL steps, limits, "goto") or PyBaMM (experiment strings).
The host parses it, converts every potential given "vs Li+/Li" to cell volts with the reference
offset, turns current densities and C-rates into amperes with the cell's area and mass, checks
the result against the board's hardware and the file's own safety window, and compiles a
binary blob (``protocol/schedule.py``) that the board runs on its own.

Conventions (DESIGN.md §5): current **+ = lithiation** of the working electrode (the Si film;
the paper calls it "charging" of the Si anode), − = delithiation. Step numbers in messages,
logs and the database are **0-based** (the first ``[[step]]`` is step 0). Unknown keys are
errors, so a typo never silently drops a cutoff.

Example (the paper's cycling protocol, shortened)::

    name = "paper-cycling"
    vs = "Li"                         # potentials below are vs Li+/Li unless a table says else

    [cell]
    name = "porous thin a-Si"
    area_cm2 = 0.567                  # 8.5 mm mask
    loading_mg_cm2 = 0.21             # or mass_mg
    thickness_um = 1.55
    density_g_cm3 = 1.5
    capacity_mah_g = 3579             # theoretical, for C-rates

    [reference]
    electrode = "In-Li"               # 0.62 V vs Li+/Li

    [safety]
    v_min = 0.0                       # vs Li (file default); -0.62 V cell
    v_max = 2.6                       # above the pristine film's ~2 V vs Li
    i_max_ma = 1.0
    debounce_s = 0.5

    [recording]
    dt_s = 120
    dv_mv = 5

    [[step]]
    label = "lith"
    kind = "cc"
    direction = "lithiation"
    current_density_ma_cm2 = 0.1
    until_v = 0.01

    [[step]]
    kind = "rest"
    duration_h = 1

    [[step]]
    kind = "cc"
    direction = "delithiation"
    current_density_ma_cm2 = 0.1
    until_v = 1.2

    [[step]]
    kind = "rest"
    duration_h = 1

    [[step]]
    kind = "loop"
    to = "lith"
    count = 100                       # the block runs 100 times in all

Top level
---------
``name``          schedule name (default: the file name without suffix)
``description``   free text
``vs``            default reference for every potential in the file: ``"Li"`` (vs Li+/Li) or
                  ``"cell"`` (cell volts, WE − CE). Without it, every potential must carry its
                  own ``vs`` unless the reference offset is 0 V (then both mean the same).
``charge_means``  ``"lithiation"`` or ``"delithiation"``: only needed to allow the words
                  "charge"/"discharge" in one-liners (they are ambiguous for a Si half cell).

``[cell]``
----------
``name``                    free text, logged as the run's ``cell`` metadata
``area_cm2``                electrode area (needed for current densities)
``mass_mg``                 active mass, or
``loading_mg_cm2``          active mass loading (mass = loading × area)
``thickness_um``            film thickness (metadata, volumetric capacity)
``density_g_cm3``           film density (metadata)
``capacity_mah_g``          theoretical specific capacity for C-rates (1C = mass × capacity);
                            alias ``theoretical_capacity_mah_g``
``resistance_ohm``          series resistance (or ``resistance_ohm_cm2``, area specific): when
                            given, a step whose |I|·R plus the safety-window edge exceeds the
                            board's compliance voltage is refused; ``ir_corrected`` cutoffs
                            use it too

``[reference]``
---------------
``electrode``   ``"In-Li"`` (0.62 V vs Li+/Li, built in), ``"Li"`` (0 V) or any name together
                with ``offset_v`` (the counter electrode's potential vs Li+/Li, V). Default In-Li.
``offset_v``    custom offset (overrides the built-in value)

Potentials convert as: cell V = E(WE vs Li) − offset_v.

``[safety]`` (checked by the board every tick; a trip opens the relay)
------------------------------------------------------------------------
``v_min``, ``v_max``    window in V, with ``vs`` (``"Li"`` or ``"cell"``; default the file's
                        ``vs``). Default: the board's hardware window.
``i_max_ma`` / ``i_max_ua``   |current| ceiling (default: the board's top range)
``temp_max_c``          temperature ceiling, °C (default off)
``debounce_s``          how long a violation must persist before the trip (default 0.5 s)

Every cutoff and hold potential must lie strictly inside this window (a cutoff on the window
edge would trip the safety instead of ending the step). The window must also hold the cell's
open-circuit potential when the run starts: a pristine Si film sits near 2 V vs Li.

``[recording]`` (defaults for every step; 0 turns a criterion off)
--------------------------------------------------------------------
``dt_s``   record at least every dt seconds (default 60)
``dv_mv``  record when |ΔV| since the last point ≥ dv (default 5 mV)
``di_ua``  record when |ΔI| ≥ di (default 0 = off)
``dq_uah`` record when |ΔQ| ≥ dq (default 0 = off)

``[control]``
-------------
``tick_ms``        control-loop period (default 100 ms; 1..60000)
``slow_tick_ms``   period while nothing is about to happen (default 1000 ms; ≥ tick_ms); the
                   board runs at tick_ms in CV, at step starts, while debouncing a safety
                   violation and when a voltage limit is near
``host_loss``      what the board does when its record buffer fills while the host is away:
                   ``"decimate"`` (default; drop every other old point, never step boundaries)
                   or ``"hold"`` (open the circuit and wait for the host)

``[[step]]``
------------
``kind``        ``rest`` (0 A, relay closed), ``ocv`` (relay open), ``cc`` (constant current),
                ``cv`` (hold a potential), ``cccv`` (constant current to a potential, then hold
                it while the current decays), ``loop`` (jump back)
``label``       a name for ``goto``/``loop`` targets and for the logs (unique)
``comment``     free text, ignored

Current (``cc``, ``cccv``), exactly one of:

- ``current_a``, ``current_ma``, ``current_ua``            absolute
- ``current_density_ma_cm2``, ``current_density_ua_cm2``    × ``[cell] area_cm2``
- ``c_rate``  (number, or ``"C/10"``)                        × mass × ``capacity_mah_g``

and a direction: ``direction = "lithiation"`` (+) or ``"delithiation"`` (−) with a positive
value, or a signed value without ``direction`` (+ = lithiation).

Potentials: ``until_v`` (``cc``: voltage cutoff, checked in the direction of the current:
lithiation ends at V ≤ until_v, delithiation at V ≥ until_v) and ``hold_v`` (``cv``, ``cccv``:
the potential held); both with the step's ``vs`` (``"Li"``/``"cell"``, default the file's).

End conditions (a step ends at the first one that holds; every step but ``loop`` needs one):

- duration: ``duration_h``, ``duration_min``, ``duration_s`` or ``duration = "1 h"``
- voltage: ``until_v`` (``cc`` only; use ``[[step.limit]]`` for rests)
- end current, |I| ≤ value (``cv``, ``cccv``): ``until_current_ma``, ``until_current_ua``,
  ``until_current_a``, ``until_current_density_ma_cm2``, ``until_current_density_ua_cm2``,
  ``until_c_rate``
- charge passed in the step, |Q| ≥ value: ``until_charge_mah``, ``until_charge_uah``,
  ``until_capacity_mah_g`` (× mass), ``until_capacity_mah_cm2`` (× area)
- |dV/dt| ≤ value: ``until_dvdt_mv_h`` or ``until_dvdt_uv_s`` (wire resolution 1 µV/s =
  3.6 mV/h)

Other step keys:

- ``range``      current range: ``"auto"`` (default: the board takes the smallest range that
  holds a CC set point and autoranges during CV phases and rests) or an index into the board's
  ranges (0 = smallest), which locks the step to that range.
- ``ir_corrected``  ``true`` (``cc`` with ``until_v``): the cutoff is an IR-free potential,
  as in the paper's rate test; the board stops at the measured V = until_v − I·R with
  ``[cell] resistance_ohm``/``resistance_ohm_cm2`` (+ = lithiation, so a fast delithiation's
  measured cutoff lies I·R above until_v). That measured value must fit the windows.
- ``new_cycle``  ``true`` forces the cycle counter up at this step's start (normally the board
  counts a new cycle at each lithiation after a delithiation)
- ``record``     per-step recording override, same keys as ``[recording]``
  (``record = { dt_s = 1, dv_mv = 2 }`` or a ``[step.record]`` table)
- ``step``       a one-liner (below) that fills in kind, current and end conditions

Loops: ``{ kind = "loop", to = "label", count = N }`` runs the block from ``label`` to the loop
N times in all (EC-Lab's "nc cycles" = N − 1 is ``repeat = N − 1``). The target must come
before the loop; loops nest.

Conditional limits, up to 4 per step including the end conditions above (EC-Lab "limits",
PyBaMM "until ... or ...")::

    [[step.limit]]
    v = 0.3               # the quantity is named by the value key
    vs = "Li"
    op = "<="             # "<=" or ">=" ("<", ">" mean the same at the board's resolution)
    goto = "relax"        # a label; or action = "next" (default) or "end" (ends the run)

Value keys: ``v`` (with ``vs``), ``current_ma``/``current_ua``/``current_density_ma_cm2``/
``current_density_ua_cm2`` (signed current), ``abs_current_ma``/``abs_current_ua``/
``abs_current_density_ma_cm2``/``abs_current_density_ua_cm2`` (|I|), ``time_h``/``time_min``/
``time_s`` (step time), ``charge_mah``/``charge_uah``/``capacity_mah_g``/``capacity_mah_cm2``
(|Q| in the step), ``dvdt_mv_h``/``dvdt_uv_s`` (|dV/dt|), ``temp_c``.

One-liners (PyBaMM style), as ``step = "..."`` inside a ``[[step]]`` (other keys such as
``label`` or ``record`` may sit next to it)::

    "Rest for 1 hour"
    "Rest for 2 h or until dV/dt < 5 mV/h"
    "OCV for 10 min"
    "Lithiate at 0.1 mA/cm2 until 0.01 V vs Li"
    "Delithiate at C/10 until 1.2 V vs Li or 20 h"
    "Lithiate at 56.7 uA for 30 min"
    "Lithiate at 0.1 mA/cm2 until 0.01 V vs Li, then hold until 1 uA/cm2"     (cccv)
    "Hold at 0.01 V vs Li until 1 uA/cm2 or 5 h"                               (cv)

Currents: ``A``, ``mA``, ``uA``/``µA``, ``nA``, each optionally ``/cm2``, or ``C/n``, ``xC``.
Conditions after ``until``, joined by ``or``: ``<x> V [vs Li|vs cell]``, a current (end
current), ``<x> mAh``/``uAh``/``mAh/g``/``mAh/cm2`` (charge), ``dV/dt < <x> mV/h``, a duration.
``Charge``/``Discharge`` are accepted only when the file sets ``charge_means``.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from sicell.errors import ScheduleError
from sicell.protocol import schedule as wire
from sicell.units import (
    REFERENCES,
    Reference,
    a_to_na,
    ah_to_nah,
    parse_c_rate,
    parse_current,
    parse_duration,
    reference_from,
    s_to_ms,
    to_cell_v,
    to_li_v,
    v_to_uv,
)

__all__ = [
    "CONVENTIONS",
    "DEFAULT_LIMITS",
    "REFERENCES",
    "BoardLimits",
    "Reference",
    "Schedule",
    "ScheduleValidationError",
    "load_schedule",
    "parse_schedule",
    "to_cell_v",
    "to_li_v",
]

CONVENTIONS: dict[str, str] = {
    "current_sign": "positive current = lithiation of the working electrode (Si)",
    "charging": "lithiation is 'charging' of the Si anode; delithiation is 'discharging'",
    "capacity": "capacity accumulates per half-cycle and resets at each half-cycle start",
    "cycle_start": "a cycle starts with a lithiation step",
    "voltage": "voltage_v is the cell voltage (working minus counter electrode), V",
    "potential_vs_li": "we_v = voltage_v + reference_offset_v (working electrode vs Li+/Li), V",
    "step_index": "0-based schedule step index, as compiled for the board",
}
"""The sign and bookkeeping conventions (DESIGN.md §5) written into every log's metadata."""

_I32 = 2**31 - 1
_U32 = 2**32 - 1
_U16 = 2**16 - 1

KIND_CODES: dict[str, int] = {
    "rest": wire.K_REST,
    "cc": wire.K_CC,
    "cv": wire.K_CV,
    "cccv": wire.K_CCCV,
    "ocv": wire.K_OCV,
    "loop": wire.K_LOOP,
}


ScheduleValidationError = ScheduleError  # the name the schedule code and its callers use


@dataclass(frozen=True)
class BoardLimits:
    """What the hardware can do: the cell-voltage window, the compliance voltage of the current
    source and the full-scale currents of its ranges (ascending)."""

    v_min_v: float
    v_max_v: float
    compliance_v: float
    ranges_a: tuple[float, ...]

    @property
    def i_max_a(self) -> float:
        """Full scale of the top range, A."""
        return max(self.ranges_a) if self.ranges_a else 0.0

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> BoardLimits:
        """From INFO fields (``messages.LAYOUTS`` names; ``v_min_uv``, ``v_max_uv``,
        ``compliance_uv`` in µV) plus ``ranges_na`` (full-scale currents in nA, range order)."""
        ranges = tuple(float(r) * 1e-9 for r in info["ranges_na"])
        return cls(
            v_min_v=int(info["v_min_uv"]) * 1e-6,
            v_max_v=int(info["v_max_uv"]) * 1e-6,
            compliance_v=int(info["compliance_uv"]) * 1e-6,
            ranges_a=ranges,
        )


DEFAULT_LIMITS = BoardLimits(
    v_min_v=-2.0, v_max_v=2.0, compliance_v=4.5, ranges_a=(10e-6, 100e-6, 1e-3, 10e-3)
)
"""The documented board (DESIGN.md §3): ±2.0 V window, ±4.5 V compliance, 10 µA … 10 mA."""


# ---- parsed (unresolved) schedule pieces ---------------------------------------------------

Vs = Literal["Li", "cell"]


@dataclass(frozen=True)
class Potential:
    """A potential as written: ``value`` V vs Li+/Li (``vs="Li"``) or cell volts."""

    value: float
    vs: Vs
    key: str

    def cell_v(self, ref: Reference) -> float:
        return to_cell_v(self.value, ref) if self.vs == "Li" else self.value

    def describe(self, ref: Reference) -> str:
        if self.vs == "Li":
            return (
                f"{self.key} = {self.value:g} V vs Li ({self.cell_v(ref):+.4f} V cell with "
                f"{ref.name} at {ref.offset_v:g} V)"
            )
        return f"{self.key} = {self.value:g} V cell ({to_li_v(self.value, ref):.4f} V vs Li)"


@dataclass(frozen=True)
class CurrentValue:
    """A current as written: ``kind`` abs (A), density (A/cm²) or c_rate (multiple of 1C)."""

    kind: Literal["abs", "density", "c_rate"]
    value: float
    key: str
    raw: Any


@dataclass(frozen=True)
class ChargeValue:
    """A charge as written: abs (Ah), per_g (Ah/g) or per_cm2 (Ah/cm²)."""

    kind: Literal["abs", "per_g", "per_cm2"]
    value: float
    key: str
    raw: Any


@dataclass(frozen=True)
class RecordSpec:
    """Recording criteria (None = inherit)."""

    dt_s: float | None = None
    dv_mv: float | None = None
    di_ua: float | None = None
    dq_uah: float | None = None


@dataclass(frozen=True)
class LimitSpec:
    """A conditional limit as written."""

    quantity: int
    op: int
    value: float | Potential | CurrentValue | ChargeValue
    key: str
    action: int
    goto: str | None


@dataclass
class StepSpec:
    """One ``[[step]]`` as written (units not yet resolved)."""

    index: int
    kind: str
    label: str | None = None
    text: str | None = None  # the one-liner, when used
    current: CurrentValue | None = None
    direction: int | None = None  # +1 lithiation, -1 delithiation, None = from the sign
    until_v: Potential | None = None
    hold_v: Potential | None = None
    duration_s: float | None = None
    until_current: CurrentValue | None = None
    until_charge: ChargeValue | None = None
    until_dvdt_v_s: float | None = None
    dvdt_key: str | None = None
    limits: list[LimitSpec] = field(default_factory=list)
    loop_to: str | None = None
    loop_passes: int | None = None  # total passes of the block
    record: RecordSpec = field(default_factory=RecordSpec)
    range: int | Literal["auto"] | None = None
    new_cycle: bool = False
    ir_corrected: bool = False

    def where(self) -> str:
        lab = f"'{self.label}', " if self.label else ""
        return f"step {self.index} ({lab}{self.kind})"


@dataclass(frozen=True)
class SafetySpec:
    v_min: Potential | None = None
    v_max: Potential | None = None
    i_max_a: float | None = None
    i_max_key: str | None = None
    temp_max_c: float | None = None
    debounce_s: float = 0.5


@dataclass(frozen=True)
class ControlSpec:
    tick_ms: int = 100
    slow_tick_ms: int = 1000
    host_loss: Literal["decimate", "hold"] = "decimate"


@dataclass(frozen=True)
class ResolvedStep:
    """A step in board terms (SI floats before rounding to wire units)."""

    index: int
    kind: str
    label: str
    current_a: float | None  # signed, + = lithiation
    v_set_v: float | None  # cell volts
    range: int  # index or wire.RANGE_AUTO
    flags: int
    loop_target: int
    loop_count: int  # additional passes (wire meaning)
    record: tuple[int, int, int, int]  # dt ms, dV µV, dI nA, dQ nAh
    limits: tuple[tuple[int, int, int, int, int], ...]  # (q, op, action, value, target)
    cutoff_v: float | None  # cell volts of the CC cutoff, for checks and estimates
    charge_ah: float | None  # |Q| end condition
    duration_s: float | None


_WireStep = tuple[int, int, int, int, int, int, int, int, int, int, int]

# ---- key tables ----------------------------------------------------------------------------

_CURRENT_KEYS: dict[str, tuple[Literal["abs", "density", "c_rate"], float]] = {
    "current_a": ("abs", 1.0),
    "current_ma": ("abs", 1e-3),
    "current_ua": ("abs", 1e-6),
    "current_density_ma_cm2": ("density", 1e-3),
    "current_density_ua_cm2": ("density", 1e-6),
    "c_rate": ("c_rate", 1.0),
}
_UNTIL_CURRENT_KEYS = {"until_" + k: v for k, v in _CURRENT_KEYS.items()}
_LIMIT_CURRENT_KEYS = {k: v for k, v in _CURRENT_KEYS.items() if k != "c_rate"}
_LIMIT_ABS_CURRENT_KEYS = {"abs_" + k: v for k, v in _LIMIT_CURRENT_KEYS.items()}
_CHARGE_KEYS: dict[str, tuple[Literal["abs", "per_g", "per_cm2"], float]] = {
    "charge_mah": ("abs", 1e-3),
    "charge_uah": ("abs", 1e-6),
    "capacity_mah_g": ("per_g", 1e-3),
    "capacity_mah_cm2": ("per_cm2", 1e-3),
}
_UNTIL_CHARGE_KEYS = {"until_" + k: v for k, v in _CHARGE_KEYS.items()}
_DURATION_KEYS = {"duration_h": 3600.0, "duration_min": 60.0, "duration_s": 1.0}
_TIME_KEYS = {"time_h": 3600.0, "time_min": 60.0, "time_s": 1.0}
_DVDT_KEYS = {"dvdt_mv_h": 1e-3 / 3600.0, "dvdt_uv_s": 1e-6}  # → V/s
_UNTIL_DVDT_KEYS = {"until_" + k: v for k, v in _DVDT_KEYS.items()}
_RECORD_KEYS = ("dt_s", "dv_mv", "di_ua", "dq_uah")

_STEP_KEYS = (
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
    | set(_CURRENT_KEYS)
    | set(_UNTIL_CURRENT_KEYS)
    | set(_UNTIL_CHARGE_KEYS)
    | set(_DURATION_KEYS)
    | set(_UNTIL_DVDT_KEYS)
)
_LIMIT_KEYS = (
    {"v", "vs", "op", "goto", "action", "temp_c"}
    | set(_LIMIT_CURRENT_KEYS)
    | set(_LIMIT_ABS_CURRENT_KEYS)
    | set(_CHARGE_KEYS)
    | set(_TIME_KEYS)
    | set(_DVDT_KEYS)
)
_TOP_KEYS = {
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
_CELL_KEYS = {
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
_REFERENCE_KEYS = {"electrode", "offset_v", "comment"}
_SAFETY_KEYS = {
    "v_min",
    "v_max",
    "vs",
    "i_max_ma",
    "i_max_ua",
    "temp_max_c",
    "debounce_s",
    "comment",
}
_CONTROL_KEYS = {"tick_ms", "slow_tick_ms", "host_loss", "comment"}
_RECORDING_KEYS = {*_RECORD_KEYS, "comment"}


# ---- small typed readers ------------------------------------------------------------------


def _err(where: str, msg: str, **kw: Any) -> ScheduleValidationError:
    return ScheduleValidationError(f"{where}: {msg}", **kw)


def _step_kw(st: StepSpec, key: str | None = None, value: Any = None) -> dict[str, Any]:
    return {"step": st.index, "label": st.label, "key": key, "value": value}


def _check_keys(where: str, table: Mapping[str, Any], allowed: set[str], **kw: Any) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        hint = ""
        for u in unknown:
            close = [a for a in allowed if _similar(u, a)]
            if close:
                hint = f" (did you mean {close[0]!r}?)"
                break
        raise _err(
            where,
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}"
            f"{hint}; expected one of {', '.join(sorted(allowed))}",
            key=unknown[0],
            **kw,
        )


def _similar(a: str, b: str) -> bool:
    if a.replace("-", "_").lower() == b:
        return True
    if abs(len(a) - len(b)) > 2:
        return False
    # cheap edit-distance ≤ 2
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1] <= 2


def _table(where: str, value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _err(where, f"{key} must be a table, got {value!r}", key=key, value=value)
    return value


def _num(where: str, key: str, value: Any, **kw: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _err(where, f"{key} = {value!r} must be a number", key=key, value=value, **kw)
    f = float(value)
    if not math.isfinite(f):
        raise _err(where, f"{key} = {value!r} must be a finite number", key=key, value=value, **kw)
    return f


def _pos(where: str, key: str, value: Any, *, zero_ok: bool = False, **kw: Any) -> float:
    f = _num(where, key, value, **kw)
    if f < 0 or (f == 0 and not zero_ok):
        expected = "≥ 0" if zero_ok else "> 0"
        raise _err(where, f"{key} = {value!r}; expected a number {expected}", key=key, value=value)
    return f


def _str(where: str, key: str, value: Any, **kw: Any) -> str:
    if not isinstance(value, str):
        raise _err(where, f"{key} = {value!r} must be a string", key=key, value=value, **kw)
    return value


def _vs(where: str, value: Any, **kw: Any) -> Vs:
    s = _str(where, "vs", value, **kw).strip().lower()
    if s in ("li", "li+/li", "li/li+"):
        return "Li"
    if s == "cell":
        return "cell"
    raise _err(where, f'vs = {value!r}; expected "Li" or "cell"', key="vs", value=value, **kw)


def _one_of(
    where: str, table: Mapping[str, Any], keys: Mapping[str, Any], what: str, **kw: Any
) -> str | None:
    present = [k for k in keys if k in table]
    if len(present) > 1:
        raise _err(
            where,
            f"give one {what}, not {' and '.join(present)}",
            key=present[1],
            value=table[present[1]],
            **kw,
        )
    return present[0] if present else None


# ---- one-liners --------------------------------------------------------------------------

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_CUR_TOKEN = (
    rf"(?:{_NUM}\s*(?:a|ma|ua|µa|μa|na)(?:\s*/\s*cm\^?2|\s*/\s*cm²)?|c\s*/\s*{_NUM}|{_NUM}\s*c)"
)
_V_RE = re.compile(rf"^({_NUM})\s*v(?:\s+vs\.?\s+(li|li\+/li|cell))?$", re.IGNORECASE)
_Q_RE = re.compile(rf"^({_NUM})\s*(mah|uah|µah|μah)\s*(/\s*g|/\s*cm\^?2|/\s*cm²)?$", re.IGNORECASE)
_DVDT_RE = re.compile(
    rf"^\|?dv/dt\|?\s*(?:<=?|<)\s*({_NUM})\s*(mv/h|uv/s|µv/s|μv/s)$", re.IGNORECASE
)
_VERB_RE = re.compile(
    r"^(rest|ocv|open circuit|lithiate|delithiate|lithiation|delithiation|charge|discharge|hold)"
    r"\b\s*(.*)$",
    re.IGNORECASE,
)


def _current_keys(text: str) -> tuple[str, float | str]:
    """One-liner current → (TOML key, value in that key's unit)."""
    spec = parse_current(text)
    if spec.kind == "c_rate":
        return "c_rate", spec.value
    m = re.match(rf"^\s*({_NUM})\s*(a|ma|ua|µa|μa|na)", text, re.IGNORECASE)
    assert m is not None
    num = float(m.group(1))
    unit = m.group(2).lower().replace("µ", "u").replace("μ", "u")
    if spec.kind == "density":
        if unit == "ma":
            return "current_density_ma_cm2", num
        if unit == "ua":
            return "current_density_ua_cm2", num
        if unit == "a":
            return "current_density_ma_cm2", num * 1e3
        return "current_density_ua_cm2", num * 1e-3
    if unit == "ma":
        return "current_ma", num
    if unit == "ua":
        return "current_ua", num
    if unit == "a":
        return "current_a", num
    return "current_ua", num * 1e-3


def _expand_one_liner(where: str, text: str, charge_means: str | None, idx: int) -> dict[str, Any]:
    """A PyBaMM-style string → the equivalent ``[[step]]`` keys."""
    kw: dict[str, Any] = {"step": idx, "key": "step", "value": text}
    src = " ".join(text.strip().rstrip(".").split())
    m = _VERB_RE.match(src)
    if not m:
        raise _err(
            where,
            f"step = {text!r}: expected it to start with Rest, OCV, Lithiate, Delithiate or "
            "Hold (e.g. 'Lithiate at 0.1 mA/cm2 until 0.01 V vs Li')",
            **kw,
        )
    verb, rest = m.group(1).lower(), m.group(2)
    out: dict[str, Any] = {}
    if verb in ("charge", "discharge"):
        if charge_means not in ("lithiation", "delithiation"):
            raise _err(
                where,
                f"step = {text!r}: {verb!r} is ambiguous for a Si half cell (the paper calls "
                "lithiation 'charging' of the Si anode, a Si-vs-Li half cell calls it "
                "'discharge'); write 'Lithiate'/'Delithiate', or set charge_means = "
                '"lithiation" or "delithiation" at the top of the file',
                **kw,
            )
        lith = (verb == "charge") == (charge_means == "lithiation")
        verb = "lithiate" if lith else "delithiate"
    verb = {"lithiation": "lithiate", "delithiation": "delithiate", "open circuit": "ocv"}.get(
        verb, verb
    )

    # split off "then hold until ..." (cccv)
    hold_part = None
    hm = re.search(r"(?:,\s*|\s+)(?:then\s+|and\s+)?hold\b\s*(.*)$", rest, re.IGNORECASE)
    if verb in ("lithiate", "delithiate") and hm:
        hold_part = hm.group(1)
        rest = rest[: hm.start()]

    if verb in ("lithiate", "delithiate", "hold"):
        am = re.match(r"^at\s+(.+?)(?=\s+(?:for|until|or)\b|$)(.*)$", rest, re.IGNORECASE)
        if not am:
            raise _err(where, f"step = {text!r}: expected 'at <current or potential>'", **kw)
        what, rest = am.group(1).strip(), am.group(2)
        if verb == "hold":
            vm = _V_RE.match(what)
            if not vm:
                raise _err(where, f"step = {text!r}: expected 'Hold at <x> V [vs Li|cell]'", **kw)
            out["kind"] = "cv"
            out["hold_v"] = float(vm.group(1))
            if vm.group(2):
                out["vs"] = "cell" if vm.group(2).lower() == "cell" else "Li"
        else:
            try:
                key, val = _current_keys(what)
            except ValueError as e:
                raise _err(where, f"step = {text!r}: {e}", **kw) from None
            out["kind"] = "cc"
            out[key] = val
            out["direction"] = "lithiation" if verb == "lithiate" else "delithiation"
    else:
        out["kind"] = verb  # rest / ocv

    conds: list[str] = []
    rest = re.sub(r"\bor\s+until\b", "or", rest, flags=re.IGNORECASE)
    for part in re.split(r"\s+(?=for\b|until\b|or\b)", rest.strip(), flags=re.IGNORECASE):
        p = part.strip()
        if not p:
            continue
        pm = re.match(r"^(for|until|or)\s+(.*)$", p, re.IGNORECASE)
        if not pm:
            raise _err(where, f"step = {text!r}: cannot read {p!r}", **kw)
        conds.append(pm.group(2).strip())

    def add(key: str, value: Any) -> None:
        if key in out:
            raise _err(where, f"step = {text!r}: two conditions set {key}", **kw)
        out[key] = value

    def add_vs(vs_word: str | None) -> None:
        if vs_word:
            vs = "cell" if vs_word.lower() == "cell" else "Li"
            if out.get("vs", vs) != vs:
                raise _err(where, f"step = {text!r}: potentials vs Li and vs cell mixed", **kw)
            out["vs"] = vs

    def condition(c: str, *, end_current_ok: bool) -> None:
        vm = _V_RE.match(c)
        if vm:
            add("until_v", float(vm.group(1)))
            add_vs(vm.group(2))
            return
        qm = _Q_RE.match(c)
        if qm:
            num, unit, per = float(qm.group(1)), qm.group(2).lower(), qm.group(3)
            milli = unit == "mah"
            if per and "g" in per:
                add("until_capacity_mah_g", num if milli else num * 1e-3)
            elif per:
                add("until_capacity_mah_cm2", num if milli else num * 1e-3)
            else:
                add("until_charge_mah" if milli else "until_charge_uah", num)
            return
        dm = _DVDT_RE.match(c)
        if dm:
            unit = dm.group(2).lower()
            add("until_dvdt_mv_h" if unit == "mv/h" else "until_dvdt_uv_s", float(dm.group(1)))
            return
        if re.match(rf"^{_CUR_TOKEN}$", c, re.IGNORECASE):
            if not end_current_ok:
                raise _err(
                    where,
                    f"step = {text!r}: an end current ({c!r}) only ends a hold (CV) phase",
                    **kw,
                )
            key, val = _current_keys(c)
            add("until_" + key, val)
            return
        try:
            add("duration_s", parse_duration(c))
            return
        except ValueError:
            pass
        raise _err(
            where,
            f"step = {text!r}: cannot read the condition {c!r}; expected '<x> V [vs Li]', "
            "a current, '<x> mAh', 'dV/dt < <x> mV/h' or a duration",
            **kw,
        )

    for c in conds:
        condition(c, end_current_ok=out["kind"] == "cv")

    if hold_part is not None:
        if "until_v" not in out:
            raise _err(where, f"step = {text!r}: '... then hold' needs 'until <x> V' first", **kw)
        out["kind"] = "cccv"
        out["hold_v"] = out.pop("until_v")
        for part in re.split(r"\s+or\s+", re.sub(r"^until\s+", "", hold_part.strip(), flags=re.I)):
            if part.strip():
                condition(part.strip(), end_current_ok=True)
    return out


# ---- the schedule ------------------------------------------------------------------------


@dataclass
class Schedule:
    """A parsed schedule. Units are resolved and checked by ``compile``."""

    name: str
    reference: Reference
    area_cm2: float | None
    mass_mg: float | None
    thickness_um: float | None
    density_g_cm3: float | None
    capacity_mah_g: float | None = None
    cell_name: str | None = None
    description: str | None = None
    resistance_ohm: float | None = None
    default_vs: Vs | None = None
    safety: SafetySpec = field(default_factory=SafetySpec)
    recording: RecordSpec = field(default_factory=lambda: RecordSpec(60.0, 5.0, 0.0, 0.0))
    control: ControlSpec = field(default_factory=ControlSpec)
    steps: list[StepSpec] = field(default_factory=list)
    source_text: str = ""
    source: str = "<string>"

    # ---- derived quantities ----
    @property
    def one_c_a(self) -> float | None:
        """1C in A (mass × theoretical capacity), None when either is unknown."""
        if self.mass_mg is None or self.capacity_mah_g is None:
            return None
        return self.mass_mg * 1e-3 * self.capacity_mah_g * 1e-3

    # ---- resolution --------------------------------------------------------------------
    def _labels(self) -> dict[str, int]:
        return {s.label: s.index for s in self.steps if s.label}

    def _current_a(self, st: StepSpec, cv: CurrentValue, what: str) -> float:
        kw = _step_kw(st, cv.key, cv.raw)
        where = st.where()
        if cv.kind == "abs":
            return cv.value
        if cv.kind == "density":
            if self.area_cm2 is None:
                raise _err(
                    where,
                    f"{cv.key} = {cv.raw!r} is a current density but the schedule has no area; "
                    "expected [cell] area_cm2",
                    **kw,
                )
            return cv.value * self.area_cm2
        one_c = self.one_c_a
        if one_c is None:
            missing = []
            if self.mass_mg is None:
                missing.append("[cell] mass_mg (or loading_mg_cm2 with area_cm2)")
            if self.capacity_mah_g is None:
                missing.append("[cell] capacity_mah_g")
            raise _err(
                where,
                f"{cv.key} = {cv.raw!r} is a C-rate for the {what} but 1C is unknown; "
                f"expected {' and '.join(missing)}",
                **kw,
            )
        return cv.value * one_c

    def _charge_ah(self, st: StepSpec, q: ChargeValue) -> float:
        kw = _step_kw(st, q.key, q.raw)
        if q.kind == "abs":
            return q.value
        if q.kind == "per_g":
            if self.mass_mg is None:
                raise _err(
                    st.where(),
                    f"{q.key} = {q.raw!r} is per gram but the schedule has no mass; "
                    "expected [cell] mass_mg or loading_mg_cm2",
                    **kw,
                )
            return q.value * self.mass_mg * 1e-3
        if self.area_cm2 is None:
            raise _err(
                st.where(),
                f"{q.key} = {q.raw!r} is per cm² but the schedule has no area; "
                "expected [cell] area_cm2",
                **kw,
            )
        return q.value * self.area_cm2

    def _safety_window(self, limits: BoardLimits) -> tuple[float, float]:
        ref = self.reference
        sf = self.safety
        vmin = sf.v_min.cell_v(ref) if sf.v_min else limits.v_min_v
        vmax = sf.v_max.cell_v(ref) if sf.v_max else limits.v_max_v
        return vmin, vmax

    def _check_potential(
        self,
        st: StepSpec,
        p: Potential,
        limits: BoardLimits,
        window: tuple[float, float],
        role: str,
        shift_v: float = 0.0,
        shift_note: str = "",
    ) -> float:
        """Cell volts the board gets for ``p`` (+ ``shift_v``), checked against the hardware
        window and strictly inside the safety window."""
        v = p.cell_v(self.reference) + shift_v
        kw = _step_kw(st, p.key, p.value)
        what = f"{role} {p.describe(self.reference)}{shift_note}"
        if not (limits.v_min_v <= v <= limits.v_max_v):
            raise _err(
                st.where(),
                f"{what} is outside the hardware window "
                f"{limits.v_min_v:+.3f}…{limits.v_max_v:+.3f} V cell; expected a value inside it",
                **kw,
            )
        lo, hi = window
        if not (lo < v < hi):
            ref = self.reference
            raise _err(
                st.where(),
                f"{what} is not strictly inside the safety window "
                f"{lo:+.4f}…{hi:+.4f} V cell ({to_li_v(lo, ref):.4f}…{to_li_v(hi, ref):.4f} V "
                "vs Li); expected a value inside it (widen [safety] v_min/v_max or move the "
                "potential)",
                **kw,
            )
        return v

    def _resolve(self, limits: BoardLimits | None = DEFAULT_LIMITS) -> list[ResolvedStep]:
        """Steps in board terms. ``limits=None`` resolves units and labels only (no hardware,
        safety or compliance checks), for ``step_rows`` and estimates."""
        labels = self._labels()
        if limits is None:
            limits = _PERMISSIVE
            window = (-math.inf, math.inf)
            imax_safety = math.inf
        else:
            window = self._safety_window(limits)
            imax_safety = self.safety.i_max_a if self.safety.i_max_a is not None else limits.i_max_a
        out: list[ResolvedStep] = []
        for st in self.steps:
            out.append(self._resolve_step(st, labels, limits, window, imax_safety))
        return out

    def _resolve_step(
        self,
        st: StepSpec,
        labels: dict[str, int],
        limits: BoardLimits,
        window: tuple[float, float],
        imax_safety: float,
    ) -> ResolvedStep:
        where = st.where()
        kind = st.kind
        flags = wire.SF_NEW_CYCLE if st.new_cycle else 0
        record = self._record(st)
        if kind == "loop":
            assert st.loop_to is not None and st.loop_passes is not None
            tgt = labels.get(st.loop_to)
            if tgt is None:
                raise _err(
                    where,
                    f"to = {st.loop_to!r} names no step; expected one of the labels "
                    f"{sorted(labels) or '(none defined)'}",
                    **_step_kw(st, "to", st.loop_to),
                )
            if tgt >= st.index:
                raise _err(
                    where,
                    f"to = {st.loop_to!r} is step {tgt}, not before the loop; expected a label "
                    "of an earlier step (loops jump backwards)",
                    **_step_kw(st, "to", st.loop_to),
                )
            return ResolvedStep(
                st.index,
                kind,
                st.label or "",
                None,
                None,
                wire.RANGE_AUTO,
                flags,
                tgt,
                st.loop_passes - 1,
                record,
                (),
                None,
                None,
                None,
            )

        # current set point
        current_a: float | None = None
        if kind in ("cc", "cccv"):
            assert st.current is not None
            mag = self._current_a(st, st.current, "set current")
            if st.direction is not None:
                if mag < 0 < st.direction:
                    raise _err(
                        where,
                        f"{st.current.key} = {st.current.raw!r} has a sign that contradicts "
                        f'direction = "{"lithiation" if st.direction > 0 else "delithiation"}"'
                        "; expected a positive magnitude with direction, or a signed value "
                        "without it",
                        **_step_kw(st, st.current.key, st.current.raw),
                    )
                current_a = abs(mag) * st.direction
            else:
                current_a = mag
            self._check_current(st, current_a, limits, imax_safety)

        # potentials
        v_set: float | None = None
        if st.hold_v is not None:
            v_set = self._check_potential(st, st.hold_v, limits, window, "hold")
        cutoff: float | None = None
        if st.until_v is not None:
            shift, note = 0.0, ""
            if st.ir_corrected:
                assert current_a is not None
                if self.resistance_ohm is None:
                    raise _err(
                        where,
                        "ir_corrected = true needs the series resistance; expected [cell] "
                        "resistance_ohm or resistance_ohm_cm2",
                        **_step_kw(st, "ir_corrected", True),
                    )
                shift = -current_a * self.resistance_ohm
                note = (
                    f" with I·R = {current_a * 1e3:+.4g} mA × {self.resistance_ohm:.4g} Ω "
                    f"(measured cutoff {st.until_v.cell_v(self.reference) + shift:+.4f} V cell)"
                )
            cutoff = self._check_potential(
                st, st.until_v, limits, window, "cutoff", shift_v=shift, shift_note=note
            )

        # compliance
        if current_a is not None and self.resistance_ohm is not None and limits is not _PERMISSIVE:
            drop = abs(current_a) * self.resistance_ohm
            edge = max(abs(window[0]), abs(window[1]))
            if drop + edge > limits.compliance_v:
                raise _err(
                    where,
                    f"current {current_a * 1e3:+.4g} mA through the series resistance "
                    f"{self.resistance_ohm:.4g} Ω drops {drop:.3f} V; with the safety window "
                    f"edge at {edge:.3f} V that needs {drop + edge:.3f} V, beyond the board's "
                    f"compliance of {limits.compliance_v:.3f} V; expected a smaller current",
                    **_step_kw(st, st.current.key if st.current else None, current_a),
                )

        # range
        rng = self._range(st, current_a, limits)

        # end conditions and limits
        lims: list[tuple[int, int, int, int, int]] = []
        charge_ah: float | None = None
        if st.until_v is not None and cutoff is not None:
            assert current_a is not None
            op = wire.OP_LE if current_a > 0 else wire.OP_GE
            lims.append((wire.Q_V, op, wire.A_NEXT, v_to_uv(cutoff), 0))
        if st.duration_s is not None:
            lims.append((wire.Q_TIME, wire.OP_GE, wire.A_NEXT, self._ms(st, st.duration_s), 0))
        if st.until_current is not None:
            ia = abs(self._current_a(st, st.until_current, "end current"))
            na = a_to_na(ia)
            if na < 1:
                raise _err(
                    where,
                    f"{st.until_current.key} = {st.until_current.raw!r} is {ia * 1e9:.3g} nA, "
                    "below the 1 nA wire resolution; expected at least 1 nA",
                    **_step_kw(st, st.until_current.key, st.until_current.raw),
                )
            if current_a is not None and ia >= abs(current_a):
                raise _err(
                    where,
                    f"end current {st.until_current.key} = {st.until_current.raw!r} "
                    f"({ia * 1e6:.4g} µA) is not below the set current "
                    f"({abs(current_a) * 1e6:.4g} µA); expected a smaller end current",
                    **_step_kw(st, st.until_current.key, st.until_current.raw),
                )
            lims.append(
                (wire.Q_ABS_I, wire.OP_LE, wire.A_NEXT, self._i32(st, na, "end current"), 0)
            )
        if st.until_charge is not None:
            charge_ah = abs(self._charge_ah(st, st.until_charge))
            nah = ah_to_nah(charge_ah)
            if nah < 1:
                raise _err(
                    where,
                    f"{st.until_charge.key} = {st.until_charge.raw!r} is below 1 nAh; expected "
                    "a larger charge",
                    **_step_kw(st, st.until_charge.key, st.until_charge.raw),
                )
            lims.append((wire.Q_ABS_Q, wire.OP_GE, wire.A_NEXT, self._i32(st, nah, "charge"), 0))
        if st.until_dvdt_v_s is not None:
            uvs = self._dvdt_uv_s(st, st.until_dvdt_v_s, st.dvdt_key or "until_dvdt")
            lims.append((wire.Q_DVDT, wire.OP_LE, wire.A_NEXT, uvs, 0))
        for j, lim in enumerate(st.limits):
            lims.append(self._resolve_limit(st, j, lim, labels, limits))
        if len(lims) > wire.MAX_LIMITS:
            raise _err(
                where,
                f"{len(lims)} end conditions and limits; expected at most {wire.MAX_LIMITS} per "
                "step (split the step or drop a condition)",
                **_step_kw(st, "limit", len(lims)),
            )
        if kind == "cccv" and not any(
            q in (wire.Q_ABS_I, wire.Q_TIME, wire.Q_ABS_Q) for q, *_ in lims
        ):
            raise _err(
                where,
                "the hold phase never ends; expected an end current (until_current_*), a "
                "duration or a charge",
                **_step_kw(st),
            )
        if not lims:
            raise _err(
                where,
                "has no end condition, so it would never end; expected a duration, a cutoff "
                "(until_v), an end current, a charge, a dV/dt or a [[step.limit]]",
                **_step_kw(st),
            )
        if current_a is not None and a_to_na(current_a) == 0:
            raise _err(where, "set current rounds to 0 nA", **_step_kw(st))
        return ResolvedStep(
            st.index,
            kind,
            st.label or "",
            current_a,
            v_set,
            rng,
            flags,
            0,
            0,
            record,
            tuple(lims),
            cutoff,
            charge_ah,
            st.duration_s,
        )

    def _check_current(
        self, st: StepSpec, current_a: float, limits: BoardLimits, imax_safety: float
    ) -> None:
        assert st.current is not None
        where = st.where()
        kw = _step_kw(st, st.current.key, st.current.raw)
        shown = f"{st.current.key} = {st.current.raw!r} ({current_a * 1e3:+.6g} mA)"
        if a_to_na(current_a) == 0:
            raise _err(where, f"{shown} rounds to 0 nA; expected at least 1 nA", **kw)
        top = limits.i_max_a
        if abs(current_a) > top * (1 + 1e-9):
            raise _err(
                where,
                f"{shown} is over the board's top range of {top * 1e3:g} mA; expected "
                f"|I| ≤ {top * 1e3:g} mA",
                **kw,
            )
        if abs(current_a) > imax_safety * (1 + 1e-9):
            raise _err(
                where,
                f"{shown} is over the safety limit i_max of {imax_safety * 1e3:g} mA; expected "
                f"|I| ≤ {imax_safety * 1e3:g} mA (or raise [safety] i_max)",
                **kw,
            )

    def _range(self, st: StepSpec, current_a: float | None, limits: BoardLimits) -> int:
        where = st.where()
        if st.range == "auto":
            return wire.RANGE_AUTO
        if isinstance(st.range, int):
            if limits is _PERMISSIVE:
                return st.range
            if st.range >= len(limits.ranges_a):
                raise _err(
                    where,
                    f"range = {st.range} but the board has {len(limits.ranges_a)} ranges; "
                    f'expected 0..{len(limits.ranges_a) - 1} or "auto"',
                    **_step_kw(st, "range", st.range),
                )
            fs = limits.ranges_a[st.range]
            if current_a is not None and abs(current_a) > fs * (1 + 1e-9):
                raise _err(
                    where,
                    f"range = {st.range} has a full scale of {fs * 1e6:g} µA, below the set "
                    f'current {abs(current_a) * 1e6:.6g} µA; expected a larger range or "auto"',
                    **_step_kw(st, "range", st.range),
                )
            return st.range
        # default: the board picks the smallest range holding a CC set point and autoranges
        # in CV phases and rests
        return wire.RANGE_AUTO

    def _ms(self, st: StepSpec, seconds: float, key: str = "duration") -> int:
        ms = s_to_ms(seconds)
        if ms < 1 or ms > _I32:
            raise _err(
                st.where(),
                f"{key} of {seconds:g} s is outside 1 ms … {_I32 / 3.6e6:.1f} h; expected a "
                "duration in that range (use a loop for longer steps)",
                **_step_kw(st, key, seconds),
            )
        return ms

    def _i32(self, st: StepSpec, value: int, what: str) -> int:
        if not -_I32 <= value <= _I32:
            raise _err(
                st.where(),
                f"{what} of {value} wire units does not fit the 32-bit field",
                **_step_kw(st, what, value),
            )
        return value

    def _dvdt_uv_s(self, st: StepSpec, v_s: float, key: str) -> int:
        uvs = math.floor(v_s * 1e6 + 0.5)
        if uvs < 1:
            raise _err(
                st.where(),
                f"{key}: |dV/dt| of {v_s * 1e6:.3g} µV/s ({v_s * 3.6e6:.3g} mV/h) rounds to 0 at "
                "the board's 1 µV/s resolution; expected at least 0.5 µV/s (1.8 mV/h)",
                **_step_kw(st, key, v_s),
            )
        return self._i32(st, uvs, key)

    def _resolve_limit(
        self,
        st: StepSpec,
        j: int,
        lim: LimitSpec,
        labels: dict[str, int],
        limits: BoardLimits,
    ) -> tuple[int, int, int, int, int]:
        where = f"{st.where()} limit {j}"
        kw = _step_kw(st, lim.key, lim.value)
        target = 0
        if lim.action == wire.A_GOTO:
            assert lim.goto is not None
            tgt = labels.get(lim.goto)
            if tgt is None:
                raise _err(
                    where,
                    f"goto = {lim.goto!r} names no step; expected one of the labels "
                    f"{sorted(labels) or '(none defined)'}",
                    **_step_kw(st, "goto", lim.goto),
                )
            target = tgt
        q = lim.quantity
        val = lim.value
        if isinstance(val, Potential):
            v = val.cell_v(self.reference)
            if not (limits.v_min_v <= v <= limits.v_max_v):
                raise _err(
                    where,
                    f"{val.describe(self.reference)} is outside the hardware window "
                    f"{limits.v_min_v:+.3f}…{limits.v_max_v:+.3f} V cell, so it can never "
                    "hold; expected a potential inside it",
                    **kw,
                )
            wv = v_to_uv(v)
        elif isinstance(val, CurrentValue):
            wv = self._i32(st, a_to_na(self._current_a(st, val, "limit")), lim.key)
            if q == wire.Q_ABS_I:
                wv = abs(wv)
        elif isinstance(val, ChargeValue):
            wv = self._i32(st, ah_to_nah(abs(self._charge_ah(st, val))), lim.key)
        elif q == wire.Q_TIME:
            wv = self._ms(st, val, lim.key)
        elif q == wire.Q_DVDT:
            wv = self._dvdt_uv_s(st, val, lim.key)
        elif q == wire.Q_TEMP:
            wv = math.floor(val * 10 + 0.5)
        else:  # pragma: no cover - parse guarantees the above
            raise _err(where, f"unsupported limit {lim.key}", **kw)
        return (q, lim.op, lim.action, wv, target)

    def _record(self, st: StepSpec) -> tuple[int, int, int, int]:
        base, over = self.recording, st.record

        def pick(name: str) -> float:
            v = getattr(over, name)
            if v is None:
                v = getattr(base, name)
            return 0.0 if v is None else float(v)

        vals = (
            s_to_ms(pick("dt_s")),
            v_to_uv(pick("dv_mv") * 1e-3),
            a_to_na(pick("di_ua") * 1e-6),
            ah_to_nah(pick("dq_uah") * 1e-6),
        )
        for name, v in zip(_RECORD_KEYS, vals, strict=True):
            if not 0 <= v <= _U32:
                raise _err(
                    st.where(),
                    f"record {name} = {pick(name)!r} does not fit the board's 32-bit field",
                    **_step_kw(st, name, pick(name)),
                )
        return vals

    def _header(self, limits: BoardLimits) -> tuple[int, int, int, int, int, int, int, int]:
        ref = self.reference
        sf = self.safety
        vmin, vmax = self._safety_window(limits)
        where = "[safety]"
        for p, v in ((sf.v_min, vmin), (sf.v_max, vmax)):
            if p is not None and not (limits.v_min_v <= v <= limits.v_max_v):
                raise _err(
                    where,
                    f"{p.describe(ref)} is outside the hardware window "
                    f"{limits.v_min_v:+.3f}…{limits.v_max_v:+.3f} V cell; expected a value "
                    "inside it",
                    key=p.key,
                    value=p.value,
                )
        if vmin >= vmax:
            raise _err(
                where,
                f"v_min ({vmin:+.4f} V cell) is not below v_max ({vmax:+.4f} V cell); expected "
                "v_min < v_max",
                key="v_min",
                value=vmin,
            )
        imax = sf.i_max_a if sf.i_max_a is not None else limits.i_max_a
        if imax > limits.i_max_a * (1 + 1e-9):
            raise _err(
                where,
                f"{sf.i_max_key} gives {imax * 1e3:g} mA, over the board's top range of "
                f"{limits.i_max_a * 1e3:g} mA; expected at most that",
                key=sf.i_max_key,
                value=imax,
            )
        imax_na = a_to_na(imax)
        if imax_na < 1:
            raise _err(where, "i_max rounds to 0 nA; expected > 0", key=sf.i_max_key, value=imax)
        deb = s_to_ms(sf.debounce_s)
        if not 0 <= deb <= _U16:
            raise _err(
                where,
                f"debounce_s = {sf.debounce_s:g} is outside 0…65.535 s",
                key="debounce_s",
                value=sf.debounce_s,
            )
        if sf.temp_max_c is None:
            tmax = wire.TEMP_OFF
        else:
            tmax = math.floor(sf.temp_max_c * 10 + 0.5)
            if not -32768 <= tmax < wire.TEMP_OFF:
                raise _err(
                    where,
                    f"temp_max_c = {sf.temp_max_c:g} is outside −3276.8…3276.6 °C",
                    key="temp_max_c",
                    value=sf.temp_max_c,
                )
        ctl = self.control
        policy = wire.P_DECIMATE if ctl.host_loss == "decimate" else wire.P_HOLD
        return (
            policy,
            ctl.tick_ms,
            ctl.slow_tick_ms,
            deb,
            v_to_uv(vmin),
            v_to_uv(vmax),
            imax_na,
            tmax,
        )

    # ---- public API ---------------------------------------------------------------------
    def compile(self, limits: BoardLimits = DEFAULT_LIMITS) -> bytes:
        """Validate against ``limits`` and build the blob ``protocol.schedule.encode`` makes.

        Raises ``ScheduleValidationError`` naming the step (index and label), the value and
        what was expected for anything the board could not or should not run.
        """
        if not self.steps:
            raise ScheduleValidationError(
                f"{self.source}: no [[step]] entries; expected at least one"
            )
        if len(self.steps) > wire.MAX_STEPS:
            raise ScheduleValidationError(
                f"{self.source}: {len(self.steps)} steps; expected at most {wire.MAX_STEPS} "
                "(use loops to repeat blocks)"
            )
        header = self._header(limits)
        resolved = self._resolve(limits)
        steps: list[tuple[_WireStep, list[tuple[int, int, int, int, int]]]] = []
        for r in resolved:
            i_na = a_to_na(r.current_a) if r.current_a is not None else 0
            v_uv = v_to_uv(r.v_set_v) if r.v_set_v is not None else 0
            st: _WireStep = (
                KIND_CODES[r.kind],
                r.range,
                r.flags,
                i_na,
                v_uv,
                r.loop_target,
                r.loop_count,
                *r.record,
            )
            steps.append((st, list(r.limits)))
        blob: bytes = wire.encode(header, steps)
        # the board's own validation, so a blob that would be NACKed never leaves the host
        try:
            wire.decode(
                blob,
                n_ranges=len(limits.ranges_a),
                hw_v_min=v_to_uv(limits.v_min_v),
                hw_v_max=v_to_uv(limits.v_max_v),
                hw_i_max=a_to_na(limits.i_max_a),
            )
        except wire.ScheduleError as e:  # pragma: no cover - the checks above come first
            lab = ""
            if 0 <= e.step < len(self.steps) and self.steps[e.step].label:
                lab = f" ('{self.steps[e.step].label}')"
            raise ScheduleValidationError(
                f"{self.source}: board validation failed{lab}: {e}",
                step=e.step if e.step >= 0 else None,
            ) from e
        return blob

    def step_rows(self) -> list[tuple[int, str, float | None, float | None, str]]:
        """(idx, kind, current_a, voltage_v in cell volts, label) per compiled step, for the
        store's ``steps`` table, at the wire's resolution (nA, µV). ``voltage_v`` is the hold
        potential (cv, cccv) or the CC cutoff (cc); ``label`` is "" when the step has none.
        Raises ``ScheduleValidationError`` when a unit cannot be resolved (missing area...)."""
        rows: list[tuple[int, str, float | None, float | None, str]] = []
        for r in self._resolve(None):
            v = r.v_set_v if r.v_set_v is not None else r.cutoff_v
            i = None if r.current_a is None else a_to_na(r.current_a) / 1e9
            rows.append((r.index, r.kind, i, None if v is None else v_to_uv(v) / 1e6, r.label))
        return rows

    def metadata(self) -> dict[str, Any]:
        """Run metadata (``schema.META_KEYS`` names) this schedule knows."""
        meta: dict[str, Any] = {
            "conventions": dict(CONVENTIONS),
            "reference_electrode": self.reference.name,
            "reference_offset_v": self.reference.offset_v,
            "area_cm2": self.area_cm2,
            "mass_mg": self.mass_mg,
            "thickness_um": self.thickness_um,
            "density_g_cm3": self.density_g_cm3,
            "schedule_toml": self.source_text,
        }
        if self.cell_name:
            meta["cell"] = self.cell_name
        return meta

    def estimate_duration_s(self) -> float | None:
        """A rough run time: durations as written, CC steps by charge / current (a full
        half-cycle = 1C × 1 h when only a voltage cutoff ends them, needs mass and capacity),
        CV tails and dV/dt rests guessed at 1 h; loops multiplied out, conditional gotos
        ignored. None when a step cannot be estimated."""
        try:
            resolved = self._resolve(None)
        except ScheduleValidationError:
            return None
        per: list[float | None] = [self._estimate_step(r) for r in resolved]
        total = 0.0
        counters: dict[int, int] = {}
        pc = 0
        budget = 2_000_000
        while pc < len(resolved):
            budget -= 1
            if budget < 0:
                return None
            r = resolved[pc]
            if r.kind == "loop":
                c = counters.get(pc, 0)
                if c < r.loop_count:
                    counters[pc] = c + 1
                    pc = r.loop_target
                else:
                    counters[pc] = 0
                    pc += 1
                continue
            d = per[pc]
            if d is None:
                return None
            total += d
            pc += 1
        return total

    def _estimate_step(self, r: ResolvedStep) -> float | None:
        guess_tail = 3600.0
        cands: list[float] = []
        if r.duration_s is not None:
            cands.append(r.duration_s)
        if r.current_a is not None and r.charge_ah is not None:
            cands.append(r.charge_ah / abs(r.current_a) * 3600.0)
        if r.kind == "cc" and r.cutoff_v is not None and r.current_a is not None:
            one_c = self.one_c_a
            if one_c is not None:
                cands.append(one_c / abs(r.current_a) * 3600.0)
        if r.kind == "cccv" and r.current_a is not None:
            one_c = self.one_c_a
            if one_c is not None:
                cands.append(one_c / abs(r.current_a) * 3600.0 + guess_tail)
        if r.kind in ("cv", "rest", "ocv") and not cands:
            cands.append(guess_tail)
        if not cands:
            for q, *_ in r.limits:
                if q != wire.Q_V:
                    cands.append(guess_tail)
                    break
        return min(cands) if cands else None

    def warnings(self, limits: BoardLimits = DEFAULT_LIMITS) -> list[str]:
        """Things that compile but deserve a second look (rounding, defaults, recording)."""
        out: list[str] = []
        tick_s = self.control.tick_ms / 1000
        if self.safety.v_min is None or self.safety.v_max is None:
            out.append("no [safety] v_min/v_max: the board's hardware window is the only guard")
        if self.safety.i_max_a is None:
            out.append(f"no [safety] i_max: the top range ({limits.i_max_a * 1e3:g} mA) is used")
        for st in self.steps:
            if st.kind != "loop":
                rec = self._record(st)
                if not any(rec):
                    out.append(
                        f"{st.where()}: every recording criterion is off; only the step's "
                        "first and last points are recorded"
                    )
                elif 0 < rec[0] < self.control.tick_ms:
                    out.append(
                        f"{st.where()}: record dt_s = {rec[0] / 1000:g} s is shorter than the "
                        f"control tick ({tick_s:g} s); points come at most once per tick"
                    )
            vals: list[tuple[str, float]] = []
            if st.until_dvdt_v_s is not None:
                vals.append((st.dvdt_key or "until_dvdt", st.until_dvdt_v_s))
            for lim in st.limits:
                if lim.quantity == wire.Q_DVDT and isinstance(lim.value, float):
                    vals.append((lim.key, lim.value))
            for key, v_s in vals:
                uvs = v_s * 1e6
                r = max(1, math.floor(uvs + 0.5))
                if abs(r - uvs) > 0.05 * uvs:
                    out.append(
                        f"{st.where()}: {key} ({uvs:.3g} µV/s = {v_s * 3.6e6:.3g} mV/h) is sent "
                        f"as {r} µV/s ({r * 3.6:.3g} mV/h), the board's resolution"
                    )
        return out


_PERMISSIVE = BoardLimits(-1e9, 1e9, math.inf, (math.inf,))
"""Limits that never refuse anything (resolution without checks)."""


# ---- parsing -----------------------------------------------------------------------------


def load_schedule(path: str | os.PathLike[str]) -> Schedule:
    """Read and parse a schedule file (UTF-8 TOML)."""
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    sched = parse_schedule(text, source=str(p))
    return sched


def parse_schedule(text: str, source: str = "<string>") -> Schedule:
    """Parse schedule TOML. Structural problems (syntax, unknown keys, wrong types, a step kind
    missing its set point) raise ``ScheduleValidationError`` here; everything that needs units
    resolved or the board's limits is checked by ``Schedule.compile``."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ScheduleValidationError(f"{source}: not valid TOML: {e}") from e
    where = source
    _check_keys(where, doc, _TOP_KEYS)

    name = doc.get("name")
    if name is None:
        name = Path(source).stem if source != "<string>" else "schedule"
    name = _str(where, "name", name)
    description = _str(where, "description", doc["description"]) if "description" in doc else None
    default_vs = _vs(where, doc["vs"]) if "vs" in doc else None
    charge_means = None
    if "charge_means" in doc:
        charge_means = _str(where, "charge_means", doc["charge_means"]).lower()
        if charge_means not in ("lithiation", "delithiation"):
            raise _err(
                where,
                f'charge_means = {doc["charge_means"]!r}; expected "lithiation" or "delithiation"',
                key="charge_means",
                value=doc["charge_means"],
            )

    # [reference]
    rt = _table(where, doc.get("reference", {}), "[reference]")
    _check_keys("[reference]", rt, _REFERENCE_KEYS)
    electrode = _str("[reference]", "electrode", rt.get("electrode", "In-Li"))
    offset = _num("[reference]", "offset_v", rt["offset_v"]) if "offset_v" in rt else None
    try:
        reference = reference_from(electrode, offset)
    except ValueError as e:
        raise _err("[reference]", str(e), key="electrode", value=electrode) from None

    # [cell]
    ct = _table(where, doc.get("cell", {}), "[cell]")
    w = "[cell]"
    _check_keys(w, ct, _CELL_KEYS)

    def opt_pos(key: str) -> float | None:
        return _pos(w, key, ct[key]) if key in ct else None

    area = opt_pos("area_cm2")
    mass = opt_pos("mass_mg")
    loading = opt_pos("loading_mg_cm2")
    if loading is not None:
        if area is None:
            raise _err(w, "loading_mg_cm2 needs area_cm2 to give a mass", key="loading_mg_cm2")
        from_loading = loading * area
        if mass is not None and abs(mass - from_loading) > 0.01 * mass:
            raise _err(
                w,
                f"mass_mg = {mass:g} disagrees with loading_mg_cm2 × area_cm2 = "
                f"{from_loading:.4g} mg; expected one of them, or values that agree within 1 %",
                key="mass_mg",
                value=mass,
            )
        if mass is None:
            mass = from_loading
    if "capacity_mah_g" in ct and "theoretical_capacity_mah_g" in ct:
        raise _err(w, "give capacity_mah_g or theoretical_capacity_mah_g, not both")
    cap = opt_pos("capacity_mah_g") or opt_pos("theoretical_capacity_mah_g")
    res = opt_pos("resistance_ohm")
    res_cm2 = opt_pos("resistance_ohm_cm2")
    if res is not None and res_cm2 is not None:
        raise _err(w, "give resistance_ohm or resistance_ohm_cm2, not both", key="resistance_ohm")
    if res_cm2 is not None:
        if area is None:
            raise _err(w, "resistance_ohm_cm2 needs area_cm2", key="resistance_ohm_cm2")
        res = res_cm2 / area
    cell_name = _str(w, "name", ct["name"]) if "name" in ct else None

    def potential(wh: str, key: str, value: Any, vs: Vs | None, **kw: Any) -> Potential:
        v = _num(wh, key, value, **kw)
        if vs is None:
            vs = default_vs
        if vs is None:
            if reference.offset_v == 0.0:
                vs = "Li"
            else:
                raise _err(
                    wh,
                    f"{key} = {value!r} has no reference: with {reference.name} "
                    f"({reference.offset_v:g} V vs Li) a potential is ambiguous; expected "
                    'vs = "Li" or vs = "cell" here or at the top of the file',
                    key=key,
                    value=value,
                    **kw,
                )
        return Potential(v, vs, key)

    # [safety]
    stb = _table(where, doc.get("safety", {}), "[safety]")
    w = "[safety]"
    _check_keys(w, stb, _SAFETY_KEYS)
    svs = _vs(w, stb["vs"]) if "vs" in stb else None
    v_min = potential(w, "v_min", stb["v_min"], svs) if "v_min" in stb else None
    v_max = potential(w, "v_max", stb["v_max"], svs) if "v_max" in stb else None
    ikey = _one_of(w, stb, {"i_max_ma": 0, "i_max_ua": 0}, "current ceiling")
    i_max = None
    if ikey:
        i_max = _pos(w, ikey, stb[ikey]) * (1e-3 if ikey == "i_max_ma" else 1e-6)
    temp = _num(w, "temp_max_c", stb["temp_max_c"]) if "temp_max_c" in stb else None
    deb = _pos(w, "debounce_s", stb.get("debounce_s", 0.5), zero_ok=True)
    safety = SafetySpec(v_min, v_max, i_max, ikey, temp, deb)

    # [recording]
    rec_t = _table(where, doc.get("recording", {}), "[recording]")
    _check_keys("[recording]", rec_t, _RECORDING_KEYS)
    rec = _record_spec("[recording]", rec_t)
    recording = RecordSpec(
        rec.dt_s if rec.dt_s is not None else 60.0,
        rec.dv_mv if rec.dv_mv is not None else 5.0,
        rec.di_ua if rec.di_ua is not None else 0.0,
        rec.dq_uah if rec.dq_uah is not None else 0.0,
    )

    # [control]
    ctl_t = _table(where, doc.get("control", {}), "[control]")
    w = "[control]"
    _check_keys(w, ctl_t, _CONTROL_KEYS)
    tick = _int(w, "tick_ms", ctl_t.get("tick_ms", 100))
    slow = _int(w, "slow_tick_ms", ctl_t.get("slow_tick_ms", max(1000, tick)))
    if not 1 <= tick <= 60000:
        raise _err(w, f"tick_ms = {tick}; expected 1…60000", key="tick_ms", value=tick)
    if not tick <= slow <= 60000:
        raise _err(
            w, f"slow_tick_ms = {slow}; expected {tick}…60000", key="slow_tick_ms", value=slow
        )
    host_loss = _str(w, "host_loss", ctl_t.get("host_loss", "decimate")).lower()
    if host_loss not in ("decimate", "hold"):
        raise _err(
            w,
            f'host_loss = {ctl_t["host_loss"]!r}; expected "decimate" or "hold"',
            key="host_loss",
            value=ctl_t["host_loss"],
        )
    control = ControlSpec(tick, slow, "decimate" if host_loss == "decimate" else "hold")

    # [[step]]
    raw_steps = doc.get("step", [])
    if not isinstance(raw_steps, list):
        raise _err(where, "step must be an array of tables ([[step]])", key="step")
    steps = [_parse_step(i, raw, potential, charge_means) for i, raw in enumerate(raw_steps)]
    seen: dict[str, int] = {}
    for st in steps:
        if st.label:
            if st.label in seen:
                raise _err(
                    st.where(),
                    f"label = {st.label!r} is already used by step {seen[st.label]}; expected "
                    "unique labels",
                    **_step_kw(st, "label", st.label),
                )
            seen[st.label] = st.index

    return Schedule(
        name=name,
        reference=reference,
        area_cm2=area,
        mass_mg=mass,
        thickness_um=_opt_pos_cell(ct, "thickness_um"),
        density_g_cm3=_opt_pos_cell(ct, "density_g_cm3"),
        capacity_mah_g=cap,
        cell_name=cell_name,
        description=description,
        resistance_ohm=res,
        default_vs=default_vs,
        safety=safety,
        recording=recording,
        control=control,
        steps=steps,
        source_text=text,
        source=source,
    )


def _opt_pos_cell(ct: Mapping[str, Any], key: str) -> float | None:
    return _pos("[cell]", key, ct[key]) if key in ct else None


def _int(where: str, key: str, value: Any, **kw: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _err(where, f"{key} = {value!r} must be an integer", key=key, value=value, **kw)
    return value


def _record_spec(where: str, t: Mapping[str, Any], **kw: Any) -> RecordSpec:
    vals = {k: _pos(where, k, t[k], zero_ok=True, **kw) for k in _RECORD_KEYS if k in t}
    return RecordSpec(**vals)


class _PotentialFn(Protocol):
    def __call__(self, wh: str, key: str, value: Any, vs: Vs | None, **kw: Any) -> Potential: ...


def _parse_step(i: int, raw: Any, potential: _PotentialFn, charge_means: str | None) -> StepSpec:
    where0 = f"step {i}"
    if not isinstance(raw, dict):
        raise _err(where0, f"must be a table, got {raw!r}", step=i)
    t: dict[str, Any] = dict(raw)
    _check_keys(where0, t, _STEP_KEYS, step=i, label=t.get("label"))
    label = None
    if "label" in t:
        label = _str(where0, "label", t["label"], step=i)
        if not label.strip():
            raise _err(where0, "label is empty; expected a name", step=i, key="label")
    text = None
    if "step" in t:
        text = _str(where0, "step", t.pop("step"), step=i)
        expanded = _expand_one_liner(
            f"step {i}" + (f" ('{label}')" if label else ""), text, charge_means, i
        )
        for k, v in expanded.items():
            if k in t and k != "vs":
                raise _err(
                    where0,
                    f"{k} is set both by step = {text!r} and by the table; expected one",
                    step=i,
                    label=label,
                    key=k,
                )
            if k == "vs" and "vs" in t and _vs(where0, t["vs"]) != v:
                raise _err(where0, f"vs in step = {text!r} contradicts vs = {t['vs']!r}", step=i)
            t[k] = v
    if "kind" not in t:
        raise _err(
            where0,
            'has no kind; expected kind = "rest", "ocv", "cc", "cv", "cccv" or '
            '"loop" (or a one-liner step = "...")',
            step=i,
            label=label,
            key="kind",
        )
    kind = _str(where0, "kind", t["kind"], step=i).lower()
    if kind not in KIND_CODES:
        raise _err(
            where0,
            f"kind = {t['kind']!r}; expected one of {', '.join(KIND_CODES)}",
            step=i,
            label=label,
            key="kind",
            value=t["kind"],
        )
    st = StepSpec(index=i, kind=kind, label=label, text=text)
    where = st.where()
    kw: dict[str, Any] = {"step": i, "label": label}

    def forbid(keys: Any, why: str) -> None:
        for k in keys:
            if k in t:
                raise _err(where, f"{k} {why}", key=k, value=t[k], **kw)

    # loop
    if kind == "loop":
        if "to" not in t:
            raise _err(
                where, 'needs to = "<label>"; expected the label to jump back to', key="to", **kw
            )
        st.loop_to = _str(where, "to", t["to"], **kw)
        if ("count" in t) == ("repeat" in t):
            raise _err(
                where,
                "needs exactly one of count (total passes of the block, ≥ 2) or repeat "
                "(extra passes, ≥ 1)",
                key="count",
                **kw,
            )
        if "count" in t:
            c = _int(where, "count", t["count"], **kw)
            if c < 2 or c - 1 > _U16:
                raise _err(
                    where,
                    f"count = {c}; expected 2…{_U16 + 1} (the block runs count times in all; "
                    "count = 1 needs no loop)",
                    key="count",
                    value=c,
                    **kw,
                )
            st.loop_passes = c
        else:
            r = _int(where, "repeat", t["repeat"], **kw)
            if r < 1 or r > _U16:
                raise _err(
                    where,
                    f"repeat = {r}; expected 1…{_U16} (extra passes of the block)",
                    key="repeat",
                    value=r,
                    **kw,
                )
            st.loop_passes = r + 1
        allowed_loop = {"kind", "label", "comment", "to", "count", "repeat", "new_cycle"}
        forbid(set(t) - allowed_loop, "does not apply to a loop step")
        st.new_cycle = _bool(where, "new_cycle", t.get("new_cycle", False), **kw)
        return st
    forbid(("to", "count", "repeat"), 'only applies to kind = "loop"')

    # current
    ckey = _one_of(where, t, _CURRENT_KEYS, "current", **kw)
    if kind in ("cc", "cccv"):
        if ckey is None:
            raise _err(
                where,
                "needs a current; expected one of " + ", ".join(_CURRENT_KEYS),
                key="current",
                **kw,
            )
        st.current = _current_value(where, ckey, t[ckey], _CURRENT_KEYS, **kw)
        if "direction" in t:
            d = _str(where, "direction", t["direction"], **kw).lower()
            if d in ("lithiation", "lithiate", "+"):
                st.direction = 1
            elif d in ("delithiation", "delithiate", "-"):
                st.direction = -1
            else:
                raise _err(
                    where,
                    f'direction = {t["direction"]!r}; expected "lithiation" or "delithiation"',
                    key="direction",
                    value=t["direction"],
                    **kw,
                )
        elif st.current.value == 0:
            raise _err(where, f"{ckey} = 0; expected a non-zero current", key=ckey, **kw)
    else:
        if ckey is not None:
            raise _err(
                where,
                f'{ckey} does not apply to kind = "{kind}" (no set current); expected '
                'kind = "cc" or "cccv"',
                key=ckey,
                value=t[ckey],
                **kw,
            )
        forbid(("direction",), f'does not apply to kind = "{kind}"')

    svs = _vs(where, t["vs"], **kw) if "vs" in t else None
    if "hold_v" in t:
        if kind not in ("cv", "cccv"):
            raise _err(
                where,
                f'hold_v applies to kind = "cv" or "cccv", not "{kind}"',
                key="hold_v",
                value=t["hold_v"],
                **kw,
            )
        st.hold_v = potential(where, "hold_v", t["hold_v"], svs, **kw)
    elif kind in ("cv", "cccv"):
        raise _err(where, "needs hold_v, the potential to hold", key="hold_v", **kw)
    if "until_v" in t:
        if kind != "cc":
            hint = (
                "; for cccv the CC phase ends at hold_v"
                if kind == "cccv"
                else "; use a [[step.limit]] with op for a conditional potential"
            )
            raise _err(
                where,
                f'until_v (a cutoff in the direction of the current) applies to kind = "cc" '
                f"only{hint}",
                key="until_v",
                value=t["until_v"],
                **kw,
            )
        st.until_v = potential(where, "until_v", t["until_v"], svs, **kw)
    elif "vs" in t and "hold_v" not in t and not _limits_have_v(t):
        raise _err(where, "vs is set but the step has no potential", key="vs", **kw)

    # durations
    dkeys = {**_DURATION_KEYS, "duration": 0.0}
    dkey = _one_of(where, t, dkeys, "duration", **kw)
    if dkey == "duration":
        s = _str(where, "duration", t["duration"], **kw)
        try:
            st.duration_s = parse_duration(s)
        except ValueError as e:
            raise _err(where, str(e), key="duration", value=s, **kw) from None
        if st.duration_s <= 0:
            raise _err(where, f"duration = {s!r}; expected > 0", key="duration", value=s, **kw)
    elif dkey is not None:
        st.duration_s = _pos(where, dkey, t[dkey], **kw) * _DURATION_KEYS[dkey]

    # end current
    ukey = _one_of(where, t, _UNTIL_CURRENT_KEYS, "end current", **kw)
    if ukey is not None:
        if kind not in ("cv", "cccv"):
            raise _err(
                where,
                f'{ukey} (end current) applies to kind = "cv" or "cccv", not "{kind}"',
                key=ukey,
                value=t[ukey],
                **kw,
            )
        cv = _current_value(where, ukey, t[ukey], _UNTIL_CURRENT_KEYS, **kw)
        if cv.value <= 0:
            raise _err(where, f"{ukey} = {t[ukey]!r}; expected a magnitude > 0", key=ukey, **kw)
        st.until_current = cv

    qkey = _one_of(where, t, _UNTIL_CHARGE_KEYS, "charge end", **kw)
    if qkey is not None:
        if kind in ("rest", "ocv"):
            raise _err(where, f"{qkey} cannot end a {kind} step (no charge passes)", key=qkey, **kw)
        kindq, scale = _UNTIL_CHARGE_KEYS[qkey]
        st.until_charge = ChargeValue(
            kindq, _pos(where, qkey, t[qkey], **kw) * scale, qkey, t[qkey]
        )

    vkey = _one_of(where, t, _UNTIL_DVDT_KEYS, "dV/dt end", **kw)
    if vkey is not None:
        st.until_dvdt_v_s = _pos(where, vkey, t[vkey], **kw) * _UNTIL_DVDT_KEYS[vkey]
        st.dvdt_key = vkey

    if "range" in t:
        rv = t["range"]
        if isinstance(rv, str) and rv.lower() == "auto":
            st.range = "auto"
        else:
            ri = _int(where, "range", rv, **kw)
            if ri < 0 or ri >= wire.RANGE_AUTO:
                raise _err(where, f'range = {rv!r}; expected "auto" or 0…254', key="range", **kw)
            st.range = ri
    st.new_cycle = _bool(where, "new_cycle", t.get("new_cycle", False), **kw)
    if "ir_corrected" in t:
        st.ir_corrected = _bool(where, "ir_corrected", t["ir_corrected"], **kw)
        if st.ir_corrected and st.until_v is None:
            raise _err(
                where,
                "ir_corrected applies to the until_v cutoff of a cc step; this step has none",
                key="ir_corrected",
                value=True,
                **kw,
            )

    if "record" in t:
        rt = _table(where, t["record"], "record")
        _check_keys(f"{where} record", rt, _RECORDING_KEYS, **kw)
        st.record = _record_spec(f"{where} record", rt, **kw)

    if "limit" in t:
        lims = t["limit"]
        if isinstance(lims, dict):
            lims = [lims]
        if not isinstance(lims, list):
            raise _err(where, "limit must be [[step.limit]] tables", key="limit", **kw)
        for j, lt in enumerate(lims):
            st.limits.append(_parse_limit(st, j, lt, potential, svs))
    return st


def _limits_have_v(t: Mapping[str, Any]) -> bool:
    lims = t.get("limit", [])
    if isinstance(lims, dict):
        lims = [lims]
    return isinstance(lims, list) and any(isinstance(x, dict) and "v" in x for x in lims)


def _bool(where: str, key: str, value: Any, **kw: Any) -> bool:
    if not isinstance(value, bool):
        raise _err(where, f"{key} = {value!r}; expected true or false", key=key, value=value, **kw)
    return value


def _current_value(
    where: str,
    key: str,
    value: Any,
    table: Mapping[str, tuple[Literal["abs", "density", "c_rate"], float]],
    **kw: Any,
) -> CurrentValue:
    kind, scale = table[key]
    if kind == "c_rate":
        try:
            v = parse_c_rate(value)
        except ValueError as e:
            raise _err(where, f"{key} = {value!r}: {e}", key=key, value=value, **kw) from None
    else:
        v = _num(where, key, value, **kw)
    return CurrentValue(kind, v * scale, key, value)


_OPS = {
    "<=": wire.OP_LE,
    "<": wire.OP_LE,
    "≤": wire.OP_LE,
    ">=": wire.OP_GE,
    ">": wire.OP_GE,
    "≥": wire.OP_GE,
}


def _parse_limit(
    st: StepSpec, j: int, raw: Any, potential: _PotentialFn, step_vs: Vs | None
) -> LimitSpec:
    where = f"{st.where()} limit {j}"
    kw: dict[str, Any] = {"step": st.index, "label": st.label}
    if not isinstance(raw, dict):
        raise _err(where, f"must be a table, got {raw!r}", **kw)
    _check_keys(where, raw, _LIMIT_KEYS, **kw)
    value_keys = [
        "v",
        "temp_c",
        *_LIMIT_CURRENT_KEYS,
        *_LIMIT_ABS_CURRENT_KEYS,
        *_CHARGE_KEYS,
        *_TIME_KEYS,
        *_DVDT_KEYS,
    ]
    present = [k for k in value_keys if k in raw]
    if len(present) != 1:
        raise _err(
            where,
            ("has no value key" if not present else f"has several value keys {present}")
            + "; expected exactly one of v, current_*, abs_current_*, time_*, charge_*, "
            "capacity_*, dvdt_*, temp_c",
            **kw,
        )
    key = present[0]
    if "op" not in raw:
        raise _err(where, f'{key} needs op = "<=" or ">="', key="op", **kw)
    op_s = _str(where, "op", raw["op"], **kw).strip()
    if op_s not in _OPS:
        raise _err(where, f'op = {op_s!r}; expected "<=" or ">="', key="op", value=op_s, **kw)
    op = _OPS[op_s]
    if "vs" in raw and key != "v":
        raise _err(where, "vs only applies to a v limit", key="vs", **kw)
    value: float | Potential | CurrentValue | ChargeValue
    if key == "v":
        vs = _vs(where, raw["vs"], **kw) if "vs" in raw else step_vs
        value = potential(where, "v", raw["v"], vs, **kw)
        q = wire.Q_V
    elif key == "temp_c":
        value = _num(where, key, raw[key], **kw)
        q = wire.Q_TEMP
    elif key in _LIMIT_CURRENT_KEYS:
        value = _current_value(where, key, raw[key], _LIMIT_CURRENT_KEYS, **kw)
        q = wire.Q_I
    elif key in _LIMIT_ABS_CURRENT_KEYS:
        value = _current_value(where, key, raw[key], _LIMIT_ABS_CURRENT_KEYS, **kw)
        q = wire.Q_ABS_I
    elif key in _CHARGE_KEYS:
        kq, scale = _CHARGE_KEYS[key]
        value = ChargeValue(kq, _pos(where, key, raw[key], **kw) * scale, key, raw[key])
        q = wire.Q_ABS_Q
    elif key in _TIME_KEYS:
        value = _pos(where, key, raw[key], **kw) * _TIME_KEYS[key]
        q = wire.Q_TIME
    else:
        value = _pos(where, key, raw[key], **kw) * _DVDT_KEYS[key]
        q = wire.Q_DVDT
    goto = None
    if "goto" in raw and "action" in raw:
        raise _err(where, "give goto or action, not both", key="goto", **kw)
    if "goto" in raw:
        goto = _str(where, "goto", raw["goto"], **kw)
        action = wire.A_GOTO
    else:
        a = _str(where, "action", raw.get("action", "next"), **kw).lower()
        if a not in ("next", "end"):
            raise _err(
                where,
                f'action = {a!r}; expected "next" or "end" (or goto = "<label>")',
                key="action",
                value=a,
                **kw,
            )
        action = wire.A_NEXT if a == "next" else wire.A_END
    return LimitSpec(q, op, value, key, action, goto)
