"""The client against a scripted fake board (tests/fakeboard.py) over a pty or a TCP socket."""

from __future__ import annotations

import re
import struct
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sicell.client import Board
from sicell.errors import (
    BoardError,
    BoardTimeoutError,
    NoFirmwareError,
    ScheduleVerifyError,
    VersionMismatchError,
)
from sicell.nack import describe_nack
from sicell.protocol import framing, messages
from sicell.protocol import schedule as wire_schedule
from sicell.replies import BoardInfo, CalEntry, Record, Status
from sicell.transport import Link

from tests.fakeboard import FakeBoard, sched_blob

M = messages


def _open(url: str, **kw: Any) -> Board:
    return Board.open(url, hello_timeout=2.0, **kw)


# ---- handshake ------------------------------------------------------------------------------
def test_handshake_over_pty(fake: Any) -> None:
    fb = fake(state=M.ST_IDLE)
    path = fb.serve_pty()
    with _open(path) as b:
        info = b.info
        assert info is not None
        assert info.board_id == "fake0001"
        assert info.fw_version_str == "0.3.1"
        assert info.protocol_version_str == f"{framing.PROTO_MAJOR}.0"
        assert info.ranges_na == (10_000, 100_000, 1_000_000, 10_000_000)
        assert info.state_name == "idle"
        assert info.reset_cause_name == "power-on"
        assert "emulator" in info.cap_names and "calibration" in info.cap_names
        assert not info.has_run
        d = info.as_dict()
        assert d["ranges_na"] == [10_000, 100_000, 1_000_000, 10_000_000]
        assert d["v_max_uv"] == 2_500_000
        uptime, rtt = b.ping()
        assert uptime == 42 and rtt < 1.0


def test_handshake_over_tcp_running_board(fake: Any) -> None:
    fb = fake(state=M.ST_RUNNING, run_id=0xDEADBEEF)
    with _open(fb.serve_tcp()) as b:
        assert b.info is not None
        assert b.info.has_run
        assert b.info.run_id == 0xDEADBEEF
        st = b.status()
        assert st.state_name == "running"
        assert st.run_id == 0xDEADBEEF


def test_version_mismatch_refused(fake: Any) -> None:
    fb = fake(proto_major=framing.PROTO_MAJOR + 1)
    path = fb.serve_pty()
    with pytest.raises(VersionMismatchError) as ei:
        _open(path)
    msg = str(ei.value)
    assert path in msg
    assert f"{framing.PROTO_MAJOR + 1}.0" in msg
    assert f"{framing.PROTO_MAJOR}.{framing.PROTO_MINOR}" in msg


def test_garbage_means_no_firmware(fake: Any) -> None:
    fb = fake(garbage=True)
    path = fb.serve_pty()
    with pytest.raises(NoFirmwareError) as ei:
        Board.open(path, hello_timeout=1.0)
    msg = str(ei.value)
    assert f"no sicell firmware on {path}" in msg
    assert "sicell flash" in msg


def test_silence_means_no_firmware(fake: Any) -> None:
    fb = fake(mute={M.HELLO})
    path = fb.serve_pty()
    with pytest.raises(NoFirmwareError, match="no answer"):
        Board.open(path, hello_timeout=0.6)


# ---- typed replies --------------------------------------------------------------------------
_INT_RANGES = {"B": (0, 0xFF), "H": (0, 0xFFFF), "I": (0, 0xFFFFFFFF), "i": (-(2**31), 2**31 - 1)}


def _layout_values(msg_type: int) -> st.SearchStrategy[tuple[Any, ...]]:
    """Any values that fit the fixed part of ``msg_type``'s wire layout."""
    fmt = messages.LAYOUTS[msg_type][0].lstrip("<")
    parts: list[st.SearchStrategy[Any]] = []
    k = 0
    while k < len(fmt):
        if fmt[k].isdigit():  # "8s"
            parts.append(st.binary(min_size=8, max_size=8))
            k += 2
        else:
            parts.append(st.integers(*_INT_RANGES[fmt[k]]))
            k += 1
    return st.tuples(*parts)


@given(_layout_values(M.STATUS))
def test_status_takes_every_wire_field(values: tuple[Any, ...]) -> None:
    f = dict(zip(M.LAYOUTS[M.STATUS][1], values, strict=True))
    s = Status.from_payload(M.pack(M.STATUS, *values))
    for name, v in f.items():
        if name not in ("t_s", "t_ms"):
            assert getattr(s, name) == v, name
    assert s.t_s == f["t_s"] + f["t_ms"] / 1000.0


@given(_layout_values(M.INFO), st.lists(st.integers(1, 2**31 - 1), max_size=6))
def test_board_info_takes_every_wire_field(values: tuple[Any, ...], ranges: list[int]) -> None:
    f = dict(zip(M.LAYOUTS[M.INFO][1], values, strict=True))
    f["n_ranges"] = len(ranges)
    info = BoardInfo.from_payload(M.pack_info(f.values(), ranges))
    assert info.fw_version == (f["fw_major"], f["fw_minor"], f["fw_patch"])
    assert info.ranges_na == tuple(ranges) and info.n_ranges == len(ranges)
    assert info.fields == f
    same = ("proto_major", "proto_minor", "caps", "v_min_uv", "v_max_uv", "compliance_uv")
    same += ("ring_capacity", "tick_ms", "state", "reset_cause", "run_id")
    for name in same:
        assert getattr(info, name) == f[name], name
    raw = f["board_id"].rstrip(b"\x00")
    printable = bool(raw) and all(32 <= b < 127 for b in raw)
    assert info.board_id == (raw.decode("ascii") if printable else f["board_id"].hex())


# ---- requests -------------------------------------------------------------------------------
def test_upload_and_verify(fake: Any) -> None:
    fb = fake()
    blob = sched_blob(30)
    assert len(blob) > 2 * M.MAX_CHUNK  # several chunks
    seen: list[tuple[int, int]] = []
    with _open(fb.serve_tcp()) as b:
        b.upload_schedule(blob, progress=lambda n, tot: seen.append((n, tot)))
        assert fb.loaded == blob
        assert b.read_schedule(len(blob)) == blob
        assert seen[-1] == (len(blob), len(blob))
        chunks = [r for r in fb.received if r[0] == M.SCHED_CHUNK]
        assert all(len(p) - 4 <= M.MAX_CHUNK for _, _, p in chunks)
        assert b.status().state == M.ST_LOADED


def test_upload_verify_detects_corruption(fake: Any) -> None:
    fb = fake(corrupt_readback=True)
    with _open(fb.serve_tcp()) as b, pytest.raises(ScheduleVerifyError, match="byte 0"):
        b.upload_schedule(sched_blob(3))


def test_nack_schedule_names_step_and_error(fake: Any) -> None:
    code = (3 << 8) | wire_schedule.ERR_CURRENT
    fb = fake(end_nack=(M.E_SCHEDULE, code))
    with _open(fb.serve_tcp()) as b, pytest.raises(BoardError) as ei:
        b.upload_schedule(sched_blob(5))
    e = ei.value
    assert e.request == M.SCHED_END and e.code == M.E_SCHEDULE
    msg = str(e)
    assert "SCHED_END refused" in msg
    assert "step 3" in msg
    assert wire_schedule.ERR_TEXT[wire_schedule.ERR_CURRENT] in msg


def test_nack_mapping_state_and_no_schedule(fake: Any) -> None:
    fb = fake()
    with _open(fb.serve_tcp()) as b:
        with pytest.raises(BoardError, match="START refused: no schedule loaded"):
            b.start(7)
        with pytest.raises(BoardError, match=r"STOP refused: not allowed .*board is idle"):
            b.stop()
        with pytest.raises(BoardError, match=r"CAL_GET refused: value out of hardware range"):
            b.cal_get(9, 0)


def test_describe_nack_texts() -> None:
    assert "oldest record held is seq 17" in describe_nack(M.E_SEQ_GONE, 17)
    assert "at most 1024 bytes" in describe_nack(M.E_TOO_LARGE, 1024)
    assert "header" in describe_nack(M.E_SCHEDULE, (0xFFFF << 8) | wire_schedule.ERR_SAFETY)
    assert describe_nack(99, 0) == "error 99"


@pytest.mark.parametrize(
    ("code", "detail", "text"),
    [
        (M.E_STATE, M.ST_RUNNING, "not allowed in the current state (board is running)"),
        (M.E_STATE, 200, "not allowed in the current state (board is state 200)"),
        (M.E_RANGE, -5, "value out of hardware range (value -5)"),
        (M.E_VERSION, 0x21, "incompatible protocol version (board speaks 2.1)"),
        (M.E_VERSION, 3, "incompatible protocol version (board speaks 3.x)"),
        (M.E_FRAME, 1, "malformed frame (empty frame)"),
        (M.E_FRAME, 250, "malformed frame"),
        (M.E_CHECKSUM, 0, "schedule checksum mismatch"),
        (M.E_CHECKSUM, 9, "schedule checksum mismatch (detail 9)"),
        (99, 4, "error 99 (detail 4)"),
    ],
)
def test_describe_nack_exact(code: int, detail: int, text: str) -> None:
    assert describe_nack(code, detail) == text


def test_retry_idempotent_after_lost_reply(fake: Any) -> None:
    fb = fake(mute={M.STATUS_REQ}, mute_count=2)
    with _open(fb.serve_tcp(), timeout=0.3) as b:
        st = b.status()
        assert st.state == M.ST_IDLE
        sent = [r for r in fb.received if r[0] == M.STATUS_REQ]
        assert len(sent) == 3
        assert len({rid for _, rid, _ in sent}) == 1  # same request id on every retry


def test_timeout_names_request(fake: Any) -> None:
    # A silent board: resent after 0.1, 0.15, 0.2 s (growing up to the 0.2 s cap) until it
    # has said nothing for timeout x (1 + retries) = 0.4 s.
    fb = fake(mute={M.PING})
    with _open(fb.serve_tcp(), timeout=0.2) as b:
        b.retries = 1
        with pytest.raises(BoardTimeoutError) as ei:
            b.ping()
    m = re.search(
        r"no reply to PING within (\d+\.\d) s \((\d+) tries; the board sent nothing for the "
        r"last (\d+\.\d) s\)",
        str(ei.value),
    )
    assert m is not None, str(ei.value)
    assert float(m.group(3)) >= 0.4
    pings = [r for r in fb.received if r[0] == M.PING]
    assert len(pings) == int(m.group(2)) == 3
    assert len({rid for _, rid, _ in pings}) == 1


def test_non_idempotent_resent_only_after_status_says_not_acted_on(fake: Any) -> None:
    # START never blindly: each resend follows a STATUS that shows no run started.
    fb = fake(mute={M.START})
    with _open(fb.serve_tcp(), timeout=0.2) as b, pytest.raises(BoardTimeoutError) as ei:
        b.start(1)
    assert "no reply to START in 12 tries" in str(ei.value)
    kinds = [r[0] for r in fb.received if r[0] in (M.START, M.STATUS_REQ)]
    assert kinds.count(M.START) == 12  # 3 x (1 + retries)
    assert kinds[0] == M.START
    for k, t in enumerate(kinds[1:], 1):
        if t == M.START:
            assert kinds[k - 1] == M.STATUS_REQ


@pytest.mark.parametrize("lost", [M.SCHED_END, M.START, M.STOP], ids=M.NAMES.get)
def test_lost_reply_to_a_request_the_board_acted_on_is_settled_by_status(
    fake: Any, monkeypatch: pytest.MonkeyPatch, lost: int
) -> None:
    fb = fake()
    ok = fb._ok
    monkeypatch.setattr(fb, "_ok", lambda req, rid: None if req == lost else ok(req, rid))
    with _open(fb.serve_tcp(), timeout=0.2) as b:
        b.upload_schedule(sched_blob(3))
        b.start(7)
        assert b.status().run_id == 7
        b.stop()
        assert b.status().state == M.ST_STOPPED
    assert len([r for r in fb.received if r[0] == lost]) == 1  # not resent


def test_calibration_roundtrip(fake: Any) -> None:
    fb = fake()
    with _open(fb.serve_tcp()) as b:
        b.cal_set(CalEntry(1, 1, -120, 1_000_350))
        assert b.cal_get(1, 1) == CalEntry(1, 1, -120, 1_000_350)
        b.cal_save()
        cal = b.calibration()
        assert len(cal) == 12  # 4 ranges x (voltage, current, set point)
        assert CalEntry(1, 1, -120, 1_000_350) in cal


def test_records_reach_sink_during_requests(fake: Any) -> None:
    fb = fake(n_samples=50)
    got: list[Record] = []
    with _open(fb.serve_tcp(), record_sink=got.append) as b:
        b.upload_schedule(sched_blob(2))
        b.start(1234)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            b.poll(0.05)
            if any(r.is_event and r.fields["code"] == M.EV_RUN_END for r in got):
                break
            b.status()
    seqs = [r.seq for r in got]
    assert seqs == list(range(1, 53))  # RUN_START, 50 samples, RUN_END
    assert got[0].fields["code"] == M.EV_RUN_START and got[0].fields["value"] == 1234
    assert got[1].is_sample and set(got[1].fields) == set(M.LAYOUTS[M.SAMPLE][1])


def test_stale_frames_and_noise_do_not_confuse(fake: Any) -> None:
    fb = fake()
    path = fb.serve_pty()
    with _open(path) as b:
        # noise and a frame for an unknown request id arrive before the reply
        fb._write(b"\x00\x13\x37garbage\x00")
        fb._write(fb._frame(M.OK, 999_999, M.pack(M.OK, M.PING)))
        assert b.status().state == M.ST_IDLE
        assert b.link.framing_errors >= 1


def test_link_frame_reader_counts_errors() -> None:
    link_frames = framing.encode_frame(M.PING, 5, struct.pack("<I", 1))
    from sicell.transport import FrameReader

    r = FrameReader()
    out = r.feed(b"\x00\x01\x02\x03\x00" + link_frames + link_frames[:5])
    assert [f.seq for f in out] == [5]
    assert r.errors == 1
    out = r.feed(link_frames[5:])
    assert [f.type for f in out] == [M.PING]


def test_link_lost_on_unplug(fake: Any) -> None:
    from sicell.transport import LinkLostError

    fb = fake()
    url = fb.serve_tcp()
    link = Link.open(url)
    b = Board(link)
    b.hello(timeout=2)
    fb.unplug()
    with pytest.raises(LinkLostError):
        for _ in range(50):
            b.poll(0.05)
    link.close()


class _ReplyThenRecords(FakeBoard):
    """Writes each STATUS reply and three records in ONE write, so they arrive in one read."""

    def _handle(self, t: int, rid: int, p: bytes) -> None:
        if t != M.STATUS_REQ:
            super()._handle(t, rid, p)
            return
        with self._lock:
            data = self._frame(
                M.STATUS, rid, M.pack(M.STATUS, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
            )
            for _ in range(3):
                seq = self.next_seq
                self.next_seq += 1
                data += self._frame(
                    M.SAMPLE,
                    seq,
                    M.pack(M.SAMPLE, seq, 0, 1, 2, 3, 0, 0, 1, 0),
                    framing.VERSION_BYTE,
                )
            self._write(data)


def test_records_read_together_with_a_reply_reach_the_sink() -> None:
    fb = _ReplyThenRecords()
    got: list[Record] = []
    try:
        # a pty, whose in_waiting counts real bytes (pyserial's socket:// reports 1), so the reply
        # and the records behind it are read in one chunk
        with _open(fb.serve_pty(), record_sink=got.append) as b:
            for _ in range(4):
                assert b.status().state == M.ST_RUNNING
            while b.poll(0.2):
                pass
    finally:
        fb.close()
    seqs = [r.seq for r in got]
    # every record the board wrote behind a reply arrived (Board.open may ask for STATUS too)
    assert seqs == list(range(1, fb.next_seq))
    assert len(seqs) >= 12
