"""Events to every listener: board changes, committed records, alerts.

A :class:`Subscription` is a bounded queue; publishing never blocks the board threads. A
listener too slow to keep up loses its oldest events and is told so by one
``{"type": "resync"}`` event (it should re-read boards and records by seq).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from typing import Any

__all__ = ["Hub", "Subscription"]

Event = dict[str, Any]


class Subscription:
    """Events published after :meth:`Hub.subscribe`, in order. Close it when done."""

    def __init__(self, hub: Hub, maxsize: int) -> None:
        self._hub = hub
        self._q: queue.Queue[Event] = queue.Queue(maxsize)
        self._lock = threading.Lock()
        self._resync = False
        self.closed = False

    def put(self, event: Event) -> None:
        with self._lock:
            while True:
                try:
                    self._q.put_nowait(event)
                    return
                except queue.Full:
                    self._resync = True
                    with contextlib.suppress(queue.Empty):  # (the reader emptied it: again)
                        self._q.get_nowait()

    def get(self, timeout: float | None = None) -> Event | None:
        """The next event, waiting at most ``timeout`` s; None when none came."""
        with self._lock:
            if self._resync:
                self._resync = False
                return {"type": "resync"}
        try:
            return self._q.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self.closed = True
        self._hub.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Hub:
    """Fans events out to the current subscriptions."""

    def __init__(self, maxsize: int = 4000) -> None:
        self.maxsize = maxsize
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()

    def subscribe(self) -> Subscription:
        sub = Subscription(self, self.maxsize)
        with self._lock:
            self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def publish(self, event: Event) -> None:
        with self._lock:
            subs = list(self._subs)
        for s in subs:
            s.put(event)

    @property
    def listeners(self) -> int:
        with self._lock:
            return len(self._subs)
