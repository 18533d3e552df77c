"""Requests for the one thread that has a board's port open.

A port has one opener. Whatever else wants something from that board (a second terminal's
``sicell pause``, the service's HTTP API, a dashboard button) hands a :class:`ControlRequest`
to the owner's :class:`Controls`; the owning loop (a :class:`~sicell.session.RunSession`'s
stream loop, or a service's idle board worker) runs it between polls with :func:`execute`
and answers through the request's future. ``OPS`` is the one table of what can be asked.

Results are plain JSON-able dicts so that they cross a socket unchanged: ``info`` and
``status`` carry the fields of :class:`~sicell.client.BoardInfo` and
:class:`~sicell.client.Status` (:func:`info_from_dict` / :func:`status_from_dict` rebuild them).
"""

from __future__ import annotations

import dataclasses
import queue
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from sicell.client import Board, BoardInfo, Status
from sicell.errors import BoardTimeoutError, UsageError

Result = dict[str, Any]


@dataclass
class ControlRequest:
    op: str
    args: dict[str, Any] = field(default_factory=dict)
    future: Future[Result] = field(default_factory=Future)


def info_dict(info: BoardInfo) -> Result:
    d = {f.name: getattr(info, f.name) for f in dataclasses.fields(info) if f.name != "fields"}
    d["fw_version"] = list(info.fw_version)
    d["ranges_na"] = list(info.ranges_na)
    # the INFO frame's own fields (what BoardInfo.as_dict shows), bytes as hex
    d["wire"] = {k: v.hex() if isinstance(v, bytes) else v for k, v in info.fields.items()}
    d["wire_hex"] = [k for k, v in info.fields.items() if isinstance(v, bytes)]
    return d


def info_from_dict(d: dict[str, Any]) -> BoardInfo:
    names = {f.name for f in dataclasses.fields(BoardInfo)} - {"fields"}
    kw = {k: v for k, v in d.items() if k in names}
    kw["fw_version"] = tuple(kw["fw_version"])
    kw["ranges_na"] = tuple(kw["ranges_na"])
    hexed = set(d.get("wire_hex") or ())
    wire = d.get("wire") or {}
    kw["fields"] = {k: bytes.fromhex(v) if k in hexed else v for k, v in wire.items()}
    return BoardInfo(**kw)


def status_dict(st: Status) -> Result:
    return dataclasses.asdict(st)


def status_from_dict(d: dict[str, Any]) -> Status:
    names = {f.name for f in dataclasses.fields(Status)}
    return Status(**{k: v for k, v in d.items() if k in names})


def _status(board: Board, args: dict[str, Any]) -> Result:
    return {"status": status_dict(board.status())}


def _info(board: Board, args: dict[str, Any]) -> Result:
    """What HELLO said when the owner connected, with the state and run id of now (a new
    HELLO would make the board resend every unacked record to the owner)."""
    assert board.info is not None  # (a board is handshaken before anyone may ask)
    st = board.status()
    fields = {**board.info.fields, "state": st.state, "run_id": st.run_id}
    info = dataclasses.replace(board.info, state=st.state, run_id=st.run_id, fields=fields)
    return {"info": info_dict(info), "port": board.port, "status": status_dict(st)}


def _steer(action: Callable[[Board], None]) -> Callable[[Board, dict[str, Any]], Result]:
    def op(board: Board, args: dict[str, Any]) -> Result:
        action(board)
        return {"status": status_dict(board.status())}

    return op


# what another process may ask of a board's owner: op -> what the owner does with its board
OPS: dict[str, Callable[[Board, dict[str, Any]], Result]] = {
    "info": _info,
    "status": _status,
    "pause": _steer(Board.pause),
    "resume": _steer(Board.resume),
    "stop": _steer(Board.stop),
}


def execute(board: Board, req: ControlRequest) -> Result | None:
    """Run ``req`` on ``board`` and answer its future; returns the result (None on error).

    A board error (a NACK, a timeout) is the asker's answer, not the owner's failure, except a
    lost link, which the owner must also see: it is answered and re-raised.
    """
    from sicell.errors import LinkLostError, SicellError

    if not req.future.set_running_or_notify_cancel():
        return None  # the asker gave up waiting before this was taken
    op = OPS.get(req.op)
    if op is None:
        req.future.set_exception(
            UsageError(f"unknown control request {req.op!r}; expected one of {', '.join(OPS)}")
        )
        return None
    try:
        result = op(board, req.args)
    except (LinkLostError, BoardTimeoutError) as e:
        req.future.set_exception(e)
        raise
    except SicellError as e:
        req.future.set_exception(e)
        return None
    req.future.set_result(result)
    return result


class Controls:
    """A queue of requests from other threads to the thread that owns one board."""

    def __init__(self) -> None:
        self._q: queue.SimpleQueue[ControlRequest] = queue.SimpleQueue()

    def submit(self, op: str, args: dict[str, Any] | None = None) -> Future[Result]:
        req = ControlRequest(op, dict(args or {}))
        self._q.put(req)
        return req.future

    def pending(self) -> Iterator[ControlRequest]:
        """The requests waiting now (the owner's loop drains them between polls)."""
        while True:
            try:
                yield self._q.get_nowait()
            except queue.Empty:
                return

    def wait(self, timeout: float) -> ControlRequest | None:
        """The next request, waiting at most ``timeout`` s (an idle owner's loop)."""
        try:
            return self._q.get(timeout=timeout)
        except queue.Empty:
            return None

    def refuse_all(self, error: Exception) -> None:
        """Answer every waiting request with ``error`` (the owner is going away)."""
        for req in self.pending():
            if req.future.set_running_or_notify_cancel():
                req.future.set_exception(error)
