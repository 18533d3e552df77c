"""pyserial URL handler ``emu://<cell>[?option=value&...]``: an emulated sicell board.

After ``import sicell`` (which adds ``sicell.urlhandler`` to
``serial.protocol_handler_packages``) any pyserial user can write::

    port = serial.serial_for_url("emu://thin-porous?seed=1&board=b1&drop=0.01", timeout=1)

``open()`` attaches to the running emulator of that board id (the registry in the runtime
directory, see ``sicell.emulator.launcher``) or starts one as a separate process in its own
session, so it survives this program; then it opens the emulator's pty like any serial device.
``close()`` closes the port only: the board keeps running (and keeps its run going), exactly
like unplugging a real board's USB cable leaves it powered. ``owner=1`` makes ``close()`` shut
the emulator down too; so does ``port.emulator.shutdown()``.

Options (all optional):

==============  =====================================================================
seed            int, seed of the board (cell spread, noise, link faults); default 0
board           board id (default ``<cell>-<seed>``); the same id means the same board
realtime        0/1: pace virtual time to the wall clock (default 0)
noise           0/1: ADC noise (default 1)
max_dt          largest cell integration step in seconds
linger          seconds without a host before the emulator exits (0 = never; 600)
flash           the board's flash directory (calibration, run state)
drop, corrupt,  per-byte probabilities of link faults (0..1)
duplicate
delay_ms        latency added to every relayed byte, ms
direction       both | to_host | to_board: where the link faults apply
owner           0/1: close() also shuts the emulator down (default 0)
timeout         seconds to wait for a new emulator's port (default 15)
cell.<name>     cell model parameter override, e.g. ``cell.fade=0.001``
entry           MicroPython entry script instead of emuboot.py (tests)
firmware        firmware source directory instead of the installed one
heapsize        the firmware's heap budget, e.g. 200K (the emulator's own overhead is added)
mpy             0/1: stage the firmware compiled with mpy-cross like ``sicell flash`` (1)
==============  =====================================================================

When the board id already runs, ``seed``/``realtime``/``noise``/``max_dt``/``flash`` given in
the URL must match it (a SerialException says what differs), while link faults and ``linger``
given in the URL are applied to it. ``port.emulator`` is the board's
:class:`~sicell.emulator.control.EmulatorControl`, ``port.emulator_info`` its registry entry.
"""

from __future__ import annotations

import math
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import serial
import serial.serialposix

from sicell.emulator.control import EmulatorControl
from sicell.emulator.launcher import (
    DEFAULT_LINGER_S,
    DIRECTIONS,
    HEAPSIZE,
    START_TIMEOUT_S,
    EmulatorHandle,
    canonical_cell,
    start_emulator,
)
from sicell.errors import ControlError, EmulatorConfigError, EmulatorError

OPTIONS = (
    "seed",
    "board",
    "realtime",
    "noise",
    "max_dt",
    "linger",
    "flash",
    "drop",
    "corrupt",
    "duplicate",
    "delay_ms",
    "direction",
    "owner",
    "timeout",
    "entry",
    "firmware",
    "heapsize",
    "mpy",
    "cell.<param>",
)
_FAULTS = ("drop", "corrupt", "duplicate", "delay_ms", "direction")
_BOOL = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False}
_BOOL |= {"no": False, "off": False}


@dataclass
class EmuUrl:
    """A parsed ``emu://`` URL; ``given`` names the options the URL set explicitly."""

    cell: str
    seed: int = 0
    board: str | None = None
    realtime: bool = False
    noise: bool = True
    max_dt_s: float | None = None
    linger: float = DEFAULT_LINGER_S
    flash_dir: str | None = None
    faults: dict[str, Any] = field(default_factory=dict)
    owner: bool = False
    timeout: float = START_TIMEOUT_S
    cell_overrides: dict[str, Any] = field(default_factory=dict)
    entry: str | None = None
    firmware: str | None = None
    heapsize: str = HEAPSIZE
    mpy: bool = True
    given: set[str] = field(default_factory=set)


def _bad(msg: str) -> EmulatorConfigError:
    return EmulatorConfigError(
        f"{msg}; expected emu://<cell>[?option=value&...] with options {', '.join(OPTIONS)}"
    )


def _float(key: str, value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise _bad(f"emu:// option {key}={value!r} is not a number") from None
    if not math.isfinite(x):
        raise _bad(f"emu:// option {key}={value!r} is not finite")
    return x


def _bool(key: str, value: str) -> bool:
    v = _BOOL.get(value.strip().lower())
    if v is None:
        raise _bad(f"emu:// option {key}={value!r} is not a boolean (use 0/1)")
    return v


def parse_url(url: str) -> EmuUrl:
    """Parse an ``emu://`` URL; EmulatorConfigError (a SerialException and a ValueError)
    names a bad value and lists the valid ones."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() != "emu":
        raise _bad(f"not an emu:// URL: {url!r}")
    name = (parts.netloc + parts.path).strip("/")
    if not name:
        raise _bad(f"no cell name in {url!r}")
    spec = EmuUrl(cell=canonical_cell(urllib.parse.unquote(name)))
    try:
        pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False)
    except ValueError as e:
        raise _bad(f"bad query in {url!r}: {e}") from None
    for key, value in pairs:
        k = key.strip().lower()
        if k.startswith("cell."):
            param = key.strip()[5:]
            if not param:
                raise _bad("empty cell parameter name in 'cell.'")
            spec.cell_overrides[param] = _float(key, value)
            spec.given.add("cell_overrides")
            continue
        if k not in OPTIONS:
            raise _bad(f"unknown emu:// option {key!r}")
        spec.given.add(k)
        if k == "seed":
            try:
                spec.seed = int(value)
            except ValueError:
                raise _bad(f"emu:// option seed={value!r} is not an integer") from None
        elif k == "board":
            spec.board = value
        elif k == "realtime":
            spec.realtime = _bool(k, value)
        elif k == "noise":
            spec.noise = _bool(k, value)
        elif k == "max_dt":
            spec.max_dt_s = _float(k, value)
        elif k == "linger":
            spec.linger = _float(k, value)
        elif k == "flash":
            spec.flash_dir = value
        elif k == "direction":
            if value not in DIRECTIONS:
                raise _bad(f"emu:// option direction={value!r}: valid are {', '.join(DIRECTIONS)}")
            spec.faults[k] = value
        elif k in _FAULTS:
            spec.faults[k] = _float(k, value)
        elif k == "owner":
            spec.owner = _bool(k, value)
        elif k == "timeout":
            spec.timeout = _float(k, value)
        elif k == "entry":
            spec.entry = value
        elif k == "firmware":
            spec.firmware = value
        elif k == "heapsize":
            spec.heapsize = value
        elif k == "mpy":
            spec.mpy = _bool(k, value)
    return spec


def open_emulator(spec: EmuUrl) -> EmulatorHandle:
    """Attach to the board of ``spec`` or start it; the handle of a running launcher."""
    check: dict[str, Any] = {"cell": spec.cell}
    for opt, key, val in (
        ("seed", "seed", spec.seed),
        ("realtime", "realtime", spec.realtime),
        ("noise", "noise", spec.noise),
        ("cell_overrides", "cell_overrides", spec.cell_overrides),
    ):
        if opt in spec.given:
            check[key] = val
    handle = start_emulator(
        spec.cell,
        seed=spec.seed,
        board=spec.board,
        realtime=spec.realtime,
        linger=spec.linger,
        flash_dir=spec.flash_dir,
        faults=spec.faults,
        noise=spec.noise,
        max_dt_s=spec.max_dt_s,
        cell_overrides=spec.cell_overrides,
        entry=spec.entry,
        firmware=spec.firmware,
        heapsize=spec.heapsize,
        mpy=spec.mpy,
        timeout=spec.timeout,
        attach=True,
        check=check,
        on_unplugged="raise",
    )
    if not handle.started:
        if "flash" in spec.given and handle.info.get("flash_dir") != spec.flash_dir:
            raise EmulatorConfigError(
                f"board {handle.board!r} is already running with flash_dir "
                f"{handle.info.get('flash_dir')!r} (requested {spec.flash_dir!r})"
            )
        if "linger" in spec.given:
            try:
                handle.control.linger(spec.linger)
            except ControlError as e:
                raise EmulatorError(str(e)) from e
    return handle


class Serial(serial.serialposix.Serial):  # type: ignore[misc]
    """A serial port on an emulated board's pty; ``port`` stays the ``emu://`` URL, so a
    re-``open()`` finds the board again (also after a hang-up unplug gave it a new pty)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.emulator: EmulatorControl | None = None
        self.emulator_info: dict[str, Any] = {}
        self.emulator_handle: EmulatorHandle | None = None
        self._emu_owner = False
        super().__init__(*args, **kwargs)

    def open(self) -> None:
        if self._port is None:
            raise serial.SerialException("Port must be configured before it can be used.")
        if self.is_open:
            raise serial.SerialException("Port is already open.")
        spec = parse_url(str(self._port))
        handle = open_emulator(spec)
        self.emulator_handle = handle
        self.emulator = handle.control
        self.emulator_info = dict(handle.info)
        self._emu_owner = spec.owner
        self.portstr = str(handle.info["pty"])
        try:
            super().open()
        except BaseException:
            if spec.owner and handle.started:
                handle.shutdown()
            raise

    def close(self) -> None:
        super().close()
        if self._emu_owner and self.emulator_handle is not None:
            handle, self.emulator_handle = self.emulator_handle, None
            handle.shutdown()
