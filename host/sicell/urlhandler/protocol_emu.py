"""pyserial URL handler ``emu://<cell>[?option=value&...]``: an emulated sicell board.

After ``import sicell`` (which adds ``sicell.urlhandler`` to
``serial.protocol_handler_packages``) any pyserial user can write::

    port = serial.serial_for_url("emu://thin-porous?seed=1&board=b1&drop=0.01", timeout=1)

``open()`` attaches to the running emulator of that board id (the registry in the runtime
directory, see ``sicell.emulator.launcher``) or starts one as a separate process in its own
session, so it survives this program; then it opens the emulator's pty like any serial device.
``close()`` closes the port only: the board keeps running (and keeps its run going), exactly
like unplugging a real board's USB cable leaves it powered. ``owner=1`` makes ``close()`` shut
the emulator down too; so does ``port.emulator.shutdown()``. A board started here goes away by
itself a minute after its host left, unless a run goes on or ended with no host (see
``sicell.emulator.launcher``: Lifetime); ``linger=`` overrides that.

Cell history: a board that is still running keeps its cell as the last run left it (cycled,
faded). ``port.emulator_info["cell_history"]`` (``history_note`` words it) says what the cell
went through; ``fresh=1`` shuts the running board down first (and clears its flash's run state)
so the run gets a pristine cell.

Options (all optional; ``sicell.emulator.options.EmulatorOptions`` defines them, the table
below is generated from it):

{options}

When the board id already runs, the cell and these options given in the URL must match it (a
SerialException says what differs):

    {matched}

while link faults and ``linger`` given in the URL are applied to it. ``port.emulator`` is the
board's :class:`~sicell.emulator.control.EmulatorControl`, ``port.emulator_info`` its registry
entry.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import serial
import serial.serialposix

from sicell.emulator.cellmodels import canonical_cell
from sicell.emulator.control import EmulatorControl
from sicell.emulator.handle import EmulatorHandle, start_emulator
from sicell.emulator.options import MATCHED, URL_FORM, URL_KEYS, EmulatorOptions, UrlKey, url_help
from sicell.emulator.registry import BoardFiles, find_emulator, runtime_dir
from sicell.errors import ControlError, EmulatorConfigError, EmulatorError

__doc__ = (
    (__doc__ or "")
    .replace("{options}", url_help())
    .replace("{matched}", ", ".join(k.label for k in URL_KEYS if k.field in MATCHED))
)

_EXACT = {k.key: k for k in URL_KEYS if not k.prefix}
_PREFIXES = tuple(k for k in URL_KEYS if k.prefix)


@dataclass
class EmuUrl(EmulatorOptions):
    """A parsed ``emu://`` URL; ``given`` names the options the URL set explicitly (field
    names, and each fault key such as ``drop``)."""

    given: set[str] = field(default_factory=set)


def _bad(msg: str) -> EmulatorConfigError:
    return EmulatorConfigError(f"{msg}; expected {URL_FORM}")


def _lookup(key: str) -> UrlKey | None:
    k = key.strip().lower()
    return _EXACT.get(k) or next((p for p in _PREFIXES if k.startswith(p.key)), None)


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
    for key, text in pairs:
        uk = _lookup(key)
        if uk is None:
            raise _bad(f"unknown emu:// option {key!r}")
        try:
            value = uk.parse(text)
        except ValueError as e:
            raise _bad(f"emu:// option {key}={text!r}{e}") from None
        spec.given.add(uk.field)
        if uk.prefix:
            param = key.strip()[len(uk.key) :]
            if not param:
                raise _bad(f"empty cell parameter name in {uk.key!r}")
            getattr(spec, uk.field)[param] = value
        elif uk.sub:
            getattr(spec, uk.field)[uk.sub] = value
            spec.given.add(uk.sub)
        else:
            setattr(spec, uk.field, value)
    return spec


def history_note(info: Mapping[str, Any]) -> str | None:
    """One line saying that the emulated cell has been used before (None when pristine).

    ``info`` is a launcher's status or an ``emulator_info`` (``cell_history``).
    """
    h = info.get("cell_history") or {}
    lith = float(h.get("lith_mah", 0.0))
    if lith <= 0.0 and float(h.get("delith_mah", 0.0)) <= 0.0:
        return None
    board = info.get("board", "?")
    return (
        f"emulated cell {info.get('cell', '?')} on board {board} has history: "
        f"{int(h.get('cycles', 0))} cycle(s), {lith:.3f} mAh lithiated, "
        f"{float(h.get('delith_mah', 0.0)):.3f} mAh delithiated, capacity at "
        f"{100.0 * float(h.get('cap', 1.0)):.1f} % (add fresh=1 to the emu:// URL for a "
        "pristine cell)"
    )


_RUN_STATE_FILES = ("runstate.json", "runstate.json.tmp", "sched.bin", "sched.bin.tmp")


def _make_fresh(spec: EmuUrl) -> None:
    """Shut down the running board of ``spec`` (if any) and clear its flash's run state."""
    opts = spec.validated()
    assert opts.board is not None
    rdir = Path(opts.runtime) if opts.runtime else runtime_dir()
    info = find_emulator(opts.board, rdir)
    flash = (
        Path(str(info["flash_dir"]))
        if info
        else BoardFiles.of(rdir, opts.board, opts.flash_dir).flash
    )
    if info is not None:
        EmulatorHandle(info).shutdown()
    for name in _RUN_STATE_FILES:
        with contextlib.suppress(FileNotFoundError):
            (flash / name).unlink()


def open_emulator(spec: EmuUrl) -> EmulatorHandle:
    """Attach to the board of ``spec`` or start it; the handle of a running launcher."""
    if spec.fresh:
        _make_fresh(spec)
    check: dict[str, Any] = {"cell": spec.cell}
    check.update({name: getattr(spec, name) for name in MATCHED if name in spec.given})
    handle = start_emulator(spec, attach=True, check=check, on_unplugged="raise")
    if not handle.started:
        try:
            if "linger" in spec.given:
                handle.control.linger(spec.linger)
            st = handle.control.status()
        except ControlError as e:
            raise EmulatorError(str(e)) from e
        handle.info = {**handle.info, "cell_history": st.get("cell_history") or {}}
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
