"""Exact refusals of the shared schedule readers (word choices, per-unit values that need a
figure of ``[cell]``) and the names the ``sicell.schedule`` package exports."""

from __future__ import annotations

import pytest
import sicell.schedule
from sicell.schedule import ScheduleValidationError, parse_schedule

STEP = '[[step]]\nlabel = "x"\nkind = "cc"\ncurrent_ua = 50\nuntil_v = 0.01\n'
CC = 'vs = "Li"\n' + STEP


@pytest.mark.parametrize(
    ("text", "message", "attrs"),
    [
        (
            CC + "until_capacity_mah_g = 1\n",
            "step 0 ('x', cc): until_capacity_mah_g = 1 is per gram but the schedule has no "
            "mass; expected [cell] mass_mg or loading_mg_cm2",
            {"step": 0, "label": "x", "key": "until_capacity_mah_g", "value": 1},
        ),
        (
            'vs = "Li"\n[cell]\nmass_mg = 1\n' + STEP + "until_capacity_mah_cm2 = 2\n",
            "step 0 ('x', cc): until_capacity_mah_cm2 = 2 is per cm² but the schedule has no "
            "area; expected [cell] area_cm2",
            {"step": 0, "label": "x", "key": "until_capacity_mah_cm2", "value": 2},
        ),
        (
            CC.replace("current_ua = 50", "current_density_ma_cm2 = 0.1"),
            "step 0 ('x', cc): current_density_ma_cm2 = 0.1 is a current density but the "
            "schedule has no area; expected [cell] area_cm2",
            {"step": 0, "label": "x", "key": "current_density_ma_cm2", "value": 0.1},
        ),
        (
            CC.replace("current_ua = 50", 'c_rate = "C/10"'),
            "step 0 ('x', cc): c_rate = 'C/10' is a C-rate for the set current but 1C is "
            "unknown; expected [cell] mass_mg (or loading_mg_cm2 with area_cm2) and [cell] "
            "capacity_mah_g",
            {"step": 0, "label": "x", "key": "c_rate", "value": "C/10"},
        ),
        (
            CC + 'direction = "Sideways"\n',
            "step 0 ('x', cc): direction = 'Sideways'; expected \"lithiation\" or \"delithiation\"",
            {"step": 0, "label": "x", "key": "direction", "value": "Sideways"},
        ),
        (
            'charge_means = "Both"\n' + CC,
            '<string>: charge_means = \'Both\'; expected "lithiation" or "delithiation"',
            {"step": None, "label": None, "key": "charge_means", "value": "Both"},
        ),
        (
            CC + '[control]\nhost_loss = "Drop"\n',
            '[control]: host_loss = \'Drop\'; expected "decimate" or "hold"',
            {"step": None, "label": None, "key": "host_loss", "value": "Drop"},
        ),
    ],
)
def test_refusal_text_and_attributes(text: str, message: str, attrs: dict[str, object]) -> None:
    with pytest.raises(ScheduleValidationError) as ei:
        parse_schedule(text).compile()
    assert str(ei.value) == message
    for name, value in attrs.items():
        assert getattr(ei.value, name) == value, name


def test_word_choices_ignore_case() -> None:
    sched = parse_schedule(CC + 'direction = "DELITHIATE"\n[control]\nhost_loss = "HOLD"\n')
    assert sched.steps[0].direction == -1
    assert sched.control.host_loss == "hold"


def test_package_exports() -> None:
    names = [
        "CONVENTIONS",
        "DEFAULT_LIMITS",
        "KIND_CODES",
        "REFERENCES",
        "BoardLimits",
        "ChargeValue",
        "ControlSpec",
        "CurrentValue",
        "LimitSpec",
        "Potential",
        "RecordSpec",
        "Reference",
        "ResolvedStep",
        "SafetySpec",
        "Schedule",
        "ScheduleValidationError",
        "StepSpec",
        "Vs",
        "load_schedule",
        "parse_schedule",
        "to_cell_v",
        "to_li_v",
    ]
    missing = [n for n in names if not hasattr(sicell.schedule, n)]
    assert missing == []
    for name in sicell.schedule.model.__all__:
        assert getattr(sicell.schedule, name) is getattr(sicell.schedule.model, name)
