"""When to resend a request and when to give up.

A reply that does not come was lost on the way (a noisy link), or the board is slow, or it is
gone. :class:`RoundTrip` keeps a smoothed round-trip time from replies to requests sent once
(a reply to a resent request could answer either copy), so the first wait follows the link.
:class:`Attempts` is one request's schedule of waits: after a wait that ended with a sign that
the request or its reply was lost (a bad frame arrived meanwhile: a garbled reply) the next is
the first wait again, as the board is there and answering; any other unanswered wait grows by
half, up to the request's cap, in case the board is slow. It gives up when the board has
sent nothing at all for the silence budget, or when the request has been tried for four times
that long.
"""

from __future__ import annotations

import time

MIN_WAIT_S = 0.1  # shortest wait for a reply before a resend
FIRST_WAIT_S = 0.25  # the first wait before any round trip was measured
GROWTH = 1.5  # an unanswered wait grows by this factor (up to the cap)
PERSIST = 4  # try for at most this many silence budgets while the board keeps talking


class RoundTrip:
    """Smoothed round-trip time and its variation (the weights of RFC 6298)."""

    def __init__(self) -> None:
        self.srtt: float | None = None
        self.rttvar = 0.0

    def sample(self, rtt: float) -> None:
        """A round trip of a request answered on its first send."""
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
            return
        self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
        self.srtt = 0.875 * self.srtt + 0.125 * rtt

    def wait(self, cap: float) -> float:
        """How long to wait for a reply before a resend (within ``MIN_WAIT_S`` … ``cap``)."""
        if self.srtt is None:
            return min(cap, FIRST_WAIT_S)
        return min(cap, max(MIN_WAIT_S, self.srtt + 4 * self.rttvar))


class Attempts:
    """The waits of one request and the rule that ends them."""

    def __init__(self, first_wait: float, cap: float, silence_budget: float) -> None:
        self.first = self.wait = min(first_wait, cap)
        self.cap = cap
        self.silence_budget = silence_budget
        self.tries = 0
        self.silent_for = 0.0
        self.lost = 0
        self.started = time.monotonic()

    def failed(self, *, heard: bool, lost: bool) -> None:
        """One wait ended without a reply; ``heard``: bytes arrived meanwhile, ``lost``: there
        is a sign that the request or its reply was lost (not that the board is slow)."""
        self.tries += 1
        self.silent_for = 0.0 if heard else self.silent_for + self.wait
        if lost:
            self.lost += 1
            self.wait = self.first
        else:
            self.wait = min(self.cap, self.wait * GROWTH)

    def exhausted(self) -> bool:
        if self.silent_for >= self.silence_budget - 1e-9:
            return True
        return time.monotonic() - self.started >= PERSIST * self.silence_budget

    def describe(self) -> str:
        """What was tried, for a timeout message: "within 4.1 s (9 tries, 3 with a bad frame;
        ...)"."""
        took = time.monotonic() - self.started
        why = (
            f"the board sent nothing for the last {self.silent_for:.1f} s"
            if self.silent_for > 0
            else "the board kept sending but not the reply"
        )
        bad = f", {self.lost} with a bad frame" if self.lost else ""
        tries = f"{self.tries} tries" if self.tries != 1 else "1 try"
        return f"within {took:.1f} s ({tries}{bad}; {why})"
