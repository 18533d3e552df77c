"""Every error sicell raises on purpose, in one tree, and the exit codes the CLI maps them to.

::

    SicellError                       a failure the user can act on; str() is one line
    ├── UsageError                    bad input: an option, a file, a URL (exit 2)
    │   ├── UnknownBoardError         no board of that id is known to the service
    │   ├── UnknownRunError           no run of that name in the service's data directory
    │   └── RunExistsError            a run of that name exists there already
    ├── TransportError                the serial port or the link to a board
    │   ├── PortNotFoundError         the port does not exist
    │   ├── PortBusyError             another program holds it
    │   ├── PortOpenError             exists, cannot be opened (permissions, ...)
    │   ├── NoBoardError              auto-detection found none, or several
    │   ├── NoFirmwareError           something answered, not with sicell frames
    │   ├── VersionMismatchError      protocol major versions differ
    │   ├── BoardTimeoutError         no reply to a request in time
    │   ├── ScheduleVerifyError       the schedule read back differs from the upload
    │   └── LinkLostError             the port failed while in use (exit 6)
    ├── PortOwnedError                another sicell process owns the port (a run, a service)
    ├── BoardError                    the board refused a request (NACK)
    ├── ScheduleError                 a schedule cannot run (also a ValueError; exit 2)
    ├── StoreError                    a run database
    │   ├── StoreFullError            the disk is full (also an OSError)
    │   └── StoreSchemaError          not a sicell run database this code can read or write
    ├── EmulatorError                 an emulated board (also a serial.SerialException, so a
    │   │                             pyserial user of ``emu://`` catches it as any port error)
    │   ├── EmulatorConfigError       bad emulator options (also a UsageError, ValueError)
    │   ├── EmulatorBusyError         another launcher owns that board id
    │   ├── EmulatorStartError        the launcher did not come up
    │   └── ControlError              a launcher's control socket refused or is gone
    ├── FlashError                    flashing failed or was refused
    └── SessionError                  a run could not start or go on
        ├── BoardBusyError            the board already runs an experiment
        ├── RunMismatchError          the board runs another run than the database records
        ├── StoreFull                 the disk filled up during a run (the board keeps data)
        ├── CalibrationError          the two-point routine could not calibrate
        └── Detached                  the user interrupted the host; the message says whether a
                                      run goes on on the board

The CLI (``sicell.cli``) turns a ``SicellError`` into one ``error:`` line and its
``exit_code``; anything else reaching it is a bug and is reported as one (exit ``EXIT_BUG``,
traceback with ``SICELL_DEBUG=1``). The wire-level ``protocol.framing.ProtocolError`` and
``protocol.schedule.ScheduleError`` live in ``protocol/`` (they run on the board too) and are
converted where the host meets them.

How a run ended is not an error: ``sicell run`` prints the summary and exits with the outcome's
code (``EXIT_TRIPPED``, ``EXIT_STOPPED``, ``EXIT_BOARD_RESET``; ``sicell.session.outcome``).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from typing import Any

import serial

from sicell.protocol import messages

# ---- exit codes (documented in README; part of the interface) --------------------------------
EXIT_OK = 0  # the command did what it was asked (a run: completed)
EXIT_ERROR = 1  # a failure the user can act on (port, board, database, disk, emulator, flash)
EXIT_USAGE = 2  # bad input: options, schedule, URL or file (click's usage errors use 2 too);
#                also a run refused before START (the cell's open-circuit potential lies
#                outside the schedule's safety window)
EXIT_TRIPPED = 3  # a run ended by the board's safety path: a safety limit (or a firmware fault)
EXIT_STOPPED = 4  # a run stopped by a user (STOP from `sicell stop` or another host)
EXIT_BOARD_RESET = 5  # a run interrupted by a board reset (watchdog, brown-out, power, soft)
EXIT_LINK_LOST = 6  # the link to the board failed while in use (the board keeps running)
EXIT_BUG = 70  # not the user's mistake: a bug in sicell (EX_SOFTWARE)
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGTERM (a run on the board keeps running)

EXIT_SEVERITY = (
    EXIT_BUG,
    EXIT_ERROR,
    EXIT_USAGE,
    EXIT_LINK_LOST,
    EXIT_BOARD_RESET,
    EXIT_TRIPPED,
    EXIT_STOPPED,
    EXIT_INTERRUPTED,
    EXIT_OK,
)
"""Most severe first: a command covering several boards (``sicell run`` with repeated
``--port``) exits with the first of these that any board gave (a code not listed ranks first)."""


def worst_exit(codes: Iterable[int]) -> int:
    """The exit code of several outcomes: the most severe by ``EXIT_SEVERITY`` (0 for none)."""

    def rank(code: int) -> int:
        return EXIT_SEVERITY.index(code) if code in EXIT_SEVERITY else -1

    return min(codes, key=rank, default=EXIT_OK)


class SicellError(Exception):
    """Base of every deliberate sicell failure; ``str(err)`` is one line meant for the user."""

    exit_code: int = EXIT_ERROR


class UsageError(SicellError):
    """The user gave something sicell cannot use (an option, a path, a URL)."""

    exit_code = EXIT_USAGE


class UnknownBoardError(UsageError):
    """No board of that id is known to the service (``sicell serve``)."""


class UnknownRunError(UsageError):
    """No run of that name in the service's data directory."""


class RunExistsError(UsageError):
    """A run of that name exists (or is starting) in the service's data directory."""


# ---- transport and board ------------------------------------------------------------------
class TransportError(SicellError):
    """Base of every transport failure: the port, or the byte link to a board."""


class PortNotFoundError(TransportError):
    """The port does not exist."""


class PortBusyError(TransportError):
    """Another program holds the port (EBUSY or an exclusive lock)."""


class PortOpenError(TransportError):
    """The port exists but could not be opened for another reason (permissions, ...)."""


class NoBoardError(TransportError):
    """Auto-detection found no board, or more than one."""


class NoFirmwareError(TransportError):
    """A device answered, but not with sicell frames."""


class VersionMismatchError(TransportError):
    """The board speaks an incompatible protocol major version."""

    def __init__(self, port: str, board_version: str, host_version: str) -> None:
        self.port = port
        self.board_version = board_version
        self.host_version = host_version
        super().__init__(
            f"{port}: board speaks sicell protocol {board_version}, this host speaks "
            f"{host_version}; the major versions differ, so update the firmware with "
            f"`sicell flash --port {port}` or install a matching host"
        )


class BoardTimeoutError(TransportError):
    """No reply to a request within the timeout (after retries for idempotent requests)."""


class ScheduleVerifyError(TransportError):
    """The schedule read back from the board differs from what was uploaded."""


class LinkLostError(TransportError):
    """The port failed while in use (unplugged, EIO, closed by the other side)."""

    exit_code = EXIT_LINK_LOST


class PortOwnedError(SicellError):
    """Another live sicell process (``sicell run``, ``sicell serve``) owns the port: a port has
    one opener; the message names the owner and what to do instead."""


class BoardError(SicellError):
    """The board refused a request with a NACK; ``code``/``detail`` as on the wire and
    ``description`` the NACK in words (``sicell.nack.describe_nack``)."""

    def __init__(
        self, request: int, code: int, detail: int, port: str = "", description: str = ""
    ) -> None:
        self.request = request
        self.code = code
        self.detail = detail
        self.port = port
        self.request_name = messages.NAMES.get(request, f"request 0x{request:02x}")
        what = description or messages.ERROR_NAMES.get(code, f"error {code}")
        prefix = f"{port}: " if port else ""
        super().__init__(f"{prefix}{self.request_name} refused: {what}")


# ---- schedules and run databases ------------------------------------------------------------
class ScheduleError(SicellError, ValueError):
    """A schedule cannot run. The message names where (step index and label, or the table),
    the offending key and value, and what was expected. ``step`` is the 0-based step index
    (``None`` for file-level problems)."""

    exit_code = EXIT_USAGE

    def __init__(
        self,
        message: str,
        *,
        step: int | None = None,
        label: str | None = None,
        key: str | None = None,
        value: Any = None,
    ) -> None:
        super().__init__(message)
        self.step = step
        self.label = label
        self.key = key
        self.value = value


class StoreError(SicellError):
    """A run database could not be read or written."""


class StoreFullError(StoreError, OSError):
    """The disk (or quota) is full: the batch was rolled back, nothing stored before is lost."""

    def __init__(self, path: str | os.PathLike[str], detail: str) -> None:
        OSError.__init__(self, errno.ENOSPC, detail, os.fspath(path))
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.filename}: {self.detail}"


class StoreSchemaError(StoreError):
    """The file is not a sicell run database of a schema version this code can read or write."""

    exit_code = EXIT_USAGE


# ---- emulator -------------------------------------------------------------------------------
class EmulatorError(SicellError, serial.SerialException):  # type: ignore[misc]
    """Base of the emulator's errors; a ``serial.SerialException`` for pyserial users."""


class EmulatorConfigError(EmulatorError, UsageError, ValueError):
    """Bad emulator options (URL query, command line, keyword arguments)."""


class EmulatorBusyError(EmulatorError):
    """Another launcher already owns this board id."""


class EmulatorStartError(EmulatorError):
    """The launcher did not come up (timeout or early exit); the message quotes its log."""


class ControlError(EmulatorError):
    """The launcher refused a control command, or could not be reached."""


# ---- flashing and sessions ------------------------------------------------------------------
class FlashError(SicellError):
    """Flashing failed or was refused."""


class SessionError(SicellError):
    """A run could not start or go on."""


class BoardBusyError(SessionError):
    """The board already runs an experiment."""


class RunMismatchError(SessionError):
    """The board runs another run than the database records."""


class StoreFull(SessionError):
    """The disk is full: nothing more can be committed (the board keeps the records)."""


class CalibrationError(SessionError):
    """The two-point routine could not produce a sensible calibration."""


class Detached(SessionError):
    """The user interrupted the host; the message says whether a run goes on on the board
    (and how to reattach) or nothing was started."""

    exit_code = EXIT_INTERRUPTED
