"""Pinned compile outcomes of the shipped examples: restructuring ``sicell.schedule`` changes
no byte a board receives.

The digests were recorded with the single-module ``sicell/schedule.py`` before it became a
package (the split was also checked against every schedule text the tests parse, with no
difference). Pinning digests is allowed here because it holds existing behaviour fixed across
refactors: for each example, the SHA-256 of the compiled blob and a SHA-256 over
``step_rows``, ``estimate_duration_s``, ``warnings``, ``metadata`` and ``name``. After a
deliberate change of compiled output, print the new pins with
``python tests/test_schedule_pins.py`` and say why in the commit.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from sicell.schedule import ScheduleValidationError, parse_schedule
from sicell.schedule.model import DEFAULT_LIMITS, BoardLimits

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "host" / "sicell" / "examples"
LIMITS = DEFAULT_LIMITS  # the reference board's (firmware/board.json: ±2.4 V since the voltage
# channel got its ±4.096 V range; the ±2.0 V of before changed no pinned byte but paper-rate's)
PINS: dict[str, dict[str, str]] = {
    "film-quick.toml": {
        "blob_sha256": "d9649105a5fd539d0cd85d1533a445614e502fc9951bd5cf6b07451cc35bc240",
        "derived_sha256": "5346140afb6e4b8656d37c0776625dce05cdfed5a9c2991a470bc965cedc400f",
    },
    "paper-cycling.toml": {
        "blob_sha256": "feebc0f3114a24293ce6e56e090b22b53acf3d6c39a724b6257a8feb9e6631dc",
        "derived_sha256": "d44e868bfd66497f462f371febf289669641e61d2937a59ca473941555c66fb5",
    },
    "paper-rate.toml": {
        "blob_sha256": "d3b63bd3b9311c9d3a86f5060f3604732cdb83724b97d735f00994b42392b952",
        "derived_sha256": "975761b63cbf499ae972b95145977869ab8740d602c1b32538501224c8f97d45",
    },
    "rc-check.toml": {
        "blob_sha256": "00a645cac8b75defa2e0d9401670582fdeb0b2b314821c11560e169ef0fa9120",
        "derived_sha256": "00e602fa4c20f376b79e5ad18fe19ffef9b8ce7cca4bc073934ce64b396c3f2f",
    },
}


def _error(e: ScheduleValidationError) -> dict[str, Any]:
    return {"error": str(e), "attrs": [e.step, e.label, e.key, repr(e.value)]}


def outcome(text: str, source: str, limits: BoardLimits) -> dict[str, Any]:
    """What the pins record for ``text`` compiled for ``limits``."""
    try:
        sched = parse_schedule(text, source=source)
    except ScheduleValidationError as e:
        return _error(e)
    out: dict[str, Any] = {}
    try:
        out["blob_sha256"] = hashlib.sha256(sched.compile(limits)).hexdigest()
    except ScheduleValidationError as e:
        out.update(_error(e))
    rows: Any
    try:
        rows = sched.step_rows()
    except ScheduleValidationError as e:
        rows = "error: " + str(e)
    derived = repr(
        (rows, sched.estimate_duration_s(), sched.warnings(limits), sched.metadata(), sched.name)
    )
    out["derived_sha256"] = hashlib.sha256(derived.encode()).hexdigest()
    return out


def test_every_example_is_pinned() -> None:
    assert set(PINS) == {p.name for p in EXAMPLES.glob("*.toml")}


@pytest.mark.parametrize("name", sorted(PINS))
def test_example_compiles_to_the_pinned_bytes(name: str) -> None:
    path = EXAMPLES / name
    assert outcome(path.read_text(encoding="utf-8"), name, LIMITS) == PINS[name]


if __name__ == "__main__":  # pragma: no cover - run by hand after a deliberate change
    print(
        json.dumps(
            {
                p.name: outcome(p.read_text(encoding="utf-8"), p.name, LIMITS)
                for p in sorted(EXAMPLES.glob("*.toml"))
            },
            indent=4,
        )
    )
