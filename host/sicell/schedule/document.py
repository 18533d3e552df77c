"""``Schedule``: a parsed schedule file and what can be asked of it (compile for a board, step
rows for the store, run metadata, a duration estimate, warnings)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sicell.schedule import compile as compile_mod
from sicell.schedule import estimate, resolve
from sicell.schedule.model import (
    CONVENTIONS,
    DEFAULT_LIMITS,
    BoardLimits,
    ControlSpec,
    RecordSpec,
    SafetySpec,
    StepSpec,
    Vs,
)
from sicell.units import Reference

__all__ = ["Schedule"]


def _default_recording() -> RecordSpec:
    return RecordSpec(dt_s=60.0, dv_mv=5.0, di_ua=0.0, dq_uah=0.0)


@dataclass(kw_only=True)
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
    recording: RecordSpec = field(default_factory=_default_recording)
    control: ControlSpec = field(default_factory=ControlSpec)
    steps: list[StepSpec] = field(default_factory=list)
    source_text: str = ""
    source: str = "<string>"

    @property
    def one_c_a(self) -> float | None:
        """1C in A (mass × theoretical capacity), None when either is unknown."""
        if self.mass_mg is None or self.capacity_mah_g is None:
            return None
        return self.mass_mg * 1e-3 * self.capacity_mah_g * 1e-3

    def compile(self, limits: BoardLimits = DEFAULT_LIMITS) -> bytes:
        """Validate against ``limits`` and build the blob ``protocol.schedule.encode`` makes.

        Raises ``ScheduleValidationError`` naming the step (index and label), the value and
        what was expected for anything the board could not or should not run.
        """
        return compile_mod.compile_schedule(self, limits)

    def step_rows(self) -> list[tuple[int, str, float | None, float | None, str]]:
        """(idx, kind, current_a, voltage_v in cell volts, label) per compiled step, for the
        store's ``steps`` table, at the wire's resolution (nA, µV). ``voltage_v`` is the hold
        potential (cv, cccv) or the CC cutoff (cc); ``label`` is "" when the step has none.
        Raises ``ScheduleValidationError`` when a unit cannot be resolved (missing area...)."""
        return resolve.step_rows(self)

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
        """A rough run time (``estimate.estimate_duration_s``); None when a step cannot be
        estimated."""
        return estimate.estimate_duration_s(self)

    def warnings(self, limits: BoardLimits = DEFAULT_LIMITS) -> list[str]:
        """Things that compile but deserve a second look (rounding, defaults, recording)."""
        return estimate.warnings(self, limits)
