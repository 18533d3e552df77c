"""Upload, START and a run over a link that drops 1 % and corrupts 1 % of the bytes both ways
from the start; chunk sizes, resends and the settling of lost replies against fake boards; and
the firmware's handling of resent and shorter chunks."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sicell.client import Board
from sicell.errors import BoardError
from sicell.protocol import framing, messages
from sicell.schedule import parse_schedule
from sicell.session import RunSession, SessionOptions
from sicell.upload import MIN_CHUNK, ChunkSize

from tests.fakeboard import FakeBoard, sched_blob
from tests.mputil import needs_mp

M = messages

# film-quick's film, reference and safety window, cut to about 40 min of test time; host_loss
# "hold": the board never drops a record, so every seq must be stored.
SHORT_FILM = """
name = "noisy-film"
vs = "Li"
[cell]
area_cm2 = 0.567
loading_mg_cm2 = 0.21
capacity_mah_g = 3579
resistance_ohm_cm2 = 150
[reference]
electrode = "In-Li"
[safety]
v_min = -0.10
v_max = 2.60
i_max_ma = 0.2
debounce_s = 1.0
[recording]
dt_s = 15
dv_mv = 5
[control]
tick_ms = 100
slow_tick_ms = 1000
host_loss = "hold"
[[step]]
kind = "ocv"
duration_min = 2
[[step]]
label = "lith"
kind = "cc"
direction = "lithiation"
current_density_ma_cm2 = 0.1
until_v = 0.01
duration_min = 30
[[step]]
kind = "rest"
duration_min = 5
"""

# quick to ask again for what the noise spoilt
OPTS = SessionOptions(
    batch_interval_s=0.1, status_interval_s=0.5, gap_wait_s=0.3, replay_retry_s=1.0
)


@needs_mp
def test_upload_start_and_run_over_a_noisy_link(tmp_path: Path, rt: Path) -> None:
    url = (
        "emu://thin-porous?drop=0.01&corrupt=0.01&direction=both&seed=12&fresh=1"
        f"&board=noisy-{tmp_path.name[-12:]}&owner=1"
    )
    db = tmp_path / "noisy.db"
    summary = RunSession.new(parse_schedule(SHORT_FILM), url, db, options=OPTS).run()
    assert summary.end_reason == "complete"
    assert summary.framing_errors > 50  # the faults did hit
    assert summary.lost_seqs == 0 and summary.decimated == 0
    con = sqlite3.connect(db)
    seqs = [
        r[0]
        for r in con.execute("SELECT seq FROM samples UNION ALL SELECT seq FROM events ORDER BY 1")
    ]
    names = [r[0] for r in con.execute("SELECT name FROM events ORDER BY seq")]
    con.close()
    assert len(seqs) > 100
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # every record once, none missing
    assert names[0] == "run_start" and names[-1] == "run_end"


# ---- chunk sizes ------------------------------------------------------------------------------
def test_chunk_size_halves_while_lost_and_doubles_when_through() -> None:
    c = ChunkSize()
    assert [c.for_try(k, 10_000) for k in range(6)] == [192, 96, 48, 24, 16, 16]
    c.got_through(24)  # answered at a later try: go on at the size that got through
    assert c.for_try(0, 10_000) == 24
    c.got_through(24)  # answered at the first try: double
    assert c.for_try(0, 10_000) == 48
    assert c.for_try(0, 30) == 30  # never past the end
    for _ in range(8):
        c.for_try(0, 10_000)
        c.got_through(M.MAX_CHUNK)
    assert c.size == M.MAX_CHUNK
    assert c.for_try(9, 10_000) == MIN_CHUNK


def _open(fb: FakeBoard, **kw: Any) -> Board:
    return Board.open(fb.serve_tcp(), hello_timeout=2.0, timeout=0.3, **kw)


def _wrap_handle(fb: FakeBoard, hook: Any) -> None:
    """Let ``hook(t, rid, payload)`` decide, per received frame, whether the fake board
    hears it (True) or it was lost on the way (False)."""
    handle = fb._handle

    def h(t: int, rid: int, p: bytes) -> None:
        if hook(t, rid, p):
            handle(t, rid, p)
        else:
            fb.received.append((t, rid, p))

    fb._handle = h  # type: ignore[method-assign]


def test_upload_shrinks_chunks_a_board_does_not_hear(fake: Any) -> None:
    # Chunks with more than 40 schedule bytes never arrive: the upload goes on in smaller ones.
    fb = fake()
    _wrap_handle(fb, lambda t, rid, p: t != M.SCHED_CHUNK or len(p) - 4 <= 40)
    blob = sched_blob(5)
    with _open(fb) as b:
        b.upload_schedule(blob)
    assert fb.loaded == blob
    chunks = [(rid, M.unpack(M.SCHED_CHUNK, p)[0], len(p) - 4) for t, rid, p in fb.received
              if t == M.SCHED_CHUNK]  # fmt: skip
    assert chunks[0][1:] == (0, M.MAX_CHUNK)
    heard = [(off, n) for _, off, n in chunks if n <= 40]
    assert [off for off, _ in heard] == [sum(n for _, n in heard[:k]) for k in range(len(heard))]
    assert sum(n for _, n in heard) == len(blob)
    for (rid0, off0, n0), (rid1, off1, n1) in itertools.pairwise(chunks):
        if off1 == off0:  # a try lost: the same offset again, half as long, new request id
            assert n1 == max(MIN_CHUNK, n0 // 2) and rid1 != rid0


def test_chunk_whose_ok_is_lost_is_written_again_at_its_offset(fake: Any) -> None:
    # The first OK at every offset is lost: the board got the chunk, the client cannot know and
    # sends it again at the same offset (shorter); the board's copy stays right.
    fb = fake()
    ok = fb._ok
    seen: set[int] = set()
    offsets: dict[int, int] = {}  # request id -> offset

    def hook(t: int, rid: int, p: bytes) -> bool:
        if t == M.SCHED_CHUNK:
            offsets[rid] = M.unpack(M.SCHED_CHUNK, p)[0]
        return True

    def lose_first_ok(req: int, rid: int) -> None:
        if req == M.SCHED_CHUNK and offsets[rid] not in seen:
            seen.add(offsets[rid])
            return
        ok(req, rid)

    _wrap_handle(fb, hook)
    fb._ok = lose_first_ok  # type: ignore[method-assign]
    blob = sched_blob(5)
    with _open(fb) as b:
        b.upload_schedule(blob)
    assert fb.loaded == blob
    chunks = [p for t, _, p in fb.received if t == M.SCHED_CHUNK]
    assert len(chunks) == 2 * len(seen)
    for first, again in zip(chunks[0::2], chunks[1::2], strict=True):
        assert again[:4] == first[:4]  # the same offset
        assert first.startswith(again)  # its first half (or all of it, at the smallest size)


def test_lost_sched_end_is_sent_again_after_status(fake: Any) -> None:
    fb = fake(mute={M.SCHED_END}, mute_count=1)
    blob = sched_blob(3)
    with _open(fb) as b:
        b.upload_schedule(blob)
        assert b.status().state == M.ST_LOADED
    kinds = [t for t, _, _ in fb.received if t in (M.SCHED_END, M.STATUS_REQ)]
    assert kinds[:3] == [M.SCHED_END, M.STATUS_REQ, M.SCHED_END]


def test_sched_end_nack_lost_then_e_state_uploads_again(fake: Any) -> None:
    # The board refuses the schedule at SCHED_END (E_SCHEDULE, detail 7) and drops the upload,
    # but the NACK is lost; the resent SCHED_END meets E_STATE. The client uploads once more
    # and raises the board's real answer.
    fb = fake()
    state = {"upload": False, "nacks": 0}
    nack = fb._nack

    def hook(t: int, rid: int, p: bytes) -> bool:
        if t == M.SCHED_BEGIN:
            state["upload"] = True
        if t != M.SCHED_END:
            return True
        if not state["upload"]:
            nack(t, rid, M.E_STATE, M.ST_IDLE)
        else:
            state["upload"] = False
            state["nacks"] += 1
            if state["nacks"] > 1:  # the first NACK is lost on the way
                nack(t, rid, M.E_SCHEDULE, 7)
        return False

    _wrap_handle(fb, hook)
    with _open(fb) as b, pytest.raises(BoardError) as ei:
        b.upload_schedule(sched_blob(3))
    assert ei.value.code == M.E_SCHEDULE and ei.value.detail == 7
    assert [t for t, _, _ in fb.received].count(M.SCHED_BEGIN) == 2


def test_hello_survives_garbled_replies(fake: Any) -> None:
    # The first 12 INFO replies arrive with a byte flipped: HELLO is resent every 0.1 s while
    # replies come garbled, so it gets through well within the 2 s (at the old fixed 0.5 s
    # interval it took 6 s).
    fb = fake()
    reply = fb._reply
    spoilt = [0]

    def garble(t: int, seq: int, payload: bytes = b"") -> None:
        if t == M.INFO and spoilt[0] < 12:
            spoilt[0] += 1
            fr = bytearray(fb._frame(t, seq, payload))
            fr[len(fr) // 2] ^= 0x5A
            fb._write(bytes(fr))
            return
        reply(t, seq, payload)

    fb._reply = garble  # type: ignore[method-assign]
    with _open(fb) as b:
        assert b.info is not None and b.info.board_id == "fake0001"
        assert b.link.framing_errors >= 12
    assert [t for t, _, _ in fb.received].count(M.HELLO) == 13


def test_reply_of_the_wrong_length_counts_as_lost(fake: Any) -> None:
    # A spoilt frame that passes the CRC (one byte short): dropped, the request sent again.
    fb = fake()
    reply = fb._reply
    spoilt = [0]

    def short_cal(t: int, seq: int, payload: bytes = b"") -> None:
        if t == M.CAL and not spoilt[0]:
            spoilt[0] += 1
            payload = payload[:-1]
        reply(t, seq, payload)

    fb._reply = short_cal  # type: ignore[method-assign]
    with _open(fb) as b:
        assert b.cal_get(1, 0).range == 1
        assert b.bad_payloads == 1
    assert [t for t, _, _ in fb.received].count(M.CAL_GET) == 2


def test_read_back_that_differs_once_is_read_again(fake: Any) -> None:
    fb = fake()
    reply = fb._reply
    spoilt = [0]

    def flip_once(t: int, seq: int, payload: bytes = b"") -> None:
        if t == M.SCHED_DATA and not spoilt[0]:
            spoilt[0] += 1
            payload = payload[:4] + bytes([payload[4] ^ 0xFF]) + payload[5:]
        reply(t, seq, payload)

    fb._reply = flip_once  # type: ignore[method-assign]
    blob = sched_blob(3)
    with _open(fb) as b:
        b.upload_schedule(blob)
    reads = [M.unpack(M.SCHED_READ, p)[0] for t, _, p in fb.received if t == M.SCHED_READ]
    assert reads.count(0) == 2  # read from the start a second time


# ---- the firmware's side: a chunk is written at its offset ------------------------------------
@needs_mp
def test_firmware_takes_resent_and_shorter_chunks(tmp_path: Path, rt: Path) -> None:
    blob = sched_blob(5)
    url = f"emu://rc?seed=1&board=chunks-{tmp_path.name[-12:]}&owner=1"
    with Board.open(url, hello_timeout=20.0) as b:
        b.request(M.SCHED_BEGIN, M.pack(M.SCHED_BEGIN, len(blob), framing.crc16(blob)))

        def chunk(off: int, n: int) -> None:
            b.request(M.SCHED_CHUNK, M.pack(M.SCHED_CHUNK, off) + blob[off : off + n])

        chunk(0, 100)
        chunk(0, 100)  # its OK lost: the same chunk again
        chunk(0, 40)  # resent shorter
        chunk(100, 100)
        chunk(40, 100)  # an old copy arriving after a later chunk
        with pytest.raises(BoardError) as ei:
            chunk(210, 10)  # past what the board has: refused, it names the offset it expects
        assert ei.value.code == M.E_RANGE and ei.value.detail == 200
        chunk(200, len(blob) - 200)
        b.request(M.SCHED_END, timeout=3.0)
        assert b.read_schedule(len(blob)) == blob
        assert b.status().state == M.ST_LOADED
