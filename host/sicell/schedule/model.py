"""The schedule's data: board limits, values as written, step specs and resolved steps."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from sicell.units import Reference, to_cell_v, to_li_v

__all__ = [
    "CONVENTIONS",
    "DEFAULT_LIMITS",
    "DEFAULT_TICK_COST_US",
    "PERMISSIVE",
    "TICK_COST_FACTOR",
    "Amount",
    "BoardLimits",
    "ChargeKind",
    "ChargeValue",
    "ControlSpec",
    "CurrentKind",
    "CurrentValue",
    "LimitSpec",
    "Potential",
    "RecordSpec",
    "ResolvedStep",
    "SafetySpec",
    "StepSpec",
    "Vs",
    "WireLimit",
    "documented_limits",
]

CONVENTIONS: dict[str, str] = {
    "current_sign": "positive current = lithiation of the working electrode (Si)",
    "charging": "lithiation is 'charging' of the Si anode; delithiation is 'discharging'",
    "capacity": "capacity accumulates per half-cycle and resets at each half-cycle start",
    "cycle_start": "a cycle starts with a lithiation step",
    "cycle_number": "cycles count from 1: cycle n is the n-th lithiation half-cycle and what "
    "follows it up to the next lithiation; anything before the first lithiation is cycle 0 (the "
    "board's own counter in the samples' cycle column starts at 0 and is not the cycle number)",
    "half_cycle": "a half-cycle is a sequence of schedule steps of one direction, the sign of "
    "their set current (a CC-CV step counts with its CC, a CV step with the sign of its charge); "
    "rest, OCV, pauses, holds and trips belong to none and are never integrated across",
    "capacity_source": "capacities are the board's coulomb count (charge_ah: the step's charge "
    "since the step started); the samples' integral of current is the cross-check",
    "voltage": "voltage_v is the cell voltage (working minus counter electrode), V",
    "potential_vs_li": "we_v = voltage_v + reference_offset_v (working electrode vs Li+/Li), V",
    "step_index": "0-based schedule step index, as compiled for the board",
}
"""The sign and bookkeeping conventions (DESIGN.md §5) written into every log's metadata."""

Vs = Literal["Li", "cell"]
"""What a potential is given against: the Li+/Li couple or the cell (WE − CE)."""

WireLimit = tuple[int, int, int, int, int]
"""One end condition or limit in wire terms: (quantity, op, action, value, target)."""


DEFAULT_TICK_COST_US = 6000
"""What a control tick is taken to cost a board that reports none: one that has run no control
tick since it started (INFO's ``tick_us`` is 0), or whose firmware predates the figure. Above the
5.1 ms 99th percentile measured on an RP2040 with the ADS1115 + MCP4725 drivers, so such a board
takes control ticks from 12 ms on."""

TICK_COST_FACTOR = 2
"""A schedule's control tick must be at least this many times what a tick costs the board."""


@dataclass(frozen=True)
class BoardLimits:
    """What the hardware can do: the cell-voltage window, the compliance voltage of the current
    source, the full-scale currents of its ranges (ascending), and what a control tick costs it
    (µs; None: not known, not checked) with where that figure comes from."""

    v_min_v: float
    v_max_v: float
    compliance_v: float
    ranges_a: tuple[float, ...]
    tick_cost_us: int | None = None
    tick_cost_source: str = ""

    @property
    def i_max_a(self) -> float:
        """Full scale of the top range, A."""
        return max(self.ranges_a) if self.ranges_a else 0.0

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> BoardLimits:
        """From INFO fields (``messages.LAYOUTS`` names; ``v_min_uv``, ``v_max_uv``,
        ``compliance_uv`` in µV) plus ``ranges_na`` (full-scale currents in nA, range order)
        and INFO's extension (``messages.INFO_EXT``: ``tick_us``, ``idle_us``; absent = 0)."""
        ranges = tuple(float(r) * 1e-9 for r in info["ranges_na"])
        cost, source = tick_cost(info)
        return cls(
            v_min_v=int(info["v_min_uv"]) * 1e-6,
            v_max_v=int(info["v_max_uv"]) * 1e-6,
            compliance_v=int(info["compliance_uv"]) * 1e-6,
            ranges_a=ranges,
            tick_cost_us=cost,
            tick_cost_source=source,
        )


def min_tick_ms(cost_us: int) -> int:
    """The shortest control tick (whole ms) a board whose tick costs ``cost_us`` µs takes."""
    return -(-TICK_COST_FACTOR * cost_us // 1000)


def tick_cost(info: Mapping[str, Any]) -> tuple[int, str]:
    """What a control tick costs the board of INFO ``info`` (µs) and where the figure comes from:
    the board's measure of its recent control ticks, else ``DEFAULT_TICK_COST_US``; its idle tick
    (a measurement alone) when that is longer still."""
    run = int(info.get("tick_us") or 0)
    idle = int(info.get("idle_us") or 0)
    if run > 0:
        cost, source = run, "measured by the board over its recent control ticks"
    else:
        cost, source = DEFAULT_TICK_COST_US, "a default: the board reports no control tick"
    if idle > cost:
        cost, source = idle, "the board's idle tick, a measurement alone"
    return cost, source


def documented_limits(board_json: Path | None = None) -> BoardLimits:
    """The limits of the board the firmware ships for, read from its configuration
    (``firmware/board.json``, installed as ``sicell.firmware``; the one place they are
    written): voltage window, compliance and the ranges' full scales. No tick cost (no board,
    not checked)."""
    path = board_json or Path(__file__).resolve().parents[1] / "firmware" / "board.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    lim = cfg["limits"]
    return BoardLimits(
        v_min_v=lim["v_min_uV"] / 1e6,
        v_max_v=lim["v_max_uV"] / 1e6,
        compliance_v=lim["compliance_uV"] / 1e6,
        ranges_a=tuple(r["full_scale_nA"] / 1e9 for r in cfg["ranges"]),
    )


DEFAULT_LIMITS = documented_limits()
"""The documented board (DESIGN.md §3, firmware/board.json): ±2.4 V window, ±4.5 V compliance,
10 µA … 10 mA."""

PERMISSIVE = BoardLimits(v_min_v=-1e9, v_max_v=1e9, compliance_v=math.inf, ranges_a=(math.inf,))
"""Limits that never refuse anything (resolution without checks)."""


# ---- values as written ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
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


CurrentKind = Literal["abs", "density", "c_rate"]
ChargeKind = Literal["abs", "per_g", "per_cm2"]
KindT = TypeVar("KindT", bound=str)


@dataclass(frozen=True, kw_only=True)
class Amount(Generic[KindT]):
    """A value as written in one of several kinds of unit: ``value`` is scaled to the kind's
    unit; ``key`` and ``raw`` are the key and the value as the file gives them."""

    kind: KindT
    value: float
    key: str
    raw: Any


class CurrentValue(Amount[CurrentKind]):
    """A current as written: ``kind`` abs (A), density (A/cm²) or c_rate (multiple of 1C)."""


class ChargeValue(Amount[ChargeKind]):
    """A charge as written: abs (Ah), per_g (Ah/g) or per_cm2 (Ah/cm²)."""


@dataclass(frozen=True, kw_only=True)
class RecordSpec:
    """Recording criteria (None = inherit)."""

    dt_s: float | None = None
    dv_mv: float | None = None
    di_ua: float | None = None
    dq_uah: float | None = None


@dataclass(frozen=True, kw_only=True)
class LimitSpec:
    """A conditional limit as written (``quantity``, ``op``, ``action``: wire codes)."""

    quantity: int
    op: int
    value: float | Potential | CurrentValue | ChargeValue
    key: str
    action: int
    goto: str | None


@dataclass(kw_only=True)
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


@dataclass(frozen=True, kw_only=True)
class SafetySpec:
    """``[safety]`` as written; None = the board's hardware value."""

    v_min: Potential | None = None
    v_max: Potential | None = None
    i_max_a: float | None = None
    i_max_key: str | None = None
    temp_max_c: float | None = None
    debounce_s: float = 0.5


@dataclass(frozen=True, kw_only=True)
class ControlSpec:
    """``[control]``: loop periods and the buffer policy while the host is away."""

    tick_ms: int = 100
    slow_tick_ms: int = 1000
    host_loss: Literal["decimate", "hold"] = "decimate"


# ---- in board terms ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ResolvedStep:
    """A step in board terms (SI floats before rounding to wire units)."""

    index: int
    kind: str
    label: str
    current_a: float | None = None  # signed, + = lithiation
    v_set_v: float | None = None  # cell volts
    range: int  # index or wire.RANGE_AUTO
    flags: int = 0
    loop_target: int = 0
    loop_count: int = 0  # additional passes (wire meaning)
    record: tuple[int, int, int, int]  # dt ms, dV µV, dI nA, dQ nAh
    limits: tuple[WireLimit, ...] = ()
    cutoff_v: float | None = None  # cell volts of the CC cutoff, for checks and estimates
    charge_ah: float | None = None  # |Q| end condition
    duration_s: float | None = None
