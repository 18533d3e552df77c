"""Figures and the HTML report on synthetic runs."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest
from matplotlib.figure import Figure
from sicell import analysis as an
from sicell import plots, report
from sicell.rundata import RunData

from tests.synth_run import AREA_CM2, CycleSpec, build_run, fade_cycles, write_synthetic_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(p: Path) -> bool:
    return p.exists() and p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 5000


def _labels(fig: Figure) -> list[str]:
    out = []
    for ax in fig.axes:
        out += [ax.get_xlabel(), ax.get_ylabel()]
    return out


@pytest.fixture(scope="module")
def cycling() -> RunData:
    return build_run(
        fade_cycles(100, fade_per_cycle=0.002, r_ohm=200, r_growth_ohm=2),
        points_per_step=120,
        rest_points=3,
        hysteresis_v=0.1,
        noise_v=2e-4,
    )


@pytest.fixture(scope="module")
def rate_run() -> RunData:
    lith = 0.6e-3 * AREA_CM2
    specs = [
        CycleSpec(lith, lith * 0.99 * (1 - 0.04 * k), 0.1e-3 * AREA_CM2, j * 1e-3 * AREA_CM2, 265)
        for k, j in enumerate([0.1, 1, 2, 5, 10])
    ]
    return build_run(specs, hysteresis_v=0.1, meta={"cell": "rate"})


def test_profiles_figure(cycling: RunData, tmp_path: Path) -> None:
    fig = plots.plot_profiles(cycling, path=tmp_path / "p.png")
    assert isinstance(fig, Figure)
    assert _is_png(tmp_path / "p.png")
    ax = fig.axes[0]
    assert "mAh g" in ax.get_xlabel() and "Li" in ax.get_ylabel()
    legend = ax.get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == [f"cycle {c}" for c in range(1, 6)]
    assert len(ax.lines) == 10  # lithiation and delithiation of five cycles
    assert any("In-Li" in lab for lab in _labels(fig)) or any(
        "In-Li" in child.get_ylabel()
        for child in ax.child_axes  # secondary axis with the cell voltage
    )


def test_capacity_ce_figure_two_runs(cycling: RunData, tmp_path: Path) -> None:
    other = build_run(fade_cycles(40, fade_per_cycle=0.01, ce=0.99), meta={"cell": "non-porous"})
    fig = plots.plot_capacity_ce([cycling, other], path=tmp_path / "c.png")
    assert _is_png(tmp_path / "c.png")
    ax_c, ax_e = fig.axes[:2]
    assert "Capacity" in ax_c.get_ylabel() and "mAh g" in ax_c.get_ylabel()
    assert ax_e.get_ylabel() == "Coulombic efficiency / %"
    assert ax_e.get_xlabel() == "Cycle number"
    (legend,) = fig.legends  # one legend of the runs, one entry each
    assert [t.get_text() for t in legend.get_texts()] == ["synthetic", "non-porous"]
    key = ax_c.get_legend()  # the marker key
    assert key is not None
    assert [t.get_text() for t in key.get_texts()] == ["delithiation", "lithiation"]


def test_dqdv_figure_default_cycles(cycling: RunData, tmp_path: Path) -> None:
    fig = plots.plot_dqdv(cycling, path=tmp_path / "d.png")
    assert _is_png(tmp_path / "d.png")
    ax = fig.axes[0]
    legend = ax.get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == [
        f"cycle {c}" for c in (20, 40, 60, 80, 100)
    ]
    assert "dQ/dV" in ax.get_ylabel() and "V vs Li" in ax.get_xlabel()


def test_rate_figure(rate_run: RunData, tmp_path: Path) -> None:
    fig = plots.plot_rate(rate_run, r_area_ohm_cm2=150.0, path=tmp_path / "r.png")
    assert _is_png(tmp_path / "r.png")
    ax, ax_r = fig.axes[:2]
    legend = ax.get_legend()
    assert legend is not None
    texts = [t.get_text() for t in legend.get_texts()]
    assert len(texts) == 5 and texts[0].startswith("0.1 mA")
    assert legend.get_title().get_text() == "IR-free with R = 265 Ω (150 Ω·cm², given)"
    assert ax.get_ylabel() == "IR-free potential / V vs Li$^+$/Li"
    assert ax_r.get_xscale() == "log"
    assert "Current density" in ax_r.get_xlabel()


def test_figures_without_data(tmp_path: Path) -> None:
    empty = RunData.from_arrays([0.0, 1.0], [0.5, 0.5], [0.0, 0.0])
    for name, fig in [
        ("p", plots.plot_profiles(empty)),
        ("c", plots.plot_capacity_ce([empty])),
        ("d", plots.plot_dqdv(empty)),
        ("r", plots.plot_rate(empty)),
    ]:
        plots.save(fig, tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").exists()
        assert any("no data" in t.get_text() for ax in fig.axes for t in ax.texts)


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.links: list[str] = []
        self.tables = 0
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src") or "")
            return
        if tag in ("meta", "br"):
            return
        if tag == "a":
            self.links.append(a.get("href") or "")
        if tag == "table":
            self.tables += 1
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unbalanced </{tag}>")
            return
        self.stack.pop()


def test_write_report(cycling: RunData, rate_run: RunData, tmp_path: Path) -> None:
    a = write_synthetic_run(tmp_path / "in" / "porous.db", cycling)
    (tmp_path / "in2").mkdir()
    b = write_synthetic_run(tmp_path / "in2" / "porous.db", rate_run)  # same stem
    out = tmp_path / "out"
    html_path = report.write_report([a, str(b)], out)
    assert html_path == out / "report.html"
    text = html_path.read_text(encoding="utf-8")
    p = _Collector()
    p.feed(text)
    assert p.errors == [] and p.stack == []
    assert len(p.imgs) == 1 + 2 + 3  # comparison; profiles+dQ/dV; profiles+dQ/dV+rate
    for src in p.imgs:
        assert not Path(src).is_absolute() and "/" not in src
        assert _is_png(out / src)
    assert len(set(p.imgs)) == len(p.imgs)  # same-stem runs get distinct names
    for href in p.links:
        assert (out / href).exists()
    assert p.tables >= 8
    t = an.cycle_table(cycling)
    assert t.fade_pct_per_cycle is not None
    assert f"{t.fade_pct_per_cycle:.4f}" in text
    for needle in ("Cycle summary", "Resistance", "dQ/dV peaks", "Peak drift", "Rate capability"):
        assert needle in text
    assert "<script" not in text and "http" not in text


def test_write_report_needs_runs(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        report.write_report([], tmp_path)


def test_write_report_sparse_runs(tmp_path: Path) -> None:
    """An empty run and a run without normalisation metadata still give a page."""
    empty = write_synthetic_run(tmp_path / "empty.db", RunData.from_arrays([], [], []))
    bare_meta = {"area_cm2": None, "mass_mg": None, "thickness_um": None, "cell": "bare"}
    bare = write_synthetic_run(tmp_path / "bare.db", build_run(fade_cycles(3), meta=bare_meta))
    html_path = report.write_report([empty, bare], tmp_path / "out")
    text = html_path.read_text(encoding="utf-8")
    assert "bare" in text and "mAh" in text
    p = _Collector()
    p.feed(text)
    assert p.errors == [] and all(_is_png(tmp_path / "out" / s) for s in p.imgs)
