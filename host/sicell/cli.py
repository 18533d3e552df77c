"""The ``sicell`` command: run schedules, look at boards, calibrate, flash, export, emulate.

Every failure the user can cause or meet (a missing port, a busy port, a board without
firmware, a schedule the board cannot run, a full disk, ...) prints one line starting with
``error:`` and exits non-zero; ``SICELL_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.table import Table

from sicell import __version__
from sicell.client import (
    CHANNEL_NAMES,
    Board,
    BoardInfo,
    CalEntry,
    Status,
)
from sicell.emulator import cmdline as emu_cmdline
from sicell.errors import (
    EXIT_BUG,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    Detached,
    SicellError,
    UsageError,
)
from sicell.progress import (
    Display,
    NullDisplay,
    fmt_capacity,
    fmt_current,
    fmt_duration,
    fmt_volts,
    make_display,
)
from sicell.session import RunSession, RunSummary, run_many
from sicell.transport import detect_port, list_ports


def _one_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    if isinstance(e, OSError) and e.filename and e.strerror:
        text = f"{e.filename}: {e.strerror}"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return "; ".join(lines) if lines else type(e).__name__


def _fail(message: str, code: int) -> NoReturn:
    click.echo(message, err=True)
    raise click.exceptions.Exit(code)


class SicellGroup(click.Group):
    """The one place where errors become what the user sees: a ``SicellError`` is one
    ``error:`` line and its exit code (sicell.errors); an OSError naming a file is the
    environment's (a path, a permission, a full disk); anything else is a bug and says so.
    ``SICELL_DEBUG=1`` shows the traceback instead."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            _fail("interrupted", EXIT_INTERRUPTED)
        except Detached as e:
            _fail(str(e), e.exit_code)
        except Exception as e:
            if os.environ.get("SICELL_DEBUG"):
                raise
            if isinstance(e, SicellError):
                _fail(f"error: {_one_line(e)}", e.exit_code)
            if isinstance(e, OSError) and e.filename:
                _fail(f"error: {_one_line(e)}", EXIT_ERROR)
            _fail(
                f"error: bug in sicell: {type(e).__name__}: {_one_line(e)} (please report it; "
                "SICELL_DEBUG=1 shows the traceback)",
                EXIT_BUG,
            )


def _console() -> Console:
    return Console(highlight=False)


def _resolve_port(port: str | None) -> str:
    return port if port else detect_port()


def _open_board(port: str | None, **kw: Any) -> Board:
    return Board.open(_resolve_port(port), **kw)


@click.group(cls=SicellGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sicell")
def cli() -> None:
    """sicell: an open battery tester (RP2040 board or emulator, SQLite logs, analysis).

    Ports are serial devices (/dev/ttyACM0, COM5) or URLs: emu://<cell> starts or attaches to
    an emulated board (cells: rc, resistor, thin-porous, thin-dense, thick-porous,
    thick-dense). Without --port, the one RP2040 board attached is used.
    """


# ---- run --------------------------------------------------------------------------------------
def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")
    return s or "board"


def _default_db(schedule_path: Path, board: str | None = None) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    stem = schedule_path.stem
    if board:
        stem += f"-{_slug(board)}"
    return Path(f"{stem}-{stamp}.db")


def _print_summary(console: Console, summary: RunSummary) -> None:
    for line in summary.lines():
        console.print(line, highlight=False, markup=False)


@cli.command()
@click.argument("schedule", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--port",
    "-p",
    "ports",
    multiple=True,
    help="serial device or URL (emu://rc); repeat for several boards; default: auto-detect",
)
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), help="run database")
@click.option(
    "--resume",
    "resume_db",
    type=click.Path(dir_okay=False, path_type=Path),
    help="reattach to the run of this database (the board kept running)",
)
@click.option("--board-name", "names", multiple=True, help="a name for the board (per --port)")
@click.option("--plain", is_flag=True, help="one line per update even on a terminal")
@click.option("--quiet", "-q", is_flag=True, help="no progress, only the summary")
def run(
    schedule: Path | None,
    ports: tuple[str, ...],
    db: Path | None,
    resume_db: Path | None,
    names: tuple[str, ...],
    plain: bool,
    quiet: bool,
) -> None:
    """Run SCHEDULE (a TOML file) on a board and log it to a run database.

    The board runs the schedule on its own; this command streams its records into SQLite
    (committed before they are acknowledged) and shows progress. Stop watching with Ctrl-C at
    any time: the board keeps running, and `sicell run --resume RUN.db --port PORT` picks up
    where the database ends.
    """
    console = _console()
    if resume_db is not None and schedule is not None:
        raise UsageError("give either SCHEDULE (a new run) or --resume RUN.db, not both")
    if resume_db is None and schedule is None:
        raise UsageError("missing SCHEDULE (a .toml file), or --resume RUN.db to reattach")
    if names and len(names) != max(1, len(ports)):
        raise UsageError("give one --board-name per --port")
    port_list = list(ports) or [detect_port()]
    if len(port_list) > 1 and (db is not None or resume_db is not None):
        raise UsageError(
            "--db and --resume name one run; with several --port each board gets its own "
            "database (<schedule>-<board>-<time>.db)"
        )
    display: Display = (
        NullDisplay() if quiet else make_display(plain=True if plain else None, console=console)
    )

    if resume_db is not None:
        name = names[0] if names else None
        session = RunSession.resume(resume_db, port_list[0], name=name, display=display)
        with display:
            summary = session.run()
        _print_summary(console, summary)
        return

    assert schedule is not None
    sch = _load_schedule(schedule)
    for w in _schedule_warnings(sch):
        console.print(f"warning: {w}", highlight=False, markup=False)
    sessions = []
    for k, port in enumerate(port_list):
        name = names[k] if names else (port if len(port_list) > 1 else None)
        path = db if db is not None else _default_db(schedule, name if len(port_list) > 1 else None)
        sessions.append(RunSession.new(sch, port, path, name=name, display=display))
    if len(sessions) == 1:
        with display:
            summary = sessions[0].run()
        _print_summary(console, summary)
        return
    with display:
        results = run_many(sessions)
    failed = 0
    for r in results:
        if r.summary is not None:
            _print_summary(console, r.summary)
        elif r.error is not None:
            failed += 1
            click.echo(f"error: [{r.session.name}] {_one_line(r.error)}", err=True)
    if failed:
        raise click.exceptions.Exit(EXIT_ERROR)


def _load_schedule(path: Path) -> Any:
    sched_mod = importlib.import_module("sicell.schedule")
    if not path.exists():
        raise UsageError(f"{path}: no such schedule file")
    try:
        return sched_mod.load_schedule(path)
    except sched_mod.ScheduleValidationError as e:
        raise UsageError(
            f"{path}: {_one_line(e)}" if str(path) not in str(e) else _one_line(e)
        ) from e


def _schedule_warnings(sch: Any) -> list[str]:
    try:
        return [str(w) for w in sch.warnings()]
    except Exception:
        return []


# ---- boards, status, stop --------------------------------------------------------------------
def _emulators() -> list[dict[str, Any]]:
    try:
        launcher = importlib.import_module("sicell.emulator.launcher")
        return list(launcher.list_emulators())
    except Exception:
        return []


@cli.command()
@click.option("--all", "show_all", is_flag=True, help="list every serial port, not only RP2040s")
@click.option("--probe", is_flag=True, help="say HELLO to each board (id, firmware, state)")
def boards(show_all: bool, probe: bool) -> None:
    """List attached boards (USB 2e8a:0005 / 2e8a:000a) and running emulators."""
    console = _console()
    ports = [p for p in list_ports() if show_all or p.is_rp2040]
    emus = _emulators()
    t = Table(title="boards", show_edge=True, header_style="bold")
    for col in ("port", "kind", "serial", "board id", "firmware", "state", "run"):
        t.add_column(col)
    for p in ports:
        row = [p.device, p.kind, p.serial_number or "-", "-", "-", "-", "-"]
        if probe and p.is_rp2040:
            row[3:] = _probe_row(p.device)
        t.add_row(*row)
    for e in emus:
        url = f"emu://{e.get('cell', '?')}?board={e.get('board', '?')}"
        if e.get("seed") not in (None, 0):
            url += f"&seed={e.get('seed')}"
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
        t.add_row(*row)
    if not ports and not emus:
        console.print(
            "no boards found: attach an RP2040 board (see `sicell flash`), or try the emulator "
            "with `sicell run host/sicell/examples/rc-check.toml --port emu://rc`",
            highlight=False,
            markup=False,
        )
        return
    console.print(t)
    for e in emus:
        console.print(
            f"emulator {e.get('board')}: connect with emu://{e.get('cell')}?board={e.get('board')}",
            highlight=False,
            markup=False,
        )


def _probe_row(port: str) -> list[str]:
    try:
        with Board.open(port, hello_timeout=2.0) as b:
            info = b.info
            assert info is not None
            return [
                info.board_id,
                info.fw_version_str,
                info.state_name,
                f"{info.run_id:08x}" if info.run_id else "-",
            ]
    except Exception as e:
        return ["?", "?", _one_line(e)[:60], "-"]


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
    return t


def _status_table(st: Status) -> Table:
    t = Table(title="status", show_header=False, show_edge=True)
    t.add_column("key", style="bold")
    t.add_column("value")
    t.add_row("state", st.state_name)
    t.add_row("run id", f"{st.run_id:08x}" if st.run_id else "-")
    t.add_row("step / cycle", f"{st.step} / {st.cycle}")
    t.add_row("test time", fmt_duration(st.t_s))
    t.add_row("cell voltage", fmt_volts(st.v_uv * 1e-6))
    t.add_row("current", f"{fmt_current(st.i_na * 1e-9)} (range {st.range})")
    t.add_row("step charge", fmt_capacity(abs(st.q_nah) * 1e-9))
    t.add_row(
        "records held",
        f"seq {st.first_seq}..{st.last_seq}, host acked {st.acked_seq}, dropped {st.dropped}",
    )
    return t


@cli.command()
@click.option("--port", "-p", help="serial device or URL; default: auto-detect")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def status(port: str | None, as_json: bool) -> None:
    """Show what a board is and what it is doing."""
    port = _resolve_port(port)
    with Board.open(port) as b:
        info = b.info
        assert info is not None
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
    console = _console()
    console.print(_info_table(info, port))
    console.print(_status_table(st))


@cli.command()
@click.option("--port", "-p", help="serial device or URL; default: auto-detect")
@click.option("--yes", "-y", is_flag=True, help="do not ask")
def stop(port: str | None, yes: bool) -> None:
    """Stop the run on a board (relay open; the records stay on the board until acked)."""
    port = _resolve_port(port)
    with Board.open(port) as b:
        info = b.info
        assert info is not None
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


@cli.command()
@click.option("--port", "-p", help="serial device or URL; default: auto-detect")
def pause(port: str | None) -> None:
    """Pause the run on a board (relay open, step clock stopped)."""
    with _open_board(port) as b:
        b.pause()
        click.echo(f"{b.port}: paused (board is {b.status().state_name})")


@cli.command(name="continue")
@click.option("--port", "-p", help="serial device or URL; default: auto-detect")
def continue_(port: str | None) -> None:
    """Continue a paused run."""
    with _open_board(port) as b:
        b.resume()
        click.echo(f"{b.port}: continued (board is {b.status().state_name})")


# ---- calibrate ------------------------------------------------------------------------------
def _cal_table(entries: Sequence[CalEntry], info: BoardInfo) -> Table:
    t = Table(title="calibration (raw = true × gain + offset)", header_style="bold")
    for col in ("range", "full scale", "channel", "offset", "gain"):
        t.add_column(col, justify="right" if col in ("offset", "gain") else "left")
    units = {0: "µV", 1: "nA", 2: "nA"}
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


@cli.command()
@click.option("--port", "-p", help="serial device or URL; default: auto-detect")
@click.option("--range", "rng", type=int, help="range index to set or calibrate")
@click.option(
    "--channel",
    type=click.Choice(["voltage", "current", "setpoint"]),
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

    console = _console()
    with _open_board(port) as b:
        info = b.info
        assert info is not None
        if (offset is not None or gain is not None) and (rng is None or channel is None):
            raise UsageError("--offset/--gain need --range and --channel")
        if rng is not None and not 0 <= rng < info.n_ranges:
            raise UsageError(f"--range {rng}: the board has ranges 0..{info.n_ranges - 1}")
        changed = False
        if resistor is not None:
            if rng is None:
                raise UsageError("--resistor needs --range (the range to calibrate)")
            if info.has_run:
                raise UsageError(
                    f"{b.port} is {info.state_name} (run {info.run_id:08x}); "
                    "calibrate an idle board"
                )
            result = two_point_calibration(
                b, rng, resistor, fraction=fraction, log=lambda m: console.print(m, markup=False)
            )
            for line in result.lines():
                console.print(line, highlight=False, markup=False)
            for e in result.entries:
                b.cal_set(e)
            changed = True
        elif offset is not None or gain is not None:
            assert rng is not None and channel is not None
            ch = {"voltage": 0, "current": 1, "setpoint": 2}[channel]
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
        console.print(_cal_table(entries, info))
        if save:
            if not yes and not click.confirm("write this calibration to the board's flash?"):
                raise click.exceptions.Exit(EXIT_ERROR)
            b.cal_save()
            console.print("saved to the board's flash")
        elif changed:
            console.print("applied (until reset); add --save to keep it")


# ---- export, report ------------------------------------------------------------------------
@cli.command()
@click.argument("db", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "parquet"]), default="csv", show_default=True
)
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), help="output file")
def export(db: Path, fmt: str, out: Path | None) -> None:
    """Export a run database in the Battery Data Format (BDF) as CSV or Parquet."""
    ex = importlib.import_module("sicell.export")
    target = out or db.with_suffix(".bdf.csv" if fmt == "csv" else ".bdf.parquet")
    fn: Callable[..., Any] = ex.export_bdf_csv if fmt == "csv" else ex.export_parquet
    try:
        res = fn(db, target)
    except ImportError as e:
        raise SicellError(
            f"parquet export needs pyarrow: pip install 'sicell[parquet]' ({_one_line(e)})"
        ) from e
    click.echo(f"wrote {res if isinstance(res, str | Path) else target}")


@cli.command()
@click.argument("dbs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out", "-o", type=click.Path(file_okay=False, path_type=Path), default=Path("report")
)
def report(dbs: tuple[Path, ...], out: Path) -> None:
    """Write an HTML report (cycle table, figures) for one or more run databases."""
    rep = importlib.import_module("sicell.report")
    path = rep.write_report(list(dbs), out)
    click.echo(f"wrote {path}")


# ---- emulate --------------------------------------------------------------------------------
@cli.command()
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


# ---- flash ----------------------------------------------------------------------------------
@cli.command()
@click.option("--port", "-p", help="serial device; default: auto-detect")
@click.option("--force", is_flag=True, help="flash even while the board runs an experiment")
@click.option("--source", is_flag=True, help="copy .py sources instead of compiled .mpy")
@click.option("--no-verify", is_flag=True, help="skip the hash check after copying")
def flash(port: str | None, force: bool, source: bool, no_verify: bool) -> None:
    """Install the sicell firmware (firmware/ + protocol/) on an RP2040 running MicroPython.

    Refuses while the board runs an experiment (unless --force); compiles with mpy-cross,
    copies with mpremote, checks every file's SHA-256 on the board, and resets it.
    """
    from sicell.flash import flash as do_flash

    port = _resolve_port(port)
    do_flash(
        port,
        force=force,
        compile_mpy=not source,
        verify=not no_verify,
        log=lambda m: click.echo(m),
    )


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Console entry point (``sicell``)."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="sicell")
    except SystemExit:
        raise
    sys.exit(0)


if __name__ == "__main__":  # pragma: no cover
    main()
