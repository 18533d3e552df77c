"""Cross-check against an established package: navani (PyPI ``navani``, checked with 0.1.22).

The same synthetic run is analysed by sicell (from its SQLite file) and by navani (from a BDF
CSV export, navani's own loader). Agreement required:

- capacity per half-cycle: relative 1e-4. navani integrates with a backward rectangle rule
  that also counts the rest → current gap before a half-cycle's first point (I·1 s here); after
  removing that term the two agree to 1e-9 relative.
- Coulombic efficiency: relative 1e-4 (navani's ``CE`` is charge/discharge = lithiation /
  delithiation for an anode with positive lithiation current, so sicell's CE = 1 / navani's).
- mean potential of each half-cycle: 1 mV.
- dQ/dV (navani: spline + Savitzky–Golay on 10⁴ interpolated points, no final smoothing;
  sicell: 5 mV level filter + Savitzky–Golay): within 3 % of the peak height everywhere more
  than 50 mV inside the half-cycle's potential range; main peak positions within 3 mV and
  heights within 3 %.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
from sicell import analysis as an
from sicell.rundata import RunData, load_run

from tests.synth_run import build_run, export_bdf_csv, fade_cycles, write_synthetic_run

ec: Any = pytest.importorskip(
    "navani.echem",
    reason="navani is not importable (pip install navani==0.1.22) - cross-check skipped",
    exc_type=ImportError,
)

GAP_S = 1.0
CYCLES = 12


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunData, Any]:
    d = tmp_path_factory.mktemp("xcheck")
    src = build_run(
        fade_cycles(CYCLES, fade_per_cycle=0.005, r_ohm=200.0, r_growth_ohm=5.0),
        hysteresis_v=0.1,
        points_per_step=1000,
        gap_s=GAP_S,
    )
    run = load_run(write_synthetic_run(d / "run.db", src))
    csv = export_bdf_csv(run, d / "run.bdf.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = ec.echem_file_loader(str(csv))
    return run, df


def test_capacity_and_ce_agree(data: tuple[RunData, Any]) -> None:
    run, df = data
    ours = an.cycle_table(run)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = ec.cycle_summary(df)
    assert len(ours) == CYCLES
    for row in ours.rows:
        s = theirs.loc[float(row.cycle)]
        lith_n = float(s["Charge Capacity"])  # mAh, state 0 = positive current = lithiation
        delith_n = float(s["Discharge Capacity"])
        assert lith_n == pytest.approx(row.lith_mah, rel=1e-4)
        assert delith_n == pytest.approx(row.delith_mah, rel=1e-4)
        i_l, i_d = 1e3 * run.current_a.max(), -1e3 * run.current_a.min()
        assert lith_n - i_l * GAP_S / 3600 == pytest.approx(row.lith_mah, rel=1e-9)
        assert delith_n - i_d * GAP_S / 3600 == pytest.approx(row.delith_mah, rel=1e-9)
        assert 1.0 / float(s["CE"]) == pytest.approx(row.ce, rel=1e-4)
        assert float(s["Average Charge Voltage"]) == pytest.approx(row.lith_mean_we_v, abs=1e-3)
        assert float(s["Average Discharge Voltage"]) == pytest.approx(
            row.delith_mean_we_v, abs=1e-3
        )


@pytest.mark.parametrize("cycle", [1, 6, 12])
@pytest.mark.parametrize("kind", ["lith", "delith"])
def test_dqdv_agrees(data: tuple[RunData, Any], cycle: int, kind: an.Kind) -> None:
    run, df = data
    half = 2 * cycle - 1 if kind == "lith" else 2 * cycle
    m = (df["half cycle"] == half) & (df["state"] != "R")
    xv, yv, _ = ec.dqdv_single_cycle(
        df["Capacity"][m].to_numpy(float), df["Voltage"][m].to_numpy(float), final_smooth=False
    )
    x_n = np.asarray(xv, dtype=float)
    y_n = np.asarray(yv, dtype=float)
    ours = an.dqdv(run, cycle, kind, normalize="none", smooth="savgol")
    assert ours.unit == "mAh V⁻¹"  # navani's capacity is in mAh: same unit
    order = np.argsort(ours.potential_v)
    x_o, y_o = ours.potential_v[order], ours.dqdv[order]
    lo = max(x_n.min(), x_o.min()) + 0.05
    hi = min(x_n.max(), x_o.max()) - 0.05
    grid = np.linspace(lo, hi, 400)
    peak = float(np.max(np.abs(y_n)))
    diff = np.abs(np.interp(grid, x_o, y_o) - np.interp(grid, x_n, y_n))
    assert diff.max() <= 0.03 * peak

    pk = an.main_peak(ours)
    assert pk is not None
    i = int(np.argmax(np.abs(y_n)))
    assert pk[0] == pytest.approx(float(x_n[i]), abs=3e-3)
    assert pk[1] == pytest.approx(float(y_n[i]), rel=0.03)
