"""A port owner's control socket: JSON lines over a Unix stream socket, served by threads.

Request (one line): ``{"v": 1, "op": "pause", "args": {}}``. Reply (one line):
``{"ok": true, "result": {...}}`` or ``{"ok": false, "error": "<one line>", "exit_code": N,
"kind": "<errors.py class name>"}``. Every line gets exactly one reply, a malformed one too; a
connection may carry any number of requests, answered in order. The owner's ``handler(op,
args) -> dict`` does the work; :func:`controls_handler` makes one that hands the request to
the thread holding the board (:class:`~sicell.session.controls.Controls`) and waits, bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

from sicell.errors import EXIT_BUG, BoardTimeoutError, SicellError, UsageError
from sicell.owner.registry import Handler
from sicell.session.controls import OPS, Controls

PROTOCOL_VERSION = 1
MAX_LINE = 1 << 20  # bytes per request line (a schedule's TOML fits many times over)
REQUEST_WAIT_S = 10.0  # for the board's thread to take a request (it polls every 50 ms)
RUNNING_WAIT_S = 30.0  # then for the request it took (board requests have their own timeouts)
_BACKLOG = 16


def _one_line(text: str) -> str:
    return "; ".join(ln.strip() for ln in text.splitlines() if ln.strip())


def error_reply(e: SicellError) -> dict[str, Any]:
    return {
        "ok": False,
        "error": _one_line(str(e)) or type(e).__name__,
        "exit_code": e.exit_code,
        "kind": type(e).__name__,
    }


def answer(handler: Handler, line: bytes) -> dict[str, Any]:
    """The reply to one request line (never raises for anything the line holds)."""
    try:
        req = json.loads(line)
    except ValueError as e:  # (UnicodeDecodeError is a ValueError)
        return error_reply(UsageError(f"not a JSON line: {e}"))
    if not isinstance(req, dict):
        return error_reply(UsageError('a request is a JSON object {"v", "op", "args"}'))
    if req.get("v") != PROTOCOL_VERSION:
        return error_reply(
            UsageError(f"request version {req.get('v')!r}; this owner speaks {PROTOCOL_VERSION}")
        )
    op, args = req.get("op"), req.get("args", {})
    if not isinstance(op, str) or not op:
        return error_reply(UsageError('a request needs "op", a string'))
    if not isinstance(args, dict):
        return error_reply(UsageError('a request\'s "args" is a JSON object'))
    try:
        result = handler(op, args)
    except SicellError as e:
        return error_reply(e)
    except Exception as e:  # a failing handler must not end the server; the asker is told
        return {
            "ok": False,
            "error": _one_line(f"bug in sicell: {type(e).__name__}: {e}"),
            "exit_code": EXIT_BUG,
            "kind": "bug",
        }
    return {"ok": True, "result": result}


def encode(reply: dict[str, Any]) -> bytes:
    try:
        return json.dumps(reply, allow_nan=False).encode() + b"\n"
    except (TypeError, ValueError) as e:  # a result that is not JSON: the handler's bug
        return encode(
            {
                "ok": False,
                "error": f"bug in sicell: reply not JSON: {e}",
                "exit_code": EXIT_BUG,
                "kind": "bug",
            }
        )


class ControlServer:
    """Serves ``handler`` on a Unix socket at ``path`` (mode 0600) until :meth:`close`."""

    def __init__(self, path: Path, handler: Handler, *, max_line: int = MAX_LINE) -> None:
        self.path = Path(path)
        self.handler = handler
        self.max_line = max_line
        self._sock: socket.socket | None = None
        self._ino: int | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        tmp = self.path.with_name(f".{secrets.token_hex(4)}")
        try:
            s.bind(str(tmp))
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)  # atomic; replaces a dead owner's socket
            self._ino = os.stat(self.path).st_ino
            s.listen(_BACKLOG)
        except BaseException:
            s.close()
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        self._sock = s
        self._thread = threading.Thread(
            target=self._accept_loop, name=f"sicell-owner-{self.path.name}", daemon=True
        )
        self._thread.start()

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:  # closed under us (close() shuts the socket down): done
                return
            with self._lock:
                if self._closed.is_set():
                    conn.close()
                    return
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn, conn.makefile("rb") as rf:
                while not self._closed.is_set():
                    line = rf.readline(self.max_line + 1)
                    if not line:
                        return
                    if len(line) > self.max_line and not line.endswith(b"\n"):
                        while line and not line.endswith(b"\n"):  # skip the rest of it
                            line = rf.readline(self.max_line + 1)
                        too_long = UsageError(f"request line longer than {self.max_line} bytes")
                        conn.sendall(encode(error_reply(too_long)))
                        continue
                    if not line.strip():
                        continue
                    conn.sendall(encode(answer(self.handler, line)))
        except OSError:  # the asker went away, or close() shut the connection: nothing to tell
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)

    def close(self) -> None:
        """Stop accepting, end every connection, remove the socket file (if still ours)."""
        self._closed.set()
        with self._lock:
            conns = list(self._conns)
        for c in (self._sock, *conns):
            if c is not None:
                with contextlib.suppress(OSError):  # already shut down or closed
                    c.shutdown(socket.SHUT_RDWR)
        if self._sock is not None:
            self._sock.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5.0)
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self.path).st_ino == self._ino:  # a new owner's socket stays
                self.path.unlink()


def wait_result(future: Future[dict[str, Any]], op: str) -> dict[str, Any]:
    """The result of a request handed to a board's thread; bounded: a request the thread has
    not taken within REQUEST_WAIT_S is withdrawn (and not done)."""
    try:
        return future.result(REQUEST_WAIT_S)
    except FutureTimeout:
        if future.cancel():
            raise BoardTimeoutError(
                f"the board's owner did not take {op!r} within {REQUEST_WAIT_S:g} s (busy "
                "reconnecting?); nothing was done"
            ) from None
    try:
        return future.result(RUNNING_WAIT_S)
    except FutureTimeout:
        raise BoardTimeoutError(
            f"the board's owner took {op!r} but did not finish it within {RUNNING_WAIT_S:g} s"
        ) from None


def controls_handler(controls: Controls) -> Handler:
    """A handler that passes the ops of ``session.controls.OPS`` to ``controls``."""

    def handle(op: str, args: dict[str, Any]) -> dict[str, Any]:
        if op not in OPS:
            raise UsageError(f"unknown request {op!r}; this owner answers {', '.join(OPS)}")
        return wait_result(controls.submit(op, args), op)

    return handle
