"""The pseudo-terminal a host opens: the launcher holds the master side; the slave side
(``/dev/pts/N``, also reached through the stable symlink ``<board>.tty``) is what a host opens,
exactly like ``/dev/ttyACM0``.

While no process holds the slave open, reads of the master fail with EIO: that is how the
launcher tells whether a host is attached. Closing the master is a hang-up, what a real unplug
looks like to the host: its reads return end-of-file (pyserial raises ``SerialException:
device reports readiness to read but returned no data``), writes fail with EIO. Opening again
makes a new pty (a new ``/dev/pts/M``: the old number stays taken while the host holds it
open); ``emu://`` ports find it through the registry on their next ``open()``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import termios
import tty
from pathlib import Path

from sicell.emulator.registry import symlink_atomic

ATTACH_POLL_S = 0.02  # how often a detached pty is checked for a new opener
READ_SIZE = 65536


def write_some(fd: int, data: bytes | bytearray, gone: tuple[int, ...] = ()) -> int | None:
    """Write to a non-blocking fd: bytes taken (0: full), None: the reader is gone (an errno in
    ``gone``; with ``gone`` empty, any OSError)."""
    try:
        return os.write(fd, data)
    except BlockingIOError:
        return 0
    except OSError as e:
        if not gone or e.errno in gone:
            return None
        raise


class HostPort:
    """The pty master, the slave's path, and the symlink to it."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master: int | None = None
        self.path: str | None = None
        self.next_attach_check = 0.0
        self.opens = 0  # ptys made so far: a new one is a new incarnation of the port

    def open(self) -> None:
        self.opens += 1
        m, s = os.openpty()
        tty.setraw(s)
        self.path = os.ttyname(s)
        os.chmod(self.path, 0o600)
        os.close(s)  # from now on, master reads fail with EIO until a host opens the slave
        os.set_blocking(m, False)
        self.master = m
        self.next_attach_check = 0.0
        symlink_atomic(self.path, self.link)

    def close(self) -> None:
        """Close the master (an open host sees a hang-up) and remove the symlink."""
        if self.master is not None:
            os.close(self.master)
        self.master = None
        self.path = None
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()

    def read(self) -> tuple[bool, bytes]:
        """(a host holds the slave open, what it wrote; b"" if nothing)."""
        assert self.master is not None
        try:
            data = os.read(self.master, READ_SIZE)
        except BlockingIOError:
            return True, b""
        except OSError as e:
            if e.errno == errno.EIO:
                return False, b""
            raise
        return bool(data), data

    def write(self, data: bytes | bytearray) -> int | None:
        """Write to the host; bytes taken (0: its buffer is full), None: no host holds it."""
        assert self.master is not None
        return write_some(self.master, data, gone=(errno.EIO,))

    def flush(self) -> None:
        """Drop what the last host left unread, so the next opener starts clean."""
        if self.master is not None:
            with contextlib.suppress(OSError, termios.error):  # the pty may be going away
                termios.tcflush(self.master, termios.TCIOFLUSH)

    def hung_up(self) -> bool:
        """Whether the host closed the slave (checked without reading)."""
        assert self.master is not None
        p = select.poll()
        p.register(self.master, select.POLLIN)
        return any(ev & select.POLLHUP for _, ev in p.poll(0))
