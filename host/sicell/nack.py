"""A NACK's error code and detail in words."""

from __future__ import annotations

from collections.abc import Callable

from sicell.protocol import framing, messages
from sicell.protocol import schedule as wire_schedule
from sicell.replies import state_name


def version_text(detail: int) -> str:
    """E_VERSION's detail: the board's version byte (major << 4 | minor), or a bare major."""
    if detail >= 16:
        return f"{detail >> 4}.{detail & 0x0F}"
    return f"{detail}.x"


# How a NACK's detail reads, for the codes whose detail is one number with a meaning.
_DETAIL_TEXT: dict[int, Callable[[int], str]] = {
    messages.E_STATE: lambda d: f"board is {state_name(d)}",
    messages.E_SEQ_GONE: lambda d: f"oldest record held is seq {d}",
    messages.E_TOO_LARGE: lambda d: f"board holds at most {d} bytes",
    messages.E_RANGE: lambda d: f"value {d}",
    messages.E_VERSION: lambda d: f"board speaks {version_text(d)}",
}


def describe_nack(code: int, detail: int) -> str:
    """The NACK error in words, with its detail decoded where the protocol defines it."""
    name = messages.ERROR_NAMES.get(code, f"error {code}")
    if code == messages.E_SCHEDULE:
        step, err = wire_schedule.split_nack_detail(detail)
        text = wire_schedule.ERR_TEXT.get(err, f"schedule error {err}")
        where = "header" if step < 0 else f"step {step}"
        return f"{name}: {where}: {text}"
    if code in _DETAIL_TEXT:
        return f"{name} ({_DETAIL_TEXT[code](detail)})"
    if code == messages.E_FRAME:
        ftext: str | None = framing._ERR_TEXT.get(detail)
        return f"{name} ({ftext})" if ftext else name
    if detail:
        return f"{name} (detail {detail})"
    return name
