"""``sicell serve``: a long-running service that owns boards, logs their runs and serves them.

``core`` (:class:`Service`: the boards, runs and events, thread-safe), ``worker`` (one thread
per board, the only opener of its port), ``boardview`` (the board dict the API shows),
``runviews`` (runs, records by seq, cycles, dQ/dV, reports), ``reattach`` (which run each board
runs, across restarts; the runs it cannot reattach), ``plan`` (a schedule checked for a
board before START), ``events`` (badges and alerts from a run's records), ``alerts`` (sent once
per event), ``hub`` (subscriptions), ``audit`` (who ran what), ``datadir`` (the data directory's
layout and state), ``calibrate`` (the calibrate request), ``runclient`` (``sicell run`` as a
client of a service). ``api``/``auth``/``static`` are the HTTP side.
"""

from __future__ import annotations

from sicell.service.core import Service
from sicell.service.hub import Subscription

__all__ = ["Service", "Subscription"]
