"""Every view tells the same story: the live display, the run summary, the CSV and Parquet
exports, the report and the analysis give the same cycles and half-cycle capacities, and those
are the board's own coulomb count (``sicell.cyclemodel``).

* ``test_all_views_agree``: one run of the real engine and front end on the emulated rc rig
  (tests/mp/emu_views.py, virtual time) with a 20 s pause, a host-loss hold, a watchdog reset,
  a safety trip and a CV step whose current crosses zero; the records go through RunStore, then
  through every view.
* ``test_pause_in_film_quick``: issue 11's acceptance check through the whole system
  (RunSession → emu://thin-porous → SQLite): ``film-quick.toml`` with a PAUSE in the first
  lithiation and RESUME 20 s (wall clock) later; every half-cycle's capacity in every view is
  the board's count.

The expected numbers come from the board's events (EV_STEP_END carries each step's charge;
a step cut short by a reset ends with its last sample), grouped by the schedule's steps.
"""

from __future__ import annotations

import binascii
import csv
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sicell import analysis as an
from sicell.emulator import launcher
from sicell.emulator.launcher import stage_firmware
from sicell.export import bdf_table, export_bdf_csv, export_parquet
from sicell.progress import Progress, fmt_capacity
from sicell.protocol import messages as M
from sicell.replies import payload_fields
from sicell.report import write_report
from sicell.rundata import RunData, load_run
from sicell.schedule import Schedule, load_schedule, parse_schedule
from sicell.session import RunSession, SessionOptions
from sicell.session.seqbook import SeqBook
from sicell.session.summary import LiveView, cycle_capacities, summarize
from sicell.store import EventRecord, RunStore, SampleRecord

from tests.mputil import MP_DIR, needs_mp, run_mp

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "host" / "sicell" / "examples"

# The rc rig (250 Ω + 1 mF ∥ 1 kΩ): rests, CC both ways, a CC–CV, a CV to 0 V (its current
# swings through zero), an OCV, a CC the host-loss hold interrupts, a CC a reset interrupts,
# and a 2 mA CC that trips the −1 V safety limit. emu_views.py pauses step 1, holds step 7,
# resets the board in step 8.
VIEWS_TOML = """
name = "views"
vs = "cell"
[cell]
name = "rc"
[reference]
electrode = "none"
offset_v = 0.0
[safety]
v_min = -1.0
v_max = 1.0
i_max_ma = 5.0
debounce_s = 0.1
[recording]
dt_s = 1
dv_mv = 5
[control]
tick_ms = 50
slow_tick_ms = 200
host_loss = "hold"
[[step]]
kind = "rest"
duration_s = 5
[[step]]
kind = "cc"
direction = "lithiation"
current_ua = 100
duration_s = 30
[[step]]
kind = "rest"
duration_s = 10
[[step]]
kind = "cc"
direction = "delithiation"
current_ua = 100
until_v = 0.1
duration_s = 30
[[step]]
kind = "cccv"
direction = "lithiation"
current_ua = 200
hold_v = -0.2
until_current_ua = 180
duration_s = 30
record = { dt_s = 0.5, dv_mv = 5, di_ua = 5 }
[[step]]
kind = "cv"
hold_v = 0.0
duration_s = 20
record = { dt_s = 0.5, di_ua = 20 }
[[step]]
kind = "ocv"
duration_s = 5
[[step]]
kind = "cc"
direction = "lithiation"
current_ua = 100
duration_s = 60
record = { dt_s = 0.1 }
[[step]]
kind = "cc"
direction = "delithiation"
current_ua = 100
duration_s = 30
[[step]]
kind = "cc"
direction = "lithiation"
current_ma = 2
duration_s = 30
"""


# ---- the board's own count, from its events ----------------------------------------------------
@dataclass
class Expected:
    """A half-cycle as the board's records tell it: cycle, kind, charge (Ah), and the index
    of the last sample of its last step (where every view shows its final value)."""

    cycle: int
    kind: str
    board_ah: float
    last_sample: int
    complete: bool


def expected_half_cycles(run: RunData) -> list[Expected]:
    """Each step execution's charge (EV_STEP_END's aux; for one cut short by a reset, its last
    sample), grouped by the schedule: a step's direction is the sign of its set current (a CV
    step: of its charge); steps without a direction between two of one direction join them."""
    execs: list[tuple[int, float, int, bool]] = []  # step, charge Ah, last sample index, normal
    recs = sorted(
        [(int(s), "S", k) for k, s in enumerate(run.seq.tolist())]
        + [(e.seq, "E", e) for e in run.events]
    )
    cur: dict[str, Any] | None = None
    for _, what, x in recs:
        if what == "S":
            k = int(x)  # type: ignore[arg-type]
            if cur is not None:
                cur["last"] = k
            continue
        e: EventRecord = x  # type: ignore[assignment]
        if e.code == M.EV_STEP_START:
            cur = {"step": e.step, "last": -1}
        elif e.code == M.EV_STEP_END and cur is not None:
            # a step ends normally unless a trip/fault (SE_ABORT) or a stop (SE_HOST) cut it
            normal = e.reason not in (M.SE_ABORT, M.SE_HOST)
            execs.append((cur["step"], e.aux * 1e-9, cur["last"], normal))
            cur = None
        elif e.code == M.EV_INTERRUPTED and cur is not None and cur["last"] >= 0:
            k = cur["last"]
            execs.append((cur["step"], float(run.charge_ah[k]), k, False))
            cur = None
    out: list[Expected] = []
    n_lith = 0
    for step, q, last, normal in execs:
        sd = run.steps[step]
        if sd.kind in ("rest", "ocv", "loop"):
            continue
        if sd.kind in ("cc", "cccv"):
            d = 1 if (sd.current_a or 0) > 0 else -1
        else:
            d = 1 if q > 0 else -1 if q < 0 else 0
        if d == 0:
            continue
        kind = "lith" if d > 0 else "delith"
        if out and out[-1].kind == kind:
            out[-1].board_ah += d * q
            out[-1].last_sample = last
            out[-1].complete = normal
            continue
        n_lith += d > 0
        out.append(Expected(n_lith, kind, d * q, last, normal))
    return out


# ---- every view ---------------------------------------------------------------------------------
def live_values(rows: list[Any], fields: list[dict[str, int]], kinds_only: bool) -> list[Any]:
    """(cycle, half-cycle Ah) the live display shows after each sample."""
    live = LiveView("b")
    if kinds_only:  # what RunSession gives it today: the step kinds
        live.step_kinds = [str(r[1]) for r in rows]
    else:
        live.set_steps(rows)
    out = []
    for f in fields:
        live.add_sample(f)
        p: Progress = live.snapshot(samples=0, events=0, last_seq=0, state=M.ST_RUNNING)
        out.append((p.cycle, p.half_cycle_ah))
    return out


def wire_fields(run: RunData) -> list[dict[str, int]]:
    """The stored samples as the SAMPLE fields the live display is fed."""
    out = []
    for k in range(len(run)):
        t_ms = round(float(run.t_s[k]) * 1000)
        out.append(
            {
                "t_s": t_ms // 1000,
                "t_ms": t_ms % 1000,
                "v_uv": round(float(run.voltage_v[k]) * 1e6),
                "i_na": round(float(run.current_a[k]) * 1e9),
                "q_nah": round(float(run.charge_ah[k]) * 1e9),
                "step": int(run.step[k]),
                "cycle": int(run.cycle[k]),
                "range": int(run.range_idx[k]),
                "flags": int(run.flags[k]),
            }
        )
    return out


def check_all_views(
    db: Path,
    rows: list[Any],
    tmp: Path,
    fields: list[dict[str, int]] | None = None,
    session_live: LiveView | None = None,
) -> dict[str, Any]:
    """Assert that every view gives the board's half-cycle capacities and cycle numbers; return
    the numbers per view for the test's output."""
    run = load_run(db)
    exp = expected_half_cycles(run)
    assert exp, "no half-cycle in the run"
    want = [(e.cycle, e.kind, e.board_ah) for e in exp]
    seen: dict[str, Any] = {"board": want}

    def same(name: str, got: list[tuple[int, str, float]]) -> None:
        seen[name] = got
        assert [g[:2] for g in got] == [w[:2] for w in want], name
        for g, w in zip(got, want, strict=True):
            assert g[2] == pytest.approx(w[2], rel=1e-12, abs=1e-15), (name, g, w)

    # analysis: the half-cycles
    hcs = an.half_cycles(run)
    same("analysis half-cycles", [(h.cycle, h.kind, h.capacity_ah) for h in hcs])
    assert [h.complete for h in hcs] == [e.complete for e in exp]
    # live display (fed sample by sample, with the step table and with the kinds only)
    fields = fields if fields is not None else wire_fields(run)
    for kinds_only in (False, True):
        vals = live_values(rows, fields, kinds_only)
        got = [(vals[e.last_sample][0], e.kind, vals[e.last_sample][1]) for e in exp]
        same(f"live ({'kinds' if kinds_only else 'steps'})", got)
    if session_live is not None:  # the session's own live view at the end of the run
        last = exp[-1]
        assert session_live.tracker.cycle == last.cycle
        assert session_live.tracker.capacity_ah == pytest.approx(last.board_ah, rel=1e-12)
    # exports: CSV and Parquet, at each half-cycle's last sample
    table, _ = bdf_table(db)
    csv_path = export_bdf_csv(db, tmp / "run.csv")
    with csv_path.open(newline="") as fh:
        csv_rows = list(csv.DictReader(fh))
    cols = {"lith": "Charging Capacity / Ah", "delith": "Discharging Capacity / Ah"}
    for name, col in (
        ("export table", lambda k, c: table[c][k]),
        ("CSV", lambda k, c: float(csv_rows[k][c])),
    ):
        got = [
            (
                int(col(e.last_sample, "Cycle Count / 1")),
                e.kind,
                float(col(e.last_sample, cols[e.kind])),
            )
            for e in exp
        ]
        same(name, got)
    try:
        import pyarrow.parquet as pq
    except ImportError:  # an optional extra: the CSV stands in for it
        pq = None
    if pq is not None:
        tbl = pq.read_table(export_parquet(db, tmp / "run.parquet"))
        pcols = {c: tbl.column(c).to_numpy() for c in ("Cycle Count / 1", *cols.values())}
        got = [
            (
                int(pcols["Cycle Count / 1"][e.last_sample]),
                e.kind,
                float(pcols[cols[e.kind]][e.last_sample]),
            )
            for e in exp
        ]
        same("Parquet", got)
    # energies: the export's per-sample energy at each half-cycle's last sample is the
    # analysis's ∫ V dQ of that half-cycle (one rule, analysis.halfcycles.energy_curve)
    ecols = {"lith": "Charging Energy / Wh", "delith": "Discharging Energy / Wh"}
    for h in hcs:
        k = int(h.idx[-1]) if h.idx.size else None
        if k is None:
            continue
        want_wh = h.energy_cell_wh
        assert table[ecols[h.kind]][k] == pytest.approx(want_wh, rel=1e-9, abs=1e-15), h.number
        assert float(csv_rows[k][ecols[h.kind]]) == pytest.approx(want_wh, rel=1e-9, abs=1e-15)
    # cycle numbers: 0 before the first lithiation, then the half-cycle's cycle on its samples
    cyc = np.asarray(table["Cycle Count / 1"])
    for h in hcs:
        assert set(cyc[h.idx].tolist()) == {h.cycle}
    first_lith = next(h for h in hcs if h.kind == "lith")
    assert set(cyc[: int(first_lith.idx[0])].tolist()) <= {0}
    # complete cycles: analysis cycle table, run summary, report's CSV
    complete = {}
    for c in sorted({e.cycle for e in exp}):
        parts = [e for e in exp if e.cycle == c]
        kinds = {e.kind for e in parts}
        if c >= 1 and kinds == {"lith", "delith"} and all(e.complete for e in parts):
            complete[c] = (
                sum(e.board_ah for e in parts if e.kind == "lith"),
                sum(e.board_ah for e in parts if e.kind == "delith"),
            )
    seen["complete cycles"] = complete

    def cycles_same(name: str, got: dict[int, tuple[float, float]]) -> None:
        seen[name] = got
        assert sorted(got) == sorted(complete), name
        for c, (li, de) in got.items():
            assert li == pytest.approx(complete[c][0], rel=1e-12), (name, c)
            assert de == pytest.approx(complete[c][1], rel=1e-12), (name, c)

    t = an.cycle_table(run)
    cycles_same("cycle table", {r.cycle: (r.lith_mah / 1e3, r.delith_mah / 1e3) for r in t.rows})
    caps, err = cycle_capacities(db)
    assert err is None
    cycles_same("summary", {c.cycle: (c.lith_ah or 0.0, c.delith_ah or 0.0) for c in caps})
    live = LiveView("b")
    live.set_steps(rows)
    for f in fields:
        live.add_sample(f)
    summary = summarize(
        db,
        "b",
        1,
        SeqBook(1, time.monotonic()),
        live,
        end_reason=None,
        samples=len(run),
        events=len(run.events),
        reconnects=0,
        framing_errors=0,
    )
    text = "\n".join(summary.lines())
    for c, (li, de) in complete.items():
        line = f"cycle {c}: lithiation {fmt_capacity(li)}, delithiation {fmt_capacity(de)}"
        assert line in text, text
    out = tmp / "report"
    html = write_report([db], out).read_text(encoding="utf-8")
    (rep_csv,) = out.glob("*_cycles.csv")
    with rep_csv.open(newline="") as fh:
        rep = {
            int(r["cycle"]): (float(r["lith_mAh"]) / 1e3, float(r["delith_mAh"]) / 1e3)
            for r in csv.DictReader(fh)
        }
    cycles_same("report", rep)
    # the report says where the samples' integral and the board's count part, and where the
    # integral was not taken
    assert ("differs from the board's coulomb count" in html) == bool(t.discrepancies)
    assert ("Stretches not integrated across" in html) == bool(t.skipped)
    return seen


# ---- one run with everything ------------------------------------------------------------------
@pytest.fixture(scope="module")
def views_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Schedule, list[Any]]:
    tmp = tmp_path_factory.mktemp("views")
    sched = parse_schedule(VIEWS_TOML)
    (tmp / "s.bin").write_bytes(sched.compile())
    emu, fw = stage_firmware(tmp / "stage", compile=False)
    cfg = tmp / "emu.json"
    cfg.write_text(json.dumps({"cell": "rc", "seed": 1, "quiet": True}))
    (tmp / "flash").mkdir()
    p = run_mp(
        MP_DIR / "emu_views.py",
        str(tmp / "s.bin"),
        path=[emu, fw],
        heap="2M",
        cwd=tmp / "flash",
        env={"SICELL_EMU_CONFIG": str(cfg)},
        text=True,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert f"STATE {M.ST_TRIPPED}" in p.stdout
    samples, events, fields = [], [], []
    for line in p.stdout.splitlines():
        if not line.startswith("R "):
            continue
        _, typ, seq, hx = line.split()
        pay = binascii.unhexlify(hx)
        if int(typ) == M.SAMPLE:
            samples.append(SampleRecord.from_wire(int(seq), M.unpack(M.SAMPLE, pay)))
            fields.append(payload_fields(M.SAMPLE, pay))
        else:
            f = M.unpack(M.EVENT, pay[: M.size(M.EVENT)])
            events.append(EventRecord.from_wire(int(seq), f))
    db = tmp / "views.db"
    with RunStore.create(db, sched.metadata(), sched.step_rows()) as s:
        s.add(samples, events)
    return db, sched, fields


@needs_mp
def test_the_run_has_every_case(views_run: tuple[Path, Schedule, list[Any]]) -> None:
    """The board recorded what the views are tested on: relay-open boundaries at 0 A around
    the pause and the hold with the step charge unchanged, a reset, a trip, a CV whose current
    crosses zero."""
    db, _, _ = views_run
    run = load_run(db)
    names = [e.name for e in run.events]
    for n in ("paused", "resumed", "host_loss", "interrupted", "safety_trip"):
        assert n in names
    op = (run.flags & M.F_OPEN) != 0
    for step in (1, 7):  # the paused step and the held step
        k = np.flatnonzero(op & (run.step == step))
        assert len(k) == 2, step
        assert np.all(run.current_a[k] == 0.0)
        assert run.charge_ah[k[0]] == run.charge_ah[k[1]]
    cv = run.current_a[run.step == 5]
    assert (cv > 1e-9).any() and (cv < -1e-9).any()  # a CV through zero current
    after_trip = np.flatnonzero(
        run.seq > next(e.seq for e in run.events if e.name == "safety_trip")
    )
    assert after_trip.size and np.all(op[after_trip]) and np.all(run.current_a[after_trip] == 0)


@needs_mp
def test_all_views_agree(views_run: tuple[Path, Schedule, list[Any]], tmp_path: Path) -> None:
    db, sched, fields = views_run
    seen = check_all_views(db, sched.step_rows(), tmp_path, fields=fields)
    for k, v in seen.items():
        print(k, v)
    # what that run is: cycles 1-3 complete, cycle 4's lithiation cut by the trip; the CV to
    # 0 V is one delithiation (not a cycle of its own per current sign change)
    assert [(c, k) for c, k, _ in seen["board"]] == [
        (1, "lith"),
        (1, "delith"),
        (2, "lith"),
        (2, "delith"),
        (3, "lith"),
        (3, "delith"),
        (4, "lith"),
    ]
    assert sorted(seen["complete cycles"]) == [1, 2, 3]
    # nothing integrated across the relay-open stretches or the reset, and said where
    t = an.cycle_table(load_run(db))
    why = {(s.cycle, s.kind, s.reason): s.duration_s for s in t.skipped}
    assert why[(1, "lith", "relay open")] == pytest.approx(20.0, abs=0.1)  # the pause
    assert why[(3, "lith", "relay open")] >= 10.0  # the hold
    assert (3, "delith", "board reset") in why
    # the samples' integral agrees with the board where nothing was lost (within 0.1 % / 2 nAh)
    assert {(d.cycle, d.kind) for d in t.discrepancies} <= {(3, "delith")}


# ---- the acceptance check: a 20 s pause in film-quick's first lithiation ------------------------
class PauseOnce:
    """A display that pauses the run once ``after_s`` of test time into step ``step`` and
    resumes it ``pause_s`` of wall-clock time later, from the session's own thread."""

    def __init__(self, step: int, after_s: float, pause_s: float) -> None:
        self.step, self.after_s, self.pause_s = step, after_s, pause_s
        self.session: RunSession | None = None
        self.paused_wall: float | None = None
        self.resumed = False
        self.last: Progress | None = None

    def update(self, p: Progress) -> None:
        self.last = p
        s = self.session
        if s is None or s.board is None or self.resumed:
            return
        if self.paused_wall is None:
            if p.step == self.step and (p.elapsed_s or 0.0) >= self.after_s:
                s.board.pause()
                self.paused_wall = time.monotonic()
        elif time.monotonic() - self.paused_wall >= self.pause_s:
            s.board.resume()
            self.resumed = True

    def note(self, board: str, text: str) -> None:
        pass

    def __enter__(self) -> PauseOnce:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


@pytest.fixture
def film_board(tmp_path: Path, rt: Path) -> Any:
    board = f"acc-{os.getpid()}-{tmp_path.name[-12:]}"
    yield f"emu://thin-porous?board={board}&linger=5"
    info = launcher.find_emulator(board, rt)
    if info is not None:
        launcher.EmulatorHandle(info).shutdown(timeout=10)


@pytest.mark.slow
@needs_mp
def test_pause_in_film_quick(tmp_path: Path, film_board: str) -> None:
    sched = load_schedule(EXAMPLES / "film-quick.toml")
    db = tmp_path / "film.db"
    steer = PauseOnce(step=1, after_s=3600.0, pause_s=20.0)
    s = RunSession.new(sched, film_board, db, display=steer, options=SessionOptions())
    steer.session = s
    summary = s.run()
    assert steer.resumed and summary.state == "done", summary.lines()
    run = load_run(db)
    k = np.flatnonzero(((run.flags & M.F_OPEN) != 0) & (run.step == 1))
    assert len(k) == 2 and np.all(run.current_a[k] == 0.0)
    assert run.charge_ah[k[0]] == run.charge_ah[k[1]]
    paused_s = float(run.t_s[k[1]] - run.t_s[k[0]])
    seen = check_all_views(db, sched.step_rows(), tmp_path, session_live=s.live)
    print(f"pause: 20 s wall, {paused_s:.0f} s of board time")
    for name, v in seen.items():
        print(name, v)
    # within 0.2 % of the board's count: every view is exactly it (checked above); the first
    # lithiation is what an unpaused run gives (~0.42 mAh), not the current held over the pause
    exp = expected_half_cycles(run)
    assert [(e.cycle, e.kind) for e in exp] == [
        (c, k) for c in (1, 2, 3) for k in ("lith", "delith")
    ]
    assert 0.38e-3 < exp[0].board_ah < 0.46e-3
    t = an.cycle_table(run)
    assert not t.discrepancies, [d.text() for d in t.discrepancies]
    assert [s.reason for s in t.skipped] == ["relay open"]
    for r in t.rows:
        assert r.lith_integral_mah == pytest.approx(r.lith_mah, rel=2e-3)
        assert r.delith_integral_mah == pytest.approx(r.delith_mah, rel=2e-3)
