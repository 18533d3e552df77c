"""``sicell emulate``: an emulated board in the foreground."""

from __future__ import annotations

import importlib
from typing import Any

import click

from sicell.emulator import cmdline as emu_cmdline


@click.command()
@click.argument("cell")
@emu_cmdline.click_options(("seed", "board", "realtime", "linger", "flash_dir"))
def emulate(cell: str, **options: Any) -> None:
    """Run an emulated board (the real firmware under MicroPython) in the foreground.

    It prints the pseudo-terminal to connect to; other sicell commands reach it with
    --port emu://CELL?board=ID (or the printed /dev/pts path).
    """
    launcher = importlib.import_module("sicell.emulator.launcher")
    code = launcher.run_emulator(cell, print_fn=click.echo, **options)
    if code:
        raise click.exceptions.Exit(int(code))
