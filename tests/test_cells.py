"""Cell models of the emulator (host/sicell/emulator/mp/cells.py).

The module runs inside the emulated board under MicroPython; here it is loaded from its file
under CPython, checked against analytic results (RC) and against the reference numbers of
DESIGN §6 (Si films), and one scenario is re-run under ``micropython -X heapsize=192K``.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.mputil import ROOT, run_mp

MP_DIR = ROOT / "host" / "sicell" / "emulator" / "mp"


def _load(name: str) -> ModuleType:
    # by file, so the emulator's own time.py / machine.py in that folder never shadow anything
    spec = importlib.util.spec_from_file_location(f"sicell_emu_{name}_under_test", MP_DIR / name)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


cells: Any = _load("cells.py")
runs: Any = _load("cellruns.py")

SI = ("thin-porous", "thin-dense", "thick-porous", "thick-dense")
V_LOW = -0.61  # 0.01 V vs Li, cell volts vs In-Li
V_HIGH = 0.58  # 1.2 V vs Li


# --------------------------------------------------------------------------------- RC / R


def test_rc_constant_current_matches_analytic() -> None:
    c = cells.make_cell("rc")
    i = 1e-3
    tau = 1000.0 * 1e-3
    t = 0.0
    for _ in range(500):
        c.advance(i, 0.01)
        t += 0.01
        want = -i * 1000.0 * (1.0 - math.exp(-t / tau)) - i * 250.0
        assert c.voltage(i) == pytest.approx(want, rel=1e-9, abs=1e-12)
    # t = 5 tau: nearly charged to -(R_p + R_s) i
    assert c.voltage(i) == pytest.approx(-1.25 + 1.0 * math.exp(-5.0), rel=1e-9)
    # at rest the leak discharges it exactly exponentially, no series drop
    u5 = c.voltage(0.0)
    c.advance(0.0, 2.0)
    assert c.voltage(0.0) == pytest.approx(u5 * math.exp(-2.0), rel=1e-9)


def test_rc_large_dt_equals_many_small_dt() -> None:
    profile = [(2e-3, 3.0), (-1e-3, 0.7), (0.0, 5.0), (5e-4, 12.5)]
    big = cells.make_cell("rc")
    small = cells.make_cell("rc")
    for i, dur in profile:
        big.advance(i, dur)
        n = round(dur / 0.001)
        for _ in range(n):
            small.advance(i, dur / n)
        assert big.voltage(i) == pytest.approx(small.voltage(i), rel=1e-9, abs=1e-12)
    # one 10 s step from fresh equals the closed form
    c = cells.make_cell("rc", v0=0.2)
    c.advance(-3e-3, 10.0)
    assert c.voltage(-3e-3) == pytest.approx(c.exact(-3e-3, 10.0), rel=1e-12)
    assert c.voltage(-3e-3) == pytest.approx(3.0 + (0.2 - 3.0) * math.exp(-10.0) + 0.75)


def test_rc_overrides_no_leak_and_v0() -> None:
    c = cells.make_cell("rc", r_series=100.0, c_farad=2e-3, r_parallel=None, v0=0.3)
    assert c.voltage(0.0) == pytest.approx(0.3)
    c.advance(1e-3, 4.0)  # dU = -I t / C = -2 V
    assert c.voltage(1e-3) == pytest.approx(0.3 - 2.0 - 0.1)
    c.reset()
    assert c.voltage(0.0) == pytest.approx(0.3)
    r = cells.make_cell("resistor")
    assert r.voltage(1e-3) == pytest.approx(-1.0)  # same sign convention as a cell
    assert cells.make_cell("resistor", r_ohm=47.0).voltage(-0.01) == pytest.approx(0.47)


# ------------------------------------------------------------------------- factory


def test_factory_names_aliases_overrides_and_seed() -> None:
    assert set(cells.CELL_NAMES) == {"rc", "resistor", *SI}
    for name in cells.CELL_NAMES:
        c = cells.make_cell(name)
        c.advance(1e-5, 1.0)
        assert math.isfinite(c.voltage(1e-5))
        assert isinstance(c.state(), dict)
    assert cells.make_cell("porous-thick").name == "thick-porous"
    assert cells.make_cell("Thin_Dense").name == "thin-dense"
    with pytest.raises(ValueError):
        cells.make_cell("graphite")
    with pytest.raises(TypeError):
        cells.make_cell("thin-porous", r_el_ohms=1.0)
    assert cells.make_cell("thin-porous", r_el_ohm_cm2=10.0).r_el == pytest.approx(10.0 / 0.567)
    # seed: 0 is nominal, others deterministic and different, spread bounded
    a, b, c0 = (cells.make_cell("thick-dense", seed=s) for s in (7, 7, 0))
    assert a.p == b.p
    assert a.p["j0_ma_cm2"] != c0.p["j0_ma_cm2"]
    for key, spread in cells._SEED_SPREAD:
        for s in range(1, 30):
            v = cells.make_cell("thick-dense", seed=s).p[key]
            assert abs(v / c0.p[key] - 1.0) <= spread + 1e-12


def test_film_params() -> None:
    tp = cells.film_params("thin-porous")
    assert tp["area_cm2"] == pytest.approx(0.567)
    assert tp["i_0p1_a"] == pytest.approx(56.7e-6)
    assert tp["mass_g"] == pytest.approx(0.21e-3 * 0.567)
    assert tp["density_g_cm3"] == pytest.approx(1.35, abs=0.01)
    assert cells.film_params("thick-porous")["density_g_cm3"] == pytest.approx(1.56, abs=0.01)
    assert cells.film_params("thin-dense")["density_g_cm3"] == pytest.approx(2.37, abs=0.01)
    assert cells.film_params("thick-dense")["porosity"] == pytest.approx(0.0, abs=0.01)
    assert 0.3 < tp["porosity"] < 0.45  # ~40 % porous
    for name in SI:
        p = cells.film_params(name)
        assert 3000 < p["cap_mah_g"] < 3300
        assert p["cap_ah"] == pytest.approx(p["cap_mah_g"] * p["mass_g"] * 1e-3)
        # volumetric on the lithiated film (DESIGN: 1900 mAh/cm3)
        assert 1800 < p["cap_mah_cm3_lithiated"] < 2100
    assert 0.6 < tp["cap_mah_cm2"] < 0.75
    assert 2.0 < cells.film_params("thick-porous")["cap_mah_cm2"] < 2.5


# --------------------------------------------------------------------- Si: statics


def test_ocv_branches_hysteresis_and_ends() -> None:
    ocv = cells.ocv
    for k in range(1, 99):
        x = k / 100.0
        assert ocv(x, 0.0) > ocv(x, 1.0)  # delithiation branch above lithiation
        assert ocv(x + 0.01, 0.0) < ocv(x, 0.0)  # both fall with lithiation
        assert ocv(x + 0.01, 1.0) < ocv(x, 1.0)
    assert 0.15 < ocv(0.5, 0.0) - ocv(0.5, 1.0) < 0.3  # a-Si hysteresis gap
    assert ocv(0.002, 0.0) > 1.2 > ocv(0.02, 0.0)  # 1.2 V cutoff reached steeply near x = 0
    assert ocv(0.99, 1.0) < 0.01 < ocv(0.9, 1.0)  # 0.01 V cutoff reached near x = 1

    # dQ/dV peaks (maxima of dx/dE) of each branch
    def peaks(branch: str, lo: float, hi: float) -> list[float]:
        es = [lo + 0.001 * k for k in range(int((hi - lo) / 0.001))]
        d = [cells.ocv_x(branch, e) - cells.ocv_x(branch, e + 0.001) for e in es]
        return [es[k] for k in range(1, len(d) - 1) if d[k] >= d[k - 1] and d[k] > d[k + 1]]

    lith = [e for e in peaks("lit", 0.04, 0.45)]
    deli = [e for e in peaks("del", 0.15, 0.6)]
    assert len(lith) == 2 and len(deli) == 2
    assert lith[0] == pytest.approx(0.1, abs=0.02) and lith[1] == pytest.approx(0.25, abs=0.03)
    assert deli[0] == pytest.approx(0.3, abs=0.02) and deli[1] == pytest.approx(0.5, abs=0.03)


def test_voltage_monotone_in_current() -> None:
    # the front end finds the compliance current by bisection on voltage(i)
    c = cells.make_cell("thick-dense")
    currents = [s * 10.0**e for e in range(-9, 0) for s in (-1.0, 1.0)] + [0.0]
    currents.sort()
    for _ in range(10):
        vs = [c.voltage(i) for i in currents]
        assert all(a > b for a, b in itertools.pairwise(vs))
        c.advance(2e-4, 3000.0)  # through to over-lithiation
    assert c.state()["x"] > 1.0


def test_hysteresis_moves_gradually_after_reversal() -> None:
    c = cells.make_cell("thin-porous")
    i = c.p["i_0p1_a"]
    runs.run_cc(c, i, V_LOW, 10.0)
    c.advance(0.0, 3600.0)
    assert c.state()["h"] == 1.0
    q = c.state()["capacity_ah"] * 3600.0
    hs = []
    for _ in range(20):
        c.advance(-i, 0.005 * q / i)  # 0.5 % of capacity per step
        hs.append(c.state()["h"])
    assert all(a > b for a, b in itertools.pairwise(hs))
    assert hs[1] == pytest.approx(math.exp(-0.25), rel=1e-3)  # after 1 % of Q, kappa = 25
    assert hs[-1] < 0.1


def test_rest_relaxes_toward_ocv() -> None:
    c = cells.make_cell("thick-porous")
    i = c.p["i_0p1_a"]
    runs.run_cc(c, i, V_LOW, 30.0)
    v_end = c.voltage(i)
    v_ocv = c.voltage(0.0)
    c.advance(0.0, 3600.0)
    v_rest = c.voltage(0.0)
    assert v_end <= V_LOW < v_ocv < v_rest < V_LOW + 0.1  # IR jump, then diffusion relaxation
    runs.run_cc(c, -i, V_HIGH, 30.0)
    c.advance(0.0, 3600.0)
    assert 0.0 < c.voltage(0.0) < V_HIGH - 0.1  # after delithiation it relaxes down


# ------------------------------------------------------------------- Si: cycling


def _cycle(name: str, n: int, dt: float = 30.0) -> dict[str, Any]:
    """CC 0.1 mA/cm2 to -0.61 V, 1 h rest, CC to +0.58 V, 1 h rest; n cycles."""
    c = cells.make_cell(name)
    i = c.p["i_0p1_a"]
    lith: list[float] = []
    deli: list[float] = []
    vgap: list[float] = []  # mean delithiation minus mean lithiation voltage (dQ/dV drift)
    for _ in range(n):
        sums = []
        for cur, stop in ((i, V_LOW), (-i, V_HIGH)):
            q = 0.0
            vq = 0.0
            while True:
                c.advance(cur, dt)
                v = c.voltage(cur)
                q += abs(cur) * dt
                vq += v * abs(cur) * dt
                if (cur > 0 and v <= stop) or (cur < 0 and v >= stop):
                    break
            c.advance(0.0, 3600.0)
            sums.append((q / 3600.0, vq / q))
        lith.append(sums[0][0])
        deli.append(sums[1][0])
        vgap.append(sums[1][1] - sums[0][1])
    return {"cell": c, "lith": lith, "deli": deli, "vgap": vgap, "p": c.p}


@pytest.fixture(scope="module")
def cycled() -> dict[str, dict[str, Any]]:
    return {name: _cycle(name, 100) for name in SI}


def test_first_cycle_capacity(cycled: dict[str, dict[str, Any]]) -> None:
    for name, r in cycled.items():
        p = r["p"]
        q1 = r["deli"][0] * 1e3  # mAh
        mah_g = q1 / (p["mass_g"])
        mah_cm2 = q1 / p["area_cm2"]
        assert 3050 < mah_g < 3300, name
        if name.startswith("thin"):
            assert 0.6 < mah_cm2 < 0.75, name
        else:
            assert 2.0 < mah_cm2 < 2.5, name
        assert mah_g == pytest.approx(p["cap_mah_g"], rel=0.02)  # nominal = first cycle
        ce1 = r["deli"][0] / r["lith"][0]
        assert 0.8 < ce1 < 0.95, name  # first-cycle irreversible loss


def test_coulombic_efficiency(cycled: dict[str, dict[str, Any]]) -> None:
    for name in ("thin-porous", "thick-porous"):
        r = cycled[name]
        ce = [d / q for q, d in zip(r["lith"], r["deli"], strict=True)][9:]
        assert all(0.995 < x < 0.9995 for x in ce), name
        assert sum(ce) / len(ce) > 0.998, name  # DESIGN: CE > 99.8 %
        assert ce[-1] > ce[0]  # early cycles a little lower
    for name in ("thin-dense", "thick-dense"):
        r = cycled[name]
        ce = [d / q for q, d in zip(r["lith"], r["deli"], strict=True)][9:]
        assert all(0.985 < x < 0.999 for x in ce), name


def test_retention_after_100_cycles(cycled: dict[str, dict[str, Any]]) -> None:
    ret = {n: r["deli"][99] / r["deli"][9] for n, r in cycled.items()}
    assert ret["thin-porous"] > 0.93
    assert ret["thick-porous"] > 0.93
    assert ret["thin-dense"] == pytest.approx(0.82, abs=0.06)
    assert ret["thick-dense"] == pytest.approx(0.47, abs=0.08)
    # porous: 0.06 %/cycle, 2962 mAh/g and 2.19 mAh/cm2 after 100 cycles (thick)
    fade = (1.0 - ret["thick-porous"]) / 90.0
    assert 0.0004 < fade < 0.0008
    r = cycled["thick-porous"]
    q100 = r["deli"][99] * 1e3
    assert q100 / r["p"]["mass_g"] == pytest.approx(2962, rel=0.03)
    assert q100 / r["p"]["area_cm2"] == pytest.approx(2.19, rel=0.03)
    # the cell counts one cycle per lithiation -> delithiation reversal
    assert r["cell"].state()["cycles"] == 100


def test_dqdv_peaks_drift_apart_in_dense_films(cycled: dict[str, dict[str, Any]]) -> None:
    drift = {n: r["vgap"][99] - r["vgap"][9] for n, r in cycled.items()}
    assert abs(drift["thin-porous"]) < 0.01
    assert abs(drift["thick-porous"]) < 0.01
    assert drift["thin-dense"] > 0.02
    assert drift["thick-dense"] > 0.08
    st = cycled["thick-dense"]["cell"].state()
    assert st["r_grow_ohm"] * 0.567 > 300.0  # ohm.cm2 grown in 100 cycles


def test_module_cycle_helper_matches_test_loop() -> None:
    ref = _cycle("thin-dense", 3)
    c = cells.make_cell("thin-dense")
    got = runs.cycle_galvanostatic(c, c.p["i_0p1_a"], V_LOW, V_HIGH, 30.0, 3)
    for k in range(3):
        assert got[k][0] == pytest.approx(ref["lith"][k], rel=1e-12)
        assert got[k][1] == pytest.approx(ref["deli"][k], rel=1e-12)


@pytest.mark.parametrize("name", ["thin-porous", "thick-dense"])
def test_step_size_independence(name: str) -> None:
    res = {}
    for dt in (1.0, 30.0):
        c = cells.make_cell(name)
        res[dt] = runs.cycle_galvanostatic(c, c.p["i_0p1_a"], V_LOW, V_HIGH, dt, 2)
    for k in range(2):
        for j in range(2):
            assert res[30.0][k][j] == pytest.approx(res[1.0][k][j], rel=0.01)
    # and the high-rate discharge of the rate test
    caps = {}
    for dt in (0.1, 1.5):
        c = cells.make_cell(name)
        caps[dt] = runs.rate_test(c, (2.0, 10.0), dt_s=dt)
    assert caps[1.5][0] == pytest.approx(caps[0.1][0], rel=0.01)
    assert caps[1.5][1] == pytest.approx(caps[0.1][1], rel=0.01)


def test_ageing_by_throughput_not_by_dither() -> None:
    # a PI loop dithering the current sign must not age the cell faster
    a = cells.make_cell("thick-dense")
    b = cells.make_cell("thick-dense")
    i = a.p["i_0p1_a"]
    a.advance(i, 36000.0)
    a.advance(-i, 10.0)
    for _ in range(2000):
        b.advance(i, 18.0)
        b.advance(-1e-9, 1.0)  # tiny reversal
        b.advance(1e-9, 1.0)
    b.advance(-i, 10.0)
    sa, sb = a.state(), b.state()
    assert sb["capacity_fraction"] == pytest.approx(sa["capacity_fraction"], rel=1e-4)
    assert sb["r_grow_ohm"] == pytest.approx(sa["r_grow_ohm"], rel=5e-3)
    assert sa["cycles"] == sb["cycles"] == 1


# ---------------------------------------------------------------------- Si: rate


@pytest.fixture(scope="module")
def rates() -> dict[str, list[float]]:
    return {name: runs.rate_test(cells.make_cell(name)) for name in SI}


def test_rate_capability(rates: dict[str, list[float]]) -> None:
    for name, caps in rates.items():
        assert all(a > b for a, b in itertools.pairwise(caps)), name
    g = {n: [q * 1e3 / cells.film_params(n)["mass_g"] for q in caps] for n, caps in rates.items()}
    cm2 = {n: [q * 1e3 / 0.567 for q in caps] for n, caps in rates.items()}
    # thin films keep > 3000 mAh/g even at 10 mA/cm2
    assert g["thin-porous"][4] > 3000
    assert g["thin-dense"][4] > 3000
    # thick porous: > 2 mAh/cm2 at 2 mA/cm2, ~1700 mAh/g ~1.2 mAh/cm2 at 10 mA/cm2
    assert cm2["thick-porous"][2] > 2.0
    assert g["thick-porous"][4] == pytest.approx(1700, rel=0.1)
    assert cm2["thick-porous"][4] == pytest.approx(1.2, rel=0.1)
    assert cm2["thick-dense"][2] > 2.0
    assert cm2["thick-dense"][4] < cm2["thick-porous"][4]  # dense: worse at high rate
    # the low-rate discharge is the full capacity (CC-CV charge)
    assert g["thick-porous"][0] > 3200


def test_rate_loss_is_not_the_electrolyte_resistance() -> None:
    # with the I.R_el removed the electrolyte resistance must not matter...
    base = runs.rate_test(cells.make_cell("thick-porous"), (10.0,))[0]
    no_el = runs.rate_test(cells.make_cell("thick-porous", r_el_ohm_cm2=0.0), (10.0,))[0]
    assert no_el == pytest.approx(base, rel=0.02)
    # ...while without the correction 10 mA/cm2 x 150 ohm.cm2 = 1.5 V leaves almost nothing
    c = cells.make_cell("thick-porous")
    runs.run_cc(c, c.p["i_0p1_a"], V_LOW, 30.0)
    i10 = 10e-3 * 0.567
    raw = runs.run_cc(c, -i10, V_HIGH, 0.3)[0]
    assert raw < 0.05 * base


# ------------------------------------------------------------------ MicroPython

_SCENARIO = """
import cells
import cellruns as runs
out = []
c = cells.make_cell("thin-porous")
for ql, qd in runs.cycle_galvanostatic(c, c.p["i_0p1_a"], -0.61, 0.58, 30.0, 3):
    out.append(ql)
    out.append(qd)
st = c.state()
for k in ("x", "h", "capacity_ah", "r_ohm", "side_ah", "n_equiv"):
    out.append(st[k])
c = cells.make_cell("thick-dense", seed=7)
out.extend(runs.rate_test(c, (0.1, 10.0)))
out.append(c.voltage(1e-4))
r = cells.make_cell("rc")
for k in range(50):
    r.advance(1e-3 if k < 30 else -2e-3, 0.1)
out.append(r.voltage(-2e-3))
for v in out:
    print(repr(v))
"""


def _scenario_cpython() -> list[float]:
    out: list[float] = []
    c = cells.make_cell("thin-porous")
    for ql, qd in runs.cycle_galvanostatic(c, c.p["i_0p1_a"], -0.61, 0.58, 30.0, 3):
        out += [ql, qd]
    st = c.state()
    out += [st[k] for k in ("x", "h", "capacity_ah", "r_ohm", "side_ah", "n_equiv")]
    c = cells.make_cell("thick-dense", seed=7)
    out += runs.rate_test(c, (0.1, 10.0))
    out.append(c.voltage(1e-4))
    r = cells.make_cell("rc")
    for k in range(50):
        r.advance(1e-3 if k < 30 else -2e-3, 0.1)
    out.append(r.voltage(-2e-3))
    return out


def test_micropython_runs_the_same_numbers(tmp_path: Path) -> None:
    script = tmp_path / "scenario.py"
    script.write_text(_SCENARIO)
    res = run_mp(script, path=[MP_DIR], heap="192K", timeout=120)
    assert res.returncode == 0, res.stderr.decode()
    got = [float(line) for line in res.stdout.decode().split()]
    want = _scenario_cpython()
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g == pytest.approx(w, rel=1e-9, abs=1e-15)
