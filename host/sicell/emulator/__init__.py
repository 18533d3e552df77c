"""sicell emulator: the real firmware under the MicroPython unix port, behind a pseudo-terminal.

``emulator/mp/`` is the MicroPython side (machine/time replacements, chip and cell models,
``emuboot.py``). The CPython side, one job per module: ``options`` (every option, defined
once), ``launcher`` (the process that runs a board and relays its USB CDC through a pty;
it composes ``relay``, ``faults``, ``hostport``, ``board``, ``staging``, ``control_server``
and ``registry``), ``handle`` (start or attach to launchers), ``control`` (the control
client) and ``cellmodels`` (the cell models in CPython). The ``emu://`` pyserial URL
(``sicell.urlhandler.protocol_emu``) starts or attaches to launchers.

The names below are imported on first use, so ``import sicell.emulator.options`` (the
``sicell`` command does, for its click options) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sicell.errors import (
    ControlError,
    EmulatorBusyError,
    EmulatorConfigError,
    EmulatorError,
    EmulatorStartError,
)

if TYPE_CHECKING:
    from sicell.emulator.cellmodels import cell_names
    from sicell.emulator.control import EmulatorControl
    from sicell.emulator.handle import EmulatorHandle, run_emulator, start_emulator
    from sicell.emulator.registry import find_emulator, list_emulators, runtime_dir

_LAZY = {
    "EmulatorControl": "sicell.emulator.control",
    "EmulatorHandle": "sicell.emulator.handle",
    "run_emulator": "sicell.emulator.handle",
    "start_emulator": "sicell.emulator.handle",
    "cell_names": "sicell.emulator.cellmodels",
    "find_emulator": "sicell.emulator.registry",
    "list_emulators": "sicell.emulator.registry",
    "runtime_dir": "sicell.emulator.registry",
}

__all__ = [
    "ControlError",
    "EmulatorBusyError",
    "EmulatorConfigError",
    "EmulatorControl",
    "EmulatorError",
    "EmulatorHandle",
    "EmulatorStartError",
    "cell_names",
    "find_emulator",
    "list_emulators",
    "run_emulator",
    "runtime_dir",
    "start_emulator",
]


def __getattr__(name: str) -> Any:
    modname = _LAZY.get(name)
    if modname is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(modname), name)
    globals()[name] = value
    return value
