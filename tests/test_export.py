"""BDF export: columns, per-half-cycle capacities, metadata alongside, CSV and Parquet."""

from __future__ import annotations

import binascii
import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sicell.emulator.launcher import stage_firmware
from sicell.export import (
    BDF_COLUMNS,
    bdf_table,
    export_bdf_csv,
    export_parquet,
    sidecar_path,
)
from sicell.protocol import messages
from sicell.schedule import CONVENTIONS, load_schedule
from sicell.store import EventRecord, RunStore, SampleRecord

from tests.mputil import run_mp

EXAMPLES = Path(__file__).resolve().parents[1] / "host" / "sicell" / "examples"
NAMES = [
    "Test Time / s",
    "Voltage / V",
    "Current / A",
    "Cycle Count / 1",
    "Step Count / 1",
    "Step Index / 1",
    "Charging Capacity / Ah",
    "Discharging Capacity / Ah",
    "Working Electrode Potential vs Li / V",
]

# step table of a small CC(+) / CV / rest / CC(-) / rest / loop schedule
STEPS = [
    (0, "cc", 1e-4, -0.61, "lith"),
    (1, "cv", None, -0.61, "hold"),
    (2, "rest", None, None, ""),
    (3, "cc", -1e-4, 0.58, "delith"),
    (4, "rest", None, None, ""),
    (5, "loop", None, None, ""),
]
# per step: (charge at the end of the step in Ah, points)
PLAN = [(0, 3e-4, 4), (1, 5e-5, 3), (2, 0.0, 2), (3, -3.2e-4, 4), (4, 0.0, 2)]


def make_run(path: Path, cycles: int = 2) -> dict[str, list[Any]]:
    """Write a synthetic run; return the expected export columns."""
    exp: dict[str, list[Any]] = {k: [] for k in NAMES}
    samples: list[SampleRecord] = []
    seq = 0
    t = 0.0
    count = 0
    for cyc in range(cycles):
        chg_acc = 0.0
        for idx, q_end, npts in PLAN:
            count += 1
            for k in range(npts):
                q = q_end * (k + 1) / npts
                cur = {0: 1e-4, 1: 1e-5 / (k + 1), 3: -1e-4}.get(idx, 0.0)
                v = -0.3 + 0.01 * k + 0.1 * idx
                flags = messages.F_STEP_FIRST if k == 0 else 0
                samples.append(SampleRecord(seq, t, v, cur, q, idx, cyc, 1, flags))
                exp["Test Time / s"].append(t)
                exp["Voltage / V"].append(v)
                exp["Current / A"].append(cur)
                exp["Cycle Count / 1"].append(cyc + 1)  # the first lithiation is cycle 1
                exp["Step Count / 1"].append(count)
                exp["Step Index / 1"].append(idx)
                exp["Working Electrode Potential vs Li / V"].append(v + 0.62)
                if idx == 0:
                    c, d = q, 0.0
                elif idx == 1:
                    c, d = 3e-4 + q, 0.0
                elif idx == 2:
                    c, d = 3.5e-4, 0.0
                elif idx == 3:
                    c, d = 0.0, -q
                else:
                    c, d = 0.0, 3.2e-4
                chg_acc = c
                exp["Charging Capacity / Ah"].append(c)
                exp["Discharging Capacity / Ah"].append(d)
                seq += 1
                t += 10.0
        assert chg_acc == 0.0
    meta = {
        "reference_electrode": "In-Li",
        "reference_offset_v": 0.62,
        "area_cm2": 0.567,
        "mass_mg": 0.119,
        "thickness_um": 1.55,
        "density_g_cm3": 1.5,
        "cell": "thin-porous",
        "schedule_toml": "# synthetic\n",
    }
    with RunStore.create(path, meta, STEPS) as s:
        s.add(samples, [EventRecord(seq, t, messages.EV_RUN_END, "run_end", 4, 1, 0, 0, 0)])
    return exp


def check_columns(table: dict[str, Any], exp: dict[str, list[Any]]) -> None:
    assert list(table) == NAMES
    for name in NAMES:
        got = np.asarray(table[name], dtype=float)
        want = np.asarray(exp[name], dtype=float)
        assert got.shape == want.shape, name
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, err_msg=name)


def check_meta(meta: dict[str, Any], data_name: str) -> None:
    assert meta["conventions"] == CONVENTIONS
    assert meta["reference_electrode"] == "In-Li"
    assert meta["reference_offset_v"] == 0.62
    assert meta["area_cm2"] == 0.567
    assert meta["mass_mg"] == 0.119
    assert meta["cell"] == "thin-porous"
    assert meta["schedule_toml"] == "# synthetic\n"
    assert meta["bdf_columns"] == BDF_COLUMNS
    assert list(meta["bdf_columns"]) == NAMES
    assert meta["steps"][0] == {
        "idx": 0,
        "kind": "cc",
        "current_a": 1e-4,
        "voltage_v": -0.61,
        "label": "lith",
    }
    assert meta["data_file"] == data_name
    assert meta["rows"] == 30
    assert "lithiation" in meta["conventions"]["charging"]


def test_bdf_table_capacities(tmp_path: Path) -> None:
    exp = make_run(tmp_path / "run.db")
    table, meta = bdf_table(tmp_path / "run.db")
    check_columns(table, exp)
    assert table["Step Count / 1"][-1] == 10
    assert meta["rows"] == 30


def test_csv_export(tmp_path: Path) -> None:
    exp = make_run(tmp_path / "run.db")
    out = export_bdf_csv(tmp_path / "run.db", tmp_path / "run.csv")
    assert out == tmp_path / "run.csv"
    with out.open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == NAMES
    table = {name: [float(r[i]) for r in rows[1:]] for i, name in enumerate(NAMES)}
    check_columns(table, exp)
    # integer columns are written as integers, floats round-trip exactly
    assert rows[1][3:6] == ["1", "1", "0"]
    assert float(rows[2][6]) == 1.5e-4
    side = sidecar_path(out)
    assert side == tmp_path / "run.meta.json"
    check_meta(json.loads(side.read_text()), "run.csv")
    assert not list(tmp_path.glob("*.part"))


def test_parquet_export(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    exp = make_run(tmp_path / "run.db")
    out = export_parquet(tmp_path / "run.db", tmp_path / "run.parquet")
    tbl = pq.read_table(out)
    assert tbl.column_names == NAMES
    table = {name: tbl.column(name).to_numpy() for name in NAMES}
    check_columns(table, exp)
    assert str(tbl.schema.field("Cycle Count / 1").type) == "int64"
    assert str(tbl.schema.field("Voltage / V").type) == "double"
    kv = {k.decode(): json.loads(v) for k, v in tbl.schema.metadata.items()}
    check_meta(kv, "run.parquet")


def test_empty_run(tmp_path: Path) -> None:
    with RunStore.create(tmp_path / "e.db", {"reference_offset_v": 0.62}, []):
        pass
    out = export_bdf_csv(tmp_path / "e.db", tmp_path / "e.csv")
    assert out.read_text().splitlines() == [",".join(f'"{n}"' if "," in n else n for n in NAMES)]
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["rows"] == 0 and meta["conventions"] == CONVENTIONS


def test_new_cycle_resets_same_direction(tmp_path: Path) -> None:
    """Two lithiation steps in a row belong to one half-cycle unless the cycle changes."""
    steps = [(0, "cc", 1e-5, None, "a"), (1, "cc", 1e-5, None, "b"), (2, "cc", 1e-5, None, "c")]
    samples = [
        SampleRecord(0, 0.0, 0.0, 1e-5, 1e-6, 0, 0, 0, messages.F_STEP_FIRST),
        SampleRecord(1, 1.0, 0.0, 1e-5, 2e-6, 0, 0, 0, 0),
        SampleRecord(2, 2.0, 0.0, 1e-5, 1e-6, 1, 0, 0, messages.F_STEP_FIRST),
        SampleRecord(3, 3.0, 0.0, 1e-5, 1e-6, 2, 1, 0, messages.F_STEP_FIRST),
    ]
    with RunStore.create(tmp_path / "c.db", {}, steps) as s:
        s.add(samples, [])
    table, _ = bdf_table(tmp_path / "c.db")
    np.testing.assert_allclose(table["Charging Capacity / Ah"], [1e-6, 2e-6, 3e-6, 1e-6])
    np.testing.assert_allclose(table["Discharging Capacity / Ah"], [0, 0, 0, 0])
    assert list(table["Step Count / 1"]) == [1, 1, 2, 3]
    assert list(table["Cycle Count / 1"]) == [1, 1, 1, 2]  # the board's new cycle: cycle 2


def test_schedule_metadata_flows_through(tmp_path: Path) -> None:
    sched = load_schedule(EXAMPLES / "paper-cycling.toml")
    with RunStore.create(tmp_path / "p.db", sched.metadata(), sched.step_rows()) as s:
        s.add([SampleRecord(0, 0.0, -0.2, 56.7e-6, 0.0, 1, 0, 1, messages.F_STEP_FIRST)], [])
    out = export_bdf_csv(tmp_path / "p.db", tmp_path / "p.csv")
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["schedule_toml"] == (EXAMPLES / "paper-cycling.toml").read_text()
    assert meta["reference_offset_v"] == 0.62
    assert [s["label"] for s in meta["steps"]][:2] == ["ocv", "lith"]
    with out.open() as fh:
        row = next(iter(csv.DictReader(fh)))
    assert float(row["Working Electrode Potential vs Li / V"]) == pytest.approx(0.42)


# ---- end to end: the real engine runs rc-check, the store logs it, the export reads it --------

_MP_RUNNER = r"""
import sys
_path = list(sys.path)
sys.path[:] = []
import time as _rt
sys.path[:] = _path
if "time" in sys.modules:
    del sys.modules["time"]
import binascii
import ring
RING = ring.Ring()
import world
W = world.install(world.World(world.load_config(), _rt))
import time
import engine
import frontend

fe = frontend.Frontend()
eng = engine.Engine(fe, cfg=fe.cfg["limits"], ring=RING)
eng.load(open(sys.argv[1], "rb").read())
eng.start(1)
n = 0
while eng.state == engine.ST_RUNNING and n < 100000:
    d = eng.due_in(time.ticks_ms())
    if d > 0:
        time.sleep_ms(d)
    eng.tick()
    n += 1
    while True:
        off = RING.peek_send()
        if off < 0:
            break
        typ, seq, mv = RING.record(off)
        print("R", typ, seq, binascii.hexlify(bytes(mv)).decode())
        RING.mark_sent()
    RING.ack(RING.last_seq())
fe.safe()
print("STATE", eng.state)
"""


def test_rc_check_through_the_engine(tmp_path: Path) -> None:
    """rc-check.toml compiled, run by the firmware engine on the emulated rig (rc dummy),
    records stored with RunStore and exported: every step runs and the numbers add up."""
    sched = load_schedule(EXAMPLES / "rc-check.toml")
    (tmp_path / "s.bin").write_bytes(sched.compile())
    (tmp_path / "run.py").write_text(_MP_RUNNER)
    emu, fw = stage_firmware(tmp_path / "stage", compile=False)
    cfg = tmp_path / "emu.json"
    cfg.write_text(json.dumps({"cell": "rc", "seed": 1, "quiet": True}))
    (tmp_path / "flash").mkdir()
    p = run_mp(
        tmp_path / "run.py",
        str(tmp_path / "s.bin"),
        path=[emu, fw],
        heap="2M",
        cwd=tmp_path / "flash",
        env={"SICELL_EMU_CONFIG": str(cfg)},
        text=True,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert f"STATE {messages.ST_DONE}" in p.stdout
    samples, events = [], []
    for line in p.stdout.splitlines():
        if not line.startswith("R "):
            continue
        _, typ, seq, hx = line.split()
        pay = binascii.unhexlify(hx)
        if int(typ) == messages.SAMPLE:
            samples.append(SampleRecord.from_wire(int(seq), messages.unpack(messages.SAMPLE, pay)))
        else:
            fields = messages.unpack(messages.EVENT, pay[: messages.size(messages.EVENT)])
            events.append(EventRecord.from_wire(int(seq), fields))
    db = tmp_path / "rc.db"
    with RunStore.create(db, sched.metadata(), sched.step_rows()) as s:
        s.add(samples, events)
        s.add(samples[:50], events[:5])  # a replay changes nothing
        assert s.count() == (len(samples), len(events))
        assert s.missing_seqs() == []
    table, meta = bdf_table(db)
    steps = table["Step Index / 1"]
    assert sorted(set(steps.tolist())) == [0, 1, 2, 3, 4, 5, 6, 7]  # every step but the loop ran
    assert table["Step Count / 1"][-1] == 1 + 2 * 7  # settle, then two passes of 7 steps
    t_end = float(table["Test Time / s"][-1])
    assert 150 < t_end < 400  # "a few minutes"
    # CC+ for 30 s at 100 µA → 0.83 µAh of lithiation; the -100 µA step ends at +0.1 V
    cc_plus = steps == 1
    q_cc = table["Charging Capacity / Ah"][cc_plus].max()
    assert q_cc == pytest.approx(100e-6 * 30 / 3600, rel=0.05)
    cutoffs = [e for e in events if e.name == "cutoff"]
    assert len(cutoffs) == 2 and all(e.step == 3 for e in cutoffs)
    assert all(abs(e.value - 100_000) <= 5_000 for e in cutoffs)
    assert [e.name for e in events][-1] == "run_end"
    assert meta["rows"] == len(samples)
