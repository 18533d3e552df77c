"""Export a run database to the Battery Data Format (BDF): CSV with a JSON sidecar, or Parquet.

Columns (BDF names; one row per recorded sample, ordered by sequence number)::

    Test Time / s                          time since the run started
    Voltage / V                            cell voltage (working − counter electrode)
    Current / A                            + = lithiation of the working electrode
    Cycle Count / 1                        the cycle (the first lithiation is cycle 1)
    Step Count / 1                         +1 at every step execution (starts at 1)
    Step Index / 1                         the schedule step (0-based, as compiled)
    Charging Capacity / Ah                 lithiation capacity of the current half-cycle
    Discharging Capacity / Ah              delithiation capacity of the current half-cycle
    Working Electrode Potential vs Li / V  voltage + the reference offset

Cycles, half-cycles and capacities are ``sicell.cyclemodel``'s (DESIGN.md §5), the rule
every view uses: lithiation is "charging" of the Si anode; each capacity is the board's coulomb
count, from 0 at the start of its half-cycle (a sequence of steps of one direction), held
through the rests that follow, and 0 while the other direction runs. Samples before the first
lithiation are cycle 0.

Metadata (the run's ``meta`` table, the conventions, the schedule's steps and the column
descriptions) goes alongside: for CSV as ``<name>.meta.json`` next to ``<name>.csv``, for
Parquet as key-value metadata in the file's schema (each key's value JSON-encoded).
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
from sicell.cyclemodel import CycleModel
from sicell.rundata import RunData, load_run
from sicell.schedule import CONVENTIONS

__all__ = [
    "BDF_COLUMNS",
    "bdf_table",
    "export_bdf_csv",
    "export_metadata",
    "export_parquet",
    "sidecar_path",
]

BDF_COLUMNS: dict[str, str] = {
    "Test Time / s": "time since the run started, s",
    "Voltage / V": "cell voltage, working minus counter electrode, V",
    "Current / A": "current, A; positive = lithiation of the working electrode",
    "Cycle Count / 1": "cycle number: the first lithiation starts cycle 1, each lithiation "
    "half-cycle the next (0 before the first lithiation)",
    "Step Count / 1": "sequential step-execution counter, +1 at every step start (1-based)",
    "Step Index / 1": "schedule step index (0-based, as compiled for the board)",
    "Charging Capacity / Ah": "lithiation ('charging' of the Si anode) capacity of the current "
    "half-cycle (the board's coulomb count), Ah; resets at each half-cycle start",
    "Discharging Capacity / Ah": "delithiation capacity of the current half-cycle (the board's "
    "coulomb count), Ah; resets at each half-cycle start",
    "Working Electrode Potential vs Li / V": "working electrode potential vs Li+/Li = voltage + "
    "reference_offset_v, V",
}
"""The exported columns, in order, with their meaning."""

_INT_COLUMNS = ("Cycle Count / 1", "Step Count / 1", "Step Index / 1")


def _half_cycle_columns(
    run: RunData,
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    """(step count, cycle, charging capacity, discharging capacity) per sample, from the
    cycle model."""
    model = CycleModel(run.step_table()).feed(
        run.step.tolist(), run.cycle.tolist(), run.flags.tolist(), run.charge_ah.tolist()
    )
    runs = model.runs
    counts = np.array([r.last - r.first + 1 for r in runs], dtype=np.int64)
    step_count = np.repeat(np.arange(1, len(runs) + 1, dtype=np.int64), counts)
    cycle = np.repeat(np.array([r.cycle for r in runs], dtype=np.int64), counts)
    direction = np.repeat(np.array([r.hold_direction for r in runs], dtype=np.int64), counts)
    cap = np.asarray(model.capacities(run.charge_ah.tolist()), dtype=np.float64)
    chg = np.where(direction > 0, cap, 0.0)
    dis = np.where(direction < 0, cap, 0.0)
    return step_count, cycle, chg, dis


def bdf_table(db_path: str | os.PathLike[str]) -> tuple[dict[str, NDArray[Any]], dict[str, Any]]:
    """The BDF columns (``BDF_COLUMNS`` order) as numpy arrays, and the export metadata."""
    p = Path(db_path)
    run = load_run(p)
    step_count, cycle, chg, dis = _half_cycle_columns(run)
    table: dict[str, NDArray[Any]] = {
        "Test Time / s": run.t_s,
        "Voltage / V": run.voltage_v,
        "Current / A": run.current_a,
        "Cycle Count / 1": cycle,
        "Step Count / 1": step_count,
        "Step Index / 1": run.step,
        "Charging Capacity / Ah": chg,
        "Discharging Capacity / Ah": dis,
        "Working Electrode Potential vs Li / V": run.we_v,
    }
    steps = [dataclasses.asdict(s) for s in run.steps.values()]
    return table, export_metadata(p, run.meta, steps, len(step_count))


def export_metadata(
    db_path: Path, meta: dict[str, Any], steps: list[dict[str, Any]], n_rows: int
) -> dict[str, Any]:
    """The metadata written alongside an export: the run's meta, plus the conventions (when the
    run lacks them), the steps table, the column descriptions and provenance."""
    out: dict[str, Any] = dict(meta)
    out.setdefault("conventions", dict(CONVENTIONS))
    out["format"] = "Battery Data Format (BDF)"
    out["bdf_columns"] = dict(BDF_COLUMNS)
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


def _fmt(x: Any) -> str:
    return repr(float(x))


def export_bdf_csv(db_path: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> Path:
    """Write the run as BDF CSV (header row of BDF names, one row per sample) and its metadata
    as ``<name>.meta.json`` next to it. Returns the CSV path."""
    out = Path(out_path)
    table, meta = bdf_table(db_path)
    meta["data_file"] = out.name
    names = list(table)
    n = len(table["Test Time / s"])
    tmp = out.with_name(out.name + ".part")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(names)
        columns = [
            [str(int(v)) for v in table[c]] if c in _INT_COLUMNS else [_fmt(v) for v in table[c]]
            for c in names
        ]
        for i in range(n):
            w.writerow([col[i] for col in columns])
    side = sidecar_path(out)
    side_tmp = side.with_name(side.name + ".part")
    side_tmp.write_text(json.dumps(meta, indent=2, ensure_ascii=False, default=str) + "\n")
    os.replace(tmp, out)
    os.replace(side_tmp, side)
    return out


def export_parquet(db_path: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> Path:
    """Write the run as a BDF Parquet file; the metadata goes into the schema's key-value
    metadata (UTF-8 keys, JSON-encoded values). Needs ``pyarrow`` (``pip install
    sicell[parquet]``). Returns the Parquet path."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - pyarrow is a test dependency
        raise RuntimeError(
            "Parquet export needs pyarrow: pip install 'sicell[parquet]' (or use the CSV export)"
        ) from e
    out = Path(out_path)
    table, meta = bdf_table(db_path)
    meta["data_file"] = out.name
    arrays = []
    fields = []
    for name, col in table.items():
        typ = pa.int64() if name in _INT_COLUMNS else pa.float64()
        arrays.append(pa.array(col, type=typ))
        fields.append(pa.field(name, typ, nullable=False))
    kv = {
        str(k).encode(): json.dumps(v, ensure_ascii=False, default=str).encode()
        for k, v in meta.items()
    }
    schema = pa.schema(fields, metadata=kv)
    tbl = pa.Table.from_arrays(arrays, schema=schema)
    tmp = out.with_name(out.name + ".part")
    pq.write_table(tbl, tmp)
    os.replace(tmp, out)
    return out
