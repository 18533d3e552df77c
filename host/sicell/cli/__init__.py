"""The ``sicell`` command: run schedules, look at boards, calibrate, flash, export, emulate.

This module only builds the command group and dispatches: each command lives in its own
module, named in ``COMMANDS`` and imported when it is used (so ``sicell status`` does not load
the plotting stack). Errors are converted at one point, :class:`SicellGroup`: every failure
the user can cause or meet prints one ``error:`` line and exits with the code documented in
README (``sicell.errors``); ``SICELL_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from sicell import __version__
from sicell.cli.common import explain
from sicell.errors import EXIT_INTERRUPTED, Detached

# command name -> (module under sicell.cli, function); `sicell --help` lists them in this order
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", "run"),
    "boards": ("board", "boards"),
    "status": ("board", "status"),
    "pause": ("board", "pause"),
    "continue": ("board", "continue_"),
    "stop": ("board", "stop"),
    "calibrate": ("calibrate", "calibrate"),
    "flash": ("flash", "flash"),
    "emulate": ("emulate", "emulate"),
    "serve": ("serve", "serve"),
    "export": ("data", "export"),
    "report": ("data", "report"),
}


def _fail(message: str, code: int) -> NoReturn:
    click.echo(message, err=True)
    raise click.exceptions.Exit(code)


class SicellGroup(click.Group):
    """Dispatches through ``COMMANDS``; whatever a command raises becomes one ``error:`` line
    and an exit code here (``common.explain``)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = COMMANDS.get(cmd_name)
        if where is None:
            return None
        cmd = getattr(importlib.import_module(f"sicell.cli.{where[0]}"), where[1])
        assert isinstance(cmd, click.Command), where
        return cmd

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            _fail("interrupted", EXIT_INTERRUPTED)
        except Detached as e:
            _fail(str(e), e.exit_code)
        except Exception as e:  # the one conversion point: explain() says user error or bug
            if os.environ.get("SICELL_DEBUG"):
                raise
            text, code = explain(e)
            _fail(f"error: {text}", code)


@click.group(cls=SicellGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sicell")
def cli() -> None:
    """sicell: an open battery tester (RP2040 board or emulator, SQLite logs, analysis).

    Ports are serial devices (/dev/ttyACM0, COM5) or URLs: emu://<cell> starts or attaches to
    an emulated board (cells: rc, resistor, thin-porous, thin-dense, thick-porous,
    thick-dense). Without --port, the one RP2040 board attached is used.
    """


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Console entry point (``sicell``)."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="sicell")
    sys.exit(0)
