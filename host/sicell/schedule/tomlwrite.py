"""Schedule documents back to TOML text (the subset the schedule vocabulary uses: scalars,
tables, arrays of tables, inline tables and arrays inside them). ``tomllib`` reads TOML but
does not write it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["dump_toml"]


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"cannot write {v} to TOML")
        return repr(v)
    if isinstance(v, str):
        out = ['"']
        for ch in v:
            if ch in '"\\':
                out.append("\\" + ch)
            elif ord(ch) < 0x20 or ch == "\x7f":
                out.append(f"\\u{ord(ch):04x}")
            else:
                out.append(ch)
        out.append('"')
        return "".join(out)
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dump_toml(doc: Mapping[str, Any], header: str = "") -> str:
    """TOML text for a schedule document: scalars, tables, arrays of tables (inline tables
    inside them), each line of ``header`` as a comment on top. Keys are written bare (the
    vocabulary's keys are). ``tomllib.loads(dump_toml(d)) == d`` for such documents."""
    lines = [f"# {h}" if h else "#" for h in header.splitlines()]
    tables = {k: v for k, v in doc.items() if isinstance(v, Mapping)}
    arrays = {k: v for k, v in doc.items() if _is_table_array(v)}
    for k, v in doc.items():  # plain values first (after a [table] header they would be its)
        if k not in tables and k not in arrays:
            lines.append(f"{k} = {_toml_value(v)}")
    for k, t in tables.items():
        lines += ["", f"[{k}]"]
        lines += [f"{kk} = {_toml_value(vv)}" for kk, vv in t.items()]
    for k, arr in arrays.items():
        for item in arr:
            lines += ["", f"[[{k}]]"]
            lines += [f"{kk} = {_toml_value(vv)}" for kk, vv in item.items()]
    return "\n".join(lines) + "\n"


def _is_table_array(v: Any) -> bool:
    """A non-empty list of tables, written as ``[[key]]`` sections."""
    return isinstance(v, list) and bool(v) and all(isinstance(x, Mapping) for x in v)
