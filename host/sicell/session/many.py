"""Several boards at once: one session, one thread and one database per board."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sicell.session.runner import RunSession
from sicell.session.summary import RunSummary


@dataclass
class SessionResult:
    session: RunSession
    summary: RunSummary | None
    error: BaseException | None


def run_many(
    sessions: Sequence[RunSession],
    *,
    on_done: Callable[[SessionResult], None] | None = None,
) -> list[SessionResult]:
    """Run several sessions at once, one thread and one database each; wait for all.

    Ctrl-C asks every session to detach (each keeps its board running).
    """
    results: list[SessionResult | None] = [None] * len(sessions)

    def work(i: int, s: RunSession) -> None:
        try:
            res = SessionResult(s, s.run(), None)
        except BaseException as e:  # handed to the caller in the result, not swallowed
            res = SessionResult(s, None, e)
        results[i] = res
        if on_done is not None:
            on_done(res)

    threads = [
        threading.Thread(target=work, args=(i, s), name=f"sicell-{s.name}", daemon=True)
        for i, s in enumerate(sessions)
    ]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.2)
    except KeyboardInterrupt:
        for s in sessions:
            s.request_stop()
        for t in threads:
            t.join(30)
    return [
        r if r is not None else SessionResult(s, None, None)
        for r, s in zip(results, sessions, strict=True)
    ]
