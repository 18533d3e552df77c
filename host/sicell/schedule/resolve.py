"""Specs → steps in board terms: units resolved (densities, C-rates, vs Li), labels turned
into step indices, and every value checked against the board's limits and the file's safety
window (``convert.Resolver``). Each step kind is one small class in ``STEP_KINDS``; end
conditions and limit quantities are looked up in ``END_CONDITIONS`` and ``LIMIT_QUANTITIES``."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sicell.protocol import schedule as wire
from sicell.schedule.convert import Resolver
from sicell.schedule.model import (
    BoardLimits,
    ChargeValue,
    CurrentValue,
    LimitSpec,
    Potential,
    ResolvedStep,
    StepSpec,
    WireLimit,
)
from sicell.schedule.readers import err, step_kw
from sicell.schedule.vocabulary import KIND_CODES
from sicell.units import a_to_na, ah_to_nah, v_to_uv

if TYPE_CHECKING:
    from sicell.schedule.document import Schedule

__all__ = [
    "END_CONDITIONS",
    "LIMIT_QUANTITIES",
    "STEP_KINDS",
    "SetPoint",
    "end_conditions",
    "resolve_steps",
    "step_rows",
]


def resolve_steps(sched: Schedule, limits: BoardLimits | None) -> list[ResolvedStep]:
    """Steps in board terms. ``limits=None`` resolves units and labels only (no hardware,
    safety or compliance checks), for ``step_rows`` and estimates."""
    r = Resolver(sched, limits)
    out: list[ResolvedStep] = []
    for st in sched.steps:
        record = r.record(st)
        flags = wire.SF_NEW_CYCLE if st.new_cycle else 0
        out.append(STEP_KINDS[st.kind].resolve(r, st, record=record, flags=flags))
    return out


def step_rows(sched: Schedule) -> list[tuple[int, str, float | None, float | None, str]]:
    """See ``Schedule.step_rows``."""
    rows: list[tuple[int, str, float | None, float | None, str]] = []
    for r in resolve_steps(sched, None):
        v = r.v_set_v if r.v_set_v is not None else r.cutoff_v
        i = None if r.current_a is None else a_to_na(r.current_a) / 1e9
        rows.append((r.index, r.kind, i, None if v is None else v_to_uv(v) / 1e6, r.label))
    return rows


@dataclass(frozen=True, kw_only=True)
class SetPoint:
    """What a step kind drives: signed current (A), held potential and CC cutoff (cell V)."""

    current_a: float | None = None
    v_set_v: float | None = None
    cutoff_v: float | None = None


def end_conditions(r: Resolver, st: StepSpec, sp: SetPoint) -> list[WireLimit]:
    """The step's end conditions (``END_CONDITIONS`` order), then its ``[[step.limit]]``s."""
    lims = [c for _, end in END_CONDITIONS if (c := end(r, st, sp)) is not None]
    for j, lim in enumerate(st.limits):
        lims.append(_limit(r, st, j, lim))
    if len(lims) > wire.MAX_LIMITS:
        raise err(
            st.where(),
            f"{len(lims)} end conditions and limits; expected at most {wire.MAX_LIMITS} per "
            "step (split the step or drop a condition)",
            **step_kw(st, "limit", len(lims)),
        )
    return lims


def _limit(r: Resolver, st: StepSpec, j: int, lim: LimitSpec) -> WireLimit:
    where = f"{st.where()} limit {j}"
    target = 0
    if lim.action == wire.A_GOTO:
        assert lim.goto is not None
        target = r.target(st, where, "goto", lim.goto)
    wv = LIMIT_QUANTITIES[lim.quantity](r, st, where, lim)
    return (lim.quantity, lim.op, lim.action, wv, target)


# ---- end conditions ---------------------------------------------------------------------------

_EndFn = Callable[[Resolver, StepSpec, SetPoint], WireLimit | None]


def _end_cutoff(r: Resolver, st: StepSpec, sp: SetPoint) -> WireLimit | None:
    if st.until_v is None or sp.cutoff_v is None:
        return None
    assert sp.current_a is not None
    op = wire.OP_LE if sp.current_a > 0 else wire.OP_GE
    return (wire.Q_V, op, wire.A_NEXT, v_to_uv(sp.cutoff_v), 0)


def _end_duration(r: Resolver, st: StepSpec, sp: SetPoint) -> WireLimit | None:
    if st.duration_s is None:
        return None
    return (wire.Q_TIME, wire.OP_GE, wire.A_NEXT, r.ms(st, st.duration_s), 0)


def _end_current(r: Resolver, st: StepSpec, sp: SetPoint) -> WireLimit | None:
    uc = st.until_current
    if uc is None:
        return None
    ia = abs(r.current_a(st, uc, "end current"))
    na = a_to_na(ia)
    if na < 1:
        raise err(
            st.where(),
            f"{uc.key} = {uc.raw!r} is {ia * 1e9:.3g} nA, "
            "below the 1 nA wire resolution; expected at least 1 nA",
            **step_kw(st, uc.key, uc.raw),
        )
    if sp.current_a is not None and ia >= abs(sp.current_a):
        raise err(
            st.where(),
            f"end current {uc.key} = {uc.raw!r} "
            f"({ia * 1e6:.4g} µA) is not below the set current "
            f"({abs(sp.current_a) * 1e6:.4g} µA); expected a smaller end current",
            **step_kw(st, uc.key, uc.raw),
        )
    return (wire.Q_ABS_I, wire.OP_LE, wire.A_NEXT, r.i32(st, na, "end current"), 0)


def _end_charge(r: Resolver, st: StepSpec, sp: SetPoint) -> WireLimit | None:
    q = st.until_charge
    if q is None:
        return None
    nah = ah_to_nah(abs(r.charge_ah(st, q)))
    if nah < 1:
        raise err(
            st.where(),
            f"{q.key} = {q.raw!r} is below 1 nAh; expected a larger charge",
            **step_kw(st, q.key, q.raw),
        )
    return (wire.Q_ABS_Q, wire.OP_GE, wire.A_NEXT, r.i32(st, nah, "charge"), 0)


def _end_dvdt(r: Resolver, st: StepSpec, sp: SetPoint) -> WireLimit | None:
    if st.until_dvdt_v_s is None:
        return None
    uvs = r.dvdt_uv_s(st, st.until_dvdt_v_s, st.dvdt_key or "until_dvdt")
    return (wire.Q_DVDT, wire.OP_LE, wire.A_NEXT, uvs, 0)


END_CONDITIONS: tuple[tuple[str, _EndFn], ...] = (
    ("until_v", _end_cutoff),
    ("duration", _end_duration),
    ("until_current", _end_current),
    ("until_charge", _end_charge),
    ("until_dvdt", _end_dvdt),
)
"""A step's end conditions in the order they are sent (the first that holds ends the step)."""


# ---- limit quantities -------------------------------------------------------------------------

_LimitFn = Callable[[Resolver, StepSpec, str, LimitSpec], int]


def _lim_v(r: Resolver, st: StepSpec, where: str, lim: LimitSpec) -> int:
    assert isinstance(lim.value, Potential)
    ref, limits = r.sched.reference, r.limits
    v = lim.value.cell_v(ref)
    if not (limits.v_min_v <= v <= limits.v_max_v):
        raise err(
            where,
            f"{lim.value.describe(ref)} is outside the hardware window "
            f"{limits.v_min_v:+.3f}…{limits.v_max_v:+.3f} V cell, so it can never "
            "hold; expected a potential inside it",
            **step_kw(st, lim.key, lim.value),
        )
    return v_to_uv(v)


def _lim_current(r: Resolver, st: StepSpec, where: str, lim: LimitSpec) -> int:
    assert isinstance(lim.value, CurrentValue)
    wv = r.i32(st, a_to_na(r.current_a(st, lim.value, "limit")), lim.key)
    return abs(wv) if lim.quantity == wire.Q_ABS_I else wv


def _lim_charge(r: Resolver, st: StepSpec, where: str, lim: LimitSpec) -> int:
    assert isinstance(lim.value, ChargeValue)
    return r.i32(st, ah_to_nah(abs(r.charge_ah(st, lim.value))), lim.key)


def _number(lim: LimitSpec) -> float:
    assert isinstance(lim.value, float)
    return lim.value


def _lim_time(r: Resolver, st: StepSpec, where: str, lim: LimitSpec) -> int:
    return r.ms(st, _number(lim), lim.key)


def _lim_dvdt(r: Resolver, st: StepSpec, where: str, lim: LimitSpec) -> int:
    return r.dvdt_uv_s(st, _number(lim), lim.key)


def _lim_temp(r: Resolver, st: StepSpec, where: str, lim: LimitSpec) -> int:
    return math.floor(_number(lim) * 10 + 0.5)


LIMIT_QUANTITIES: dict[int, _LimitFn] = {
    wire.Q_V: _lim_v,
    wire.Q_I: _lim_current,
    wire.Q_ABS_I: _lim_current,
    wire.Q_ABS_Q: _lim_charge,
    wire.Q_TIME: _lim_time,
    wire.Q_DVDT: _lim_dvdt,
    wire.Q_TEMP: _lim_temp,
}
"""Limit quantity (wire code) → its value in wire units (µV, nA, nAh, ms, µV/s, 0.1 °C)."""


# ---- step kinds -------------------------------------------------------------------------------


class _Kind:
    """A step kind that drives nothing (rest: 0 A with the relay closed; ocv: relay open).
    Subclasses resolve their set point; end conditions are the same for every kind."""

    def set_point(self, r: Resolver, st: StepSpec) -> SetPoint:
        return SetPoint()

    def check_ends(self, r: Resolver, st: StepSpec, lims: list[WireLimit]) -> None:
        """A kind's own demand on its end conditions (none by default)."""

    def resolve(
        self, r: Resolver, st: StepSpec, *, record: tuple[int, int, int, int], flags: int
    ) -> ResolvedStep:
        sp = self.set_point(r, st)
        r.check_compliance(st, sp.current_a)
        rng = r.range(st, sp.current_a)
        lims = end_conditions(r, st, sp)
        self.check_ends(r, st, lims)
        if not lims:
            raise err(
                st.where(),
                "has no end condition, so it would never end; expected a duration, a cutoff "
                "(until_v), an end current, a charge, a dV/dt or a [[step.limit]]",
                **step_kw(st),
            )
        if sp.current_a is not None and a_to_na(sp.current_a) == 0:
            raise err(st.where(), "set current rounds to 0 nA", **step_kw(st))
        charge_ah = None if st.until_charge is None else abs(r.charge_ah(st, st.until_charge))
        return ResolvedStep(
            index=st.index,
            kind=st.kind,
            label=st.label or "",
            current_a=sp.current_a,
            v_set_v=sp.v_set_v,
            range=rng,
            flags=flags,
            record=record,
            limits=tuple(lims),
            cutoff_v=sp.cutoff_v,
            charge_ah=charge_ah,
            duration_s=st.duration_s,
        )


class _CC(_Kind):
    """Constant current, optionally to a potential cutoff in the direction of the current."""

    def set_point(self, r: Resolver, st: StepSpec) -> SetPoint:
        current_a = r.set_current(st)
        cutoff = None if st.until_v is None else r.cutoff(st, current_a)
        return SetPoint(current_a=current_a, cutoff_v=cutoff)


class _CV(_Kind):
    """Hold a potential."""

    def set_point(self, r: Resolver, st: StepSpec) -> SetPoint:
        assert st.hold_v is not None
        return SetPoint(v_set_v=r.potential(st, st.hold_v, "hold"))


class _CCCV(_Kind):
    """Constant current to a potential, then hold it; the hold phase must end."""

    def set_point(self, r: Resolver, st: StepSpec) -> SetPoint:
        current_a = r.set_current(st)
        assert st.hold_v is not None
        return SetPoint(current_a=current_a, v_set_v=r.potential(st, st.hold_v, "hold"))

    def check_ends(self, r: Resolver, st: StepSpec, lims: list[WireLimit]) -> None:
        if not any(q in (wire.Q_ABS_I, wire.Q_TIME, wire.Q_ABS_Q) for q, *_ in lims):
            raise err(
                st.where(),
                "the hold phase never ends; expected an end current (until_current_*), a "
                "duration or a charge",
                **step_kw(st),
            )


class _Loop(_Kind):
    """Jump back to an earlier label until the block has run ``count`` times."""

    def resolve(
        self, r: Resolver, st: StepSpec, *, record: tuple[int, int, int, int], flags: int
    ) -> ResolvedStep:
        assert st.loop_to is not None and st.loop_passes is not None
        tgt = r.target(st, st.where(), "to", st.loop_to)
        if tgt >= st.index:
            raise err(
                st.where(),
                f"to = {st.loop_to!r} is step {tgt}, not before the loop; expected a label "
                "of an earlier step (loops jump backwards)",
                **step_kw(st, "to", st.loop_to),
            )
        return ResolvedStep(
            index=st.index,
            kind=st.kind,
            label=st.label or "",
            range=wire.RANGE_AUTO,
            flags=flags,
            loop_target=tgt,
            loop_count=st.loop_passes - 1,
            record=record,
        )


STEP_KINDS: dict[str, _Kind] = {
    "rest": _Kind(),
    "ocv": _Kind(),
    "cc": _CC(),
    "cv": _CV(),
    "cccv": _CCCV(),
    "loop": _Loop(),
}
"""Step kind → how it is resolved."""
assert set(STEP_KINDS) == set(KIND_CODES)
