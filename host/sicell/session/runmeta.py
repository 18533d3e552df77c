"""The run database's metadata as a session writes and reads it, and small naming helpers."""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sicell.client import BoardInfo
from sicell.errors import ScheduleError
from sicell.protocol import schedule as wire_schedule


def short_port_name(port: str) -> str:
    """A port as a display name: a URL without its options (emu://rc), a device as it is."""
    if "://" in port:
        base, _, query = port.partition("?")
        for part in query.split("&"):
            if part.startswith("board="):
                return f"{base} ({part[6:]})"
        return base
    return port


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def remove_db(path: Path) -> None:
    """Delete a run database and its WAL companions (those that exist)."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(str(path) + suffix)


def policy_name(blob: bytes) -> str:
    """The host-loss policy of a compiled schedule blob."""
    try:
        policy = blob[5]
    except IndexError:
        return "unknown"
    return {wire_schedule.P_DECIMATE: "decimate", wire_schedule.P_HOLD: "hold"}.get(
        policy, str(policy)
    )


def new_run_meta(
    sch: Any,
    info: BoardInfo,
    blob: bytes,
    calibration: list[dict[str, int]],
    *,
    run_id: int,
    port: str,
    board_name: str,
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """The metadata a new run database starts with (schedule, board, calibration, run)."""
    meta: dict[str, Any] = dict(sch.metadata())
    meta.update(info.metadata())
    meta.update(
        {
            "calibration": calibration,
            "started_at": now_iso(),
            "run_id": run_id,
            "port": port,
            "board_name": board_name,
            "schedule_sha256": hashlib.sha256(blob).hexdigest(),
            "host_loss_policy": policy_name(blob),
        }
    )
    meta.update(extra)
    return meta


def start_time_meta(before_s: float, after_s: float) -> dict[str, int]:
    """The wall-clock time of test time 0 from the host clock read just before sending START
    and just after its reply (``time.time()``): the midpoint, ± half the round trip, in ms."""
    return {
        "start_unix_ms": round((before_s + after_s) * 500.0),
        "start_unix_uncertainty_ms": math.ceil(max(after_s - before_s, 0.0) * 500.0),
    }


StepRow = tuple[int, str, float | None, float | None, Any]


def schedule_facts(sch: Any, meta: Mapping[str, Any]) -> tuple[float, list[StepRow], float | None]:
    """(reference offset V, the schedule's step rows, estimated run time s) for the live
    display; the rows let the live half-cycles follow the set currents as the stored run's do."""
    off = meta.get("reference_offset_v")
    offset = float(off) if isinstance(off, int | float) else 0.0
    if sch is None:
        return offset, [], None
    try:
        rows = list(sch.step_rows())
    except ScheduleError:  # a unit that needs metadata the schedule lacks
        rows = []
    try:
        est = sch.estimate_duration_s()
    except ScheduleError:
        est = None
    estimate = float(est) if est is not None and math.isfinite(est) else None
    return offset, rows, estimate


def parse_or_none(parse: Callable[[str], Any], text: str) -> Any:
    """The schedule stored with a run, or None when this sicell cannot read it any more."""
    try:
        return parse(text)
    except ScheduleError:
        return None


def _ranges(value: Any) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    if isinstance(value, list):
        for r in value:
            if isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) for x in r):
                out.append((int(r[0]), int(r[1])))
    return out


def stored_gone(
    meta: Mapping[str, Any],
) -> tuple[int, list[tuple[int, int]], list[tuple[int, int]]]:
    """(decimated count, lost ranges, reset-skip ranges) an earlier session recorded."""
    dec = meta.get("decimated_records")
    return (
        dec if isinstance(dec, int) else 0,
        _ranges(meta.get("lost_seqs")),
        _ranges(meta.get("reset_skips")),
    )
