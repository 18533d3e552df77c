"""The HIL rig file (hil_tests/rig.py): each load kind parses into what the suite derives its
set points from, and a bad file is refused naming the key."""

from __future__ import annotations

import math

import pytest

from hil_tests.rig import EMULATOR_RIGS, KINDS, RigError, load_rig, parse_rig

BASE = """
[board]
v_min_v = -2.0
v_max_v = 2.0
[tolerance]
current_fs_pct = 0.5
charge_pct = 0.5
cutoff_overshoot_mv = 10
cv_end_current_pct = 10
debounce_ms = 50
"""


def _rig(dummy: str) -> str:
    return "[dummy]\n" + dummy + BASE


def test_the_shipped_emulator_rigs_cover_rc_and_resistor() -> None:
    kinds = {load_rig(p).dummy.kind for p in EMULATOR_RIGS}
    assert kinds == {"rc", "resistor"}


def test_each_kind_says_what_it_can_show() -> None:
    rc = parse_rig(_rig('kind = "rc"\nr_series_ohm = 250\nc_farad = 1e-3\nr_parallel_ohm = 1000'))
    res = parse_rig(_rig('kind = "resistor"\nr_series_ohm = 1000'))
    cell = parse_rig(_rig('kind = "cell"\nr_series_ohm = 20\ncapacity_mah = 2.5'))
    assert [r.dummy.kind for r in (rc, res, cell)] == list(KINDS)
    assert rc.dummy.has_dynamics and rc.dummy.dc_path and rc.dummy.r_dc_ohm == 1250
    assert not res.dummy.has_dynamics and res.dummy.dc_path and res.dummy.r_dc_ohm == 1000
    assert cell.dummy.has_dynamics and not cell.dummy.dc_path
    assert math.isinf(cell.dummy.r_dc_ohm) and cell.dummy.capacity_mah == 2.5
    assert res.dummy.emu_cell == "resistor" and rc.dummy.emu_cell == "rc"
    with pytest.raises(RigError, match="real board"):
        cell.dummy.emu_query()


@pytest.mark.parametrize(
    ("dummy", "says"),
    [
        ('kind = "capacitor"\nr_series_ohm = 1', "kind must be one of"),
        ('kind = "cell"\nr_series_ohm = 1', "needs capacity_mah"),
        ('kind = "cell"\nr_series_ohm = 1\ncapacity_mah = 0', "capacity_mah must be > 0"),
        ('kind = "rc"\nr_series_ohm = 250', "needs c_farad"),
        ('kind = "resistor"\nr_series_ohm = -5', "r_series_ohm must be > 0"),
    ],
)
def test_a_bad_rig_is_refused_naming_the_key(dummy: str, says: str) -> None:
    with pytest.raises(RigError, match=says):
        parse_rig(_rig(dummy))
