"""sicell: host side of the open battery tester (transport, client, store, analysis, emulator)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import serial

if TYPE_CHECKING:
    from sicell.notebook import RunView

__version__ = "0.1.0"

# Make ``serial.serial_for_url("emu://<cell>")`` work for any pyserial user once sicell is
# imported, the way pyserial's own loop:// and socket:// handlers are found.
if "sicell.urlhandler" not in serial.protocol_handler_packages:
    serial.protocol_handler_packages.append("sicell.urlhandler")


def open_run(path: str | os.PathLike[str]) -> RunView:
    """A run database as pandas DataFrames (``.samples``, ``.events``, ``.cycles``) with the
    export's BDF column names, and ``.meta``; see ``sicell.notebook``. Needs pandas."""
    from sicell.notebook import open_run as _open_run  # here: the CLI never imports pandas

    return _open_run(path)
