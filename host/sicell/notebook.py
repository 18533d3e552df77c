"""A run as pandas DataFrames, for notebooks: ``sicell.open_run("run.db")``.

The DataFrames carry the export's column names and numbers (``sicell.bdftable``, the one
column table): ``samples`` is what ``sicell export`` writes, one row per sample; ``events`` the
board's events; ``cycles`` one row per cycle (capacities, efficiency, energies). ``meta`` is the
run's metadata as stored. pandas is an optional extra (``pip install 'sicell[pandas]'``),
imported only here, so the command line never needs it.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sicell.bdftable import (
    COLUMNS,
    CYCLE_COLUMNS,
    EVENT_COLUMNS,
    bdf_columns,
    cycle_table,
    event_table,
)
from sicell.rundata import load_run

__all__ = ["RunView", "open_run"]


def _pandas() -> Any:
    try:
        return importlib.import_module("pandas")
    except ImportError as e:
        raise ModuleNotFoundError(
            "sicell.open_run needs pandas: pip install 'sicell[pandas]'", name="pandas"
        ) from e


@dataclass(eq=False)
class RunView:
    """One run database as DataFrames (see the module's docstring)."""

    path: Path
    meta: dict[str, Any]
    samples: Any  # pandas.DataFrame, columns sicell.bdftable.COLUMNS
    events: Any  # pandas.DataFrame, columns sicell.bdftable.EVENT_COLUMNS
    cycles: Any  # pandas.DataFrame, columns sicell.bdftable.CYCLE_COLUMNS

    def __repr__(self) -> str:
        return (
            f"RunView({str(self.path)!r}: {len(self.samples)} samples, {len(self.events)} "
            f"events, {len(self.cycles)} cycles)"
        )


def open_run(path: str | os.PathLike[str]) -> RunView:
    """Read a run database into a :class:`RunView`. Raises ``StoreSchemaError`` for a file that
    is not a sicell run database, ``ModuleNotFoundError`` without pandas."""
    pd = _pandas()
    p = Path(path)
    cols = bdf_columns(load_run(p))
    samples = pd.DataFrame({c.name: cols.values(c.name) for c in COLUMNS})
    events = pd.DataFrame(event_table(cols), columns=list(EVENT_COLUMNS))
    cycles = pd.DataFrame(cycle_table(cols), columns=list(CYCLE_COLUMNS))
    return RunView(p, dict(cols.run.meta), samples, events, cycles)
