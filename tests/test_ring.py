"""Record ring: ACK / REPLAY / reserve / chunk wrap / u32 seq wrap / decimation, and the engine's
host-loss policies (decimate, hold). The same checks run under CPython and under
``micropython -X heapsize=192K``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT / "firmware", ROOT, ROOT / "tests" / "mp"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import eng_t_ring as R  # noqa: E402

from tests.mputil import needs_mp, run_mp_json  # noqa: E402


@pytest.mark.parametrize("name", R.CHECKS)
def test_ring_cpython(name: str) -> None:
    print(name, getattr(R, "check_" + name)())


@needs_mp
def test_ring_micropython() -> None:
    out = run_mp_json("eng_t_ring.py")
    print(out)
    assert set(out) == set(R.CHECKS)
    assert out["hold_policy_engine"]["hold_s"] >= 120
    assert out["decimate_policy_engine"]["dropped"] > 0


def test_ring_capacity_and_slot_layout() -> None:
    import ring

    from protocol import messages as M

    assert ring.SLOT == 32
    assert ring.SAMPLE_SIZE == M.size(M.SAMPLE) == 24
    assert ring.EVENT_SIZE == M.size(M.EVENT) == 20
    assert ring._SAMPLE == M.SAMPLE and ring._EVENT == M.EVENT  # const() copies (CPython)
    rg = ring.Ring(1000)
    assert rg.capacity == 1024 and all(len(c) == 4096 for c in rg.chunks)
