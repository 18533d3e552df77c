"""``[[step]]`` and ``[[step.limit]]`` tables → ``StepSpec``/``LimitSpec``, with the structural
checks (keys that do not apply to the kind, missing set points, ranges of counts)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sicell.protocol import schedule as wire
from sicell.schedule.model import ChargeValue, CurrentValue, LimitSpec, Potential, StepSpec, Vs
from sicell.schedule.oneliner import expand_one_liner
from sicell.schedule.readers import (
    PotentialReader,
    as_bool,
    as_choice,
    as_int,
    as_num,
    as_pos,
    as_str,
    as_table,
    as_vs,
    charge_value,
    check_keys,
    current_value,
    err,
    one_of,
    record_spec,
)
from sicell.schedule.vocabulary import (
    CHARGE_KEYS,
    CURRENT_KEYS,
    DURATION_KEYS,
    DVDT_KEYS,
    KIND_CODES,
    LIMIT_ABS_CURRENT_KEYS,
    LIMIT_CURRENT_KEYS,
    LIMIT_KEYS,
    LIMIT_VALUE_KEYS,
    LOOP_KEYS,
    OPS,
    RECORDING_KEYS,
    STEP_KEYS,
    TIME_KEYS,
    U16,
    UNTIL_CHARGE_KEYS,
    UNTIL_CURRENT_KEYS,
    UNTIL_DVDT_KEYS,
    CurrentKeys,
)
from sicell.units import parse_duration

__all__ = ["parse_step"]

_DIRECTIONS = {
    "lithiation": 1,
    "lithiate": 1,
    "+": 1,
    "delithiation": -1,
    "delithiate": -1,
    "-": -1,
}


def parse_step(i: int, raw: Any, potential: PotentialReader, charge_means: str | None) -> StepSpec:
    """Step ``i`` of the file (0-based) as written."""
    where0 = f"step {i}"
    if not isinstance(raw, dict):
        raise err(where0, f"must be a table, got {raw!r}", step=i)
    t: dict[str, Any] = dict(raw)
    check_keys(where0, t, STEP_KEYS, step=i, label=t.get("label"))
    label = None
    if "label" in t:
        label = as_str(where0, "label", t["label"], step=i)
        if not label.strip():
            raise err(where0, "label is empty; expected a name", step=i, key="label")
    text = None
    if "step" in t:
        text = as_str(where0, "step", t.pop("step"), step=i)
        _merge_one_liner(t, i, label, text, charge_means)
    st = StepSpec(index=i, kind=_kind(t, i, label), label=label, text=text)
    kw: dict[str, Any] = {"step": i, "label": label}
    if st.kind == "loop":
        _loop(st, t, kw)
        return st
    _forbid(st, t, ("to", "count", "repeat"), 'only applies to kind = "loop"', kw)
    _current(st, t, kw)
    svs = _potentials(st, t, potential, kw)
    _ends(st, t, kw)
    _options(st, t, kw)
    if "limit" in t:
        lims = t["limit"]
        if isinstance(lims, dict):
            lims = [lims]
        if not isinstance(lims, list):
            raise err(st.where(), "limit must be [[step.limit]] tables", key="limit", **kw)
        for j, lt in enumerate(lims):
            st.limits.append(_parse_limit(st, j, lt, potential, svs))
    return st


def _merge_one_liner(
    t: dict[str, Any], i: int, label: str | None, text: str, charge_means: str | None
) -> None:
    where0 = f"step {i}"
    expanded = expand_one_liner(
        f"step {i}" + (f" ('{label}')" if label else ""), text, charge_means, i
    )
    for k, v in expanded.items():
        if k in t and k != "vs":
            raise err(
                where0,
                f"{k} is set both by step = {text!r} and by the table; expected one",
                step=i,
                label=label,
                key=k,
            )
        if k == "vs" and "vs" in t and as_vs(where0, t["vs"]) != v:
            raise err(where0, f"vs in step = {text!r} contradicts vs = {t['vs']!r}", step=i)
        t[k] = v


def _kind(t: Mapping[str, Any], i: int, label: str | None) -> str:
    where0 = f"step {i}"
    if "kind" not in t:
        raise err(
            where0,
            'has no kind; expected kind = "rest", "ocv", "cc", "cv", "cccv" or '
            '"loop" (or a one-liner step = "...")',
            step=i,
            label=label,
            key="kind",
        )
    kind = as_str(where0, "kind", t["kind"], step=i).lower()
    if kind not in KIND_CODES:
        raise err(
            where0,
            f"kind = {t['kind']!r}; expected one of {', '.join(KIND_CODES)}",
            step=i,
            label=label,
            key="kind",
            value=t["kind"],
        )
    return kind


def _forbid(
    st: StepSpec, t: Mapping[str, Any], keys: Iterable[str], why: str, kw: dict[str, Any]
) -> None:
    for k in keys:
        if k in t:
            raise err(st.where(), f"{k} {why}", key=k, value=t[k], **kw)


def _loop(st: StepSpec, t: Mapping[str, Any], kw: dict[str, Any]) -> None:
    where = st.where()
    if "to" not in t:
        raise err(where, 'needs to = "<label>"; expected the label to jump back to', key="to", **kw)
    st.loop_to = as_str(where, "to", t["to"], **kw)
    if ("count" in t) == ("repeat" in t):
        raise err(
            where,
            "needs exactly one of count (total passes of the block, ≥ 2) or repeat "
            "(extra passes, ≥ 1)",
            key="count",
            **kw,
        )
    if "count" in t:
        c = as_int(where, "count", t["count"], **kw)
        if c < 2 or c - 1 > U16:
            raise err(
                where,
                f"count = {c}; expected 2…{U16 + 1} (the block runs count times in all; "
                "count = 1 needs no loop)",
                key="count",
                value=c,
                **kw,
            )
        st.loop_passes = c
    else:
        r = as_int(where, "repeat", t["repeat"], **kw)
        if r < 1 or r > U16:
            raise err(
                where,
                f"repeat = {r}; expected 1…{U16} (extra passes of the block)",
                key="repeat",
                value=r,
                **kw,
            )
        st.loop_passes = r + 1
    _forbid(st, t, set(t) - LOOP_KEYS, "does not apply to a loop step", kw)
    st.new_cycle = as_bool(where, "new_cycle", t.get("new_cycle", False), **kw)


def _current(st: StepSpec, t: Mapping[str, Any], kw: dict[str, Any]) -> None:
    """The set current and its direction (cc, cccv); refused on other kinds."""
    where, kind = st.where(), st.kind
    ckey = one_of(where, t, CURRENT_KEYS, "current", **kw)
    if kind not in ("cc", "cccv"):
        if ckey is not None:
            raise err(
                where,
                f'{ckey} does not apply to kind = "{kind}" (no set current); expected '
                'kind = "cc" or "cccv"',
                key=ckey,
                value=t[ckey],
                **kw,
            )
        _forbid(st, t, ("direction",), f'does not apply to kind = "{kind}"', kw)
        return
    if ckey is None:
        raise err(
            where,
            "needs a current; expected one of " + ", ".join(CURRENT_KEYS),
            key="current",
            **kw,
        )
    st.current = current_value(where, ckey, t[ckey], CURRENT_KEYS, **kw)
    if "direction" in t:
        named = ("lithiation", "delithiation")
        d = as_choice(where, "direction", t["direction"], named, _DIRECTIONS, **kw)
        st.direction = _DIRECTIONS[d]
    elif st.current.value == 0:
        raise err(where, f"{ckey} = 0; expected a non-zero current", key=ckey, **kw)


def _potentials(
    st: StepSpec, t: Mapping[str, Any], potential: PotentialReader, kw: dict[str, Any]
) -> Vs | None:
    """hold_v (cv, cccv) and until_v (cc); the step's own ``vs`` (for its limits too)."""
    where, kind = st.where(), st.kind
    svs = as_vs(where, t["vs"], **kw) if "vs" in t else None
    if "hold_v" in t:
        if kind not in ("cv", "cccv"):
            raise err(
                where,
                f'hold_v applies to kind = "cv" or "cccv", not "{kind}"',
                key="hold_v",
                value=t["hold_v"],
                **kw,
            )
        st.hold_v = potential(where, "hold_v", t["hold_v"], svs, **kw)
    elif kind in ("cv", "cccv"):
        raise err(where, "needs hold_v, the potential to hold", key="hold_v", **kw)
    if "until_v" in t:
        if kind != "cc":
            hint = (
                "; for cccv the CC phase ends at hold_v"
                if kind == "cccv"
                else "; use a [[step.limit]] with op for a conditional potential"
            )
            raise err(
                where,
                f'until_v (a cutoff in the direction of the current) applies to kind = "cc" '
                f"only{hint}",
                key="until_v",
                value=t["until_v"],
                **kw,
            )
        st.until_v = potential(where, "until_v", t["until_v"], svs, **kw)
    elif "vs" in t and "hold_v" not in t and not _limits_have_v(t):
        raise err(where, "vs is set but the step has no potential", key="vs", **kw)
    return svs


def _limits_have_v(t: Mapping[str, Any]) -> bool:
    lims = t.get("limit", [])
    if isinstance(lims, dict):
        lims = [lims]
    return isinstance(lims, list) and any(isinstance(x, dict) and "v" in x for x in lims)


def _ends(st: StepSpec, t: Mapping[str, Any], kw: dict[str, Any]) -> None:
    """Duration, end current, charge and dV/dt end conditions."""
    where, kind = st.where(), st.kind
    dkey = one_of(where, t, {**DURATION_KEYS, "duration": 0.0}, "duration", **kw)
    if dkey == "duration":
        s = as_str(where, "duration", t["duration"], **kw)
        try:
            st.duration_s = parse_duration(s)
        except ValueError as e:
            raise err(where, str(e), key="duration", value=s, **kw) from None
        if st.duration_s <= 0:
            raise err(where, f"duration = {s!r}; expected > 0", key="duration", value=s, **kw)
    elif dkey is not None:
        st.duration_s = as_pos(where, dkey, t[dkey], **kw) * DURATION_KEYS[dkey]

    ukey = one_of(where, t, UNTIL_CURRENT_KEYS, "end current", **kw)
    if ukey is not None:
        if kind not in ("cv", "cccv"):
            raise err(
                where,
                f'{ukey} (end current) applies to kind = "cv" or "cccv", not "{kind}"',
                key=ukey,
                value=t[ukey],
                **kw,
            )
        cv = current_value(where, ukey, t[ukey], UNTIL_CURRENT_KEYS, **kw)
        if cv.value <= 0:
            raise err(where, f"{ukey} = {t[ukey]!r}; expected a magnitude > 0", key=ukey, **kw)
        st.until_current = cv

    qkey = one_of(where, t, UNTIL_CHARGE_KEYS, "charge end", **kw)
    if qkey is not None:
        if kind in ("rest", "ocv"):
            raise err(where, f"{qkey} cannot end a {kind} step (no charge passes)", key=qkey, **kw)
        st.until_charge = charge_value(where, qkey, t[qkey], UNTIL_CHARGE_KEYS, **kw)

    vkey = one_of(where, t, UNTIL_DVDT_KEYS, "dV/dt end", **kw)
    if vkey is not None:
        st.until_dvdt_v_s = as_pos(where, vkey, t[vkey], **kw) * UNTIL_DVDT_KEYS[vkey]
        st.dvdt_key = vkey


def _options(st: StepSpec, t: Mapping[str, Any], kw: dict[str, Any]) -> None:
    """range, new_cycle, ir_corrected, record."""
    where = st.where()
    if "range" in t:
        rv = t["range"]
        if isinstance(rv, str) and rv.lower() == "auto":
            st.range = "auto"
        else:
            ri = as_int(where, "range", rv, **kw)
            if ri < 0 or ri >= wire.RANGE_AUTO:
                raise err(where, f'range = {rv!r}; expected "auto" or 0…254', key="range", **kw)
            st.range = ri
    st.new_cycle = as_bool(where, "new_cycle", t.get("new_cycle", False), **kw)
    if "ir_corrected" in t:
        st.ir_corrected = as_bool(where, "ir_corrected", t["ir_corrected"], **kw)
        if st.ir_corrected and st.until_v is None:
            raise err(
                where,
                "ir_corrected applies to the until_v cutoff of a cc step; this step has none",
                key="ir_corrected",
                value=True,
                **kw,
            )
    if "record" in t:
        rt = as_table(where, t["record"], "record")
        check_keys(f"{where} record", rt, RECORDING_KEYS, **kw)
        st.record = record_spec(f"{where} record", rt, **kw)


# ---- [[step.limit]] ---------------------------------------------------------------------------

_LimitValue = float | Potential | CurrentValue | ChargeValue
_LimitReader = Callable[
    [str, str, dict[str, Any], PotentialReader, Vs | None, dict[str, Any]], _LimitValue
]


def _lim_v(
    where: str, key: str, raw: dict[str, Any], pot: PotentialReader, svs: Vs | None, kw: Any
) -> _LimitValue:
    vs = as_vs(where, raw["vs"], **kw) if "vs" in raw else svs
    return pot(where, "v", raw["v"], vs, **kw)


def _lim_num(
    where: str, key: str, raw: dict[str, Any], pot: PotentialReader, svs: Vs | None, kw: Any
) -> _LimitValue:
    return as_num(where, key, raw[key], **kw)


def _lim_scaled(scales: Mapping[str, float]) -> _LimitReader:
    def read(
        where: str, key: str, raw: dict[str, Any], pot: PotentialReader, svs: Vs | None, kw: Any
    ) -> _LimitValue:
        return as_pos(where, key, raw[key], **kw) * scales[key]

    return read


def _lim_current(table: CurrentKeys) -> _LimitReader:
    def read(
        where: str, key: str, raw: dict[str, Any], pot: PotentialReader, svs: Vs | None, kw: Any
    ) -> _LimitValue:
        return current_value(where, key, raw[key], table, **kw)

    return read


def _lim_charge(
    where: str, key: str, raw: dict[str, Any], pot: PotentialReader, svs: Vs | None, kw: Any
) -> _LimitValue:
    return charge_value(where, key, raw[key], CHARGE_KEYS, **kw)


_LIMIT_QUANTITIES: dict[str, tuple[int, _LimitReader]] = {
    "v": (wire.Q_V, _lim_v),
    "temp_c": (wire.Q_TEMP, _lim_num),
    **{k: (wire.Q_I, _lim_current(LIMIT_CURRENT_KEYS)) for k in LIMIT_CURRENT_KEYS},
    **{k: (wire.Q_ABS_I, _lim_current(LIMIT_ABS_CURRENT_KEYS)) for k in LIMIT_ABS_CURRENT_KEYS},
    **{k: (wire.Q_ABS_Q, _lim_charge) for k in CHARGE_KEYS},
    **{k: (wire.Q_TIME, _lim_scaled(TIME_KEYS)) for k in TIME_KEYS},
    **{k: (wire.Q_DVDT, _lim_scaled(DVDT_KEYS)) for k in DVDT_KEYS},
}
"""Limit value key → (wire quantity, reader of its value)."""
assert set(_LIMIT_QUANTITIES) == set(LIMIT_VALUE_KEYS)


def _parse_limit(
    st: StepSpec, j: int, raw: Any, potential: PotentialReader, step_vs: Vs | None
) -> LimitSpec:
    where = f"{st.where()} limit {j}"
    kw: dict[str, Any] = {"step": st.index, "label": st.label}
    if not isinstance(raw, dict):
        raise err(where, f"must be a table, got {raw!r}", **kw)
    check_keys(where, raw, LIMIT_KEYS, **kw)
    present = [k for k in LIMIT_VALUE_KEYS if k in raw]
    if len(present) != 1:
        raise err(
            where,
            ("has no value key" if not present else f"has several value keys {present}")
            + "; expected exactly one of v, current_*, abs_current_*, time_*, charge_*, "
            "capacity_*, dvdt_*, temp_c",
            **kw,
        )
    key = present[0]
    if "op" not in raw:
        raise err(where, f'{key} needs op = "<=" or ">="', key="op", **kw)
    op_s = as_str(where, "op", raw["op"], **kw).strip()
    if op_s not in OPS:
        raise err(where, f'op = {op_s!r}; expected "<=" or ">="', key="op", value=op_s, **kw)
    if "vs" in raw and key != "v":
        raise err(where, "vs only applies to a v limit", key="vs", **kw)
    quantity, reader = _LIMIT_QUANTITIES[key]
    value = reader(where, key, raw, potential, step_vs, kw)
    goto = None
    if "goto" in raw and "action" in raw:
        raise err(where, "give goto or action, not both", key="goto", **kw)
    if "goto" in raw:
        goto = as_str(where, "goto", raw["goto"], **kw)
        action = wire.A_GOTO
    else:
        a = as_str(where, "action", raw.get("action", "next"), **kw).lower()
        if a not in ("next", "end"):
            raise err(
                where,
                f'action = {a!r}; expected "next" or "end" (or goto = "<label>")',
                key="action",
                value=a,
                **kw,
            )
        action = wire.A_NEXT if a == "next" else wire.A_END
    return LimitSpec(
        quantity=quantity, op=OPS[op_s], value=value, key=key, action=action, goto=goto
    )
