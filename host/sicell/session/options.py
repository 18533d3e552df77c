"""How a run session paces its commits, gap healing, status polls and reconnects."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SessionOptions:
    batch_records: int = 500  # commit at least this often (records) ...
    batch_interval_s: float = 0.5  # ... or this often (seconds)
    gap_wait_s: float = 0.4  # a hole this old is healed with REPLAY
    replay_retry_s: float = 2.0  # repeat an unanswered REPLAY after this long
    status_interval_s: float = 2.0  # STATUS poll (tail losses, terminal states, display)
    reconnect_initial_s: float = 0.25
    reconnect_max_s: float = 10.0
    reconnect_give_up_s: float | None = None  # None: keep trying for as long as it takes
    hello_timeout_s: float = 5.0
    request_timeout_s: float = 1.0
    display_interval_s: float = 0.25
