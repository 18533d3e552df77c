"""A real :class:`sicell.service.Service` on emulated boards, for the service's and the API's
tests.

``running_service(tmp_path, n)`` (a context manager) starts a service with ``n`` emulated RC
boards (``emu://rc?board=sv0..``; ids ``BOARD_IDS``) in ``tmp_path/"data"`` and waits until every
board is online; it closes the service at the end (the boards keep running: use it in a test
with the ``rt`` fixture, which shuts the emulators down). The boards run at the emulator's full
virtual speed: ``LONG_TOML`` runs for minutes (pause, continue, stop it), ``SHORT_TOML`` ends
in a second or two, ``TRIP_TOML`` trips its safety limit at once.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sicell.service import Service
from sicell.session.options import SessionOptions

from tests.emuhelp import wait_for

# ids an emulated board reports when its URL id is 16 hex digits (unique_id = those bytes)
BOARD_IDS = [f"{k:016x}" for k in range(0xA0, 0xA8)]

FAST = SessionOptions(
    batch_interval_s=0.1,
    status_interval_s=0.3,
    gap_wait_s=0.2,
    replay_retry_s=0.5,
    reconnect_initial_s=0.05,
    reconnect_max_s=0.5,
    hello_timeout_s=3.0,
)


def rc_toml(name: str, *, dt_s: float, rest_s: float, cc_s: float, v_min: float = -1.0) -> str:
    """A rest, then +100 µA into the RC load (it settles at -0.125 V), recorded every dt_s."""
    return f"""
name = "{name}"
vs = "cell"
[reference]
electrode = "none"
offset_v = 0.0
[safety]
v_min = {v_min}
v_max = 1.0
[recording]
dt_s = {dt_s}
dv_mv = 50
[[step]]
label = "rest"
kind = "rest"
duration_s = {rest_s}
[[step]]
label = "cc"
kind = "cc"
direction = "lithiation"
current_ua = 100
duration_s = {cc_s}
"""


# about 11 h of test time at dt = 10 s: minutes at full speed, so a test pauses and stops it
LONG_TOML = rc_toml("long-rc", dt_s=10, rest_s=600, cc_s=40000)
SHORT_TOML = rc_toml("short-rc", dt_s=1, rest_s=5, cc_s=10)
# the CC step drives the load below v_min: the board trips
TRIP_TOML = rc_toml("trip-rc", dt_s=1, rest_s=5, cc_s=10, v_min=-0.05)


def board_url(k: int, **opts: Any) -> str:
    q = "&".join(f"{a}={b}" for a, b in {"board": BOARD_IDS[k], "linger": 60, **opts}.items())
    return f"emu://rc?{q}"


@contextlib.contextmanager
def running_service(
    tmp_path: Path, n: int = 2, *, ports: list[str] | None = None, **kw: Any
) -> Iterator[Service]:
    """A started Service on ``n`` emulated boards (or on ``ports``), every board online."""
    kw.setdefault("options", FAST)
    if ports is None:
        ports = [board_url(k) for k in range(n)]
    svc = Service(tmp_path / "data", ports, **kw)
    svc.start()
    try:
        if svc.ports:
            wait_for(lambda: all(b["online"] for b in svc.boards()), 60, "boards online")
        yield svc
    finally:
        svc.close()


def board(svc: Service, k: int) -> dict[str, Any]:
    return svc.board(BOARD_IDS[k])


def wait_board(
    svc: Service,
    k: int,
    pred: Callable[[dict[str, Any]], Any],
    timeout: float = 60.0,
    what: str = "board state",
) -> dict[str, Any]:
    """The board dict of board ``k`` once ``pred`` holds for it."""
    got: list[dict[str, Any]] = []

    def check() -> bool:
        got[:] = [board(svc, k)]
        return bool(pred(got[0]))

    wait_for(check, timeout, what)
    return got[0]


def wait_ended(svc: Service, k: int, run: str, timeout: float = 120.0) -> dict[str, Any]:
    """``progress`` of run ``run`` on board ``k`` once it ended (summary and exit code)."""
    out: list[dict[str, Any]] = []

    def ended() -> bool:
        out[:] = [svc.progress(BOARD_IDS[k], run)]
        return bool(out[0]["ended"])

    wait_for(ended, timeout, f"run {run} to end")
    return out[0]


def db_seqs(db: Path) -> list[int]:
    """Every seq stored in a run database (samples and events), sorted."""
    con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        s = [r[0] for r in con.execute("SELECT seq FROM samples")]
        e = [r[0] for r in con.execute("SELECT seq FROM events")]
    finally:
        con.close()
    return sorted(s + e)


def events_of(sub: Any, kind: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Events of type ``kind`` a subscription gets until one came and ``timeout`` passed
    with no more."""
    out: list[dict[str, Any]] = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ev = sub.get(0.2)
        if ev is not None and ev.get("type") == kind:
            out.append(ev)
            end = min(end, time.monotonic() + 1.0)
    return out
