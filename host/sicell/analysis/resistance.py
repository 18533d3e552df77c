"""Series resistance by current interrupt (rest → current boundaries) and IR compensation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..rundata import FloatArray, RunData
from .common import Kind
from .halfcycles import HalfCycle, half_cycle_of_sample, half_cycles


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
