"""Typed readers for TOML values and the one way schedule errors are built (where: message,
with the step, label, key and value attached)."""

from __future__ import annotations

import math
from collections.abc import Container, Mapping, Sequence
from typing import Any

from sicell.errors import ScheduleError
from sicell.schedule.model import (
    ChargeValue,
    CurrentValue,
    Potential,
    RecordSpec,
    StepSpec,
    Vs,
)
from sicell.schedule.vocabulary import RECORD_KEYS, ChargeKeys, CurrentKeys
from sicell.units import Reference, parse_c_rate

__all__ = [
    "PotentialReader",
    "as_bool",
    "as_choice",
    "as_int",
    "as_num",
    "as_pos",
    "as_str",
    "as_table",
    "as_vs",
    "charge_value",
    "check_keys",
    "current_value",
    "err",
    "one_of",
    "record_spec",
    "step_kw",
]


def err(where: str, msg: str, **kw: Any) -> ScheduleError:
    """``ScheduleError("<where>: <msg>")`` with ``kw`` (step, label, key, value) attached."""
    return ScheduleError(f"{where}: {msg}", **kw)


def step_kw(st: StepSpec, key: str | None = None, value: Any = None) -> dict[str, Any]:
    """The error attributes naming ``st`` (and ``key``/``value``)."""
    return {"step": st.index, "label": st.label, "key": key, "value": value}


def check_keys(where: str, table: Mapping[str, Any], allowed: set[str], **kw: Any) -> None:
    """Refuse keys outside ``allowed``, suggesting the closest one (a typo never drops a
    cutoff)."""
    unknown = sorted(set(table) - allowed)
    if unknown:
        hint = ""
        for u in unknown:
            close = sorted((d, a) for a in allowed if (d := _closeness(u, a)) is not None)
            if close:
                hint = f" (did you mean {close[0][1]!r}?)"
                break
        raise err(
            where,
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}"
            f"{hint}; expected one of {', '.join(sorted(allowed))}",
            key=unknown[0],
            **kw,
        )


def _closeness(a: str, b: str) -> int | None:
    """0 when ``a`` is ``b`` up to case and dashes, else the edit distance when it is ≤ 2,
    else None (not a likely typo of ``b``)."""
    if a.replace("-", "_").lower() == b:
        return 0
    if abs(len(a) - len(b)) > 2:
        return None
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1] if prev[-1] <= 2 else None


def as_table(where: str, value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise err(where, f"{key} must be a table, got {value!r}", key=key, value=value)
    return value


def as_num(where: str, key: str, value: Any, **kw: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise err(where, f"{key} = {value!r} must be a number", key=key, value=value, **kw)
    f = float(value)
    if not math.isfinite(f):
        raise err(where, f"{key} = {value!r} must be a finite number", key=key, value=value, **kw)
    return f


def as_pos(where: str, key: str, value: Any, *, zero_ok: bool = False, **kw: Any) -> float:
    f = as_num(where, key, value, **kw)
    if f < 0 or (f == 0 and not zero_ok):
        expected = "≥ 0" if zero_ok else "> 0"
        raise err(where, f"{key} = {value!r}; expected a number {expected}", key=key, value=value)
    return f


def as_int(where: str, key: str, value: Any, **kw: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise err(where, f"{key} = {value!r} must be an integer", key=key, value=value, **kw)
    return value


def as_str(where: str, key: str, value: Any, **kw: Any) -> str:
    if not isinstance(value, str):
        raise err(where, f"{key} = {value!r} must be a string", key=key, value=value, **kw)
    return value


def as_bool(where: str, key: str, value: Any, **kw: Any) -> bool:
    if not isinstance(value, bool):
        raise err(where, f"{key} = {value!r}; expected true or false", key=key, value=value, **kw)
    return value


def as_choice(
    where: str,
    key: str,
    value: Any,
    named: Sequence[str],
    accepted: Container[str] | None = None,
    **kw: Any,
) -> str:
    """``value`` lower-cased, refused unless it is one of ``accepted`` (default: ``named``, the
    words the error message offers)."""
    s = as_str(where, key, value, **kw).lower()
    if s not in (named if accepted is None else accepted):
        offered = " or ".join(f'"{w}"' for w in named)
        raise err(where, f"{key} = {value!r}; expected {offered}", key=key, value=value, **kw)
    return s


def as_vs(where: str, value: Any, **kw: Any) -> Vs:
    s = as_str(where, "vs", value, **kw).strip().lower()
    if s in ("li", "li+/li", "li/li+"):
        return "Li"
    if s == "cell":
        return "cell"
    raise err(where, f'vs = {value!r}; expected "Li" or "cell"', key="vs", value=value, **kw)


def one_of(
    where: str, table: Mapping[str, Any], keys: Mapping[str, Any], what: str, **kw: Any
) -> str | None:
    """The one key of ``keys`` present in ``table`` (None if none; two are an error)."""
    present = [k for k in keys if k in table]
    if len(present) > 1:
        raise err(
            where,
            f"give one {what}, not {' and '.join(present)}",
            key=present[1],
            value=table[present[1]],
            **kw,
        )
    return present[0] if present else None


def current_value(where: str, key: str, value: Any, table: CurrentKeys, **kw: Any) -> CurrentValue:
    kind, scale = table[key]
    if kind == "c_rate":
        try:
            v = parse_c_rate(value)
        except ValueError as e:
            raise err(where, f"{key} = {value!r}: {e}", key=key, value=value, **kw) from None
    else:
        v = as_num(where, key, value, **kw)
    return CurrentValue(kind=kind, value=v * scale, key=key, raw=value)


def charge_value(where: str, key: str, value: Any, table: ChargeKeys, **kw: Any) -> ChargeValue:
    kind, scale = table[key]
    return ChargeValue(kind=kind, value=as_pos(where, key, value, **kw) * scale, key=key, raw=value)


def record_spec(where: str, t: Mapping[str, Any], **kw: Any) -> RecordSpec:
    vals = {k: as_pos(where, k, t[k], zero_ok=True, **kw) for k in RECORD_KEYS if k in t}
    return RecordSpec(**vals)


class PotentialReader:
    """Reads a potential key with the file's defaults: an explicit ``vs``, else the file's
    ``vs``, else "Li" when the reference offset is 0 V (both mean the same); else an error."""

    def __init__(self, reference: Reference, default_vs: Vs | None) -> None:
        self.reference = reference
        self.default_vs = default_vs

    def __call__(self, wh: str, key: str, value: Any, vs: Vs | None, **kw: Any) -> Potential:
        v = as_num(wh, key, value, **kw)
        if vs is None:
            vs = self.default_vs
        if vs is None:
            ref = self.reference
            if ref.offset_v == 0.0:
                vs = "Li"
            else:
                raise err(
                    wh,
                    f"{key} = {value!r} has no reference: with {ref.name} "
                    f"({ref.offset_v:g} V vs Li) a potential is ambiguous; expected "
                    'vs = "Li" or vs = "cell" here or at the top of the file',
                    key=key,
                    value=value,
                    **kw,
                )
        return Potential(value=v, vs=vs, key=key)
