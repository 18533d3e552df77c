"""Reference electrodes, potential conversion and unit handling shared by schedule and store.

Potentials: the board works in *cell volts* (working electrode minus counter/reference
electrode). A potential given "vs Li+/Li" is converted with the counter electrode's own
potential vs Li+/Li (``offset_v``)::

    cell V = E_WE(vs Li) - offset_v          E_WE(vs Li) = cell V + offset_v

With the In–Li alloy counter electrode (offset 0.62 V) the usual 0.01–1.2 V vs Li window is
−0.61…+0.58 V of cell voltage.

Wire units (protocol/messages.py) are integers: µV, nA (+ = lithiation), nAh, ms. The ``*_to_*``
helpers here round to the nearest wire unit; ``from_wire_*`` convert back to SI floats.

Quantity strings (``parse_current``, ``parse_duration``, ...) accept what battery people write:
``"0.1 mA/cm2"``, ``"56.7 uA"``, ``"C/10"``, ``"1 h"``, ``"30 min"`` (µ and u are both fine).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "REFERENCES",
    "CurrentSpec",
    "Reference",
    "a_to_na",
    "ah_to_nah",
    "from_wire_a",
    "from_wire_ah",
    "from_wire_time",
    "from_wire_v",
    "parse_c_rate",
    "parse_current",
    "parse_duration",
    "reference_from",
    "s_to_ms",
    "to_cell_v",
    "to_li_v",
    "v_to_uv",
]


@dataclass(frozen=True)
class Reference:
    """A counter/reference electrode: ``offset_v`` is its potential vs Li+/Li in volts."""

    name: str
    offset_v: float


REFERENCES: dict[str, Reference] = {
    "In-Li": Reference("In-Li", 0.62),
    "Li": Reference("Li", 0.0),
}
"""Built-in reference electrodes (In–Li alloy: 0.62 V vs Li+/Li; lithium metal: 0 V)."""

_REF_ALIASES = {
    "in-li": "In-Li",
    "inli": "In-Li",
    "li-in": "In-Li",
    "in–li": "In-Li",
    "li": "Li",
    "li+/li": "Li",
    "li metal": "Li",
}


def reference_from(name: str, offset_v: float | None = None) -> Reference:
    """The built-in reference ``name`` (case-insensitive, "In-Li"/"Li"), or a custom one when
    ``offset_v`` is given. A custom name without an offset raises ``ValueError``."""
    key = _REF_ALIASES.get(name.strip().lower())
    if offset_v is not None:
        if not math.isfinite(offset_v):
            raise ValueError(f"reference offset_v must be a finite number, got {offset_v!r}")
        return Reference(key or name.strip(), float(offset_v))
    if key is None:
        raise ValueError(
            f"unknown reference electrode {name!r}: use one of {sorted(REFERENCES)} "
            "or give offset_v (its potential vs Li+/Li in V)"
        )
    return REFERENCES[key]


def to_cell_v(e_vs_li: float, ref: Reference) -> float:
    """Working-electrode potential vs Li+/Li → cell voltage (WE − CE) for reference ``ref``."""
    return e_vs_li - ref.offset_v


def to_li_v(cell_v: float, ref: Reference) -> float:
    """Cell voltage (WE − CE) → working-electrode potential vs Li+/Li for reference ``ref``."""
    return cell_v + ref.offset_v


# ---- wire units --------------------------------------------------------------------------


def _round(x: float) -> int:
    if not math.isfinite(x):
        raise ValueError(f"not a finite number: {x!r}")
    return math.floor(x + 0.5)


def v_to_uv(v: float) -> int:
    """Volts → integer µV (nearest)."""
    return _round(v * 1e6)


def a_to_na(a: float) -> int:
    """Amperes → integer nA (nearest)."""
    return _round(a * 1e9)


def ah_to_nah(ah: float) -> int:
    """Ampere-hours → integer nAh (nearest)."""
    return _round(ah * 1e9)


def s_to_ms(s: float) -> int:
    """Seconds → integer ms (nearest)."""
    return _round(s * 1e3)


def from_wire_v(uv: int) -> float:
    return uv * 1e-6


def from_wire_a(na: int) -> float:
    return na * 1e-9


def from_wire_ah(nah: int) -> float:
    return nah * 1e-9


def from_wire_time(t_s: int, t_ms: int) -> float:
    """The wire's (whole seconds, milliseconds) pair → seconds."""
    return t_s + t_ms * 1e-3


# ---- quantity strings --------------------------------------------------------------------

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_CURRENT_SCALE = {"a": 1.0, "ma": 1e-3, "ua": 1e-6, "µa": 1e-6, "μa": 1e-6, "na": 1e-9}
_AREA_RE = r"(?:/\s*cm\^?2|/\s*cm²|\s*cm-2|\s*cm\^-2|\s*cm⁻²)"
_CURRENT_RE = re.compile(rf"^\s*({_NUM})\s*(a|ma|ua|µa|μa|na)\s*({_AREA_RE})?\s*$", re.IGNORECASE)
_CRATE_RE = re.compile(rf"^\s*(?:c\s*/\s*({_NUM})|({_NUM})\s*c)\s*$", re.IGNORECASE)
_DURATION_RE = re.compile(
    rf"^\s*({_NUM})\s*(h|hr|hrs|hour|hours|min|mins|minute|minutes|s|sec|secs|second|seconds|"
    r"ms|d|day|days)\s*$",
    re.IGNORECASE,
)
_DURATION_SCALE = {
    "h": 3600.0,
    "hr": 3600.0,
    "hrs": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "min": 60.0,
    "mins": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "s": 1.0,
    "sec": 1.0,
    "secs": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "ms": 1e-3,
    "d": 86400.0,
    "day": 86400.0,
    "days": 86400.0,
}


@dataclass(frozen=True)
class CurrentSpec:
    """A current as written: absolute (A), a density (A/cm²) or a C-rate (1/h)."""

    kind: Literal["abs", "density", "c_rate"]
    value: float  # A, A/cm², or the C-rate multiple


def parse_current(text: str) -> CurrentSpec:
    """Parse ``"56.7 uA"``, ``"0.1 mA/cm2"``, ``"C/10"``, ``"2C"`` (sign kept)."""
    m = _CURRENT_RE.match(text)
    if m:
        value = float(m.group(1)) * _CURRENT_SCALE[m.group(2).lower()]
        return CurrentSpec("density" if m.group(3) else "abs", value)
    m = _CRATE_RE.match(text)
    if m:
        if m.group(1) is not None:
            den = float(m.group(1))
            if den == 0:
                raise ValueError(f"C-rate {text!r} divides by zero")
            return CurrentSpec("c_rate", 1.0 / den)
        return CurrentSpec("c_rate", float(m.group(2)))
    raise ValueError(
        f"cannot read a current from {text!r}: expected e.g. '56.7 uA', '0.1 mA/cm2', 'C/10', '2C'"
    )


def parse_c_rate(value: float | str) -> float:
    """A C-rate given as a number (0.1) or a string ("C/10", "0.1C")."""
    if isinstance(value, bool):
        raise ValueError(f"C-rate must be a number or 'C/n', got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    spec = parse_current(value)
    if spec.kind != "c_rate":
        raise ValueError(f"C-rate must be a number or 'C/n', got {value!r}")
    return spec.value


def parse_duration(text: str) -> float:
    """Parse ``"1 h"``, ``"30 min"``, ``"90 s"``, ``"2 days"`` into seconds."""
    m = _DURATION_RE.match(text)
    if not m:
        raise ValueError(f"cannot read a duration from {text!r}: expected e.g. '1 h', '30 min'")
    return float(m.group(1)) * _DURATION_SCALE[m.group(2).lower()]
