"""Export a run database to the Battery Data Format (BDF): CSV with a JSON sidecar, or Parquet.

The columns, their meanings and number formats are ``sicell.bdftable``'s (one table, shared
with the notebook view): test and wall-clock time, voltage, current, cycle, step count and
index, step capacity, charging/discharging capacity and energy per half-cycle, internal
resistance where measured, and the working-electrode potential vs Li (not a BDF column). One
row per recorded sample, ordered by sequence number.

Numbers: the board's integers are written exactly. CSV cells are exact decimals (1 380 438 µV →
``1.380438``); Parquet holds float64, the double nearest to that decimal (``repr`` gives the
decimal back) — chosen over decimal128 because every BDF reader (pandas, polars, the BDF tools)
takes float64 as is. Energies and resistance are computed and rounded to 10 significant digits.

Cycles, half-cycles and capacities are ``sicell.cyclemodel``'s (DESIGN.md §5), the rule every
view uses: lithiation (positive current) is "charging" of the Si anode; each capacity is the
board's coulomb count, from 0 at the start of its half-cycle, held through the rests that
follow, and 0 while the other direction runs. Samples before the first lithiation are cycle 0.

Metadata (the run's ``meta`` table, the conventions, the schedule's steps, the column
descriptions, the number format and the origin of the wall-clock time) goes alongside: for CSV
as ``<name>.meta.json`` next to ``<name>.csv``, for Parquet as key-value metadata in the file's
schema (each key's value JSON-encoded). A file that is not a run database is refused
(``StoreSchemaError``) before anything is written.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sicell import __version__
from sicell.bdftable import (
    BDF_COLUMNS,
    COLUMNS,
    ENERGY_CONVENTION,
    NUMBER_FORMAT,
    BdfColumns,
    bdf_columns,
)
from sicell.rundata import load_run
from sicell.schedule import CONVENTIONS

__all__ = [
    "BDF_COLUMNS",
    "bdf_table",
    "export_bdf_csv",
    "export_metadata",
    "export_parquet",
    "load_columns",
    "sidecar_path",
]


def load_columns(db_path: str | os.PathLike[str]) -> tuple[BdfColumns, dict[str, Any]]:
    """A run database's BDF columns and the export metadata."""
    p = Path(db_path)
    cols = bdf_columns(load_run(p))
    run = cols.run
    steps = [dataclasses.asdict(s) for s in run.steps.values()]
    meta = export_metadata(p, run.meta, steps, len(cols))
    meta["unix_time_origin"] = cols.unix_time_origin
    return cols, meta


def bdf_table(db_path: str | os.PathLike[str]) -> tuple[dict[str, NDArray[Any]], dict[str, Any]]:
    """The BDF columns (``BDF_COLUMNS`` order) as numpy arrays — int64 counts, float64 values
    (the doubles nearest to the exact decimals; NaN where unknown) — and the export metadata."""
    cols, meta = load_columns(db_path)
    return {c.name: cols.values(c.name) for c in COLUMNS}, meta


def export_metadata(
    db_path: Path, meta: dict[str, Any], steps: list[dict[str, Any]], n_rows: int
) -> dict[str, Any]:
    """The metadata written alongside an export: the run's meta, plus the conventions (when the
    run lacks them), the steps table, the column descriptions and provenance."""
    out: dict[str, Any] = dict(meta)
    out.setdefault("conventions", dict(CONVENTIONS))
    out["format"] = "Battery Data Format (BDF)"
    out["bdf_columns"] = dict(BDF_COLUMNS)
    out["number_format"] = dict(NUMBER_FORMAT)
    out["energy_convention"] = ENERGY_CONVENTION
    out["steps"] = steps
    out["rows"] = n_rows
    out["source_db"] = str(db_path)
    out["exported_at"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    out["exporter"] = f"sicell {__version__}"
    return out


def sidecar_path(out_path: str | os.PathLike[str]) -> Path:
    """``run.csv`` → ``run.meta.json`` (the CSV export's metadata file)."""
    p = Path(out_path)
    return p.with_name(p.stem + ".meta.json") if p.suffix else p.with_name(p.name + ".meta.json")


def export_bdf_csv(db_path: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> Path:
    """Write the run as BDF CSV (header row of BDF names, one row per sample, exact decimals)
    and its metadata as ``<name>.meta.json`` next to it. Returns the CSV path."""
    out = Path(out_path)
    cols, meta = load_columns(db_path)
    meta["data_file"] = out.name
    names = [c.name for c in COLUMNS]
    columns = [cols.strings(name) for name in names]
    tmp = out.with_name(out.name + ".part")
    side = sidecar_path(out)
    side_tmp = side.with_name(side.name + ".part")
    try:
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(names)
            w.writerows(zip(*columns, strict=True))
        side_tmp.write_text(json.dumps(meta, indent=2, ensure_ascii=False, default=str) + "\n")
        os.replace(tmp, out)
        os.replace(side_tmp, side)
    finally:
        _discard(tmp, side_tmp)
    return out


def _discard(*parts: Path) -> None:
    """Remove temporary files a failed write left (after a success they are gone already)."""
    for p in parts:
        p.unlink(missing_ok=True)


def export_parquet(db_path: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> Path:
    """Write the run as a BDF Parquet file; the metadata goes into the schema's key-value
    metadata (UTF-8 keys, JSON-encoded values). Needs ``pyarrow`` (``pip install
    sicell[parquet]``). Returns the Parquet path."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - pyarrow is a test dependency
        raise ImportError(
            "Parquet export needs pyarrow: pip install 'sicell[parquet]' (or use the CSV export)"
        ) from e
    out = Path(out_path)
    cols, meta = load_columns(db_path)
    meta["data_file"] = out.name
    arrays = []
    fields = []
    for spec in COLUMNS:
        col = cols.values(spec.name)
        if spec.kind == "int":
            typ = pa.int64()
            arr = pa.array(col, type=typ)
        else:
            typ = pa.float64()
            arr = pa.array(col, type=typ, mask=np.isnan(col))
        arrays.append(arr)
        fields.append(pa.field(spec.name, typ, nullable=spec.kind != "int"))
    kv = {
        str(k).encode(): json.dumps(v, ensure_ascii=False, default=str).encode()
        for k, v in meta.items()
    }
    schema = pa.schema(fields, metadata=kv)
    tbl = pa.Table.from_arrays(arrays, schema=schema)
    tmp = out.with_name(out.name + ".part")
    try:
        pq.write_table(tbl, tmp)
        os.replace(tmp, out)
    finally:
        _discard(tmp)
    return out
