"""What the command modules share: the console, the one ``--port`` option, opening a board
(or reaching it through the process that owns its port), and one-line error texts."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console

from sicell.client import Board, BoardInfo
from sicell.errors import EXIT_BUG, EXIT_ERROR, SicellError
from sicell.transport import detect_port

if TYPE_CHECKING:
    from sicell.owner import RemoteBoard

F = TypeVar("F", bound=Callable[..., Any])


def one_line(e: BaseException) -> str:
    """``e`` as one line for the user (an OSError as ``path: reason``)."""
    text = str(e).strip() or type(e).__name__
    if isinstance(e, OSError) and e.filename and e.strerror:
        text = f"{e.filename}: {e.strerror}"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return "; ".join(lines) if lines else type(e).__name__


def explain(e: BaseException) -> tuple[str, int]:
    """What the user is told about ``e`` and the exit code: the one place an error becomes
    words. A ``SicellError`` is the user's to act on; an OSError naming a file is the
    environment's (a path, a permission, a full disk); anything else is a bug in sicell."""
    if isinstance(e, SicellError):
        return one_line(e), e.exit_code
    if isinstance(e, OSError) and e.filename:
        return one_line(e), EXIT_ERROR
    return (
        f"bug in sicell: {type(e).__name__}: {one_line(e)} (please report it; "
        "SICELL_DEBUG=1 shows the traceback)",
        EXIT_BUG,
    )


def console() -> Console:
    return Console(highlight=False)


def say(con: Console, line: str) -> None:
    """Print ``line`` as is (no markup, no highlighting)."""
    con.print(line, highlight=False, markup=False)


def port_option(help: str = "serial device or URL; default: auto-detect") -> Callable[[F], F]:
    """``--port/-p`` of the commands that talk to one board."""
    return click.option("--port", "-p", help=help)


def resolve_port(port: str | None) -> str:
    return port if port else detect_port()


def open_board(port: str | None, **kw: Any) -> Board | RemoteBoard:
    """The board on ``port`` (auto-detected when None): through the control socket of the
    process that owns the port (``sicell run``, ``sicell serve``) when there is one, else
    opened and handshaken here (``kw`` go to ``Board.open``)."""
    from sicell.owner import RemoteBoard

    p = resolve_port(port)
    remote = RemoteBoard.connect(p)
    return remote if remote is not None else Board.open(p, **kw)


@contextlib.contextmanager
def opened_here(port: str) -> Iterator[tuple[Board, BoardInfo]]:
    """A board opened and handshaken by this process (PortOwnedError when another owns it)."""
    with Board.open(port) as b:
        assert b.info is not None  # set by the handshake open() does
        yield b, b.info


@contextlib.contextmanager
def connected(port: str | None) -> Iterator[tuple[Board | RemoteBoard, BoardInfo]]:
    """A board on ``port`` (as :func:`open_board`) and what it said it is."""
    with open_board(port) as b:
        info = b.info
        assert info is not None  # set by the handshake open() does
        yield b, info
