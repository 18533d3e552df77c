"""The firmware's arithmetic stays inside the RP2040's small ints (-2**30 .. 2**30-1), checked
without a chip: tests/intcheck.py runs the engine, ring, link and front-end scenarios under
CPython with every BinOp / UnaryOp / AugAssign of the firmware, protocol/framing.py and the fake
front end instrumented. It must flag the issue 12 sites on the code before the fix (e0b653f)."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests import intcheck as IC

ROOT = Path(__file__).resolve().parents[1]
OLD = "e0b653f"  # before the fix
EDGES = "frontend_edges"


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return IC.run([n for n in IC.SCENARIOS if n != EDGES])


@pytest.mark.parametrize("name", sorted(n for n in IC.SCENARIOS if n != EDGES))
def test_scenario_runs_on_the_instrumented_firmware(report: dict[str, Any], name: str) -> None:
    assert report["scenarios"][name] == "ok"


def test_no_int_outside_the_small_int_range(report: dict[str, Any]) -> None:
    print("waived:\n" + IC.format_hits(report["waived"]))
    assert report["sites"] > 500  # the firmware really was instrumented
    assert not report["violations"], "\n" + IC.format_hits(report["violations"])


def test_front_end_at_the_calibration_limits() -> None:
    """Full-scale readings through calibration.correct() at the gain limits (0.9 / 1.1): the old
    a * k reached -2,286,664,380 at a gain of 0.9 past ~9.7 mA; k is now split in thousands."""
    rep = IC.run([EDGES])
    assert rep["scenarios"][EDGES] == "ok"
    assert not rep["violations"], "\n" + IC.format_hits(rep["violations"])


def test_big_literals_in_arithmetic_are_only_the_waived_ones() -> None:
    found = IC.static_scan()
    assert all(d["why"] for d in found), found


def test_every_waiver_is_still_needed(report: dict[str, Any]) -> None:
    used = {(h["file"].rsplit("/", 1)[-1], h["func"]) for h in report["waived"]}
    used |= {(d["file"].rsplit("/", 1)[-1], d["func"]) for d in IC.static_scan() if d["why"]}
    stale = [k for k in IC.WAIVED if (k[0], k[1]) not in used]
    assert not stale


# ---- the check catches the pre-fix lines --------------------------------------------------------
# Each site of issue 12 point 3 as it was at e0b653f: the old lines verbatim, placed at their
# old line numbers (with a def line above where they sat in a method), then called with values
# the firmware met. (file, first line of the block, block, call, flagged line, first value)
OLD_SITES = [
    (
        "firmware/ring.py",
        48,
        """\
        def _seq_gt(a, b):
            # a > b in u32 serial-number arithmetic
            d = (a - b) & 0xFFFFFFFF
            return d != 0 and d < 0x80000000
        """,
        "_seq_gt(5, 3)",
        50,
        0xFFFFFFFF,
    ),
    (
        "firmware/ring.py",
        122,
        """\
        def _alloc(self, seq):
            self.next_seq = (seq + 1) & 0xFFFFFFFF
        """,
        "_alloc(NS(), 7)",
        123,
        0xFFFFFFFF,
    ),
    (
        "firmware/ring.py",
        156,
        """\
        def ack(self, seq):
            seq &= 0xFFFFFFFF
        """,
        "ack(NS(), 7)",
        157,
        0xFFFFFFFF,
    ),
    (
        "firmware/ring.py",
        189,
        """\
        def replay(self, from_seq):
            from_seq &= 0xFFFFFFFF
        """,
        "replay(NS(), 7)",
        190,
        0xFFFFFFFF,
    ),
    (
        "protocol/framing.py",
        173,
        """\
        def encode(raw, version, msg_type, seq):
            struct.pack_into("<BBI", raw, 0, version, msg_type, seq & 0xFFFFFFFF)
        """,
        "encode(bytearray(8), 0x10, 0x44, 7)",
        174,
        0xFFFFFFFF,
    ),
    (
        "firmware/link.py",
        50,
        """\
        def _i32(x):
            x &= 0xFFFFFFFF
            return x - 0x100000000 if x & 0x80000000 else x
        """,
        "_i32(3)",
        51,
        0xFFFFFFFF,
    ),
    (
        "firmware/link.py",
        50,
        """\
        def _i32(x):
            x &= 0xFFFFFFFF
            return x - 0x100000000 if x & 0x80000000 else x
        """,
        "_i32(3)",
        52,
        0x80000000,
    ),
    (
        "firmware/engine_run.py",
        408,
        """\
        def _cross(self, d, slope):
            # ms until V moves by ``d`` µV at ``slope`` µV/s; -1 if it is not heading there.
            if slope == 0 or d == 0 or (d > 0) != (slope > 0):
                return -1
            ad = d if d > 0 else -d
            s = slope if slope > 0 else -slope
            whole = ad // s
            if whole > 1000000:
                return -1
            return whole * 1000 + (ad - whole * s) * 1000 // s
        """,
        "_cross(None, 1189264, 2000000)",  # the CC-CV step on the chip
        417,
        1189264000,
    ),
    (
        "tests/mp/eng_fakefe.py",
        140,
        """\
        def _update(self, i, dt):
            self.q += i * dt
        """,
        "_update(NS(q=0), 1000000, 2000)",  # 1 mA for 2 s
        141,
        2000000000,
    ),
    (
        "tests/mp/eng_fakefe.py",
        243,
        """\
        def _quant(i, steps, fs):
            code = (i * steps + (fs >> 1)) // fs if i >= 0 else -((-i * steps + (fs >> 1)) // fs)
        """,
        "_quant(400000, 32768, 1000000)",
        244,
        400000 * 32768,
    ),
]


@pytest.mark.parametrize(
    "file,start,block,call,line,value", OLD_SITES, ids=["%s:%d" % (s[0], s[4]) for s in OLD_SITES]
)
def test_the_check_flags_the_pre_fix_line(
    file: str, start: int, block: str, call: str, line: int, value: int
) -> None:
    src = "\n" * (start - 1) + textwrap.dedent(block) + "\n" + call + "\n"
    checker = IC.Checker()
    code = IC.instrument(src, file, checker, file)
    g = IC.checked_globals(checker, {})
    g["NS"] = types.SimpleNamespace
    g["struct"] = __import__("struct")
    exec(code, g)
    hits = {(h["file"], h["line"]): h for h in checker.report()["violations"]}
    assert (file, line) in hits, hits
    assert hits[(file, line)]["first"] == value


def test_the_check_passes_small_arithmetic() -> None:
    checker = IC.Checker()
    src = "x = 0x3FFFFFFF\ny = -x - 1\nz = (y + 1) >> 3\nz += x & 0xFFFF\nw = ~5 * 3\n"
    g = IC.checked_globals(checker, {})
    exec(IC.instrument(src, "t.py", checker), g)
    assert g["y"] == -(2**30) and g["w"] == -18
    assert not checker.hits


def _old_tree_available() -> bool:
    if shutil.which("git") is None:
        return False
    p = subprocess.run(
        ["git", "show", "--quiet", OLD], cwd=str(ROOT), capture_output=True, check=False
    )
    return p.returncode == 0


@pytest.mark.skipif(not _old_tree_available(), reason="no git history with " + OLD)
def test_the_old_tree_is_flagged_at_each_site() -> None:
    # the scenarios on firmware/, protocol/ and tests/mp/ as of e0b653f (read with git show)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        IC.old_tree(OLD, Path(tmp))
        rep = IC.run(
            ["ring_ack_replay", "ring_u32_wrap", "link", "cccv_step", "cut_cc_charge"], Path(tmp)
        )
    print(IC.format_hits(rep["violations"]))
    got = {(h["file"], h["line"]) for h in rep["violations"]}
    for site in [
        ("firmware/ring.py", 50),
        ("firmware/ring.py", 123),
        ("firmware/ring.py", 157),
        ("firmware/ring.py", 190),
        ("protocol/framing.py", 174),
        ("firmware/link.py", 51),
        ("firmware/link.py", 52),
        ("firmware/engine_run.py", 417),
        ("tests/mp/eng_fakefe.py", 141),
        ("tests/mp/eng_fakefe.py", 244),
    ]:
        assert site in got, site


# ---- seqs in 16-bit halves: the ring against the model across the carries ------------------
U32 = 2**32
EDGE_FIRSTS = [2**16 - 20, 2**30 - 20, 2**31 - 20, U32 - 20]
RING_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("sample"), st.integers(0, 1), st.booleans()),
        st.tuples(st.just("event"), st.just(0), st.just(False)),
        st.tuples(st.just("send"), st.integers(0, 40), st.just(False)),
        st.tuples(st.just("ack"), st.integers(-3, 60), st.booleans()),
        st.tuples(st.just("replay"), st.integers(-3, 60), st.booleans()),
        st.tuples(st.just("decimate"), st.just(0), st.just(False)),
    ),
    max_size=300,
)


@settings(max_examples=100, deadline=None)
@given(ops=RING_OPS, first=st.sampled_from(EDGE_FIRSTS))
def test_ring_halves_match_the_model_across_the_carries(
    ops: list[tuple[str, int, bool]], first: int
) -> None:
    # the model counts on past 2**32; the ring's seqs are the model's mod 2**32, ACK / REPLAY
    # through the payload bytes (the link's way) or the int API
    if str(ROOT / "firmware") not in sys.path:
        sys.path.insert(0, str(ROOT / "firmware"))
    import ring as fw_ring

    from tests.ringmodel import RingModel

    real = fw_ring.Ring(128, reserve=16, first_seq=first)
    model = RingModel(128, 16, next_seq=first)
    for op, a, b in ops:
        if op == "sample":
            got = real.push_sample(0, 0, 0, 0, 0, 0, 0, 0, 0, bool(a), b)
            assert got == model.push_sample(bool(a), b)
        elif op == "event":
            assert real.push_event(0, 0, 5, 0, 0, 0, 0, 0) == model.push_event(5)
        elif op == "send":
            for _ in range(a):
                slot = model.next_to_send()
                if slot is None:
                    assert real.peek_send() < 0
                    break
                assert real.record(real.peek_send())[1] == slot.seq % U32
                real.mark_sent()
        elif op in ("ack", "replay"):
            seq = model.first_seq() + a
            wire = struct.pack("<I", seq % U32)
            if op == "ack":
                n = real.ack_from(wire, 0) if b else real.ack(seq % U32)
                assert n == model.ack(seq)
            else:
                r = real.replay_from(wire, 0) if b else real.replay(seq % U32)
                m = model.replay(seq)
                assert r == (m % U32 if m >= 0 else -1)
        else:
            assert real.decimate() == model.decimate()
        assert (real.count, real.sent, real.first_seq(), real.last_seq()) == (
            len(model.held),
            model.sent,
            model.first_seq() % U32,
            model.last_seq() % U32,
        )
