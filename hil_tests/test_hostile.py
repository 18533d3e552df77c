"""Malformed and hostile frames written raw to the port: each answered with a NACK that names
the problem, nothing crashes, and the board still answers PING afterwards.

Runs on hardware too: it needs nothing but the port.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from typing import Any

import pytest
from sicell.client import Board, BoardError
from sicell.protocol import framing as F
from sicell.protocol import messages as M
from sicell.protocol import schedule as S
from sicell.transport import Frame

from hil_tests.harness import reply_wait_s


def _raw_frame(msg_type: int, seq: int, payload: bytes, *, crc_xor: int = 0) -> bytes:
    """A frame like ``encode_frame`` builds, with its CRC optionally spoiled."""
    raw = bytearray(struct.pack("<BBI", F.VERSION_BYTE, msg_type, seq) + payload)
    crc = F.crc16(raw) ^ crc_xor
    raw += bytes((crc >> 8, crc & 0xFF))
    out = bytearray(len(raw) + len(raw) // 254 + 3)
    out[0] = 0
    n = F.cobs_encode_into(raw, len(raw), out, 1)
    out[n] = 0
    return bytes(out[: n + 1])


def _nacks(board: Board, sent_bytes: int, done: Callable[[list[Frame]], bool]) -> list[Frame]:
    """Non-record frames until ``done(frames)`` holds, or at most ``reply_wait_s`` for the
    ``sent_bytes`` just written (harness: from the board's tick and the link's floor rate)."""
    got: list[Frame] = []
    end = time.monotonic() + reply_wait_s(board, sent_bytes)
    while time.monotonic() < end:
        for fr in board.link.receive(0.1):
            if fr.type in (M.SAMPLE, M.EVENT):
                continue
            got.append(fr)
            if done(got):
                return got
    return got


def _nack_with(code: int, detail: int | None = None) -> Callable[[list[Frame]], bool]:
    """Done once a NACK with ``code`` (and ``detail``) arrived: a frame error's NACK carries no
    request id, so it is matched by what it says."""

    def done(frames: list[Frame]) -> bool:
        return any(
            f.type == M.NACK
            and _nack_fields(f)[1] == code
            and (detail is None or _nack_fields(f)[2] == detail)
            for f in frames
        )

    return done


def _answers_to(*ids: int) -> Callable[[list[Frame]], bool]:
    """Done once a reply (any type) to each request id arrived; stale replies do not count."""
    want = set(ids)
    return lambda frames: want <= {f.seq for f in frames}


def _nack_fields(fr: Frame) -> tuple[int, int, int]:
    req, code, detail = M.unpack(M.NACK, fr.payload)
    return int(req), int(code), int(detail)


def _still_alive(board: Board) -> None:
    _uptime, rtt = board.ping(0xC0FFEE)
    assert rtt < 5.0
    st = board.status()
    assert st.state in range(len(M.STATE_NAMES))


def test_wrong_crc_is_nacked(module_board: Board) -> None:
    raw = _raw_frame(M.PING, 0x1111, M.pack(M.PING, 7), crc_xor=0x5A5A)
    module_board.link.write_raw(raw)
    frames = _nacks(module_board, len(raw), _nack_with(M.E_FRAME, F.E_CRC))
    nacks = [_nack_fields(f) for f in frames if f.type == M.NACK]
    assert any(code == M.E_FRAME and detail == F.E_CRC for _, code, detail in nacks), (
        f"no NACK E_FRAME/E_CRC for a frame with a bad CRC; got {frames}"
    )
    assert not any(f.type == M.PONG for f in frames), "a frame with a bad CRC was executed"
    _still_alive(module_board)


def test_oversized_frame_is_nacked(module_board: Board) -> None:
    # 4 KB of non-zero bytes then a delimiter: far beyond MAX_ENCODED
    burst = b"\x00" + bytes([0x55]) * 4096 + b"\x00"
    module_board.link.write_raw(burst)
    frames = _nacks(module_board, len(burst), _nack_with(M.E_FRAME, F.E_LONG))
    nacks = [_nack_fields(f) for f in frames if f.type == M.NACK]
    assert any(code == M.E_FRAME and detail == F.E_LONG for _, code, detail in nacks), (
        f"no NACK E_FRAME/E_LONG for an oversized frame; got {nacks}"
    )
    # and a frame whose payload is over MAX_PAYLOAD but still COBS-valid
    big = _raw_frame(M.PING, 0x2222, bytes(range(1, 256)) * 2)
    module_board.link.write_raw(big)
    frames = _nacks(
        module_board,
        len(big),
        lambda fs: _answers_to(0x2222)(fs) or _nack_with(M.E_FRAME, F.E_LONG)(fs),
    )
    assert any(f.type == M.NACK for f in frames), f"no NACK for a 510-byte payload; got {frames}"
    _still_alive(module_board)


def test_unknown_type_is_nacked(module_board: Board) -> None:
    types = (0x3E, 0x00, 0x7F, 0xFF)
    raws = [_raw_frame(t, 0x3300 + t, b"\x01\x02") for t in types]
    for raw in raws:
        module_board.link.write_raw(raw)
    frames = _nacks(
        module_board, sum(len(r) for r in raws), _answers_to(*(0x3300 + t for t in types))
    )
    nacks = {f.seq: _nack_fields(f) for f in frames if f.type == M.NACK}
    for t in (0x3E, 0x00, 0x7F, 0xFF):
        assert 0x3300 + t in nacks, f"no NACK for message type 0x{t:02x}; got {frames}"
        _req, code, _ = nacks[0x3300 + t]
        assert code == M.E_UNKNOWN_TYPE, f"type 0x{t:02x}: NACK code {code}"
    _still_alive(module_board)


@pytest.mark.parametrize(
    ("msg_type", "payload"),
    [
        (M.PING, b"\x01\x02"),  # needs 4 bytes
        (M.HELLO, b""),  # needs 2
        (M.STATUS_REQ, b"\x00"),  # needs 0
        (M.CAL_SET, b"\x00" * 9),  # needs 10
        (M.SCHED_READ, b"\x00" * 200),
    ],
    ids=["ping-short", "hello-empty", "status-extra", "calset-short", "schedread-long"],
)
def test_wrong_length_is_nacked(module_board: Board, msg_type: int, payload: bytes) -> None:
    raw = _raw_frame(msg_type, 0x4444, payload)
    module_board.link.write_raw(raw)
    frames = _nacks(module_board, len(raw), _answers_to(0x4444))
    nacks = [_nack_fields(f) for f in frames if f.type == M.NACK and f.seq == 0x4444]
    assert nacks, f"no NACK for {M.NAMES[msg_type]} with {len(payload)} payload bytes: {frames}"
    assert nacks[0][1] == M.E_LENGTH, f"NACK code {nacks[0][1]}, expected E_LENGTH"
    _still_alive(module_board)


def _absurd_schedules() -> dict[str, bytes]:
    ok_step = (
        (S.K_CC, 0, 0, 1000, 0, 0, 0, 1000, 0, 0, 0),
        [(S.Q_TIME, S.OP_GE, S.A_NEXT, 1000, 0)],
    )
    hdr = (S.P_DECIMATE, 100, 1000, 100, -1_000_000, 1_000_000, 5_000, S.TEMP_OFF)
    out = {}
    # a current of 2^31-1 nA (2 A) with a safety ceiling of 2 A: beyond every range
    out["huge-current"] = S.encode(
        (S.P_DECIMATE, 100, 1000, 100, -1_000_000, 1_000_000, 2**31 - 1, S.TEMP_OFF),
        [((S.K_CC, 0xFF, 0, 2**31 - 1, 0, 0, 0, 1000, 0, 0, 0), [])],
    )
    # a safety window of +-2000 V
    out["window-2000V"] = S.encode(
        (S.P_DECIMATE, 100, 1000, 100, -(2**31), 2**31 - 1, 5_000, S.TEMP_OFF), [ok_step]
    )
    out["tick-0"] = S.encode((S.P_DECIMATE, 0, 0, 100, -1_000_000, 1_000_000, 5_000, 0), [ok_step])
    out["range-200"] = S.encode(hdr, [((S.K_CC, 200, 0, 1000, 0, 0, 0, 1000, 0, 0, 0), ok_step[1])])
    out["goto-beyond"] = S.encode(hdr, [(ok_step[0], [(S.Q_TIME, S.OP_GE, S.A_GOTO, 1000, 60000)])])
    out["kind-99"] = S.encode(hdr, [((99, 0, 0, 1000, 0, 0, 0, 1000, 0, 0, 0), [])])
    # the header claims 64 steps, the blob holds one
    b = bytearray(S.encode(hdr, [ok_step]))
    struct.pack_into("<H", b, 6, 64)
    out["truncated"] = bytes(b)
    out["bad-magic"] = b"EVIL" + S.encode(hdr, [ok_step])[4:]
    return out


@pytest.mark.parametrize("name", sorted(_absurd_schedules()))
def test_absurd_schedule_is_refused(module_board: Board, name: str) -> None:
    blob = _absurd_schedules()[name]
    with pytest.raises(BoardError) as ei:
        module_board.upload_schedule(blob)
    assert ei.value.code in (M.E_SCHEDULE, M.E_CHECKSUM, M.E_TOO_LARGE, M.E_RANGE), str(ei.value)
    with pytest.raises(BoardError) as e2:
        module_board.start(1234)
    assert e2.value.code in (M.E_NO_SCHEDULE, M.E_STATE), str(e2.value)
    _still_alive(module_board)


def test_schedule_larger_than_the_board_holds(module_board: Board) -> None:
    total = 1 << 30
    with pytest.raises(BoardError) as ei:
        module_board.request(M.SCHED_BEGIN, M.pack(M.SCHED_BEGIN, total, 0x1234))
    assert ei.value.code == M.E_TOO_LARGE, str(ei.value)
    _still_alive(module_board)


def test_chunk_outside_the_announced_schedule(module_board: Board) -> None:
    module_board.request(M.SCHED_BEGIN, M.pack(M.SCHED_BEGIN, 64, 0x1234))
    with pytest.raises(BoardError) as ei:
        module_board.request(M.SCHED_CHUNK, M.pack(M.SCHED_CHUNK, 0x7FFF_FFF0) + b"\x01" * 32)
    assert ei.value.code in (M.E_RANGE, M.E_LENGTH, M.E_SCHEDULE, M.E_STATE), str(ei.value)
    with pytest.raises(BoardError) as e2:
        module_board.request(M.SCHED_END)
    assert e2.value.code in (M.E_CHECKSUM, M.E_SCHEDULE, M.E_STATE), str(e2.value)
    _still_alive(module_board)


def test_garbage_storm_then_ping(module_board: Board) -> None:
    """Random bytes, truncated frames, a frame from another protocol major, nested zeros."""
    import random

    rnd = random.Random(1234)
    junk = bytearray()
    for _ in range(200):
        k = rnd.randrange(4)
        if k == 0:
            junk += bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 40)))
        elif k == 1:
            fr = _raw_frame(M.PING, rnd.randrange(1 << 32), M.pack(M.PING, 1))
            junk += fr[: rnd.randrange(2, len(fr) - 1)]
        elif k == 2:
            junk += b"\x00" * rnd.randrange(1, 5)
        else:
            junk += F.encode_frame(M.PING, 0x5555, M.pack(M.PING, 3), version=0x20)
    # then a PING of a known id: the board answers in order, so its PONG comes after every
    # answer to the junk
    junk += _raw_frame(M.PING, 0x6666, M.pack(M.PING, 9))
    module_board.link.write_raw(bytes(junk))
    frames: list[Any] = _nacks(module_board, len(junk), _answers_to(0x6666))
    assert any(f.seq == 0x6666 and f.type == M.PONG for f in frames), "no PONG after the junk"
    assert all(f.type in (M.NACK, M.PONG, M.OK, M.INFO, M.STATUS) for f in frames)
    for f in frames:
        if f.type == M.NACK and f.seq == 0x5555:
            assert _nack_fields(f)[1] == M.E_VERSION
    _still_alive(module_board)
