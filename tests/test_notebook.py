"""The notebook view: ``sicell.open_run`` gives the export's columns and numbers as pandas
DataFrames, the events, a cycle table that agrees with the cycle model, and the metadata."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sicell
from sicell import analysis as an
from sicell.bdftable import COLUMNS, CYCLE_COLUMNS, EVENT_COLUMNS
from sicell.export import bdf_table, export_bdf_csv
from sicell.protocol import messages
from sicell.rundata import load_run
from sicell.store import EventRecord, RunStore, SampleRecord

STEPS = [
    (0, "cc", 1e-4, None, "lith"),
    (1, "rest", None, None, ""),
    (2, "cc", -1e-4, None, "delith"),
    (3, "rest", None, None, ""),
]
META = {"reference_offset_v": 0.62, "cell": "nb", "start_unix_ms": 1_718_000_000_000}


def _run(path: Path, cycles: int = 3) -> Path:
    """A small run on the board's grid: lithiation, rest, delithiation, rest per cycle."""
    samples: list[SampleRecord] = []
    events: list[EventRecord] = []
    seq, t_ms = 0, 0
    for c in range(cycles):
        for step, sign, n in ((0, 1, 5), (1, 0, 2), (2, -1, 5), (3, 0, 2)):
            for k in range(n):
                q = sign * (100_000 - 1_000 * c * (sign < 0)) * (k + 1)  # nAh
                v = 400_000 - sign * 10_000 * k  # µV
                flags = messages.F_STEP_FIRST if k == 0 else 0
                flags |= messages.F_STEP_LAST if k == n - 1 else 0
                fields = (t_ms // 1000, t_ms % 1000, v, sign * 100_000, q, step, c, 1, flags)
                samples.append(SampleRecord.from_wire(seq, fields))
                seq += 1
                t_ms += 1_500
            events.append(
                EventRecord(seq, t_ms / 1000, messages.EV_STEP_END, "step_end", step, c, 0, 0, 0)
            )
            seq += 1
    with RunStore.create(path, META, STEPS) as s:
        s.add(samples, events)
    return path


def test_open_run_matches_the_export(tmp_path: Path) -> None:
    pytest.importorskip("pandas")
    db = _run(tmp_path / "run.db")
    view = sicell.open_run(db)
    names = [c.name for c in COLUMNS]
    assert list(view.samples.columns) == names
    table, _ = bdf_table(db)
    for name in names:
        np.testing.assert_array_equal(view.samples[name].to_numpy(), table[name], err_msg=name)
    with export_bdf_csv(db, tmp_path / "run.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(view.samples)
    for name in names:  # the DataFrame holds exactly the numbers the CSV's decimals name
        got = view.samples[name].tolist()
        want = [float(r[name]) if r[name] else math.nan for r in rows]
        assert all(
            (math.isnan(g) and math.isnan(w)) or g == w for g, w in zip(got, want, strict=True)
        ), name
    assert str(view.samples["Cycle Count / 1"].dtype) == "int64"
    assert view.meta == load_run(db).meta and view.meta["cell"] == "nb"
    assert "3 cycles" in repr(view)


def test_cycles_and_events(tmp_path: Path) -> None:
    pytest.importorskip("pandas")
    db = _run(tmp_path / "run.db")
    view = sicell.open_run(db)
    cyc = view.cycles
    assert list(cyc.columns) == list(CYCLE_COLUMNS)
    assert cyc["Cycle Count / 1"].tolist() == [1, 2, 3]
    hcs = an.half_cycles(load_run(db))
    for h in hcs:
        col = "Charging Capacity / Ah" if h.kind == "lith" else "Discharging Capacity / Ah"
        row = cyc[cyc["Cycle Count / 1"] == h.cycle].iloc[0]
        assert row[col] == pytest.approx(h.board_ah, rel=1e-12)
    assert cyc["Charging Capacity / Ah"].tolist() == [5e-4, 5e-4, 5e-4]
    assert cyc["Discharging Capacity / Ah"].tolist() == [5e-4, 4.95e-4, 4.9e-4]
    assert cyc["Coulombic Efficiency / 1"].tolist() == pytest.approx([1.0, 0.99, 0.98])
    # energies: the samples' value at the end of each half-cycle (positive here: V > 0, and
    # each grows through its half-cycle, so the largest)
    ends = view.samples.groupby("Cycle Count / 1").max()
    for name in ("Charging Energy / Wh", "Discharging Energy / Wh"):
        assert cyc[name].tolist() == ends[name].tolist()
        assert all(e > 0 for e in cyc[name])
    assert cyc["Unix Time / s"].tolist() == pytest.approx(
        [1_718_000_000 + t for t in cyc["Test Time / s"]], abs=1e-6
    )
    ev = view.events
    assert list(ev.columns) == list(EVENT_COLUMNS)
    assert len(ev) == 12 and set(ev["Event"]) == {"step_end"}
    assert ev["Cycle Count / 1"].tolist() == [c for c in (1, 2, 3) for _ in range(4)]
    assert ev["Test Time / s"].iloc[0] == 7.5


def test_open_run_without_pandas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = _run(tmp_path / "run.db", cycles=1)
    monkeypatch.setitem(sys.modules, "pandas", None)  # `import pandas` fails
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'sicell\[pandas\]'"):
        sicell.open_run(db)


def test_the_command_line_never_imports_pandas() -> None:
    code = (
        "import importlib, sys\n"
        "from sicell.cli import COMMANDS\n"
        "for mod, _ in COMMANDS.values(): importlib.import_module('sicell.cli.' + mod)\n"
        "import sicell.export, sicell.notebook\n"
        "print('pandas' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
