"""Figures and the report say what they draw (issue 11): integer cycle ticks, a CE axis that
holds cycle 1, one distinguishable legend entry per run inside the figure, captions naming the
cycles present, "vs Li" only with a reference electrode, one peak source for the dQ/dV table
and its markers, units on every column, IR-free curves with their R; and a report that fails
leaves nothing behind."""

from __future__ import annotations

import errno
import re
import sqlite3
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from sicell import analysis as an
from sicell import plots, report
from sicell.errors import StoreSchemaError, UsageError
from sicell.rundata import RunData, load_run

from tests.synth_run import AREA_CM2, CycleSpec, build_run, fade_cycles, write_synthetic_run

LONG_NAME = "porous thin a-Si film (0.21 mg/cm2, 1.55 um), emulated 'thin-porous'"
NO_REF = {"cell": "rc", "reference_electrode": "none", "reference_offset_v": 0.0}


def first_ce(n: int, ce1: float, meta: dict[str, Any] | None = None) -> RunData:
    """n cycles with CE 99.5 % after a first cycle of CE ``ce1``."""
    specs = fade_cycles(n, fade_per_cycle=0.002, ce=0.995)
    specs[0].lith_ah = specs[0].delith_ah / ce1
    return build_run(specs, points_per_step=60, rest_points=3, meta=meta)


def draw(fig: Figure) -> Any:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def ticks_in_view(ax: Any) -> list[float]:
    lo, hi = ax.get_xlim()
    return [float(t) for t in ax.get_xticks() if lo <= t <= hi]


# ---- capacity / CE -------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 3, 7, 40])
def test_cycle_ticks_are_integers(n: int) -> None:
    fig = plots.plot_capacity_ce([first_ce(n, 0.89)])
    draw(fig)
    for ax in fig.axes[:2]:
        ticks = ticks_in_view(ax)
        assert ticks and all(t == int(t) for t in ticks), ticks
    labels = [t.get_text() for t in fig.axes[1].get_xticklabels() if t.get_text()]
    assert labels and all(re.fullmatch(r"[−-]?\d+", s) for s in labels), labels


def test_ce_axis_holds_the_first_cycle() -> None:
    runs = [first_ce(40, 0.89), first_ce(40, 0.80, meta={"cell": "other"})]
    tables = [an.cycle_table(r) for r in runs]
    fig = plots.plot_capacity_ce(runs, tables=tables)
    lo, hi = fig.axes[1].get_ylim()
    ces = np.concatenate([100.0 * t.column("ce") for t in tables])
    assert ces.min() == pytest.approx(80.0)
    assert lo < ces.min() and hi > max(100.0, ces.max())
    # every CE point is drawn inside the axis
    for line in fig.axes[1].lines:
        y = np.asarray(line.get_ydata(), dtype=float)
        if y.size > 1:
            assert np.all((y > lo) & (y < hi))
    # and the capacities, the first lithiation (the largest) included
    c_lo, c_hi = fig.axes[0].get_ylim()
    assert c_lo == 0.0 and c_hi > max(t.column("lith_mah_g").max() for t in tables)


def same_cell_runs(tmp_path: Path, metas: list[dict[str, Any]], names: list[str]) -> list[RunData]:
    out = []
    for meta, name in zip(metas, names, strict=True):
        run = first_ce(3, 0.89, meta={"cell": LONG_NAME, **meta})
        out.append(load_run(write_synthetic_run(tmp_path / name, run)))
    return out


def test_one_legend_entry_per_run_distinct_and_inside(tmp_path: Path) -> None:
    runs = same_cell_runs(tmp_path, [{"board_name": "p1"}, {"board_name": "p2"}], ["a.db", "b.db"])
    assert plots.run_labels(runs) == [f"{LONG_NAME} (p1)", f"{LONG_NAME} (p2)"]
    fig = plots.plot_capacity_ce(runs)
    renderer = draw(fig)
    (legend,) = fig.legends
    texts = [t.get_text().replace("\n", " ") for t in legend.get_texts()]
    assert texts == plots.run_labels(runs)
    box = legend.get_window_extent(renderer)
    fig_box = fig.bbox
    assert box.x0 >= fig_box.x0 and box.y0 >= fig_box.y0
    assert box.x1 <= fig_box.x1 and box.y1 <= fig_box.y1
    for ax in fig.axes[:2]:  # below the axes, not over the data
        assert box.y1 <= ax.get_window_extent(renderer).y0
    # the legend's markers are the runs' colours
    colours = [h.get_color() for h in legend.legend_handles if isinstance(h, Line2D)]
    assert len(colours) == 2 and colours[0] != colours[1]


def test_run_labels_fall_back_to_stem_then_folder(tmp_path: Path) -> None:
    by_stem = same_cell_runs(tmp_path, [{}, {}], ["film-a.db", "film-b.db"])
    assert plots.run_labels(by_stem) == ["film-a", "film-b"]
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    by_dir = same_cell_runs(tmp_path, [{}, {}], ["x/run.db", "y/run.db"])
    assert plots.run_labels(by_dir) == ["x/run", "y/run"]
    mixed = same_cell_runs(tmp_path, [{}, {"cell": "other"}], ["m1.db", "m2.db"])
    assert plots.run_labels(mixed) == [LONG_NAME, "other"]
    anon = [first_ce(1, 0.9), first_ce(1, 0.9)]
    assert plots.run_labels(anon) == ["synthetic #1", "synthetic #2"]


# ---- captions ------------------------------------------------------------------------------
def test_cycles_text() -> None:
    assert plots.cycles_text([1, 2, 3]) == "cycles 1–3"
    assert plots.cycles_text([3, 1, 2, 2]) == "cycles 1–3"
    assert plots.cycles_text([2]) == "cycle 2"
    assert plots.cycles_text([1, 3, 5]) == "cycles 1, 3, 5"
    assert plots.cycles_text([]) == "no cycles"


def test_profile_caption_states_the_cycles_drawn() -> None:
    run = first_ce(3, 0.89)
    hcs = an.half_cycles(run)
    fig = plots.plot_profiles(run, hcs=hcs)  # asks for cycles 1–5
    legend = fig.axes[0].get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == ["cycle 1", "cycle 2", "cycle 3"]
    assert plots.profile_caption(hcs, (1, 2, 3, 4, 5)) == "Potential profiles, cycles 1–3"
    assert plots.profile_caption(hcs, (2, 9)) == "Potential profiles, cycle 2"
    # a run that stops after a lithiation: that cycle is said to be one half only
    cut = int(np.flatnonzero(run.step == 3)[-1]) - 30
    part = RunData.from_arrays(
        run.t_s[:cut],
        run.voltage_v[:cut],
        run.current_a[:cut],
        we_v=run.we_v[:cut],
        charge_ah=run.charge_ah[:cut],
        step=run.step[:cut],
        cycle=run.cycle[:cut],
        flags=run.flags[:cut],
        steps=run.steps,
        meta=run.meta,
    )
    assert plots.profile_caption(an.half_cycles(part), range(1, 6)) == (
        "Potential profiles, cycles 1–3 (cycle 3: cut short)"
    )


# ---- vs Li only with a reference -------------------------------------------------------------
def test_no_reference_is_cell_voltage() -> None:
    rc = build_run(fade_cycles(2), points_per_step=60, meta=NO_REF)
    assert not an.has_reference(rc)
    prof = plots.plot_profiles(rc)
    assert prof.axes[0].get_ylabel() == "Cell voltage / V"
    assert not prof.axes[0].child_axes  # no secondary "vs" axis
    dq = plots.plot_dqdv(rc)
    assert dq.axes[0].get_xlabel() == "Cell voltage / V"
    labels = [ax.get_xlabel() + ax.get_ylabel() for f in (prof, dq) for ax in f.axes]
    assert not any("Li" in s for s in labels)
    si = build_run(fade_cycles(2), points_per_step=60)
    assert an.has_reference(si)
    assert plots.plot_profiles(si).axes[0].get_ylabel() == "Potential / V vs Li$^+$/Li"
    for name in ("None", "", "cell"):
        assert not an.has_reference(
            RunData.from_arrays([], [], [], meta={"reference_electrode": name})
        )
    assert not an.has_reference(RunData.from_arrays([], [], []))


# ---- one peak source -------------------------------------------------------------------------
def peak_markers(fig: Figure) -> dict[int, list[tuple[float, float]]]:
    out: dict[int, list[tuple[float, float]]] = {}
    for line in fig.axes[0].lines:
        gid = line.get_gid()
        if gid and gid.startswith("peaks "):
            xs = np.asarray(line.get_xdata(), dtype=float)
            ys = np.asarray(line.get_ydata(), dtype=float)
            out[int(gid.split()[1])] = list(zip(xs.tolist(), ys.tolist(), strict=True))
    return out


def row_points(r: an.PeakRow) -> list[tuple[float, float]]:
    pts = [(r.lith_v, r.lith_height), (r.delith_v, r.delith_height)]
    return [(float(v), float(h)) for v, h in pts if v is not None and h is not None]


def test_dqdv_markers_are_the_peak_table() -> None:
    run = build_run(
        fade_cycles(12, fade_per_cycle=0.005, r_ohm=200, r_growth_ohm=5),
        points_per_step=300,
        hysteresis_v=0.05,
        noise_v=3e-4,
    )
    cycles = [1, 4, 8, 12]
    table = an.peak_table(run, cycles)
    assert [r.cycle for r in table] == cycles
    for fig in (plots.plot_dqdv(run, cycles), plots.plot_dqdv(run, cycles, peaks=table)):
        marks = peak_markers(fig)
        assert sorted(marks) == cycles
        for r in table:
            assert len(row_points(r)) == 2
            assert marks[r.cycle] == row_points(r)  # exactly, not approximately
    assert {r.unit for r in table} == {"mAh g⁻¹ V⁻¹"}


# ---- the report ------------------------------------------------------------------------------
class _Tables(HTMLParser):
    """Every table's header row and the figure captions of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.headers: list[list[str]] = []
        self.captions: list[str] = []
        self._in: str | None = None
        self._row: list[str] = []
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self._row = []
        if tag in ("th", "figcaption"):
            self._in, self._text = tag, ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "th":
            self._row.append(self._text)
        elif tag == "figcaption":
            self.captions.append(self._text)
        elif tag == "tr" and self._row:
            self.headers.append(self._row)
            self._row = []
        if tag == self._in:
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in:
            self._text += data


def rate_run() -> RunData:
    lith = 0.6e-3 * AREA_CM2
    specs = [
        CycleSpec(lith, lith * 0.99 * (1 - 0.04 * k), 0.1e-3 * AREA_CM2, j * 1e-3 * AREA_CM2, 265)
        for k, j in enumerate([0.1, 1, 10])
    ]
    return build_run(specs, hysteresis_v=0.1, meta={"cell": "rate", "board_name": "r1"})


def test_report_captions_units_and_ir(tmp_path: Path) -> None:
    a = write_synthetic_run(tmp_path / "a.db", first_ce(3, 0.89, meta={"board_name": "p1"}))
    b = write_synthetic_run(tmp_path / "b.db", first_ce(3, 0.9, meta={"board_name": "p2"}))
    c = write_synthetic_run(tmp_path / "rc.db", build_run(fade_cycles(2), meta=NO_REF))
    r = write_synthetic_run(tmp_path / "rate.db", rate_run())
    text = report.write_report([a, b, c, r], tmp_path / "out").read_text(encoding="utf-8")
    page = _Tables()
    page.feed(text)
    assert "Potential profiles, cycles 1–3" in page.captions
    assert "Potential profiles, cycles 1–2" in page.captions
    assert not any("1–5" in cap for cap in page.captions)
    assert "<h2>synthetic (p1)</h2>" in text and "<h2>synthetic (p2)</h2>" in text
    # the rate figure's caption names each curve's R and where it comes from
    curves = an.rate_curves(load_run(r))
    (rate_cap,) = [cap for cap in page.captions if cap.startswith("Rate capability")]
    for cv in curves:
        assert f"{plots.current_text(cv)}: {cv.ir.text()}" in rate_cap
        assert cv.ir.source == "measured"
    # units on every column of the peak and rate tables
    words = ("cycle", "cycles", "R from", "IR-free curve")  # counts and words, no unit
    checked = [
        h for h in page.headers if any(x.startswith(("lith. peak / V", "j / mA/cm²")) for x in h)
    ]
    assert len(checked) == 4 + 1  # a peak table per run, the rate table
    for header in checked:
        assert all(" / " in h for h in header if h not in words), header
    peak_headers = [h for h in page.headers if any(x.startswith("lith. height") for x in h)]
    assert len(peak_headers) == 4
    assert any("lith. peak / V (cell)" in h for h in peak_headers)  # the rc run: no "vs Li"
    # the rc run's metadata says it has no reference
    assert "no reference electrode: potentials are cell volts" in text
    assert "Potentials are of the working electrode vs Li+/Li for runs with a reference" in text


def test_report_flags_an_impossible_curve(tmp_path: Path) -> None:
    db = write_synthetic_run(tmp_path / "rate.db", rate_run())
    html = report.write_report([db], tmp_path / "out", r_area_ohm_cm2=200.0).read_text(
        encoding="utf-8"
    )
    assert "is physically impossible" in html and "impossible</td>" in html
    fig = plots.plot_rate(load_run(db), r_area_ohm_cm2=200.0)
    ax = fig.axes[0]
    legend = ax.get_legend()
    assert legend is not None
    flagged = [t.get_text() for t in legend.get_texts() if "(impossible)" in t.get_text()]
    assert flagged == ["10 mA cm$^{-2}$ (impossible)"]
    styles = [(line.get_linestyle(), line.get_color()) for line in ax.lines]
    assert styles.count(("--", "0.55")) == 1
    assert any("physically impossible" in t.get_text() for t in ax.texts)


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def failing_save(after: int) -> Callable[..., None]:
    real = plots.save
    calls = [0]

    def save(fig: Figure, path: Any) -> None:
        calls[0] += 1
        if calls[0] > after:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fig, path)

    return save


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = write_synthetic_run(tmp_path / "in" / "a.db", first_ce(3, 0.89))
    before = listing(tmp_path)
    monkeypatch.setattr(plots, "save", failing_save(after=2))
    with pytest.raises(OSError, match="No space"):
        report.write_report([db], tmp_path / "new" / "deeper" / "out")
    assert listing(tmp_path) == before  # not even the parent folders
    # into an existing folder: its files stay as they were
    keep = tmp_path / "existing"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine", encoding="utf-8")
    (keep / "report.html").write_text("old report", encoding="utf-8")
    before = listing(tmp_path)
    with pytest.raises(OSError):
        report.write_report([db], keep)
    assert listing(tmp_path) == before
    assert (keep / "report.html").read_text(encoding="utf-8") == "old report"
    monkeypatch.undo()
    report.write_report([db], keep)
    assert (keep / "notes.txt").read_text(encoding="utf-8") == "mine"
    assert "<!DOCTYPE html>" in (keep / "report.html").read_text(encoding="utf-8")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder


def test_bad_database_fails_before_creating_anything(tmp_path: Path) -> None:
    good = write_synthetic_run(tmp_path / "good.db", first_ce(2, 0.9))
    foreign = tmp_path / "foreign.db"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    text = tmp_path / "notes.db"
    text.write_text("not a database\n", encoding="utf-8")
    before = listing(tmp_path)
    for bad in (foreign, text):
        with pytest.raises(StoreSchemaError, match="is not a sicell run database"):
            report.write_report([good, bad], tmp_path / "out" / "report")
        assert listing(tmp_path) == before


def test_report_target_that_is_a_file(tmp_path: Path) -> None:
    db = write_synthetic_run(tmp_path / "a.db", first_ce(2, 0.9))
    target = tmp_path / "out"
    target.write_text("x", encoding="utf-8")
    with pytest.raises(UsageError, match="not a folder"):
        report.write_report([db], target)
    assert target.read_text(encoding="utf-8") == "x"
