"""Tick budget (issue 12, points 4 and 5): the board measures what its tick costs and says so in
INFO; the host refuses a control tick below twice that (a conservative default until the board
has measured a control tick), in one line, before upload. Garbage is collected between ticks
where there is slack, never inside one; the link reads what is waiting in allocation-free
batches; a front-end fault carries its errno; ``sicell status`` on an empty ring says so.

The MicroPython scenarios are tests/mp/eng_t_budget.py; each prints the figures it measured."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from array import array
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st
from sicell import errors
from sicell.cli import cli
from sicell.errors import ScheduleError
from sicell.protocol import framing as F
from sicell.protocol import messages as M
from sicell.replies import BoardInfo, Status, errno_text, fault_text
from sicell.schedule import (
    DEFAULT_LIMITS,
    DEFAULT_TICK_COST_US,
    TICK_COST_FACTOR,
    BoardLimits,
    parse_schedule,
)
from sicell.schedule.compile import check_tick_cost

from tests.fakeboard import FakeBoard
from tests.mputil import ENGINE_PATH, MP_DIR, ROOT, mp_argv, mp_env, needs_mp, run_mp_json

for _p in (ROOT / "firmware", ROOT, MP_DIR):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

BUDGET = "eng_t_budget.py"


def _toml(tick_ms: int) -> str:
    return f"""
name = "budget"
vs = "cell"
[reference]
electrode = "In-Li"
[control]
tick_ms = {tick_ms}
[[step]]
kind = "cc"
direction = "lithiation"
current_ua = 100
duration_s = 10
"""


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _error_lines(res: Result) -> list[str]:
    assert "Traceback" not in res.output
    return [ln for ln in res.output.splitlines() if ln.startswith("error:")]


# ---- the board's figures (MicroPython) ----------------------------------------------------------
@needs_mp
def test_tick_measures_itself_without_allocating() -> None:
    r = run_mp_json(BUDGET, "cost")
    print("unix port, fake front end: control tick p94/max", r["ran"][:2], "µs; idle", r["ran"][2])
    assert r["before"] == [0, 0, 0]  # nothing measured yet
    run0, max0, idle0 = r["idle_only"]
    assert (run0, max0) == (0, 0) and idle0 > 0  # idle ticks only so far
    p94, longest, _idle = r["ran"]
    assert 0 < p94 <= longest
    assert r["alloc_failures"] == 0 and r["ticks"] > 1000  # timed ticks under heap_lock
    assert r["after"][:2] == [p94, longest]  # the run's figures outlive the run
    assert r["window"] == 32


@needs_mp
def test_gc_collect_time_on_the_board_heap() -> None:
    r = run_mp_json(BUDGET, "gc")
    print(
        f"unix port, 192K heap ({r['heap_used']} B used, {r['heap_free']} B free): gc.collect() "
        f"{r['clean_us']} µs, {r['dirty_us']} µs with ~40 KB of garbage, max {r['max_us']} µs"
    )
    assert 0 < r["clean_us"] <= r["max_us"] and 0 < r["dirty_us"] <= r["max_us"]


@needs_mp
@pytest.mark.parametrize("tick_ms", [50, 20])
def test_loop_collects_only_where_the_tick_has_slack(tick_ms: int, tmp_path: Path) -> None:
    """main.loop with a collection that takes 30 ms of the (virtual) clock: at a 50 ms tick it
    collects between ticks, at 20 ms never while the run goes on; no tick is late for it."""
    r = run_mp_json(BUDGET, "loop", str(tick_ms), cwd=tmp_path)  # (it writes runstate.json)
    print(tick_ms, "ms tick:", r)
    assert r["in_tick"] == 0 and r["late_ticks"] == 0
    assert r["ticks"] > 1000 and r["state"] == M.ST_DONE
    if tick_ms == 50:
        assert r["while_running"] > 20
        assert r["min_slack_ms"] * 1000 > 30000  # slack above the measured collection time
    else:
        assert r["while_running"] == 0


@needs_mp
def test_frontend_fault_carries_the_errno() -> None:
    r = run_mp_json(BUDGET, "fault")
    assert r == {"etimedout": [110], "enodev": [19], "other": [0]}


# ---- the link's receive path --------------------------------------------------------------------
def _stream(n_frames: int) -> bytes:
    return b"".join(
        F.encode_frame(
            M.SCHED_CHUNK,
            k,
            M.pack(M.SCHED_CHUNK, k * 192) + bytes((k + j) % 256 for j in range(192)),
        )
        for k in range(n_frames)
    )


def _batches(data: bytes, cap: int) -> list[int]:
    """The batch lengths StdIO.readinto's rule gives: at most ``cap``, ending after a 0x00 that
    follows a non-zero byte (a frame's end)."""
    out, n, prev = [], 0, 0
    for b in data:
        n += 1
        end = b == 0 and prev != 0
        prev = b
        if end or n == cap:
            out.append(n)
            n = 0
    if n:
        out.append(n)
    return out


def _mp_stdin(scenario: str, data: bytes, tmp_path: Path) -> dict[str, Any]:
    """A scenario reading ``data`` from a regular file on stdin (all of it is there at once)."""
    src = tmp_path / "stdin.bin"
    src.write_bytes(data)
    with src.open("rb") as f:
        p = subprocess.run(
            mp_argv(MP_DIR / BUDGET, scenario),
            stdin=f,
            capture_output=True,
            env=mp_env(ENGINE_PATH),
            cwd=tmp_path,
            timeout=120,
            check=False,
        )
    assert p.returncode == 0, p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")
    last: dict[str, Any] = json.loads(p.stdout.decode().strip().splitlines()[-1])
    return last


@needs_mp
def test_stdin_read_path_batches_without_allocating(tmp_path: Path) -> None:
    import link

    data = _stream(20) + b"\x00\x00" + b"\x11" * 50  # frames, spare delimiters, a partial one
    r = _mp_stdin("rx", data, tmp_path)
    assert r["alloc_failures"] == 0  # every readinto under heap_lock
    assert r["total"] == len(data) and r["crc"] == F.crc16(data)
    assert r["lens"] == _batches(data, link.RX_CHUNK)
    # a batch shorter than the buffer ends a frame (but the last: the stream's partial frame)
    short = [e for n, e in zip(r["lens"][:-1], r["ends"], strict=False) if n < link.RX_CHUNK]
    assert short and all(e == 0 for e in short) and r["ends"][-1] == 0x11


@needs_mp
def test_receive_path_against_the_byte_at_a_time_one(tmp_path: Path) -> None:
    data = _stream(20)  # ~4 KB: a schedule upload's worth
    old = _mp_stdin("rx_old", data, tmp_path)
    new = _mp_stdin("rx_new", data, tmp_path)
    print(
        f"{len(data)} B: byte at a time {old['us']} µs ({old['alloc_128'] / 128:.0f} B allocated "
        f"per byte), batches {new['us']} µs ({new['alloc']} B allocated in all, "
        f"{new['alloc'] / new['frames']:.0f} B per frame: the frame's decoding)"
    )
    assert old["frames"] == new["frames"] == 20 and old["total"] == new["total"] == len(data)
    # the new path allocates only when a frame is whole: less for 4 KB than the old for 128 B
    assert 0 < new["alloc"] < old["alloc_128"]


@needs_mp
def test_link_poll_allocates_nothing_until_a_frame_is_whole() -> None:
    r = run_mp_json(BUDGET, "poll_heap")
    assert r == {"bytes": 100, "alloc_failures": 0, "replies": 0}


def test_batch_rule_on_cpython() -> None:
    """link._ByteReader (the read_byte adapter) batches as StdIO does, and Link.poll answers a
    stream fed through it the same as fed whole."""
    import link

    data = _stream(3) + b"\x00" + _stream(2)

    class Bytes:
        def __init__(self) -> None:
            self.pos = 0

        def read_byte(self) -> int:
            if self.pos >= len(data):
                return -1
            self.pos += 1
            return data[self.pos - 1]

    rd = link._ByteReader(Bytes())
    buf = bytearray(link.RX_CHUNK)
    lens = []
    while k := rd.readinto(buf):
        lens.append(k)
    assert lens == _batches(data, link.RX_CHUNK)


# ---- the figures' arithmetic (CPython, the firmware module itself) ------------------------------
@given(st.lists(st.integers(0, 2**20), min_size=0, max_size=32))
def test_high_percentile(values: list[int]) -> None:
    import engine

    a = array("i", values + [0] * (32 - len(values)))
    n = len(values)
    got = engine._high(a, n, 16)
    if n == 0:
        assert got == 0 and engine._high(a, 0, 0) == 0
        return
    s = sorted(values)
    assert got == s[n - 1 - n // 16]  # n // 16 of them above: the 94th percentile at n = 32
    assert engine._high(a, n, 0) == s[-1]
    assert sum(v > got for v in values) <= n // 16


# ---- INFO's extension ---------------------------------------------------------------------------
INFO_VALUES = (0, 1, 0, 1, 0, 2, 0x5F, b"board001", -2_000_000, 2_000_000, 4_500_000, 1024, 100,
               M.ST_IDLE, M.RC_POWER_ON, 0)  # fmt: skip


@given(st.none() | st.tuples(*[st.integers(0, 2**32 - 1)] * 3))
def test_info_extension_round_trip(ext: tuple[int, int, int] | None) -> None:
    payload = M.pack_info(INFO_VALUES, (100_000, 10_000_000), ext)
    info = BoardInfo.from_payload(payload)
    assert info.ranges_na == (100_000, 10_000_000)
    assert (info.tick_us, info.tick_max_us, info.idle_us) == (ext or (0, 0, 0))
    assert M.unpack_info_ext(payload) == ext
    d = info.as_dict()
    assert (d["tick_us"], d["tick_max_us"], d["idle_us"]) == (ext or (0, 0, 0))


def test_info_with_a_broken_tail_is_refused() -> None:
    payload = M.pack_info(INFO_VALUES, (100_000, 10_000_000), (1, 2, 3))
    for bad in (payload[:-1], payload + b"\x00", payload[:-8]):
        with pytest.raises(F.ProtocolError):
            M.unpack_info_ranges(bad)


# ---- the host's check ---------------------------------------------------------------------------
def _limits(tick_us: int = 0, idle_us: int = 0) -> BoardLimits:
    info = dict(zip(M.LAYOUTS[M.INFO][1], INFO_VALUES, strict=True))
    info.update(
        ranges_na=[10_000, 100_000, 1_000_000, 10_000_000], tick_us=tick_us, idle_us=idle_us
    )
    return BoardLimits.from_info(info)


def test_from_info_takes_the_board_figure_or_the_default() -> None:
    assert _limits(0, 0).tick_cost_us == DEFAULT_TICK_COST_US
    assert "default" in _limits(0, 0).tick_cost_source
    assert _limits(0, 3000).tick_cost_us == DEFAULT_TICK_COST_US  # idle shorter: the default
    assert _limits(0, 9000).tick_cost_us == 9000  # a slow measurement alone says more
    assert _limits(2500, 1000).tick_cost_us == 2500
    assert "measured" in _limits(2500, 1000).tick_cost_source
    assert _limits(2500, 4000).tick_cost_us == 4000
    assert DEFAULT_LIMITS.tick_cost_us is None  # no board: not checked


SCHEDULES = {t: parse_schedule(_toml(t)) for t in (5, 10, 12, 20, 100)}


@settings(max_examples=200)
@given(st.sampled_from(sorted(SCHEDULES)), st.integers(0, 30000), st.integers(0, 30000))
def test_tick_below_twice_the_cost_is_refused(tick_ms: int, tick_us: int, idle_us: int) -> None:
    sch = SCHEDULES[tick_ms]
    lim = _limits(tick_us, idle_us)
    cost = max(tick_us or DEFAULT_TICK_COST_US, idle_us)
    assert lim.tick_cost_us == cost
    if tick_ms * 1000 >= TICK_COST_FACTOR * cost:
        check_tick_cost(sch, lim)
        return
    with pytest.raises(ScheduleError) as ei:
        check_tick_cost(sch, lim)
    text = str(ei.value)
    assert "\n" not in text and ei.value.exit_code == errors.EXIT_USAGE
    assert f"tick_ms = {tick_ms} " in text and f"{cost / 1000:.1f} ms" in text
    need = int(re.search(r"tick_ms ≥ (\d+)", text).group(1))  # type: ignore[union-attr]
    assert (need - 1) * 1000 < TICK_COST_FACTOR * cost <= need * 1000
    assert ei.value.key == "tick_ms" and ei.value.value == tick_ms


def test_compile_checks_the_tick_first() -> None:
    with pytest.raises(ScheduleError, match=r"tick_ms = 5 is below 2 × the 6\.0 ms"):
        SCHEDULES[5].compile(_limits())
    assert SCHEDULES[12].compile(_limits())
    assert SCHEDULES[5].compile(DEFAULT_LIMITS)  # no board, no check
    assert SCHEDULES[5].compile(dataclasses.replace(_limits(), tick_cost_us=2000))


def test_run_refuses_before_upload(tmp_path: Path, boards: list[FakeBoard]) -> None:
    """A board that reports no tick cost (this fake, or firmware before it): the default's 12 ms;
    one line, exit 2, nothing uploaded, no database."""
    fb = FakeBoard()
    boards.append(fb)
    url = fb.serve_tcp()
    sched = tmp_path / "s.toml"
    sched.write_text(_toml(10))
    db = tmp_path / "r.db"
    res = _invoke("run", str(sched), "--port", url, "--db", str(db), "-q")
    assert res.exit_code == errors.EXIT_USAGE, res.output
    (line,) = _error_lines(res)
    assert "tick_ms = 10 is below 2 × the 6.0 ms" in line and "tick_ms ≥ 12" in line
    assert not any(t in (M.SCHED_BEGIN, M.START) for t, _, _ in fb.received)
    assert not db.exists()


# ---- status, faults -----------------------------------------------------------------------------
def _status(first: int, last: int, acked: int) -> Status:
    return Status.from_payload(
        M.pack(M.STATUS, M.ST_IDLE, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, first, last, acked, 0)
    )


def test_status_records_text() -> None:
    empty = _status(49152, 49151, 0xFFFFFFFF)
    assert empty.held == 0 and not empty.acked_any
    assert empty.records_text() == "none (ring empty; next seq 49152); host acked none; dropped 0"
    some = _status(10, 19, 9)
    assert some.held == 10 and some.acked_any
    assert some.records_text() == "seq 10..19 (10); host acked up to seq 9; dropped 0"
    wrapped = _status(0xFFFFFFFE, 1, 0xFFFFFFFD)
    assert wrapped.held == 4
    assert _status(0, 0xFFFFFFFF, 0xFFFFFFFF).held == 0  # empty at seq 0


def test_status_command_on_an_empty_ring(boards: list[FakeBoard]) -> None:
    fb = FakeBoard(first_seq=49152)
    fb.acked = 0xFFFFFFFF
    boards.append(fb)
    res = _invoke("status", "--port", fb.serve_tcp())
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.replace("│", " ").split())  # the table's wrapped cells as prose
    assert "ring empty; next seq 49152" in text and "host acked none" in text
    assert "4294967295" not in text and "49152..49151" not in text
    assert "control not measured yet" in text and "tick_ms ≥ 12" in text


def test_fault_text_names_the_cause() -> None:
    assert "ETIMEDOUT (errno 110" in fault_text(M.FAULT_FRONTEND, 110)
    assert "ENODEV (errno 19" in fault_text(M.FAULT_FRONTEND, 19)
    assert fault_text(M.FAULT_FRONTEND, 0).endswith("(not an I/O error)")
    assert fault_text(M.FAULT_FRONTEND, 7777).endswith("errno 7777")
    assert fault_text(M.FAULT_TICK, 123) == "exception in the control tick (source line 123)"
    assert fault_text(M.FAULT_COMMAND, M.START).endswith("(START)")
    assert errno_text(110).startswith("ETIMEDOUT")
    for f in M.FAULT_NAMES:
        assert fault_text(f, 1).startswith(M.FAULT_NAMES[f])


# ---- the emulated board (the real firmware) -----------------------------------------------------
SHORT = """
name = "budget-short"
vs = "cell"
[reference]
electrode = "none"
offset_v = 0.0
[control]
tick_ms = 20
slow_tick_ms = 20
[recording]
dt_s = 0.5
[[step]]
kind = "cc"
direction = "lithiation"
current_ua = 100
duration_s = 2
"""


@needs_mp
def test_emulated_board_measures_and_the_host_refuses(tmp_path: Path, rt: Path) -> None:
    from sicell.client import Board
    from sicell.emulator import launcher

    board = f"budget-{tmp_path.name[-12:]}"
    url = f"emu://rc?board={board}&linger=5"
    try:
        with Board.open(url) as b:
            fresh = b.info
        assert fresh is not None and fresh.tick_us == 0 and fresh.idle_us > 0
        sched = tmp_path / "short.toml"
        sched.write_text(SHORT)
        res = _invoke("run", str(sched), "--port", url, "--db", str(tmp_path / "a.db"), "-q")
        assert res.exit_code == 0, res.output
        with Board.open(url) as b:
            ran = b.info
        assert ran is not None and 0 < ran.tick_us <= ran.tick_max_us
        print(
            f"emulated board (virtual µs): control {ran.tick_us} (max {ran.tick_max_us}), "
            f"idle {ran.idle_us}"
        )
        sched.write_text(SHORT.replace("tick_ms = 20\nslow_tick_ms = 20", "tick_ms = 1"))
        res = _invoke("run", str(sched), "--port", url, "--db", str(tmp_path / "b.db"), "-q")
        assert res.exit_code == errors.EXIT_USAGE, res.output
        (line,) = _error_lines(res)
        assert "tick_ms = 1 is below 2 ×" in line and "measured by the board" in line
        assert not (tmp_path / "b.db").exists()
    finally:
        found = launcher.find_emulator(board, rt)
        if found is not None:
            launcher.EmulatorHandle(found).shutdown(timeout=10)
