"""``sicell export`` and ``sicell report``: what a run database becomes."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from sicell.cli.common import one_line
from sicell.errors import SicellError


@click.command()
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
            f"parquet export needs pyarrow: pip install 'sicell[parquet]' ({one_line(e)})"
        ) from e
    click.echo(f"wrote {res if isinstance(res, str | Path) else target}")


@click.command()
@click.argument("dbs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out", "-o", type=click.Path(file_okay=False, path_type=Path), default=Path("report")
)
def report(dbs: tuple[Path, ...], out: Path) -> None:
    """Write an HTML report (cycle table, figures) for one or more run databases."""
    rep = importlib.import_module("sicell.report")
    path = rep.write_report(list(dbs), out)
    click.echo(f"wrote {path}")
