"""``sicell flash``: install the firmware on an RP2040 running MicroPython."""

from __future__ import annotations

import click

from sicell.cli.common import port_option, resolve_port


@click.command()
@port_option("serial device; default: auto-detect")
@click.option("--force", is_flag=True, help="flash even while the board runs an experiment")
@click.option("--source", is_flag=True, help="copy .py sources instead of compiled .mpy")
@click.option("--no-verify", is_flag=True, help="skip the hash check after copying")
def flash(port: str | None, force: bool, source: bool, no_verify: bool) -> None:
    """Install the sicell firmware (firmware/ + protocol/) on an RP2040 running MicroPython.

    Refuses while the board runs an experiment (unless --force); compiles with mpy-cross,
    copies with mpremote, checks every file's SHA-256 on the board, and resets it.
    """
    from sicell.flash import flash as do_flash

    port = resolve_port(port)
    do_flash(
        port,
        force=force,
        compile_mpy=not source,
        verify=not no_verify,
        log=lambda m: click.echo(m),
    )
