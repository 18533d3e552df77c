"""The launcher's byte relay and link faults, without processes, ptys or sockets: bytes and a
clock go in, what would be written (and the counters) come out."""

from __future__ import annotations

import itertools
import math
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sicell.emulator.board import VtimeScanner, restart_delay
from sicell.emulator.faults import FAULT_KEYS, FaultConfig, FaultInjector
from sicell.emulator.relay import PENDING_LIMIT, Relay
from sicell.errors import EmulatorConfigError


def attached(seed: int = 0, **faults: object) -> Relay:
    """A relay with a host attached and a board running."""
    r = Relay(seed, faults)
    r.attach()
    r.board_started()
    return r


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (taken modulo its length, sorted)."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


# ---- fault injector -------------------------------------------------------------------------
def test_fault_injector_off_is_identity() -> None:
    inj = FaultInjector("0:x")
    inj.configure(0.0, 0.0, 0.0)
    data = bytes(range(256)) * 10
    assert inj.process(data) is data
    assert not inj.active


def test_fault_injector_is_deterministic_and_chunking_independent() -> None:
    data = os.urandom(50_000)
    a = FaultInjector("7:to_host")
    a.configure(0.01, 0.01, 0.01)
    b = FaultInjector("7:to_host")
    b.configure(0.01, 0.01, 0.01)
    out_a = a.process(data)
    out_b = b"".join(b.process(data[i : i + 37]) for i in range(0, len(data), 37))
    assert out_a == out_b
    assert (a.dropped, a.corrupted, a.duplicated) == (b.dropped, b.corrupted, b.duplicated)
    c = FaultInjector("8:to_host")
    c.configure(0.01, 0.01, 0.01)
    assert c.process(data) != out_a
    assert len(out_a) == len(data) - a.dropped + a.duplicated


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(max_size=3000),
    cuts=st.lists(st.integers(0, 3000), max_size=20),
    probs=st.tuples(*(st.floats(0, 0.2) for _ in range(3))),
    seed=st.integers(0, 1000),
)
def test_fault_injector_chunking_independent_property(
    data: bytes, cuts: list[int], probs: tuple[float, float, float], seed: int
) -> None:
    whole = FaultInjector(str(seed))
    whole.configure(*probs)
    pieces = FaultInjector(str(seed))
    pieces.configure(*probs)
    out = b"".join(pieces.process(c) for c in split(data, cuts))
    assert out == whole.process(data)
    assert len(out) == len(data) - whole.dropped + whole.duplicated


def test_fault_injector_tiny_probability_never_fires() -> None:
    inj = FaultInjector("0:tiny")
    inj.configure(5e-324, 0.0, 0.0)  # the gap to the first fault overflows a float
    assert inj.active and inj.process(b"x" * 1000) == b"x" * 1000


@pytest.mark.parametrize("kind", ["drop", "corrupt", "duplicate"])
def test_fault_injector_rates(kind: str) -> None:
    n = 200_000
    inj = FaultInjector("1:rates")
    probs = {"drop": 0.0, "corrupt": 0.0, "duplicate": 0.0, kind: 0.01}
    inj.configure(probs["drop"], probs["corrupt"], probs["duplicate"])
    data = bytes(n)
    out = inj.process(data)
    count = {"drop": inj.dropped, "corrupt": inj.corrupted, "duplicate": inj.duplicated}[kind]
    # binomial(200000, 0.01): mean 2000, sd 44.5; 5 sd bounds
    assert 1777 <= count <= 2223
    if kind == "drop":
        assert len(out) == n - count
    elif kind == "duplicate":
        assert len(out) == n + count
    else:
        assert len(out) == n and sum(1 for x in out if x) == count


def test_fault_injector_all() -> None:
    data = bytes(range(1, 256)) * 4
    drop = FaultInjector("s")
    drop.configure(1.0, 0.0, 0.0)
    assert drop.process(data) == b"" and drop.dropped == len(data)
    cor = FaultInjector("s")
    cor.configure(0.0, 1.0, 0.0)
    out = cor.process(data)
    assert len(out) == len(data) and all(x != y for x, y in zip(out, data, strict=True))
    dup = FaultInjector("s")
    dup.configure(0.0, 0.0, 1.0)
    assert dup.process(b"abc") == b"aabbcc"


def test_fault_config_validation() -> None:
    f = FaultConfig().updated({"drop": "0.5", "direction": "to_host"})
    assert f.drop == 0.5 and f.direction == "to_host"
    with pytest.raises(EmulatorConfigError, match="valid faults: drop, corrupt"):
        FaultConfig().updated({"dorp": 0.1})
    with pytest.raises(ValueError, match="out of range"):
        FaultConfig().updated({"drop": 1.5})
    with pytest.raises(ValueError, match="to_board"):
        FaultConfig().updated({"direction": "sideways"})
    with pytest.raises(ValueError, match="must not exceed 1"):
        FaultConfig().updated({"drop": 0.6, "corrupt": 0.6})
    with pytest.raises(ValueError, match=r"0\.\.60000 ms"):
        FaultConfig().updated({"delay_ms": 60001})
    with pytest.raises(ValueError, match="is not a number"):
        FaultConfig().updated({"corrupt": "lots"})
    assert tuple(FaultConfig().as_dict()) == FAULT_KEYS


# ---- relay: bytes both ways -----------------------------------------------------------------
def test_bytes_move_unchanged_both_ways_without_faults() -> None:
    r = attached()
    data = bytes(range(256)) * 8
    r.from_host(data, 1.0)
    r.from_board(data[::-1], 1.0)
    assert bytes(r.board.ready) == data and bytes(r.host.ready) == data[::-1]
    r.board_sent(100)
    r.host_sent(len(data))
    assert bytes(r.board.ready) == data[100:] and not r.host.ready
    st = r.status(1.0)
    assert st["bytes_from_host"] == st["bytes_from_board"] == len(data)
    assert st["bytes_to_board"] == 100 and st["bytes_to_host"] == len(data)
    assert st["bytes_pending_to_board"] == len(data) - 100
    assert st["bytes_dropped"] == 0


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(max_size=2000),
    cuts=st.lists(st.integers(0, 2000), max_size=15),
    drop=st.floats(0, 0.3),
    duplicate=st.floats(0, 0.3),
    delay_ms=st.sampled_from([0.0, 5.0, 250.0]),
    seed=st.integers(0, 100),
)
def test_relay_output_does_not_depend_on_chunking(
    data: bytes, cuts: list[int], drop: float, duplicate: float, delay_ms: float, seed: int
) -> None:
    """However the bytes arrive, the same bytes come out (faults are per byte, the delay
    keeps order), and without faults they come out unchanged."""
    faults = {"drop": drop, "duplicate": duplicate, "delay_ms": delay_ms}
    whole, pieces, clean = attached(seed, **faults), attached(seed, **faults), attached(seed)
    whole.from_board(data, 0.0)
    for i, chunk in enumerate(split(data, cuts)):
        pieces.from_board(chunk, i * 0.001)
        clean.from_host(chunk, i * 0.001)
    for r in (whole, pieces, clean):
        r.release(math.inf)
    assert bytes(pieces.host.ready) == bytes(whole.host.ready)
    assert bytes(clean.board.ready) == data
    inj = whole.host.injector
    assert len(whole.host.ready) == len(data) - inj.dropped + inj.duplicated


def test_faults_apply_in_the_chosen_direction_only() -> None:
    r = attached(3, drop=1.0, direction="to_board")
    r.from_board(b"to the host", 0.0)
    r.from_host(b"to the board", 0.0)
    assert bytes(r.host.ready) == b"to the host" and not r.board.ready
    st = r.status(0.0)
    assert st["counters"]["dropped_fault_to_board"] == len(b"to the board")
    assert st["bytes_dropped"] == len(b"to the board")
    assert r.set_faults({"drop": 0.0})["direction"] == "to_board"  # other keys kept
    r.from_host(b"ok", 0.0)
    assert bytes(r.board.ready) == b"ok"


# ---- relay: delay queue -----------------------------------------------------------------------
def test_delay_releases_at_the_right_time_in_order() -> None:
    r = attached(delay_ms=250)  # times in binary fractions: exact sums
    r.from_board(b"first", 10.0)
    r.from_board(b"second", 10.125)
    assert r.deadline(10.125) == 10.25
    r.release(10.2499)
    assert not r.host.ready and r.host.pending == len(b"firstsecond")
    r.release(10.25)
    assert bytes(r.host.ready) == b"first"
    assert r.deadline(10.25) == 10.375
    r.release(10.375)
    assert bytes(r.host.ready) == b"firstsecond"
    assert r.deadline(10.375) == math.inf


def test_bytes_queued_behind_a_delay_keep_their_order_after_it_is_removed() -> None:
    r = attached(delay_ms=100)
    r.from_host(b"slow", 0.0)
    r.set_faults({"delay_ms": 0})
    r.from_host(b"fast", 0.01)  # must not overtake what is still held
    r.release(0.05)
    assert not r.board.ready
    r.release(0.1)
    assert bytes(r.board.ready) == b"slowfast"


# ---- relay: back-pressure ---------------------------------------------------------------------
def test_back_pressure_threshold() -> None:
    r = Relay(0, limit=100)
    r.attach()
    r.board_started()
    r.from_board(b"x" * 99, 0.0)
    assert r.want_board_output()
    r.from_board(b"x", 0.0)
    assert not r.want_board_output()  # 100 bytes wait for the host: stop reading the board
    r.host_sent(1)
    assert r.want_board_output()
    r.from_host(b"y" * 100, 0.0)
    assert not r.want_host_input()
    r.board_sent(100)
    assert r.want_host_input()
    assert Relay(0).limit == PENDING_LIMIT


def test_held_bytes_count_towards_back_pressure() -> None:
    r = Relay(0, {"delay_ms": 1000}, limit=10)
    r.attach()
    r.from_board(b"0123456789", 0.0)
    assert not r.host.ready and not r.want_board_output()


# ---- relay: host presence -------------------------------------------------------------------
def test_output_is_discarded_while_detached_and_a_detach_flushes() -> None:
    r = Relay(0, {"delay_ms": 10})
    r.board_started()
    r.from_board(b"nobody listens", 0.0)
    assert r.host.pending == 0
    assert r.status(0.0)["counters"]["discarded_detached"] == len(b"nobody listens")
    r.attach()
    r.from_board(b"held", 1.0)
    r.from_board(b"more", 1.02)
    r.release(1.015)
    assert bytes(r.host.ready) == b"held" and r.host.pending == 8
    assert r.detach(2.0) is True
    assert r.host.pending == 0 and r.last_detach == 2.0
    assert r.status(2.0)["counters"]["discarded_detached"] == len(b"nobody listens") + 8
    assert r.detach(3.0) is False and r.last_detach == 2.0
    r.attach()
    assert r.status(3.0)["host_sessions"] == 2


def test_linger_counts_from_the_last_detach() -> None:
    r = Relay(0)
    r.last_detach = 5.0
    assert r.linger_end(10.0) == 15.0
    assert r.linger_end(0.0) is None  # 0 = never
    r.attach()
    assert r.linger_end(10.0) is None
    r.detach(20.0)
    assert r.linger_end(10.0) == 30.0


# ---- relay: unplug and board restarts -----------------------------------------------------------
def test_drop_mode_unplug_discards_both_ways() -> None:
    r = attached()
    r.from_board(b"in flight", 0.0)
    r.unplug(1.0, 2.0, "drop")
    assert r.host.pending == 0  # what was in flight is lost
    assert r.unplugged(2.9) and r.deadline(2.9) == 3.0
    r.from_host(b"lost", 2.0)
    r.from_board(b"gone", 2.5)
    assert not r.host.ready and not r.board.ready
    st = r.status(2.5)
    assert st["unplug_mode"] == "drop" and st["unplugged_s"] == 0.5
    assert st["counters"]["dropped_unplug"] == len(b"in flight") + 8
    r.from_host(b"back", 3.0)
    r.from_board(b"again", 3.0)
    assert bytes(r.board.ready) == b"back" and bytes(r.host.ready) == b"again"
    assert r.status(3.0)["unplug_mode"] is None


def test_replug_ends_an_unplug_early_and_bad_unplugs_are_refused() -> None:
    r = attached()
    r.unplug(0.0, 100.0, "hangup")
    r.replug(1.0)
    assert not r.unplugged(1.0)
    with pytest.raises(ValueError, match="bad unplug mode"):
        r.unplug(0.0, 1.0, "yank")
    with pytest.raises(ValueError, match="unplug seconds"):
        r.unplug(0.0, 0.0, "drop")


def test_input_for_a_board_that_is_down_is_discarded() -> None:
    r = attached(delay_ms=50)
    r.from_host(b"queued", 0.0)
    r.board_stopped()
    r.from_host(b"while down", 0.1)
    assert r.board.pending == 0
    assert r.status(0.1)["counters"]["discarded_reset"] == len(b"queued") + len(b"while down")
    r.board_started()
    r.set_faults({"delay_ms": 0})
    r.from_host(b"up", 0.2)
    r.board_write_failed()
    assert r.status(0.2)["counters"]["discarded_reset"] == 18


# ---- board process bookkeeping (pure parts) ----------------------------------------------------
@settings(max_examples=50, deadline=None)
@given(cuts=st.lists(st.integers(0, 200), max_size=12))
def test_vtime_scanner_reads_the_last_complete_status_line(cuts: list[int]) -> None:
    text = b"boot\nemu: t=1.5 ok\nnoise\nemu: t=12.25 ctrl freeze\nemu: t=99"
    s = VtimeScanner()
    for chunk in split(text, cuts):
        s.feed(chunk)
    assert s.vtime == 12.25  # the last line is not complete yet
    s.feed(b" x\n")
    assert s.vtime == 99.0


def test_restart_back_off_grows_and_is_capped() -> None:
    delays = [restart_delay(n) for n in range(12)]
    assert delays[0] == 0.1 and delays == sorted(delays)
    assert max(delays) == 5.0
