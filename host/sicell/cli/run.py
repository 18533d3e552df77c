"""``sicell run``: upload a schedule to one or more boards and log every record."""

from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path

import click
from rich.console import Console

from sicell.cli.common import console, explain, say
from sicell.errors import EXIT_OK, UsageError, worst_exit
from sicell.progress import Display, NullDisplay, make_display
from sicell.schedule import Schedule, ScheduleValidationError, load_schedule
from sicell.schema import check_run_db_file
from sicell.session import RunSession, RunSummary, run_many
from sicell.transport import detect_port


def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")
    return s or "board"


def _default_db(schedule_path: Path, board: str | None = None) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    stem = schedule_path.stem
    if board:
        stem += f"-{_slug(board)}"
    return Path(f"{stem}-{stamp}.db")


def _print_summary(con: Console, summary: RunSummary) -> int:
    """Print the summary; return the exit code of the run's outcome."""
    for line in summary.lines():
        # one line per fact, never wrapped: scripts read them
        con.print(line, highlight=False, markup=False, soft_wrap=True)
    return summary.outcome.exit_code if summary.outcome is not None else EXIT_OK


def _exit(code: int) -> None:
    if code != EXIT_OK:
        raise click.exceptions.Exit(code)


@click.command()
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
    where the database ends. A Ctrl-C before the run started (during the upload) cancels it:
    nothing runs and no database is left.

    Exits with the run's outcome: 0 complete, 3 safety trip, 4 stopped by a user, 5
    interrupted by a board reset (README lists every code); with several boards, the most
    severe of theirs.
    """
    con = console()
    if resume_db is not None and schedule is not None:
        raise UsageError("give either SCHEDULE (a new run) or --resume RUN.db, not both")
    if resume_db is None and schedule is None:
        raise UsageError("missing SCHEDULE (a .toml file), or --resume RUN.db to reattach")
    if names and len(names) != max(1, len(ports)):
        raise UsageError("give one --board-name per --port")
    if resume_db is not None:
        check_run_db_file(resume_db, for_writing=True)  # before looking for a board
    port_list = list(ports) or [detect_port()]
    _refuse_twice(port_list)
    if len(port_list) > 1 and (db is not None or resume_db is not None):
        raise UsageError(
            "--db and --resume name one run; with several --port each board gets its own "
            "database (<schedule>-<board>-<time>.db)"
        )
    display: Display = (
        NullDisplay() if quiet else make_display(plain=True if plain else None, console=con)
    )

    served = _served(port_list, db, resume_db)
    if served is not None:  # a service owns the port: this command is its client
        assert schedule is not None
        sch = _load_schedule(schedule)  # the same errors and warnings as a local run
        for w in sch.warnings():
            say(con, f"warning: {w}")
        from sicell.service.runclient import run_through_service

        code = run_through_service(served, schedule, display=display, con=con)
        if code is not None:
            _exit(code)
            return

    if resume_db is not None:
        name = names[0] if names else None
        session = RunSession.resume(resume_db, port_list[0], name=name, display=display)
        with display:
            summary = session.run()
        _exit(_print_summary(con, summary))
        return

    assert schedule is not None
    sch = _load_schedule(schedule)
    for w in sch.warnings():
        say(con, f"warning: {w}")
    sessions = []
    for k, port in enumerate(port_list):
        name = names[k] if names else (port if len(port_list) > 1 else None)
        path = db if db is not None else _default_db(schedule, name if len(port_list) > 1 else None)
        sessions.append(RunSession.new(sch, port, path, name=name, display=display))
    if len(sessions) == 1:
        with display:
            summary = sessions[0].run()
        _exit(_print_summary(con, summary))
        return
    with display:
        results = run_many(sessions)
    codes: list[tuple[str, int]] = []
    for r in results:
        if r.summary is not None:
            codes.append((r.session.name, _print_summary(con, r.summary)))
        elif r.error is not None:
            text, code = explain(r.error)
            click.echo(f"error: [{r.session.name}] {text}", err=True)
            codes.append((r.session.name, code))
    worst = worst_exit(c for _, c in codes)
    if worst != EXIT_OK:
        each = ", ".join(f"{name} {c}" for name, c in codes)
        say(con, f"exit code {worst}: the most severe of the boards' ({each})")
    _exit(worst)


def _refuse_twice(ports: list[str]) -> None:
    """One board, one run: two --port naming the same board (two spellings of one emu://
    board, a symlink and its device) would give it two sessions in this process."""
    from sicell.owner import port_key

    seen: dict[str, str] = {}
    for p in ports:
        first = seen.setdefault(port_key(p), p)
        if first is not p:
            raise UsageError(f"--port {p} names the same board as --port {first}; give it once")


def _served(ports: list[str], db: Path | None, resume_db: Path | None) -> str | None:
    """The port when a ``sicell serve`` owns it (the run goes through the service)."""
    from sicell.service.runclient import service_owner

    owned = [(p, o) for p in ports if (o := service_owner(p)) is not None]
    if not owned:
        return None
    port, owner = owned[0]
    if resume_db is not None:
        raise UsageError(
            f"{port} is served by {owner.describe()}, which logs its runs itself (it "
            "reattached them when it started); see them in its data directory or dashboard"
        )
    if len(ports) > 1:
        raise UsageError(
            f"{port} is served by {owner.describe()}: start runs there one --port at a time"
        )
    if db is not None:
        raise UsageError(
            f"{port} is served by {owner.describe()}, which keeps run databases in its data "
            "directory (runs/<name>.db); drop --db"
        )
    return port


def _load_schedule(path: Path) -> Schedule:
    if not path.exists():
        raise UsageError(f"{path}: no such schedule file")
    try:
        return load_schedule(path)
    except ScheduleValidationError as e:
        if str(path) in str(e):
            raise
        raise ScheduleValidationError(
            f"{path}: {e}", step=e.step, label=e.label, key=e.key, value=e.value
        ) from e
