"""Unit conversion and checks of single values for one schedule against one board: currents
(densities, C-rates), charges, potentials (vs Li, I·R-corrected cutoffs) against the hardware
and safety windows, durations and rates in wire units, ranges, compliance, recording."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from sicell.protocol import schedule as wire
from sicell.schedule.model import (
    PERMISSIVE,
    Amount,
    BoardLimits,
    ChargeValue,
    CurrentValue,
    Potential,
    StepSpec,
)
from sicell.schedule.readers import err, step_kw
from sicell.schedule.vocabulary import I32, RECORD_KEYS, U32
from sicell.units import a_to_na, ah_to_nah, s_to_ms, to_li_v, v_to_uv

if TYPE_CHECKING:
    from sicell.schedule.document import Schedule

__all__ = ["Resolver", "safety_window"]

_NO_AREA = ("the schedule has no area", "[cell] area_cm2")
_NO_MASS = ("the schedule has no mass", "[cell] mass_mg or loading_mg_cm2")


def safety_window(sched: Schedule, limits: BoardLimits) -> tuple[float, float]:
    """The ``[safety]`` window in cell volts (the hardware window where the file gives none)."""
    ref, sf = sched.reference, sched.safety
    vmin = sf.v_min.cell_v(ref) if sf.v_min else limits.v_min_v
    vmax = sf.v_max.cell_v(ref) if sf.v_max else limits.v_max_v
    return vmin, vmax


class Resolver:
    """Unit conversion and checks for the steps of one schedule against one set of limits."""

    def __init__(self, sched: Schedule, limits: BoardLimits | None) -> None:
        self.sched = sched
        self.labels = {s.label: s.index for s in sched.steps if s.label}
        self.checked = limits is not None
        if limits is None:
            self.limits = PERMISSIVE
            self.window = (-math.inf, math.inf)
            self.imax_safety = math.inf
        else:
            self.limits = limits
            self.window = safety_window(sched, limits)
            sf = sched.safety
            self.imax_safety = sf.i_max_a if sf.i_max_a is not None else limits.i_max_a

    # ---- labels, units -----------------------------------------------------------------------
    def target(self, st: StepSpec, where: str, key: str, label: str) -> int:
        tgt = self.labels.get(label)
        if tgt is None:
            raise err(
                where,
                f"{key} = {label!r} names no step; expected one of the labels "
                f"{sorted(self.labels) or '(none defined)'}",
                **step_kw(st, key, label),
            )
        return tgt

    def current_a(self, st: StepSpec, cv: CurrentValue, what: str) -> float:
        if cv.kind == "abs":
            return cv.value
        sched = self.sched
        if cv.kind == "density":
            return self._times(st, cv, "a current density", sched.area_cm2, _NO_AREA)
        missing = []
        if sched.mass_mg is None:
            missing.append("[cell] mass_mg (or loading_mg_cm2 with area_cm2)")
        if sched.capacity_mah_g is None:
            missing.append("[cell] capacity_mah_g")
        no_one_c = ("1C is unknown", " and ".join(missing))
        return self._times(st, cv, f"a C-rate for the {what}", sched.one_c_a, no_one_c)

    def charge_ah(self, st: StepSpec, q: ChargeValue) -> float:
        if q.kind == "abs":
            return q.value
        sched = self.sched
        if q.kind == "per_g":
            return self._times(st, q, "per gram", sched.mass_mg, _NO_MASS) * 1e-3
        return self._times(st, q, "per cm²", sched.area_cm2, _NO_AREA)

    def _times(
        self, st: StepSpec, a: Amount[Any], what: str, by: float | None, lack: tuple[str, str]
    ) -> float:
        """``a``'s value times ``by``, a figure of the schedule; ``lack`` (what is missing, what
        to give) explains the refusal when it is None."""
        if by is None:
            missing, expected = lack
            raise err(
                st.where(),
                f"{a.key} = {a.raw!r} is {what} but {missing}; expected {expected}",
                **step_kw(st, a.key, a.raw),
            )
        return a.value * by

    def ms(self, st: StepSpec, seconds: float, key: str = "duration") -> int:
        ms = s_to_ms(seconds)
        if ms < 1 or ms > I32:
            raise err(
                st.where(),
                f"{key} of {seconds:g} s is outside 1 ms … {I32 / 3.6e6:.1f} h; expected a "
                "duration in that range (use a loop for longer steps)",
                **step_kw(st, key, seconds),
            )
        return ms

    def i32(self, st: StepSpec, value: int, what: str) -> int:
        if not -I32 <= value <= I32:
            raise err(
                st.where(),
                f"{what} of {value} wire units does not fit the 32-bit field",
                **step_kw(st, what, value),
            )
        return value

    def dvdt_uv_s(self, st: StepSpec, v_s: float, key: str) -> int:
        uvs = math.floor(v_s * 1e6 + 0.5)
        if uvs < 1:
            raise err(
                st.where(),
                f"{key}: |dV/dt| of {v_s * 1e6:.3g} µV/s ({v_s * 3.6e6:.3g} mV/h) rounds to 0 at "
                "the board's 1 µV/s resolution; expected at least 0.5 µV/s (1.8 mV/h)",
                **step_kw(st, key, v_s),
            )
        return self.i32(st, uvs, key)

    def record(self, st: StepSpec) -> tuple[int, int, int, int]:
        """The step's recording criteria in wire units (its overrides, else ``[recording]``)."""
        base, over = self.sched.recording, st.record

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
        for name, v in zip(RECORD_KEYS, vals, strict=True):
            if not 0 <= v <= U32:
                raise err(
                    st.where(),
                    f"record {name} = {pick(name)!r} does not fit the board's 32-bit field",
                    **step_kw(st, name, pick(name)),
                )
        return vals

    # ---- set points --------------------------------------------------------------------------
    def set_current(self, st: StepSpec) -> float:
        """The signed set current (A), checked against the ranges and the safety ceiling."""
        assert st.current is not None
        mag = self.current_a(st, st.current, "set current")
        if st.direction is None:
            current_a = mag
        else:
            if mag < 0 < st.direction:
                raise err(
                    st.where(),
                    f"{st.current.key} = {st.current.raw!r} has a sign that contradicts "
                    f'direction = "{"lithiation" if st.direction > 0 else "delithiation"}"'
                    "; expected a positive magnitude with direction, or a signed value "
                    "without it",
                    **step_kw(st, st.current.key, st.current.raw),
                )
            current_a = abs(mag) * st.direction
        self._check_current(st, current_a)
        return current_a

    def _check_current(self, st: StepSpec, current_a: float) -> None:
        assert st.current is not None
        where = st.where()
        kw = step_kw(st, st.current.key, st.current.raw)
        shown = f"{st.current.key} = {st.current.raw!r} ({current_a * 1e3:+.6g} mA)"
        if a_to_na(current_a) == 0:
            raise err(where, f"{shown} rounds to 0 nA; expected at least 1 nA", **kw)
        top = self.limits.i_max_a
        if abs(current_a) > top * (1 + 1e-9):
            raise err(
                where,
                f"{shown} is over the board's top range of {top * 1e3:g} mA; expected "
                f"|I| ≤ {top * 1e3:g} mA",
                **kw,
            )
        imax = self.imax_safety
        if abs(current_a) > imax * (1 + 1e-9):
            raise err(
                where,
                f"{shown} is over the safety limit i_max of {imax * 1e3:g} mA; expected "
                f"|I| ≤ {imax * 1e3:g} mA (or raise [safety] i_max)",
                **kw,
            )

    def potential(
        self, st: StepSpec, p: Potential, role: str, shift_v: float = 0.0, shift_note: str = ""
    ) -> float:
        """Cell volts the board gets for ``p`` (+ ``shift_v``), checked against the hardware
        window and strictly inside the safety window."""
        ref, limits = self.sched.reference, self.limits
        v = p.cell_v(ref) + shift_v
        kw = step_kw(st, p.key, p.value)
        what = f"{role} {p.describe(ref)}{shift_note}"
        if not (limits.v_min_v <= v <= limits.v_max_v):
            raise err(
                st.where(),
                f"{what} is outside the hardware window "
                f"{limits.v_min_v:+.3f}…{limits.v_max_v:+.3f} V cell; expected a value inside it",
                **kw,
            )
        lo, hi = self.window
        if not (lo < v < hi):
            raise err(
                st.where(),
                f"{what} is not strictly inside the safety window "
                f"{lo:+.4f}…{hi:+.4f} V cell ({to_li_v(lo, ref):.4f}…{to_li_v(hi, ref):.4f} V "
                "vs Li); expected a value inside it (widen [safety] v_min/v_max or move the "
                "potential)",
                **kw,
            )
        return v

    def cutoff(self, st: StepSpec, current_a: float) -> float:
        """The CC cutoff in cell volts (shifted by I·R when ``ir_corrected``)."""
        assert st.until_v is not None
        shift, note = 0.0, ""
        if st.ir_corrected:
            res = self.sched.resistance_ohm
            if res is None:
                raise err(
                    st.where(),
                    "ir_corrected = true needs the series resistance; expected [cell] "
                    "resistance_ohm or resistance_ohm_cm2",
                    **step_kw(st, "ir_corrected", True),
                )
            shift = -current_a * res
            note = (
                f" with I·R = {current_a * 1e3:+.4g} mA × {res:.4g} Ω "
                f"(measured cutoff {st.until_v.cell_v(self.sched.reference) + shift:+.4f} V cell)"
            )
        return self.potential(st, st.until_v, "cutoff", shift_v=shift, shift_note=note)

    def check_compliance(self, st: StepSpec, current_a: float | None) -> None:
        """|I|·R plus the safety-window edge must stay within the compliance voltage."""
        res = self.sched.resistance_ohm
        if current_a is None or res is None or not self.checked:
            return
        drop = abs(current_a) * res
        edge = max(abs(self.window[0]), abs(self.window[1]))
        compliance = self.limits.compliance_v
        if drop + edge > compliance:
            raise err(
                st.where(),
                f"current {current_a * 1e3:+.4g} mA through the series resistance "
                f"{res:.4g} Ω drops {drop:.3f} V; with the safety window "
                f"edge at {edge:.3f} V that needs {drop + edge:.3f} V, beyond the board's "
                f"compliance of {compliance:.3f} V; expected a smaller current",
                **step_kw(st, st.current.key if st.current else None, current_a),
            )

    def range(self, st: StepSpec, current_a: float | None) -> int:
        """A range index locked by the file, else ``RANGE_AUTO`` (the board takes the smallest
        range holding a CC set point and autoranges in CV phases and rests)."""
        if not isinstance(st.range, int):
            return wire.RANGE_AUTO
        if not self.checked:
            return st.range
        ranges = self.limits.ranges_a
        if st.range >= len(ranges):
            raise err(
                st.where(),
                f"range = {st.range} but the board has {len(ranges)} ranges; "
                f'expected 0..{len(ranges) - 1} or "auto"',
                **step_kw(st, "range", st.range),
            )
        fs = ranges[st.range]
        if current_a is not None and abs(current_a) > fs * (1 + 1e-9):
            raise err(
                st.where(),
                f"range = {st.range} has a full scale of {fs * 1e6:g} µA, below the set "
                f'current {abs(current_a) * 1e6:.6g} µA; expected a larger range or "auto"',
                **step_kw(st, "range", st.range),
            )
        return st.range
