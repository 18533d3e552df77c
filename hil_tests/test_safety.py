"""Safe states: a safety-limit trip opens the relay within the debounce bound, and a firmware
hang ends in a watchdog reset with the relay open and the host told (INFO.reset_cause, a stored
EV_INTERRUPTED).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sicell.client import Board
from sicell.protocol import messages as M

from hil_tests.conftest import Dut
from hil_tests.harness import BackgroundRun, Plan, RunDb, assert_no_loss, run_plan, seq_report
from hil_tests.rig import Rig

V_TRIP = -0.3  # V cell: the safety window's lower edge
I_TRIP = 400e-6  # A: the dummy heads for -0.5 V


def trip_plan(rig: Rig) -> Plan:
    # the schedule's debounce is half the rig's bound, so the bound tests the firmware's timing
    debounce_s = rig.tol.debounce_ms / 2 / 1000
    return Plan(
        name="hil-safety-trip",
        tick_ms=5,
        slow_tick_ms=5,
        dt_s=0.005,
        dv_mv=0.5,
        v_min=V_TRIP,
        v_max=1.0,
        i_max_ma=2.0,
        debounce_s=debounce_s,
        steps=[
            {"kind": "rest", "duration_s": 0.2},
            # no cutoff: only the safety window stops it
            {"kind": "cc", "current_ua": I_TRIP * 1e6, "duration_s": 10.0},
            {"kind": "rest", "duration_s": 1.0},
        ],
    )


def test_safety_trip_opens_relay_within_debounce(dut: Dut, rig: Rig, db_path: Path) -> None:
    if rig.dummy.kind == "cell":
        pytest.skip("the trip drives the load past the safety window: never a real cell")
    plan = trip_plan(rig)
    out = run_plan(dut.port, plan, db_path, timeout=120)
    db = out.db
    trips = db.events_of(M.EV_SAFETY)
    assert trips, f"no EV_SAFETY stored; events {[(e.name, e.step) for e in db.events]}"
    trip = trips[0]
    assert trip.value * 1e-6 <= V_TRIP + 1e-3, f"EV_SAFETY value {trip.value} uV is inside"
    first_out = next((s for s in db.samples if s.v < V_TRIP), None)
    assert first_out is not None, "no stored sample beyond the safety limit"
    delay_ms = (trip.t_s - first_out.t_s) * 1e3
    print(
        f"safety: first sample past {V_TRIP} V at t={first_out.t_s:.4f} s, EV_SAFETY at "
        f"t={trip.t_s:.4f} s: {delay_ms:.1f} ms (debounce set {plan.debounce_s * 1e3:.0f} ms, "
        f"bound {rig.tol.debounce_ms:.0f} ms)"
    )
    assert delay_ms <= rig.tol.debounce_ms, f"trip {delay_ms:.1f} ms > {rig.tol.debounce_ms} ms"
    assert delay_ms >= plan.debounce_s * 1e3 - 2 * plan.tick_ms, "tripped before the debounce"
    # after the trip: relay open, no current, nothing else of the schedule ran
    after = [s for s in db.samples if s.seq > trip.seq]
    assert after, "no sample after the trip shows the relay state"
    assert all(s.flags & M.F_OPEN for s in after), "a sample after the trip has the relay closed"
    assert all(abs(s.i) < 1e-6 for s in after), "current flows after the trip"
    assert not [s for s in db.samples if s.step == 2], "the schedule went on after the trip"
    end = db.run_end
    assert end is not None
    assert out.summary.state == M.STATE_NAMES[M.ST_TRIPPED], out.summary.state
    assert out.summary.end_reason == "safety trip"
    with Board.open(dut.port) as b:
        st = b.status()
    assert st.state == M.ST_TRIPPED, f"STATUS state {st.state_name}"
    assert_no_loss(seq_report(db, st.last_seq))


@pytest.mark.emulator_only
def test_watchdog_resets_hung_firmware(dut: Dut, rig: Rig, db_path: Path) -> None:
    plan = Plan(
        name="hil-watchdog",
        tick_ms=100,
        slow_tick_ms=100,
        dt_s=0.2,
        dv_mv=5.0,
        steps=[{"kind": "cc", "current_ua": 100, "duration_s": 3600.0}],
    )
    bg = BackgroundRun(dut.port, plan, db_path).start()
    bg.wait_rows(20, timeout=60)
    ctl = dut.control()
    t_freeze = time.monotonic()
    produced = bg.session.board_last_seq  # STATUS.last_seq the session saw last
    ctl.freeze(20_000)  # far past the firmware's watchdog timeout
    out = bg.join(timeout=rig.tol.watchdog_recovery_s + 10)
    recovery_s = time.monotonic() - t_freeze
    db = out.db
    with Board.open(dut.port) as b:
        info = b.info
        st = b.status()
    assert info is not None
    rep = seq_report(db, st.last_seq)
    print(
        f"watchdog: board back and run closed {recovery_s:.1f} s after the freeze; INFO "
        f"reset_cause {info.reset_cause_name}, state {info.state_name}; board had produced "
        f"up to seq >= {produced} before the freeze; {rep.text()}"
    )
    assert info.reset_cause == M.RC_WATCHDOG, f"reset cause {info.reset_cause_name}"
    assert st.state == M.ST_INTERRUPTED, f"state after the reset: {st.state_name}"
    ints = db.events_of(M.EV_INTERRUPTED)
    assert ints, "no EV_INTERRUPTED stored"
    assert (ints[0].value & 0xFFFFFFFF) == out.summary.run_id
    assert ints[0].seq > max(s.seq for s in db.samples), "a seq was reused after the reset"
    assert recovery_s <= rig.tol.watchdog_recovery_s
    _assert_relay_open_after(db, ints[0].seq, st)
    assert_no_loss(rep)


def _assert_relay_open_after(db: RunDb, seq: int, st: object) -> None:
    """Every sample after ``seq`` shows the relay open; and STATUS says so when it can."""
    after = [s for s in db.samples if s.seq > seq]
    assert all(s.flags & M.F_OPEN for s in after), "relay closed after the reset"
    flags = getattr(st, "flags", None)
    if isinstance(flags, int) and after:
        assert flags & M.F_OPEN, f"STATUS flags 0x{flags:02x}: relay not open"
