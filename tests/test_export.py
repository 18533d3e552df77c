"""BDF export: columns, per-half-cycle capacities, metadata alongside, CSV and Parquet."""

from __future__ import annotations

import binascii
import csv
import json
import math
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sicell.bdftable import (
    COMPUTED_DIGITS,
    computed_string,
    decimal_strings,
    round_computed,
    scaled,
)
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
    "Unix Time / s",
    "Voltage / V",
    "Current / A",
    "Cycle Count / 1",
    "Step Count / 1",
    "Step Index / 1",
    "Step Capacity / Ah",
    "Charging Capacity / Ah",
    "Discharging Capacity / Ah",
    "Charging Energy / Wh",
    "Discharging Energy / Wh",
    "Internal Resistance / ohm",
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
# per step: (charge at the end of the step in Ah, points); every value on the 1 nAh grid
PLAN = [(0, 3e-4, 4), (1, 6e-5, 3), (2, 0.0, 2), (3, -3.2e-4, 4), (4, 0.0, 2)]


def make_run(
    path: Path, cycles: int = 2, extra_meta: dict[str, Any] | None = None
) -> dict[str, list[Any]]:
    """Write a synthetic run; return the expected export columns."""
    exp: dict[str, list[Any]] = {k: [] for k in NAMES}
    samples: list[SampleRecord] = []
    seq = 0
    t = 0.0
    count = 0
    energy = {"chg": 0.0, "dis": 0.0}
    prev_q = prev_v = 0.0
    v_prev = i_prev = 0.0
    for cyc in range(cycles):
        chg_acc = 0.0
        for idx, q_end, npts in PLAN:
            count += 1
            if idx == 0:
                energy["chg"] = 0.0
            if idx == 3:
                energy["dis"] = 0.0
            for k in range(npts):
                q = q_end * (k + 1) / npts
                cur = {0: 1e-4, 1: 1e-5 / 2**k, 3: -1e-4}.get(idx, 0.0)  # on the 1 nA grid
                v = -0.3 + 0.01 * k + 0.1 * idx
                flags = messages.F_STEP_FIRST if k == 0 else 0
                if k == 0 and seq > 0 and idx in (0, 3):
                    t -= 9.0  # current on 1 s after the rest's last sample: a usable interrupt
                samples.append(SampleRecord(seq, t, v, cur, q, idx, cyc, 1, flags))
                exp["Test Time / s"].append(t)
                exp["Unix Time / s"].append(math.nan)  # the run recorded no start time
                exp["Voltage / V"].append(v)
                exp["Current / A"].append(cur)
                exp["Cycle Count / 1"].append(cyc + 1)  # the first lithiation is cycle 1
                exp["Step Count / 1"].append(count)
                exp["Step Index / 1"].append(idx)
                exp["Step Capacity / Ah"].append(q)
                exp["Working Electrode Potential vs Li / V"].append(v + 0.62)
                # energy: ∫ V dQ of the board's count per half-cycle: V times the step's
                # first charge, then trapezoids between the step's samples
                dq = q if k == 0 else q - prev_q
                v_mean = v if k == 0 else 0.5 * (v + prev_v)
                if idx in (0, 1):
                    energy["chg"] += v_mean * dq
                if idx == 3:
                    energy["dis"] -= v_mean * dq
                prev_q, prev_v = q, v
                exp["Charging Energy / Wh"].append(energy["chg"] if idx in (0, 1, 2) else 0.0)
                exp["Discharging Energy / Wh"].append(energy["dis"] if idx in (3, 4) else 0.0)
                # current interrupt at the first sample after a rest: R = -ΔV/ΔI
                r = math.nan
                if k == 0 and seq > 0 and idx in (0, 3):
                    r = -(v - v_prev) / (cur - i_prev)
                exp["Internal Resistance / ohm"].append(r)
                v_prev, i_prev = v, cur
                if idx == 0:
                    c, d = q, 0.0
                elif idx == 1:
                    c, d = 3e-4 + q, 0.0
                elif idx == 2:
                    c, d = 3.6e-4, 0.0
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
        **(extra_meta or {}),
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
        if name in ("Internal Resistance / ohm", "Charging Energy / Wh", "Discharging Energy / Wh"):
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-18, err_msg=name)
        else:
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
    assert "sign of the cell voltage" in meta["energy_convention"]
    assert set(meta["number_format"]) == {"csv", "parquet"}


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
    table = {name: [float(r[i] or math.nan) for r in rows[1:]] for i, name in enumerate(NAMES)}
    check_columns(table, exp)
    # integer columns are written as integers, values as exact decimals
    first = dict(zip(NAMES, rows[1], strict=True))
    assert [first[c] for c in ("Cycle Count / 1", "Step Count / 1", "Step Index / 1")] == [
        "1",
        "1",
        "0",
    ]
    assert rows[2][NAMES.index("Charging Capacity / Ah")] == "0.00015"
    assert first["Unix Time / s"] == "" and first["Internal Resistance / ohm"] == ""
    assert [r[NAMES.index("Internal Resistance / ohm")] for r in rows[1:] if r[12]] == [
        "900",
        "4100",
        "900",
    ]
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
    assert tbl.column("Unix Time / s").null_count == 30
    assert tbl.column("Internal Resistance / ohm").null_count == 27
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


# ---- exact numbers, wall-clock time, energies, the BDF validator ------------------------------


def test_exact_decimals_from_the_board_integers(tmp_path: Path) -> None:
    """The board's integers come out as exact decimals (CSV) and as the doubles that print as
    those decimals (Parquet), although the database holds floats with noise."""
    rec = SampleRecord.from_wire(
        0, (12, 345, 1_380_438, 123_456, 987_654_321, 0, 0, 1, messages.F_STEP_FIRST)
    )
    assert repr(rec.voltage_v) == "1.3804379999999998"  # what the database holds
    db = tmp_path / "x.db"
    meta = {"reference_offset_v": 0.62, "start_unix_ms": 1_700_000_000_001}
    with RunStore.create(db, meta, [(0, "cc", 1e-4, None, "lith")]) as s:
        s.add([rec], [])
    out = export_bdf_csv(db, tmp_path / "x.csv")
    text = out.read_text()
    assert "1.3804379999999998" not in text and "99999" not in text
    row = next(csv.DictReader(text.splitlines()))
    want = {
        "Test Time / s": "12.345",
        "Unix Time / s": "1700000012.346",
        "Voltage / V": "1.380438",
        "Current / A": "0.000123456",
        "Step Capacity / Ah": "0.987654321",
        "Charging Capacity / Ah": "0.987654321",
        "Discharging Capacity / Ah": "0",
        "Working Electrode Potential vs Li / V": "2.000438",
    }
    assert {k: row[k] for k in want} == want
    pq = pytest.importorskip("pyarrow.parquet")
    tbl = pq.read_table(export_parquet(db, tmp_path / "x.parquet"))
    for name, cell in want.items():
        (x,) = tbl.column(name).to_pylist()
        assert repr(x) == cell or Decimal(repr(x)) == Decimal(cell), name


@settings(max_examples=300, deadline=None)
@given(st.integers(-(10**15), 10**15), st.sampled_from([3, 6, 9]))
def test_decimal_strings_are_exact(n: int, decimals: int) -> None:
    (text,) = decimal_strings(np.array([n], dtype=np.int64), decimals)
    assert Decimal(text) == Decimal(n).scaleb(-decimals)
    assert "e" not in text.lower() and not ("." in text and text.endswith("0"))
    x = float(scaled(np.array([n], dtype=np.int64), decimals)[0])
    assert float(text) == x and Decimal(repr(x)) == Decimal(text)


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))
def test_computed_strings_round_to_the_stated_digits(x: float) -> None:
    text = computed_string(x)
    assert "e" not in text.lower()
    assert Decimal(text) == Decimal(format(x, f".{COMPUTED_DIGITS}g"))
    assert float(text) == round_computed(x)
    assert computed_string(math.nan) == ""


@pytest.mark.parametrize(
    ("meta", "first", "source"),
    [
        ({"start_unix_ms": 1_718_000_000_123, "start_unix_uncertainty_ms": 4}, "1718000000.123",
         "start_unix_ms"),
        ({"started_at": "2024-06-10T06:13:20+00:00"}, "1718000000", "started_at"),
    ],
)  # fmt: skip
def test_unix_time(tmp_path: Path, meta: dict[str, Any], first: str, source: str) -> None:
    make_run(tmp_path / "run.db", extra_meta=meta)
    out = export_bdf_csv(tmp_path / "run.db", tmp_path / "run.csv")
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows[0]["Unix Time / s"] == first
    t0 = Decimal(first)
    for r in rows:
        assert Decimal(r["Unix Time / s"]) == t0 + Decimal(r["Test Time / s"])
    origin = json.loads(sidecar_path(out).read_text())["unix_time_origin"]
    assert origin["source"].startswith(source)
    assert origin["uncertainty_s"] == (0.004 if source == "start_unix_ms" else 1.0)


def _one_step_run(path: Path, samples: list[SampleRecord], events: list[EventRecord]) -> None:
    with RunStore.create(path, {}, [(0, "cc", 1e-4, None, "lith")]) as s:
        s.add(samples, events)


def test_energy_never_across_a_pause(tmp_path: Path) -> None:
    """Charging Energy is ∫ V dQ over the board's count: the counter stands still while the
    relay is open, relay-open samples (at the open-circuit potential) are not integrated and
    hold the energy before them; at a constant V the energy is V times the board's capacity,
    also when a pause is known only from its events."""
    first, opened = messages.F_STEP_FIRST, messages.F_OPEN
    v_cc, i_cc = 0.5, 1e-4

    def smp(seq: int, t: float, pause: tuple[float, float], flags: int = 0) -> SampleRecord:
        counted = min(t, pause[0]) + max(0.0, t - pause[1])  # seconds under current
        i, v = (0.0, 0.7) if flags & opened else (i_cc, v_cc)
        return SampleRecord(seq, t, v, i, i_cc * counted / 3600.0, 0, 0, 1, flags)

    with_samples = tmp_path / "open.db"
    pz = (20.0, 500.0)
    _one_step_run(
        with_samples,
        [smp(0, 0, pz, first), smp(1, 10, pz), smp(2, 20, pz, opened), smp(3, 500, pz, opened),
         smp(4, 510, pz), smp(5, 520, pz)],
        [],
    )  # fmt: skip
    table, _ = bdf_table(with_samples)
    energy = table["Charging Energy / Wh"]
    assert energy[-1] == pytest.approx(v_cc * i_cc * 40 / 3600, rel=1e-9)  # 40 s under current
    assert energy[3] == energy[2] == energy[1] == pytest.approx(v_cc * i_cc * 10 / 3600)
    assert list(table["Discharging Energy / Wh"]) == [0.0] * 6

    events_only = tmp_path / "events.db"
    pz = (12.0, 500.0)
    pause = EventRecord(2, 12.0, messages.EV_PAUSED, "paused", 0, 0, 0, 0, 0)
    resume = EventRecord(3, 500.0, messages.EV_RESUMED, "resumed", 0, 0, 0, 0, 0)
    _one_step_run(
        events_only,
        [smp(0, 0, pz, first), smp(1, 10, pz), smp(4, 510, pz), smp(5, 520, pz)],
        [pause, resume],
    )  # fmt: skip
    table, _ = bdf_table(events_only)
    q_end = table["Charging Capacity / Ah"][-1]
    assert q_end == pytest.approx(i_cc * 32 / 3600, abs=1e-9)  # (on the board's 1 nAh grid)
    assert table["Charging Energy / Wh"][-1] == pytest.approx(v_cc * q_end, rel=1e-3)


def _bdf_validate(path: Path) -> dict[str, Any]:
    """``bdf validate --strict --json PATH`` of the BDF project's package (batterydf)."""
    pytest.importorskip("bdf")
    exe = Path(sys.executable).parent / "bdf"
    if not exe.exists():
        pytest.skip("the batterydf package's `bdf` command is not installed")
    p = subprocess.run(
        [str(exe), "validate", "--strict", "--json", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    report: dict[str, Any] = json.loads(p.stdout)
    return report


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_bdf_validator_accepts_the_export(tmp_path: Path, fmt: str) -> None:
    """The BDF project's own validator passes both formats; only the potential vs Li is
    flagged as a column BDF does not define."""
    make_run(tmp_path / "run.db", extra_meta={"start_unix_ms": 1_718_000_000_123})
    out = tmp_path / f"run.bdf.{fmt}"
    if fmt == "csv":
        export_bdf_csv(tmp_path / "run.db", out)
    else:
        pytest.importorskip("pyarrow")
        export_parquet(tmp_path / "run.db", out)
    report = _bdf_validate(out)
    assert report["ok"] is True and report["missing"] == []
    assert report["extras"] == ["Working Electrode Potential vs Li / V"]
    assert report["n_rows"] == 30 and report["n_cols"] == len(NAMES)
    assert report["time_stats"]["monotonic"] is True
    assert set(NAMES) - set(report["extras"]) <= set(report["required"]) | set(report["optional"])


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
