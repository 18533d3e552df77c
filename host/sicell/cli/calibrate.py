"""``sicell calibrate``: show or set offset and gain per range and channel; two-point routine."""

from __future__ import annotations

from collections.abc import Sequence

import click
from rich.table import Table

from sicell.cli.common import console, opened_here, port_option, resolve_port, say
from sicell.client import CHANNEL_NAMES, BoardInfo, CalEntry
from sicell.errors import EXIT_ERROR, PortOwnedError, SicellError, UsageError
from sicell.progress import fmt_current
from sicell.protocol import messages


def _cal_table(entries: Sequence[CalEntry], info: BoardInfo) -> Table:
    t = Table(title="calibration (raw = true × gain + offset)", header_style="bold")
    for col in ("range", "full scale", "channel", "offset", "gain"):
        t.add_column(col, justify="right" if col in ("offset", "gain") else "left")
    units = {messages.CH_VOLTAGE: "µV", messages.CH_CURRENT: "nA", messages.CH_SETPOINT: "nA"}
    for e in entries:
        fs = info.ranges_na[e.range] if e.range < len(info.ranges_na) else 0
        t.add_row(
            str(e.range),
            fmt_current(fs * 1e-9).lstrip("+"),
            CHANNEL_NAMES.get(e.channel, str(e.channel)),
            f"{e.offset:+d} {units.get(e.channel, '')}",
            f"{e.gain_ppm / 1e6:.6f}",
        )
    return t


def _refuse_owned(port: str) -> None:
    """Calibration needs the port itself: one line saying where to do it instead."""
    from sicell.owner import owner_of

    o = owner_of(port)
    if o is None:
        return
    where = (
        "calibrate through the service's API (POST /api/v1/boards/<board id>/calibrate)"
        if o.kind == "serve"
        else "calibrate after the run ends (`sicell stop` ends it)"
    )
    raise PortOwnedError(f"{port} is in use by `{o.command}` ({o.since()}); {where}")


@click.command()
@port_option()
@click.option("--range", "rng", type=int, help="range index to set or calibrate")
@click.option(
    "--channel",
    type=click.Choice(list(CHANNEL_NAMES.values())),
    help="channel to set (with --offset/--gain)",
)
@click.option("--offset", type=int, help="offset in board units (µV or nA)")
@click.option("--gain", type=float, help="gain (1.0 = unity)")
@click.option(
    "--resistor",
    type=float,
    help="two-point routine: ohms of a precise resistor connected as the cell",
)
@click.option("--fraction", type=float, default=0.5, show_default=True, help="of full scale")
@click.option("--save", is_flag=True, help="write the calibration to the board's flash")
@click.option("--yes", "-y", is_flag=True, help="do not ask before saving")
def calibrate(
    port: str | None,
    rng: int | None,
    channel: str | None,
    offset: int | None,
    gain: float | None,
    resistor: float | None,
    fraction: float,
    save: bool,
    yes: bool,
) -> None:
    """Show or set the calibration (offset and gain per range and channel).

    \b
    sicell calibrate                                  show every entry
    sicell calibrate --range 1 --channel current --offset -120 --gain 1.0003 --save
    sicell calibrate --range 1 --resistor 1000 --save two-point routine on a known resistor

    The two-point routine drives +I and -I through the resistor on that range, takes the
    voltage channel's zero from a rest at no current, and fits the current measurement and
    set-point channels against I = -V/R.
    """
    from sicell.session import two_point_calibration

    con = console()
    port = resolve_port(port)
    _refuse_owned(port)
    with opened_here(port) as (b, info):
        if (offset is not None or gain is not None) and (rng is None or channel is None):
            raise UsageError("--offset/--gain need --range and --channel")
        if rng is not None and not 0 <= rng < info.n_ranges:
            raise UsageError(f"--range {rng}: the board has ranges 0..{info.n_ranges - 1}")
        changed = False
        if resistor is not None:
            if rng is None:
                raise UsageError("--resistor needs --range (the range to calibrate)")
            if info.has_run:
                raise SicellError(
                    f"{b.port} is {info.state_name} (run {info.run_id:08x}); "
                    "calibrate an idle board"
                )
            result = two_point_calibration(
                b, rng, resistor, fraction=fraction, log=lambda m: con.print(m, markup=False)
            )
            for line in result.lines():
                say(con, line)
            for e in result.entries:
                b.cal_set(e)
            changed = True
        elif offset is not None or gain is not None:
            assert rng is not None and channel is not None
            ch = {name: c for c, name in CHANNEL_NAMES.items()}[channel]
            old = b.cal_get(rng, ch)
            new = CalEntry(
                rng,
                ch,
                old.offset if offset is None else offset,
                old.gain_ppm if gain is None else round(gain * 1e6),
            )
            b.cal_set(new)
            changed = True
        entries = b.calibration()
        if rng is not None:
            entries = [e for e in entries if e.range == rng]
        con.print(_cal_table(entries, info))
        if save:
            if not yes and not click.confirm("write this calibration to the board's flash?"):
                raise click.exceptions.Exit(EXIT_ERROR)
            b.cal_save()
            con.print("saved to the board's flash")
        elif changed:
            con.print("applied (until reset); add --save to keep it")
