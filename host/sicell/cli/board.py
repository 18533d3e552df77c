"""``sicell boards / status / pause / continue / stop``: find boards, look at one, steer its run.

A board whose port another sicell process owns (``sicell run``, ``sicell serve``) is reached
through that process (``sicell.owner``): same output, same exit codes."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

from sicell.cli.common import connected, console, one_line, open_board, port_option, say
from sicell.client import BoardInfo, Status
from sicell.errors import EXIT_ERROR, SicellError
from sicell.progress import fmt_capacity, fmt_current, fmt_duration, fmt_volts
from sicell.transport import list_ports


def _emulators() -> list[dict[str, Any]]:
    from sicell.emulator.registry import list_emulators

    return list(list_emulators())


def _url(e: dict[str, Any]) -> str:
    """The emu:// URL that reaches the running emulator ``e`` (a registry entry)."""
    url = f"emu://{e.get('cell', '?')}?board={e.get('board', '?')}"
    if e.get("seed") not in (None, 0):
        url += f"&seed={e.get('seed')}"
    return url


@click.command()
@click.option("--all", "show_all", is_flag=True, help="list every serial port, not only RP2040s")
@click.option("--probe", is_flag=True, help="say HELLO to each board (id, firmware, state)")
def boards(show_all: bool, probe: bool) -> None:
    """List attached boards (USB 2e8a:0005 / 2e8a:000a) and running emulators."""
    con = console()
    ports = [p for p in list_ports() if show_all or p.is_rp2040]
    emus = _emulators()
    rows: list[tuple[list[str], str]] = []  # (row, the port to look up its owner by)
    for p in ports:
        row = [p.device, p.kind, p.serial_number or "-", "-", "-", "-", "-"]
        if probe and p.is_rp2040:
            row[3:] = _probe_row(p.device)
        rows.append((row, p.device))
    for e in emus:
        url = _url(e)
        row = [
            str(e.get("pty") or e.get("port") or url),
            f"emulator ({e.get('cell', '?')})",
            "-",
            str(e.get("board", "-")),
            "-",
            "-",
            "-",
        ]
        if probe:
            row[3:] = _probe_row(url)
        rows.append((row, url))
    owners = [_owner(port) for _, port in rows]
    cols = ["port", "kind", "serial", "board id", "firmware", "state", "run"]
    shown = any(o != "-" for o in owners)  # the owner column only when a port has one
    t = Table(title="boards", show_edge=True, header_style="bold")
    for col in [*cols, "owner"] if shown else cols:
        t.add_column(col)
    for (row, _), owner in zip(rows, owners, strict=True):
        t.add_row(*row, *([owner] if shown else []))
    if not ports and not emus:
        say(
            con,
            "no boards found: attach an RP2040 board (see `sicell flash`), or try the emulator "
            "with `sicell run host/sicell/examples/rc-check.toml --port emu://rc`",
        )
        return
    con.print(t)
    for e in emus:
        say(con, f"emulator {e.get('board')}: connect with {_url(e)}")


def _owner(port: str) -> str:
    """The process that owns ``port`` (``sicell run (pid 12)``), or ``-``."""
    from sicell.owner import owner_of

    o = owner_of(port)
    return f"{o.command} (pid {o.pid})" if o is not None else "-"


def _probe_row(port: str) -> list[str]:
    try:
        with open_board(port, hello_timeout=2.0) as b:
            info = b.info
            assert info is not None
            return [
                info.board_id,
                info.fw_version_str,
                info.state_name,
                f"{info.run_id:08x}" if info.run_id else "-",
            ]
    except SicellError as e:  # one board that does not answer must not hide the others
        return ["?", "?", one_line(e)[:60], "-"]


def _info_table(info: BoardInfo, port: str) -> Table:
    t = Table(title=f"board on {port}", show_header=False, show_edge=True)
    t.add_column("key", style="bold")
    t.add_column("value")
    t.add_row("board id", info.board_id)
    t.add_row("firmware", info.fw_version_str)
    t.add_row("protocol", info.protocol_version_str)
    t.add_row("state", info.state_name)
    t.add_row("run id", f"{info.run_id:08x}" if info.run_id else "-")
    t.add_row("reset cause", info.reset_cause_name)
    t.add_row("capabilities", ", ".join(info.cap_names) or "-")
    t.add_row(
        "current ranges",
        ", ".join(
            f"{k}: {fmt_current(r * 1e-9).lstrip('+')}" for k, r in enumerate(info.ranges_na)
        ),
    )
    t.add_row(
        "voltage window",
        f"{info.v_min_uv * 1e-6:+.3f} .. {info.v_max_uv * 1e-6:+.3f} V "
        f"(compliance {info.compliance_uv * 1e-6:.2f} V)",
    )
    t.add_row("record buffer", f"{info.ring_capacity} records")
    t.add_row("control tick", f"{info.tick_ms} ms")
    t.add_row("tick cost", _tick_cost_text(info))
    return t


def _tick_cost_text(info: BoardInfo) -> str:
    """What a tick costs the board (INFO's extension) and the shortest control tick the host
    accepts from that."""
    from sicell.schedule.model import min_tick_ms, tick_cost

    if info.tick_us:
        run = f"control {info.tick_us / 1000:.1f} ms (94th percentile; longest "
        run += f"{info.tick_max_us / 1000:.1f} ms)"
    else:
        run = "control not measured yet"
    idle = f"idle {info.idle_us / 1000:.1f} ms" if info.idle_us else "idle not measured"
    cost, _source = tick_cost(info.as_dict())
    return f"{run}, {idle}; schedules need tick_ms ≥ {min_tick_ms(cost)}"


def _status_table(st: Status) -> Table:
    t = Table(title="status", show_header=False, show_edge=True)
    t.add_column("key", style="bold")
    t.add_column("value")
    t.add_row("state", st.state_name)
    t.add_row("run id", f"{st.run_id:08x}" if st.run_id else "-")
    t.add_row("step", str(st.step))
    # the board's own counter; cycles as users see them (first lithiation = 1) need the run's
    # history, which the run database has (sicell.cyclemodel)
    t.add_row("board cycle counter", f"{st.cycle} (0-based; summaries count from 1)")
    t.add_row("test time", fmt_duration(st.t_s))
    t.add_row("cell voltage", fmt_volts(st.v_uv * 1e-6))
    t.add_row("current", f"{fmt_current(st.i_na * 1e-9)} (range {st.range})")
    t.add_row("step charge", fmt_capacity(abs(st.q_nah) * 1e-9))
    t.add_row("records held", st.records_text())
    return t


@click.command()
@port_option()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def status(port: str | None, as_json: bool) -> None:
    """Show what a board is and what it is doing."""
    with connected(port) as (b, info):
        st = b.status()
    if as_json:
        click.echo(
            json.dumps(
                {"info": info.as_dict(), "status": st.__dict__},
                default=lambda o: o.hex() if isinstance(o, bytes) else str(o),
                indent=2,
            )
        )
        return
    con = console()
    con.print(_info_table(info, b.port))
    con.print(_status_table(st))


@click.command()
@port_option()
@click.option("--yes", "-y", is_flag=True, help="do not ask")
def stop(port: str | None, yes: bool) -> None:
    """Stop the run on a board (relay open; the records stay on the board until acked)."""
    with connected(port) as (b, info):
        port = b.port
        if not info.has_run:
            click.echo(f"{port}: nothing to stop (board is {info.state_name})")
            return
        if not yes and not click.confirm(
            f"stop run {info.run_id:08x} on {port} ({info.state_name})?", default=False
        ):
            raise click.exceptions.Exit(EXIT_ERROR)
        b.stop()
        st = b.status()
    click.echo(f"{port}: run {info.run_id:08x} stopped (board is {st.state_name})")


@click.command()
@port_option()
def pause(port: str | None) -> None:
    """Pause the run on a board (relay open, step clock stopped)."""
    with open_board(port) as b:
        b.pause()
        click.echo(f"{b.port}: paused (board is {b.status().state_name})")


@click.command(name="continue")
@port_option()
def continue_(port: str | None) -> None:
    """Continue a paused run."""
    with open_board(port) as b:
        b.resume()
        click.echo(f"{b.port}: continued (board is {b.status().state_name})")
