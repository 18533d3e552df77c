"""What a run's records say that needs attention: badges for the dashboard and alert events.

:class:`EventWatch` reads every committed batch of one run: a safety trip or firmware fault
(``trip``), a board reset (``interrupted``), the buffer filling with no host (``host_loss``)
raise an alert keyed by the run and the event's seq (so it is sent once, however often the
batch is seen); decimation is a badge. :meth:`EventWatch.stalled` tells a board that sent no
record for ``stall_factor`` × its step's recording interval.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from sicell.client import Record
from sicell.errors import ScheduleError
from sicell.progress import Progress
from sicell.protocol import messages as M
from sicell.protocol import schedule as wire
from sicell.records import EventRecord
from sicell.replies import RESET_CAUSE_NAMES, fault_text
from sicell.session.outcome import SafetyLimits, describe_trip, safety_limits

__all__ = ["MIN_STALL_S", "EventWatch"]

MIN_STALL_S = 5.0  # never stalled sooner (commits come in batches, STATUS every 2 s)

Alert = tuple[str, str, str]  # (kind, text, key)


class EventWatch:
    """Badges and alerts of one run (a fresh one per run)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.flags: dict[str, str] = {}  # badge kind -> text, for the rest of the run
        self.cv_phase = False
        self.last_seq = 0
        self.stalled_text: str | None = None
        self._last_record_at: float | None = None
        self._stall_clock: float | None = None  # the last record, or the last time not running
        self._intervals: dict[int, float] = {}
        self._limits: SafetyLimits | None = None
        self._labels: dict[int, str] = {}

    def begin(self, session: Any, now: float) -> None:
        """The run streams: read its schedule's recording intervals, limits and labels."""
        sch = session.schedule
        intervals: dict[int, float] = {}
        labels: dict[int, str] = {}
        if sch is not None:
            from sicell.schedule.resolve import resolve_steps

            try:
                resolved = resolve_steps(sch, None)
            except ScheduleError:
                resolved = []
            for r in resolved:
                if r.record[0] > 0:
                    intervals[r.index] = r.record[0] / 1000.0
                if r.label:
                    labels[r.index] = r.label
        with self._lock:
            self._intervals = intervals
            self._labels = labels
            self._limits = safety_limits(sch, session.info)
            self._last_record_at = self._stall_clock = now

    def committed(self, batch: Sequence[Record], run: str, now: float) -> list[Alert]:
        """Read a durable batch; the alerts it raises."""
        out: list[Alert] = []
        with self._lock:
            self._last_record_at = self._stall_clock = now
            self.stalled_text = None
            for r in batch:
                self.last_seq = max(self.last_seq, r.seq)
                if r.is_sample:
                    self.cv_phase = bool(r.fields["flags"] & M.F_CV)
                    continue
                hit = self._event(EventRecord.from_wire(r.seq, r.values))
                if hit is not None:
                    kind, text = hit
                    self.flags[kind] = text
                    if kind != "decimated":
                        out.append((kind, text, f"{run}:{r.seq}:{kind}"))
        return out

    def _event(self, ev: EventRecord) -> tuple[str, str] | None:
        if ev.code == M.EV_SAFETY:
            return "trip", describe_trip(ev, self._limits, self._labels)
        if ev.code == M.EV_ERROR:
            return "trip", f"firmware fault: {fault_text(ev.reason, ev.value)}; the board went safe"
        if ev.code == M.EV_INTERRUPTED:
            cause = RESET_CAUSE_NAMES.get(ev.reason, f"cause {ev.reason}")
            return "interrupted", (
                f"run interrupted by a board reset ({cause}) in step {ev.aux}; the board waits "
                "with the relay open"
            )
        if ev.code == M.EV_HOST_LOSS:
            policy = {wire.P_DECIMATE: "decimating", wire.P_HOLD: "holding"}.get(
                ev.reason, f"policy {ev.reason}"
            )
            return "host_loss", (
                f"host loss: the board's buffer filled with no host listening ({policy}, "
                f"{ev.value} records affected)"
            )
        if ev.code == M.EV_DECIMATED:
            return "decimated", f"the board decimated {ev.value} records while no host listened"
        return None

    def stalled(self, now: float, p: Progress, run: str, factor: float) -> Alert | None:
        """A ``stalled`` alert when a running board sent nothing for too long (once per
        stall); the clock restarts whenever the board is not running (pause, hold)."""
        with self._lock:
            if p.state != "running" or self._stall_clock is None:
                self._stall_clock = now
                return None
            dt = self._intervals.get(p.step) if p.step is not None else None
            if not dt or self.stalled_text is not None:
                return None
            age = now - self._stall_clock
            if age <= max(factor * dt, MIN_STALL_S):
                return None
            self.stalled_text = (
                f"stalled: no record for {age:.0f} s (step {p.step} records every {dt:g} s)"
            )
            return "stalled", self.stalled_text, f"{run}:stalled:{self.last_seq}"

    def age(self, now: float) -> float | None:
        """Seconds since the last durable batch of records."""
        with self._lock:
            return None if self._last_record_at is None else now - self._last_record_at

    def badges(self, state: str) -> list[tuple[str, str]]:
        """The badges to show, the board's present state included."""
        with self._lock:
            out = dict(self.flags)
            if self.stalled_text is not None:
                out["stalled"] = self.stalled_text
        if state == "tripped":
            out.setdefault("trip", "safety trip")
        elif state == "interrupted":
            out.setdefault("interrupted", "interrupted by a board reset")
        elif state == "hold":
            out.setdefault("host_loss", "held: the relay is open until a host returns")
        return list(out.items())
