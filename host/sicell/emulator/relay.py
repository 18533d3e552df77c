"""The byte relay between a host and the board, without the I/O: what is waiting to be written
each way, link faults and delays, host presence, unplug, and back-pressure.

The launcher reads bytes (from the pty master, from the board's stdout) and feeds them in with
the time they arrived; it writes what ``host.ready`` / ``board.ready`` hold and reports how
much went. Everything here is a plain function of the bytes and the clock it is given.

Host presence. A real board keeps running when the USB host goes away and its CDC drops what it
writes: while no host is attached the board's output is discarded (``discarded_detached``),
and a detach discards what the last host left unread. While a host is attached nothing is
dropped for speed: when more than ``limit`` bytes wait for the host, ``want_board_output`` is
false, the launcher stops reading the board, and the board blocks in ``write``.

Unplug in ``drop`` mode discards everything both ways until it ends; ``hangup`` mode is the
same here, plus the launcher closing the pty.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any

from sicell.emulator.faults import FaultConfig, FaultInjector

PENDING_LIMIT = 64 * 1024  # bytes waiting for the host before the board is back-pressured
UNPLUG_MODES = ("drop", "hangup")
COUNTERS = (
    "from_board",
    "from_host",
    "to_host",
    "to_board",
    "discarded_detached",
    "dropped_unplug",
    "discarded_reset",
)


class Lane:
    """One direction: its fault injector, bytes held back by the delay fault, and bytes ready
    to be written."""

    def __init__(self, name: str, seed: int) -> None:
        self.name = name
        self.injector = FaultInjector(f"{seed}:{name}")
        self.ready = bytearray()
        self._held: deque[tuple[float, bytes]] = deque()
        self._held_n = 0
        self.delay_s = 0.0

    def configure(self, faults: FaultConfig) -> None:
        on = faults.applies_to(self.name)
        if on:
            self.injector.configure(faults.drop, faults.corrupt, faults.duplicate)
        else:
            self.injector.configure(0.0, 0.0, 0.0)
        self.delay_s = faults.delay_ms / 1000.0 if on else 0.0

    def push(self, data: bytes, now: float) -> None:
        """Bytes that arrived at ``now``: faults applied, then held for the delay or ready."""
        data = self.injector.process(data)
        if self.delay_s > 0 or self._held:
            self._held.append((now + self.delay_s, data))
            self._held_n += len(data)
        else:
            self.ready += data

    def release(self, now: float) -> None:
        """Make the held bytes whose time has come ready, in order."""
        while self._held and self._held[0][0] <= now:
            _, d = self._held.popleft()
            self._held_n -= len(d)
            self.ready += d

    def next_release(self) -> float:
        return self._held[0][0] if self._held else math.inf

    @property
    def pending(self) -> int:
        """Bytes not yet written: held and ready."""
        return len(self.ready) + self._held_n

    def clear(self) -> int:
        """Discard everything pending; how many bytes that was."""
        n = self.pending
        self.ready.clear()
        self._held.clear()
        self._held_n = 0
        return n


class Relay:
    """Both directions of one board's link, host presence and unplug state, and counters."""

    def __init__(
        self, seed: int, faults: Mapping[str, Any] | None = None, limit: int = PENDING_LIMIT
    ) -> None:
        self.host = Lane("to_host", seed)
        self.board = Lane("to_board", seed)
        self.faults = FaultConfig()
        self.set_faults(faults or {})
        self.limit = limit
        self.attached = False
        self.host_sessions = 0
        self.last_detach = 0.0
        self.board_up = False  # the board process takes input
        self.unplug_until = 0.0
        self.unplug_mode = ""
        self.c: dict[str, int] = dict.fromkeys(COUNTERS, 0)

    # -- settings -------------------------------------------------------------------------------
    def set_faults(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change some link faults (EmulatorConfigError on bad values); the whole new set."""
        self.faults = self.faults.updated(changes)
        self.host.configure(self.faults)
        self.board.configure(self.faults)
        return self.faults.as_dict()

    # -- bytes in -------------------------------------------------------------------------------
    def from_board(self, data: bytes, now: float) -> None:
        self.c["from_board"] += len(data)
        if not self.attached:
            self.c["discarded_detached"] += len(data)
        elif now < self.unplug_until:
            self.c["dropped_unplug"] += len(data)
        else:
            self.host.push(data, now)

    def from_host(self, data: bytes, now: float) -> None:
        self.c["from_host"] += len(data)
        if now < self.unplug_until:
            self.c["dropped_unplug"] += len(data)
        elif not self.board_up:
            self.c["discarded_reset"] += len(data)
        else:
            self.board.push(data, now)

    def release(self, now: float) -> None:
        self.host.release(now)
        self.board.release(now)

    # -- bytes out ------------------------------------------------------------------------------
    def host_sent(self, n: int) -> None:
        del self.host.ready[:n]
        self.c["to_host"] += n

    def board_sent(self, n: int) -> None:
        del self.board.ready[:n]
        self.c["to_board"] += n

    def board_write_failed(self) -> None:
        """The board's stdin is gone: what was ready for it is lost."""
        self.c["discarded_reset"] += len(self.board.ready)
        self.board.ready.clear()

    def want_board_output(self) -> bool:
        """Whether to read the board: the host keeps up (or output is being discarded)."""
        return self.host.pending < self.limit

    def want_host_input(self) -> bool:
        return self.board.pending < self.limit

    def deadline(self, now: float) -> float:
        """When something is due without any I/O: a delayed release or the end of an unplug."""
        t = min(self.host.next_release(), self.board.next_release())
        return min(t, self.unplug_until) if self.unplug_until > now else t

    # -- host presence, unplug, board restarts ---------------------------------------------------
    def attach(self) -> None:
        self.attached = True
        self.host_sessions += 1

    def detach(self, now: float) -> bool:
        """The host went away (or its port was closed); True if one was attached."""
        was = self.attached
        if was:
            self.attached = False
            self.last_detach = now
        self.c["discarded_detached"] += self.host.clear()
        return was

    def linger_end(self, linger: float) -> float | None:
        """When the launcher should exit for want of a host (None: a host is attached, or
        ``linger`` is 0 = never)."""
        if self.attached or linger <= 0:
            return None
        return self.last_detach + linger

    def unplug(self, now: float, seconds: float, mode: str) -> None:
        """Start an unplug (ValueError on a bad mode or duration)."""
        if mode not in UNPLUG_MODES:
            raise ValueError(f"bad unplug mode {mode!r}; valid: {', '.join(UNPLUG_MODES)}")
        if not (0 < seconds <= 86400):
            raise ValueError(f"unplug seconds must be in (0, 86400], not {seconds}")
        self.unplug_until = now + seconds
        self.unplug_mode = mode
        self.c["dropped_unplug"] += self.host.clear()

    def replug(self, now: float) -> None:
        self.unplug_until = min(self.unplug_until, now)

    def unplugged(self, now: float) -> bool:
        return now < self.unplug_until

    def board_started(self) -> None:
        self.board_up = True

    def board_stopped(self) -> None:
        """The board process ended: what waited for it is lost."""
        self.board_up = False
        self.c["discarded_reset"] += self.board.clear()

    # -- status ---------------------------------------------------------------------------------
    def status(self, now: float) -> dict[str, Any]:
        c = self.c
        inj_h, inj_b = self.host.injector, self.board.injector
        return {
            "host_attached": self.attached,
            "host_sessions": self.host_sessions,
            "unplugged_s": max(0.0, round(self.unplug_until - now, 3)),
            "unplug_mode": self.unplug_mode if self.unplugged(now) else None,
            "bytes_to_host": c["to_host"],
            "bytes_to_board": c["to_board"],
            "bytes_from_board": c["from_board"],
            "bytes_from_host": c["from_host"],
            "bytes_dropped": inj_h.dropped
            + inj_b.dropped
            + c["dropped_unplug"]
            + c["discarded_detached"]
            + c["discarded_reset"],
            "bytes_pending_to_host": self.host.pending,
            "bytes_pending_to_board": self.board.pending,
            "counters": {
                **c,
                "dropped_fault_to_host": inj_h.dropped,
                "dropped_fault_to_board": inj_b.dropped,
                "corrupted_to_host": inj_h.corrupted,
                "corrupted_to_board": inj_b.corrupted,
                "duplicated_to_host": inj_h.duplicated,
                "duplicated_to_board": inj_b.duplicated,
            },
            "faults": self.faults.as_dict(),
        }
