"""One opener per port: who owns a port, its control socket, and reaching a board through it.

``registry`` (claims, owner files, :func:`owner_of`), ``server`` (the owner's JSON-lines
control socket), ``remote`` (:class:`RemoteBoard`, what a second command uses instead of the
port). The names callers use are importable from here.
"""

from __future__ import annotations

from sicell.owner.registry import (
    Claim,
    OwnerInfo,
    claim,
    held_here,
    owner_of,
    port_key,
    refuse_owned,
    runtime_dir,
)
from sicell.owner.remote import RemoteBoard
from sicell.owner.server import ControlServer, controls_handler

__all__ = [
    "Claim",
    "ControlServer",
    "OwnerInfo",
    "RemoteBoard",
    "claim",
    "controls_handler",
    "held_here",
    "owner_of",
    "port_key",
    "refuse_owned",
    "runtime_dir",
]
