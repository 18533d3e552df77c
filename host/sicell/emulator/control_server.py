"""The launcher's control socket: JSON-line requests on a Unix stream socket, each dispatched
through a table ``{command name: handler}`` (``control.py`` is the client and lists the
commands).

A handler gets the request object and returns the reply fields; ValueError, TypeError,
KeyError or OSError from it become ``{"ok": false, "error": ...}``. The server is
non-blocking: the launcher's poll loop asks which fds to watch and hands it their events.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

Handler = Callable[[Mapping[str, Any]], dict[str, Any]]
MAX_LINE = 65536
_IN, _OUT = select.POLLIN, select.POLLOUT
_GONE = select.POLLHUP | select.POLLERR


class _Client:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.close_after_flush = False


class ControlServer:
    """Accepts control connections and answers their request lines."""

    def __init__(self, path: Path, handlers: Mapping[str, Handler]) -> None:
        self.path = path
        self.handlers = dict(handlers)
        self.listener: socket.socket | None = None
        self.clients: dict[int, _Client] = {}

    # -- dispatch ------------------------------------------------------------------------------
    def dispatch(self, req: Mapping[str, Any]) -> dict[str, Any]:
        """Run one request through the table; ValueError for an unknown command."""
        cmd = req["cmd"]
        handler = self.handlers.get(cmd)
        if handler is None:
            raise ValueError(f"unknown command {cmd!r}; known commands: {', '.join(self.handlers)}")
        return handler(req)

    def handle_line(self, line: bytes) -> dict[str, Any]:
        """The reply object to one request line."""
        try:
            req = json.loads(line)
            if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
                raise ValueError('expected a JSON object with a "cmd" string')
            return {"ok": True, **self.dispatch(req)}
        except (ValueError, TypeError, KeyError, OSError) as e:
            return {"ok": False, "error": str(e)}

    # -- sockets -------------------------------------------------------------------------------
    def open(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        ls.bind(str(self.path))
        os.chmod(self.path, 0o600)
        ls.listen(8)
        ls.setblocking(False)
        self.listener = ls

    def watch(self) -> Iterator[tuple[int, int]]:
        """(fd, poll mask) of every socket to watch now."""
        if self.listener is not None:
            yield self.listener.fileno(), _IN
        for fd, cl in self.clients.items():
            yield fd, _IN | (_OUT if cl.outbuf else 0)

    def on_event(self, fd: int, ev: int) -> bool:
        """Handle a poll event; False if ``fd`` is not one of the server's."""
        if self.listener is not None and fd == self.listener.fileno():
            self._accept()
            return True
        cl = self.clients.get(fd)
        if cl is None:
            return False
        if ev & (_IN | _GONE):
            self._read(cl)
        if fd in self.clients and ev & _OUT:
            self._write(cl)
        return True

    def close(self) -> None:
        """Send pending replies (e.g. to ``shutdown``), close every socket, remove the path."""
        for cl in list(self.clients.values()):
            with contextlib.suppress(OSError):  # a client that left cannot be answered
                cl.sock.setblocking(True)
                cl.sock.settimeout(0.5)
                cl.sock.sendall(cl.outbuf)
            cl.sock.close()
        self.clients.clear()
        if self.listener is not None:
            self.listener.close()
            self.listener = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def _accept(self) -> None:
        assert self.listener is not None
        while True:
            try:
                s, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            s.setblocking(False)
            self.clients[s.fileno()] = _Client(s)

    def _drop(self, cl: _Client) -> None:
        self.clients.pop(cl.sock.fileno(), None)
        cl.sock.close()

    def _read(self, cl: _Client) -> None:
        try:
            data = cl.sock.recv(MAX_LINE)
        except BlockingIOError:
            return
        except OSError:  # reset by the client: nothing to answer
            self._drop(cl)
            return
        if not data:
            if cl.outbuf:
                cl.close_after_flush = True
            else:
                self._drop(cl)
            return
        cl.inbuf += data
        while b"\n" in cl.inbuf:
            line, _, rest = bytes(cl.inbuf).partition(b"\n")
            cl.inbuf = bytearray(rest)
            if line.strip():
                cl.outbuf += json.dumps(self.handle_line(line)).encode() + b"\n"
        if len(cl.inbuf) > MAX_LINE:
            cl.outbuf += b'{"ok": false, "error": "request line too long"}\n'
            cl.inbuf.clear()
            cl.close_after_flush = True

    def _write(self, cl: _Client) -> None:
        try:
            n = cl.sock.send(cl.outbuf)
        except BlockingIOError:
            return
        except OSError:  # the client went away before its reply
            self._drop(cl)
            return
        del cl.outbuf[:n]
        if not cl.outbuf and cl.close_after_flush:
            self._drop(cl)
