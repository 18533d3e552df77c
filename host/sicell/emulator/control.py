"""Client for an emulator launcher's control socket (JSON lines over a Unix stream socket).

Each request is one JSON object on one line with a ``"cmd"`` key; the launcher answers one line,
``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``. Commands:

==========  ====================================================  ===========================
cmd         fields                                                reply fields
==========  ====================================================  ===========================
status                                                            pid, board_pid, board, cell,
                                                                  seed, pty, host_attached,
                                                                  uptime_s, vtime_s,
                                                                  bytes_to_host, bytes_to_board,
                                                                  bytes_dropped, counters, ...
faults      drop, corrupt, duplicate (per-byte probabilities),   faults (the whole config)
            delay_ms, direction (both | to_host | to_board);
            fields left out keep their value
unplug      seconds, mode (drop | hangup)                         unplugged_s, mode
replug      (ends an unplug now)                                  pty
freeze      ms (firmware stalls: the watchdog resets it)          freeze
brownout    ms (supply dips: power-on reset)                      brownout
reset       (soft reset of the board)
noise       on (bool: ADC noise)                                  noise
linger      seconds (exit after this long without a host; 0 =    linger
            never)
shutdown    (the launcher stops the board and exits)              pid
ping                                                              pid
==========  ====================================================  ===========================

One connection per request, so a client survives the launcher being restarted.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any, TypeVar

from sicell.errors import ControlError

_T = TypeVar("_T")


def _command(
    cmd: str, field: str, conv: Callable[[_T], object], doc: str
) -> Callable[[EmulatorControl, _T], None]:
    """A method sending ``cmd`` with ``field`` = conv(value) and dropping the reply."""

    def send(self: EmulatorControl, value: _T) -> None:
        self.request(cmd, **{field: conv(value)})

    send.__name__ = cmd
    send.__qualname__ = f"EmulatorControl.{cmd}"
    send.__doc__ = doc
    return send


class EmulatorControl:
    """Typed client of one launcher's control socket."""

    def __init__(self, socket_path: str, timeout: float = 5.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"EmulatorControl({self.socket_path!r})"

    def request(self, cmd: str, **fields: Any) -> dict[str, Any]:
        """Send one command; return the reply (without ``ok``) or raise ControlError."""
        line = json.dumps({"cmd": cmd, **fields}).encode() + b"\n"
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(self.timeout)
                s.connect(self.socket_path)
                s.sendall(line)
                buf = bytearray()
                while b"\n" not in buf:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
        except OSError as e:
            raise ControlError(
                f"emulator control socket {self.socket_path} not reachable: {e}"
            ) from e
        if b"\n" not in buf:
            raise ControlError(f"emulator closed the control connection during {cmd!r}")
        try:
            reply = json.loads(bytes(buf).split(b"\n", 1)[0])
        except ValueError as e:
            raise ControlError(f"bad reply from emulator to {cmd!r}: {e}") from e
        if not isinstance(reply, dict):
            raise ControlError(f"bad reply from emulator to {cmd!r}: {reply!r}")
        if not reply.pop("ok", False):
            raise ControlError(f"emulator refused {cmd!r}: {reply.get('error', 'unknown error')}")
        return reply

    # -- commands --------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """pid, pty, bytes relayed / dropped, host attached, uptime, virtual time, ..."""
        return self.request("status")

    def ping(self) -> bool:
        try:
            self.request("ping")
        except ControlError:
            return False
        return True

    def faults(
        self,
        *,
        drop: float | None = None,
        corrupt: float | None = None,
        duplicate: float | None = None,
        delay_ms: float | None = None,
        direction: str | None = None,
    ) -> dict[str, Any]:
        """Change link faults (arguments left None keep their value); returns the new set."""
        fields: dict[str, Any] = {
            k: v
            for k, v in (
                ("drop", drop),
                ("corrupt", corrupt),
                ("duplicate", duplicate),
                ("delay_ms", delay_ms),
                ("direction", direction),
            )
            if v is not None
        }
        return dict(self.request("faults", **fields)["faults"])

    def clear_faults(self) -> dict[str, Any]:
        return self.faults(drop=0.0, corrupt=0.0, duplicate=0.0, delay_ms=0.0, direction="both")

    def unplug(self, seconds: float, mode: str = "drop") -> dict[str, Any]:
        """Simulate a USB unplug for ``seconds`` (mode ``drop`` or ``hangup``, see launcher)."""
        return self.request("unplug", seconds=seconds, mode=mode)

    def replug(self) -> str | None:
        """End an unplug now; returns the (possibly new) pty path."""
        pty = self.request("replug").get("pty")
        return str(pty) if pty is not None else None

    # commands of one field whose reply is not needed: (cmd, field, conversion, doc)
    freeze = _command("freeze", "ms", int, "Stall the firmware ``ms`` (watchdog reset when long).")
    brownout = _command("brownout", "ms", int, "Drop the supply for ``ms``: power-on reset.")
    noise = _command("noise", "on", bool, "Switch the emulated ADC noise on or off.")
    linger = _command("linger", "seconds", float, "Exit after ``seconds`` hostless (0 = never).")

    def reset(self) -> None:
        """Soft-reset the board."""
        self.request("reset")

    def shutdown(self) -> None:
        """Stop the board and the launcher (the pty goes away)."""
        self.request("shutdown")
