"""A board reached through its owner's control socket instead of its port.

:class:`RemoteBoard` has the surface the CLI's board commands use from
:class:`~sicell.client.Board` (``port``, ``info``, ``status()``, ``pause()``, ``resume()``,
``stop()``, a context manager) plus :meth:`RemoteBoard.call` for any other request the owner
answers. A refusal is raised as the errors.py class the owner named, with its text and exit
code.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from sicell import errors
from sicell.client import BoardInfo, Status
from sicell.errors import BoardTimeoutError, PortOwnedError, SessionError, SicellError
from sicell.owner.registry import OwnerInfo, owner_of
from sicell.owner.server import PROTOCOL_VERSION, REQUEST_WAIT_S, RUNNING_WAIT_S
from sicell.session.controls import info_from_dict, status_from_dict

REPLY_TIMEOUT_S = REQUEST_WAIT_S + RUNNING_WAIT_S + 5.0  # the owner answers within its bounds
FRESH_S = 1.0  # a status that came with a reply stands for the next status() this long


def reply_error(reply: dict[str, Any]) -> SicellError:
    """The exception an ``ok: false`` reply stands for: the errors.py class it names (its
    text, its exit code), else a SicellError with that exit code."""
    text = str(reply.get("error") or "the board's owner refused the request")
    code = reply.get("exit_code")
    cls = getattr(errors, str(reply.get("kind", "")), None)
    err: SicellError
    if (
        isinstance(cls, type)
        and issubclass(cls, SicellError)
        and cls.__str__ is BaseException.__str__  # (a class with its own text needs its fields)
    ):
        err = cls.__new__(cls)
        Exception.__init__(err, text)
    else:
        err = SicellError(text)
    if isinstance(code, int) and code != err.exit_code:
        err.exit_code = code
    return err


class RemoteBoard:
    """A board whose port another process owns, through that owner's control socket."""

    def __init__(
        self, port: str, owner: OwnerInfo, sock: socket.socket, *, timeout: float = REPLY_TIMEOUT_S
    ) -> None:
        self.port = port  # as the user gave it: commands print it as they do for a Board
        self.owner = owner
        self.timeout = timeout
        self._info: BoardInfo | None = None
        self._fresh: tuple[float, Status] | None = None  # (when, the status a reply carried)
        self._sock = sock
        self._sock.settimeout(timeout)
        self._rfile = sock.makefile("rb")

    @classmethod
    def connect(cls, port: str) -> RemoteBoard | None:
        """A RemoteBoard when ``port`` has a live owner; None when it has none (also when the
        owner ended while this looked)."""
        owner = owner_of(port)
        if owner is None:
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(REPLY_TIMEOUT_S)
        try:
            sock.connect(owner.socket)
        except OSError as e:
            sock.close()
            if owner_of(port) is None:
                return None
            raise PortOwnedError(
                f"{port} is owned by {owner.describe()}, which does not answer on its control "
                f"socket {owner.socket} ({e})"
            ) from e
        return cls(port, owner, sock)

    # -- requests ----------------------------------------------------------------------------
    def call(self, op: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one request; the result dict, or the refusal raised."""
        line = json.dumps({"v": PROTOCOL_VERSION, "op": op, "args": dict(args or {})})
        try:
            self._sock.sendall(line.encode() + b"\n")
            raw = self._rfile.readline()
        except TimeoutError:
            raise BoardTimeoutError(
                f"{self.port}: no answer to {op!r} from {self.owner.describe()} within "
                f"{self.timeout:g} s"
            ) from None
        except OSError as e:
            raise SessionError(f"{self.port}: {self.owner.describe()} went away ({e})") from e
        if not raw:
            raise SessionError(f"{self.port}: {self.owner.describe()} ended before it answered")
        try:
            reply = json.loads(raw)
        except ValueError as e:
            raise SicellError(f"{self.port}: the owner's reply is not JSON ({e})") from e
        if not isinstance(reply, dict):
            raise SicellError(f"{self.port}: the owner's reply is not a JSON object")
        if reply.get("ok") is True and isinstance(reply.get("result"), dict):
            result: dict[str, Any] = reply["result"]
            return result
        raise reply_error(reply)

    def _noting(self, result: dict[str, Any]) -> dict[str, Any]:
        """Keep the status the owner read right after a request (info, pause, ...): the next
        :meth:`status` is that reading, as a Board's next STATUS would be, one round trip
        sooner."""
        if isinstance(result.get("status"), dict):
            self._fresh = (time.monotonic(), status_from_dict(result["status"]))
        return result

    def _read_only(self, op: str) -> dict[str, Any]:
        """A request that only looks: when the owner ended meanwhile, ask the board itself
        (its port is free then)."""
        try:
            return self.call(op)
        except SessionError:  # (what an owner that ended, or is ending, answers)
            if owner_of(self.port) is not None:
                raise
        from sicell.client import Board
        from sicell.session.controls import info_dict, status_dict

        with Board.open(self.port) as b:
            assert b.info is not None
            return {"info": info_dict(b.info), "status": status_dict(b.status())}

    @property
    def info(self) -> BoardInfo:
        if self._info is None:
            self._info = info_from_dict(self._noting(self._read_only("info"))["info"])
        return self._info

    def status(self) -> Status:
        fresh, self._fresh = self._fresh, None
        if fresh is not None and time.monotonic() - fresh[0] < FRESH_S:
            return fresh[1]
        return status_from_dict(self._read_only("status")["status"])

    def pause(self) -> None:
        self._noting(self.call("pause"))

    def resume(self) -> None:
        self._noting(self.call("resume"))

    def stop(self) -> None:
        self._noting(self.call("stop"))

    # -- lifetime ----------------------------------------------------------------------------
    def close(self) -> None:
        self._rfile.close()
        self._sock.close()

    def __enter__(self) -> RemoteBoard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
