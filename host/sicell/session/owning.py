"""A run session as its port's one owner: the claim, and the requests of other processes.

:class:`PortOwner` claims the session's port for the session's whole life (reconnects
included; another process's claim fails it at once with PortOwnedError), serves the claim's
control socket through :class:`~sicell.session.controls.Controls`, and runs the waiting
requests on the session's own board between polls.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from sicell.client import Board, BoardInfo, Status
from sicell.errors import SessionError
from sicell.session.controls import Controls, execute, status_from_dict

if TYPE_CHECKING:
    from sicell.owner import Claim


class PortOwner:
    """``controls``: the caller's (a service's, which claimed the port first) or a new one."""

    def __init__(self, port: str, controls: Controls | None) -> None:
        self.port = port
        self.own_controls = controls is None
        self.controls = controls if controls is not None else Controls()
        self.claim: Claim | None = None

    def take(self) -> None:
        from sicell.owner import claim, controls_handler

        self.claim = claim(self.port, "run", controls_handler(self.controls))

    def noted(self, info: BoardInfo) -> None:
        """The board answered HELLO: its id goes into the owner file."""
        if self.claim is not None:
            with contextlib.suppress(OSError):  # the owner file's board id is a hint
                self.claim.update(board_id=info.board_id)

    def serve(self, board: Board, on_status: Callable[[Status], None]) -> None:
        """Run what other processes asked (``sicell pause`` from a second terminal, a
        service's API) on the session's own link; a STATUS they caused goes to ``on_status``."""
        for req in self.controls.pending():
            result = execute(board, req)
            if result is not None and "status" in result:
                on_status(status_from_dict(result["status"]))

    def release(self) -> None:
        """Let the port go; requests still waiting on controls of our own are refused."""
        if self.claim is not None:
            self.claim.close()
            self.claim = None
        if self.own_controls:
            self.controls.refuse_all(SessionError(f"the run's session on {self.port} has ended"))
