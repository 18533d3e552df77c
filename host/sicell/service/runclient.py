"""``sicell run`` on a port a service owns: the command is the service's client.

The schedule is checked here as for any run (the same errors and warnings), then sent to the
service's control socket (``start``); the command shows the run's progress from ``progress``
requests and, when the run has ended, prints the summary lines the service's session printed
and exits with the same code. Ctrl-C stops watching only: the run goes on in the service.
"""

from __future__ import annotations

import datetime as _dt
import re
import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from sicell.errors import Detached, UsageError
from sicell.owner import OwnerInfo, RemoteBoard, owner_of
from sicell.progress import Display
from sicell.schedule.parse import decode_text
from sicell.service.boardview import progress_of_dict

__all__ = ["POLL_S", "default_run_name", "run_through_service", "service_owner"]

POLL_S = 0.5  # progress requests while the run goes on


def service_owner(port: str) -> OwnerInfo | None:
    """The ``sicell serve`` that owns ``port``, or None."""
    owner = owner_of(port)
    return owner if owner is not None and owner.kind == "serve" else None


def default_run_name(schedule: Path) -> str:
    """``<schedule stem>-<YYYYmmdd-HHMMSS>``, made a valid run name."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", schedule.stem).strip("-.")[:60] or "run"
    return f"{stem}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def run_through_service(
    port: str, schedule: Path, *, display: Display, con: Console, name: str | None = None
) -> int | None:
    """Start ``schedule`` through the service owning ``port``, follow it to its end, print its
    summary; the run's exit code. None when the service ended meanwhile (run it locally)."""
    text = decode_text(schedule.read_bytes(), str(schedule))
    rb = RemoteBoard.connect(port)
    if rb is None:
        return None
    run = name or default_run_name(schedule)
    with rb:
        started = rb.call(
            "start", {"schedule_toml": text, "schedule_path": str(schedule), "name": run}
        )
        where = started.get("db") or f"runs/{run}.db"
        con.print(
            f"run {started.get('run_id')} started on {port} by {rb.owner.describe()}; logging "
            f"to {where} in its data directory",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        try:
            with display:
                while True:
                    pr = rb.call("progress", {"run": run})
                    ended = bool(pr.get("ended"))
                    p = progress_of_dict(pr["board"])
                    display.update(replace(p, final=True, eta_s=0.0) if ended else p)
                    if ended:
                        break
                    time.sleep(POLL_S)
        except KeyboardInterrupt:
            raise Detached(
                f"stopped watching run {run}; it goes on in the service "
                f"({rb.owner.describe()}): `sicell status --port {port}` shows it"
            ) from None
    for line in pr.get("summary") or []:
        con.print(str(line), highlight=False, markup=False, soft_wrap=True)
    code = pr.get("exit_code")
    if not isinstance(code, int):
        raise UsageError(f"the service did not say how run {run} ended")
    return code
