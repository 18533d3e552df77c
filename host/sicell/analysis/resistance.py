"""Series resistance by current interrupt (rest → current boundaries), the resistance an
IR-free curve uses (``ir_choices``: one rule), IR compensation, and the checks that flag an
IR-free curve no Si electrode could give (``ir_free_problems``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ..errors import ScheduleError
from ..rundata import F_OPEN, FloatArray, RunData
from .common import DEFAULT_REST_CURRENT_A, DELITH, LITH, Kind
from .halfcycles import HalfCycle, half_cycle_of_sample, half_cycles

# A boundary whose first current sample came later than this after the last rest sample also
# holds diffusion polarisation; it is not used as a half-cycle's IR resistance.
MAX_IR_WINDOW_S = 2.0
# How far an IR-free potential may cross a physical bound before it is flagged (noise, the
# ADC's resolution and a few mV of relaxation still going on at the end of a rest).
IMPOSSIBLE_TOL_V = 0.005

IrSource = Literal["given", "measured", "schedule", "none"]
_SOURCE_TEXT: dict[IrSource, str] = {
    "given": "given",
    "measured": "measured",
    "schedule": "from the schedule",
    "none": "none",
}
_NO_REFERENCE = frozenset({"", "none", "no", "cell"})


@dataclass(frozen=True)
class ResistancePoint:
    """Series resistance from the voltage jump at a rest → current boundary.

    ``R = −ΔV/ΔI`` between the last rest sample and the mean of the first ``n_points`` samples
    of the current step (positive current lowers the working-electrode potential, so a positive
    R is a loss). ``window_s`` is the time from the last rest sample to the last sample used;
    ``half_cycle`` the number of the half-cycle the current step belongs to.
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
    half_cycle: int = -1


def current_interrupt(
    run: RunData,
    *,
    n_points: int = 1,
    max_window_s: float | None = None,
    hcs: Sequence[HalfCycle] | None = None,
) -> list[ResistancePoint]:
    """Resistance at every rest → current boundary (one per half-cycle that starts after a
    rest, usually two per cycle). Boundaries whose window exceeds ``max_window_s`` are skipped:
    the further the first point is from the step start, the more polarisation it includes."""
    if n_points < 1:
        raise ValueError("n_points must be ≥ 1")
    if hcs is None:
        hcs = half_cycles(run)
    owner = half_cycle_of_sample(run, hcs)
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
                half_cycle=h.number,
            )
        )
    return out


def measured_resistance(run: RunData, **kwargs: Any) -> float | None:
    """Median current-interrupt resistance of the run (Ω), None when there is no boundary."""
    pts = current_interrupt(run, **kwargs)
    if not pts:
        return None
    return float(np.median([p.r_ohm for p in pts]))


def schedule_resistance(run: RunData) -> float | None:
    """The series resistance the run's schedule states (Ω; ``[cell] resistance_ohm``, or
    ``resistance_ohm_cm2`` / ``area_cm2``): the R its ``ir_corrected`` cutoffs were shifted by.
    None when the schedule gives none or the stored schedule cannot be read."""
    text = run.meta.get("schedule_toml")
    if not isinstance(text, str) or not text.strip():
        return None
    from ..schedule import parse_schedule

    try:
        r = parse_schedule(text).resistance_ohm
    except ScheduleError:
        return None
    return float(r) if r is not None and math.isfinite(r) and r > 0 else None


def has_reference(run: RunData) -> bool:
    """Whether the run's potentials are vs Li+/Li: it names a reference electrode (a dummy
    load, ``reference_electrode = "none"``, or a run without one gives cell volts only)."""
    ref = run.meta.get("reference_electrode")
    return isinstance(ref, str) and ref.strip().lower() not in _NO_REFERENCE


@dataclass(frozen=True)
class IrChoice:
    """The resistance an IR-free curve of one half-cycle uses, and where it comes from."""

    r_ohm: float
    source: IrSource
    area_cm2: float | None = None
    point: ResistancePoint | None = None  # the current-interrupt boundary, when measured

    @property
    def r_ohm_cm2(self) -> float | None:
        return None if self.area_cm2 is None else self.r_ohm * self.area_cm2

    @property
    def source_text(self) -> str:
        """Where R comes from, in words: measured, from the schedule, given or none."""
        return _SOURCE_TEXT[self.source]

    def r_text(self) -> str:
        """R in Ω, per area and its source, e.g. ``300 Ω (170 Ω·cm², measured)``."""
        area = "" if self.r_ohm_cm2 is None else f"{_ohm(self.r_ohm_cm2)} Ω·cm², "
        return f"{_ohm(self.r_ohm)} Ω ({area}{self.source_text})"

    def text(self) -> str:
        """What the IR-free curve is, for a caption: ``IR-free with R = …`` or not compensated."""
        if self.source == "none":
            return "not IR-compensated (no resistance measured or in the schedule)"
        return f"IR-free with R = {self.r_text()}"


def _ohm(r: float) -> str:
    return f"{r:.0f}" if abs(r) >= 100 else f"{r:.3g}"


def _usable(p: ResistancePoint, run: RunData) -> bool:
    st = run.steps.get(p.step)
    return (
        math.isfinite(p.r_ohm)
        and p.r_ohm > 0
        and p.window_s <= MAX_IR_WINDOW_S
        and (st is None or st.kind.lower() != "cv")
    )


def ir_choices(
    run: RunData,
    hcs: Sequence[HalfCycle] | None = None,
    *,
    r_ohm: float | None = None,
    points: Sequence[ResistancePoint] | None = None,
) -> dict[int, IrChoice]:
    """The resistance of each half-cycle's IR-free curve (by half-cycle number), one rule:

    1. ``r_ohm`` when the caller gives one ("given");
    2. else the current-interrupt value measured at the half-cycle's own rest → current
       boundary ("measured"): its first current sample within ``MAX_IR_WINDOW_S`` of the rest,
       a positive R, not a CV step; the first such boundary of the half-cycle;
    3. else the schedule's series resistance, the R its ``ir_corrected`` cutoffs used ("from
       the schedule");
    4. else none: R = 0, the curve is the measured one.

    Why the two differ: the current interrupt takes everything that appears within one
    recording tick of the current switching on — the electrolyte's ohmic drop, the film's
    resistance and the charge-transfer overpotential — while the schedule's value is what the
    user entered for the electrolyte layer (the paper's ~150 Ω·cm²). On the emulated
    thin-porous film the interrupt gives 325 Ω (184 Ω·cm²) at 0.1 mA/cm² but 300 Ω at
    10 mA/cm² against 265 Ω (150 Ω·cm²) of electrolyte: charge transfer grows sub-linearly
    with the current (Butler–Volmer), so its share of ΔV/ΔI shrinks as the current grows. A
    low-current value applied to a high-current curve therefore over-compensates — the run
    median (325 Ω) put the 10 mA/cm² delithiation at −0.13 V vs Li. Hence one value per
    half-cycle, measured at that half-cycle's own current: its IR-free curve starts at the
    rest potential before it and removes every instantaneous loss. The schedule's value
    removes the electrolyte's drop only (the paper's convention); the caption says which.
    """
    if hcs is None:
        hcs = half_cycles(run)
    area = run.area_cm2
    if r_ohm is not None:
        return {h.number: IrChoice(float(r_ohm), "given", area) for h in hcs}
    if points is None:
        points = current_interrupt(run, hcs=hcs)
    first: dict[int, ResistancePoint] = {}
    for pt in sorted(points, key=lambda q: q.t_s):
        if pt.half_cycle >= 0 and _usable(pt, run):
            first.setdefault(pt.half_cycle, pt)
    r_sched = schedule_resistance(run)
    out: dict[int, IrChoice] = {}
    for h in hcs:
        p = first.get(h.number)
        if p is not None:
            out[h.number] = IrChoice(p.r_ohm, "measured", area, p)
        elif r_sched is not None:
            out[h.number] = IrChoice(r_sched, "schedule", area)
        else:
            out[h.number] = IrChoice(0.0, "none", area)
    return out


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


def open_circuit_before(
    run: RunData, h: HalfCycle, potential: FloatArray, owner: NDArray[np.int64]
) -> float | None:
    """The potential (from ``potential``, one value per sample) of the sample just before the
    half-cycle when it belongs to no half-cycle and no current flowed (a rest or OCV step, the
    relay open, or |I| ≤ 1 nA); None otherwise. ``owner`` is ``half_cycle_of_sample`` of the run."""
    if h.idx.size == 0 or int(h.idx[0]) == 0:
        return None
    k = int(h.idx[0]) - 1
    st = run.steps.get(int(run.step[k]))
    idle = (
        (st is not None and st.is_rest)
        or bool(run.flags[k] & F_OPEN)
        or abs(float(run.current_a[k])) <= DEFAULT_REST_CURRENT_A
    )
    return float(potential[k]) if owner[k] < 0 and idle else None


def ir_free_problems(
    kind: Kind,
    ir_free_v: FloatArray,
    *,
    vs_li: bool,
    open_circuit_v: float | None = None,
    tol_v: float = IMPOSSIBLE_TOL_V,
) -> list[str]:
    """Why an IR-free curve of a Si electrode is physically impossible (empty: it is not).

    * vs Li+/Li (``vs_li``), below 0 V: a Si electrode's equilibrium potential lies above the
      lithium's, and what is left after removing I·R is that plus a kinetic overpotential of
      the current's sign — on a delithiation positive, on a lithiation small;
    * a delithiation below the open-circuit potential of the rest before it, or a lithiation
      above it: an anodic current cannot pull the potential below its rest value (it only
      delithiates further and raises the equilibrium potential), a cathodic one cannot push
      it above.

    Both mean R removed more than the current's instantaneous drop. ``tol_v`` absorbs noise.
    """
    v = np.asarray(ir_free_v, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return []
    out: list[str] = []
    lo, hi = float(np.min(v)), float(np.max(v))
    if vs_li and lo < -tol_v:
        out.append(
            f"the IR-free potential reaches {lo:+.3f} V vs Li, below the lithium potential, "
            "which a Si electrode cannot be"
        )
    if open_circuit_v is not None:
        if kind == DELITH and lo < open_circuit_v - tol_v:
            out.append(
                f"the IR-free potential falls to {lo:+.3f} V, {1e3 * (open_circuit_v - lo):.0f} "
                f"mV below the open-circuit {open_circuit_v:+.3f} V before the delithiation, "
                "which a delithiation current cannot do"
            )
        elif kind == LITH and hi > open_circuit_v + tol_v:
            out.append(
                f"the IR-free potential rises to {hi:+.3f} V, {1e3 * (hi - open_circuit_v):.0f} "
                f"mV above the open-circuit {open_circuit_v:+.3f} V before the lithiation, "
                "which a lithiation current cannot do"
            )
    return out


def check_ir_free(
    run: RunData,
    h: HalfCycle,
    ir_free_v: FloatArray,
    potential: FloatArray,
    *,
    vs_li: bool,
    owner: NDArray[np.int64],
) -> list[str]:
    """``ir_free_problems`` for half-cycle ``h``, with the open-circuit potential before it
    taken from ``potential`` (the same column the curve was made from)."""
    ocv = open_circuit_before(run, h, potential, owner)
    return ir_free_problems(h.kind, ir_free_v, vs_li=vs_li, open_circuit_v=ocv)
