"""sicell emulator: the real firmware under the MicroPython unix port, behind a pseudo-terminal.

``emulator/mp/`` is the MicroPython side (machine/time replacements, chip and cell models,
``emuboot.py``); ``launcher.py`` is the CPython process that runs it and relays its USB CDC
through a pty with optional link faults; ``control.py`` talks to a running launcher. The
``emu://`` pyserial URL (``sicell.urlhandler.protocol_emu``) starts or attaches to launchers.
"""

from sicell.emulator.control import EmulatorControl
from sicell.emulator.launcher import (
    EmulatorHandle,
    cell_names,
    find_emulator,
    list_emulators,
    run_emulator,
    runtime_dir,
    start_emulator,
)
from sicell.errors import (
    ControlError,
    EmulatorBusyError,
    EmulatorConfigError,
    EmulatorError,
    EmulatorStartError,
)

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
