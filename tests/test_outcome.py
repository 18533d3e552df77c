"""How a run ended: the exit codes (one per outcome, the most severe of several boards), the
line naming a tripped limit, and the open-circuit check before START. End to end on the
emulator in tests/test_session_e2e.py; here the pieces, and the CLI against fake boards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sicell import errors
from sicell.cli import cli
from sicell.client import Status
from sicell.errors import (
    EXIT_BOARD_RESET,
    EXIT_BUG,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_LINK_LOST,
    EXIT_OK,
    EXIT_STOPPED,
    EXIT_TRIPPED,
    EXIT_USAGE,
    ScheduleError,
    worst_exit,
)
from sicell.protocol import messages as M
from sicell.records import EventRecord
from sicell.replies import BoardInfo
from sicell.schedule import parse_schedule
from sicell.session import RunSession
from sicell.session.opencircuit import check_open_circuit
from sicell.session.outcome import Outcome, SafetyLimits, describe_trip, safety_limits
from sicell.units import REFERENCES

from tests.fakeboard import FAKE_TOML, FakeBoard

IN_LI = REFERENCES["In-Li"]
LIMITS = SafetyLimits(
    v_min_uv=-720_000,
    v_max_uv=1_980_000,
    i_max_na=200_000,
    temp_max_dc=600,
    compliance_uv=4_500_000,
    reference=IN_LI,
)
LABELS = {1: "lith"}


def _trip(reason: int, value: int, step: int = 1, aux: int = 1000) -> EventRecord:
    return EventRecord(
        seq=9, t_s=12.0, code=M.EV_SAFETY, name="safety_trip", step=step, cycle=0,
        value=value, aux=aux, reason=reason,
    )  # fmt: skip


# ---- exit codes -----------------------------------------------------------------------------
def test_exit_codes_are_distinct() -> None:
    codes = [
        EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_TRIPPED, EXIT_STOPPED, EXIT_BOARD_RESET,
        EXIT_LINK_LOST, EXIT_BUG, EXIT_INTERRUPTED,
    ]  # fmt: skip
    assert len(set(codes)) == len(codes)
    assert (EXIT_TRIPPED, EXIT_STOPPED, EXIT_BOARD_RESET) == (3, 4, 5)
    assert sorted(errors.EXIT_SEVERITY) == sorted(codes)


@pytest.mark.parametrize(
    ("codes", "worst"),
    [
        ([], EXIT_OK),
        ([EXIT_OK, EXIT_OK], EXIT_OK),
        ([EXIT_OK, EXIT_STOPPED, EXIT_TRIPPED], EXIT_TRIPPED),
        ([EXIT_TRIPPED, EXIT_BOARD_RESET], EXIT_BOARD_RESET),
        ([EXIT_BOARD_RESET, EXIT_LINK_LOST, EXIT_OK], EXIT_LINK_LOST),
        ([EXIT_INTERRUPTED, EXIT_STOPPED], EXIT_STOPPED),
        ([EXIT_USAGE, EXIT_ERROR, EXIT_LINK_LOST], EXIT_ERROR),
        ([EXIT_ERROR, EXIT_BUG], EXIT_BUG),
        ([EXIT_BUG, 99], 99),  # a code not in the table ranks first
    ],
)
def test_worst_exit(codes: list[int], worst: int) -> None:
    assert worst_exit(codes) == worst
    assert worst_exit(reversed(codes)) == worst


# ---- the tripped limit in words -------------------------------------------------------------
@pytest.mark.parametrize(
    ("reason", "value", "text"),
    [
        (
            M.SF_VMIN, -730_400,
            "safety trip, V min: measured -0.7304 V cell (-0.1104 V vs Li), below the limit "
            "-0.7200 V cell (-0.1000 V vs Li), in step 1 ('lith') (beyond it for 1000 ms, the "
            "debounce)",
        ),
        (
            M.SF_VMAX, 1_990_000,
            "safety trip, V max: measured +1.9900 V cell (2.6100 V vs Li), above the limit "
            "+1.9800 V cell (2.6000 V vs Li), in step 1 ('lith')",
        ),
        (
            M.SF_IMAX, -201_500,
            "safety trip, |I| max: measured -0.2015 mA, over the limit 0.2000 mA, in step 1",
        ),
        (
            M.SF_TEMP, 612,
            "safety trip, temperature: measured 61.2 °C, over the limit 60.0 °C, in step 1",
        ),
        (
            M.SF_COMPLIANCE, -4_500_100,
            "safety trip, compliance: measured -4.5001 V, at or beyond the limit ±4.5000 V, "
            "in step 1",
        ),
    ],
)  # fmt: skip
def test_describe_trip(reason: int, value: int, text: str) -> None:
    assert describe_trip(_trip(reason, value), LIMITS, LABELS).startswith(text)


def test_describe_trip_without_reference_or_limits() -> None:
    no_ref = SafetyLimits(-100_000, 1_000_000, 2_000_000, None, 4_500_000, None)
    line = describe_trip(_trip(M.SF_VMIN, -104_900, step=2, aux=0), no_ref)
    assert line == (
        "safety trip, V min: measured -0.1049 V cell, below the limit -0.1000 V cell, in step 2"
    )
    assert "vs Li" not in line
    line = describe_trip(_trip(M.SF_TEMP, 700, aux=0), no_ref)
    assert line == "safety trip, temperature: measured 70.0 °C (limit not known here) in step 1"
    line = describe_trip(_trip(M.SF_VMAX, 2_000_000, aux=0), None, LABELS)
    assert line == (
        "safety trip, V max: measured +2.0000 V cell (limit not known here) in step 1 ('lith')"
    )


def _info(**over: Any) -> BoardInfo:
    vals: dict[str, Any] = {
        "fw_major": 0, "fw_minor": 3, "fw_patch": 1, "proto_major": 1, "proto_minor": 0,
        "n_ranges": 4, "caps": 0, "board_id": b"unit0001", "v_min_uv": -2_000_000,
        "v_max_uv": 2_000_000, "compliance_uv": 4_500_000, "ring_capacity": 4096,
        "tick_ms": 10, "state": M.ST_IDLE, "reset_cause": M.RC_POWER_ON, "run_id": 0,
    }  # fmt: skip
    vals.update(over)
    names = M.LAYOUTS[M.INFO][1]
    ranges = (10_000, 100_000, 1_000_000, 10_000_000)
    return BoardInfo.from_payload(M.pack_info([vals[n] for n in names], ranges))


def test_safety_limits_from_the_schedule_and_the_board() -> None:
    path = Path(__file__).resolve().parents[1] / "host/sicell/examples/film-quick.toml"
    lim = safety_limits(parse_schedule(path.read_text()), _info(compliance_uv=4_000_000))
    assert lim is not None
    assert (lim.v_min_uv, lim.v_max_uv) == (-720_000, 1_980_000)
    assert (lim.i_max_na, lim.temp_max_dc, lim.compliance_uv) == (200_000, None, 4_000_000)
    assert lim.reference == IN_LI
    assert lim.window() == "-0.7200…+1.9800 V cell (-0.1000…2.6000 V vs Li)"
    rc = Path(__file__).resolve().parents[1] / "host/sicell/examples/rc-check.toml"
    lim = safety_limits(parse_schedule(rc.read_text()), _info())
    assert lim is not None and lim.reference is None  # electrode = "none": cell volts only
    assert lim.window() == "-1.0000…+1.0000 V cell"
    assert safety_limits(None, _info()) is None


# ---- the open-circuit check before START ----------------------------------------------------
def _status(v_uv: int) -> Status:
    payload = M.pack(M.STATUS, M.ST_LOADED, 1, 0, 0, M.F_OPEN, 0, 0, v_uv, 0, 0, 0, 1, 0, 0, 0)
    return Status.from_payload(payload)


@pytest.mark.parametrize("v_uv", [-720_000, 0, 1_380_000, 1_980_000])
def test_open_circuit_inside_the_window_passes(v_uv: int) -> None:
    check_open_circuit(_status(v_uv), LIMITS, "p1")


def test_open_circuit_outside_the_window_is_refused() -> None:
    with pytest.raises(ScheduleError) as ei:
        check_open_circuit(_status(2_100_000), LIMITS, "emu://thin-porous")
    assert str(ei.value) == (
        "emu://thin-porous: the cell's open-circuit potential +2.1000 V cell (2.7200 V vs Li) "
        "lies above the schedule's safety window -0.7200…+1.9800 V cell (-0.1000…2.6000 V vs "
        "Li), so the board would trip at once; nothing was started; expected the cell inside "
        "the window: check the cell and its leads, or move [safety] v_max to include it"
    )
    assert ei.value.exit_code == EXIT_USAGE and ei.value.key == "v_max"
    with pytest.raises(ScheduleError, match=r"-0\.7201 V cell .* lies below .* v_min"):
        check_open_circuit(_status(-720_100), LIMITS, "p1")


# ---- the CLI against fake boards ------------------------------------------------------------


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


class _StopsItsBoard(RunSession):
    """A session that STOPs its own board once (on its own thread, between two polls) after
    storing 20 samples, when its name is ``"stop-me"``."""

    stop_sent = False

    def _update_display(self, st: Status | None, *, final: bool = False) -> None:
        super()._update_display(st, final=final)
        ready = self.samples >= 20 and self.board is not None and not self.stop_sent
        if self.name == "stop-me" and ready:
            self.stop_sent = True
            assert self.board is not None
            self.board.stop()


def test_refused_before_start_when_the_cell_is_outside_the_window(
    tmp_path: Path, boards: list[FakeBoard]
) -> None:
    fb = FakeBoard()  # STATUS says 0.1 V cell
    boards.append(fb)
    sched = tmp_path / "s.toml"
    sched.write_text(
        FAKE_TOML.replace("[[step]]", "[safety]\nv_min = 0.2\nv_max = 1.0\n[[step]]", 1)
    )
    db = tmp_path / "r.db"
    res = _invoke("run", str(sched), "--port", fb.serve_tcp(), "--db", str(db))
    assert res.exit_code == EXIT_USAGE
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1
    assert "open-circuit potential +0.1000 V cell (0.7200 V vs Li) lies below" in lines[0]
    assert "+0.2000…+1.0000 V cell (0.8200…1.6200 V vs Li)" in lines[0]
    assert not db.exists()
    sent = {t for t, _, _ in fb.received}
    assert M.STATUS_REQ in sent and not sent & {M.SCHED_BEGIN, M.START}


def test_stopped_run_exits_4_and_several_boards_the_most_severe(
    tmp_path: Path, boards: list[FakeBoard], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sicell.cli.run.RunSession", _StopsItsBoard)
    monkeypatch.chdir(tmp_path)  # `sicell run` names its databases in the working directory
    sched = tmp_path / "s.toml"
    sched.write_text(FAKE_TOML)
    done, stopped = FakeBoard(n_samples=100), FakeBoard(n_samples=10**6)
    boards += [done, stopped]
    res = _invoke("run", str(sched), "-p", stopped.serve_tcp(), "--board-name", "stop-me", "-q")
    assert res.exit_code == EXIT_STOPPED, res.output
    assert "stopped by a user (STOP)" in res.output
    res = _invoke(
        "run", str(sched), "-p", done.serve_tcp(), "-p", stopped.serve_tcp(),
        "--board-name", "fine", "--board-name", "stop-me", "-q",
    )  # fmt: skip
    assert res.exit_code == EXIT_STOPPED, res.output
    assert "exit code 4: the most severe of the boards' (fine 0, stop-me 4)" in res.output


# ---- the outcome read from a run database ---------------------------------------------------
Ev = tuple[int, int, int, int, int]  # code, reason, step, value, aux


def _db(path: Path, *events: Ev) -> Path:
    """A run database at ``path`` with these events."""
    from sicell import store

    steps = [(0, "rest", None, None, ""), (1, "cc", 1e-4, -0.6, "lith")]
    st = store.RunStore.create(path, {"run_id": 7}, steps)
    st.add(
        [],
        [
            EventRecord(k, float(k), c, M.EVENT_NAMES[c], s, 0, v, a, r)
            for k, (c, r, s, v, a) in enumerate(events, 1)
        ],
    )
    st.close()
    return path


def test_run_outcome_from_the_database(tmp_path: Path) -> None:
    from sicell.session.outcome import run_outcome

    end_trip: Ev = (M.EV_RUN_END, M.RE_SAFETY, 1, 7, 0)
    trip = _db(tmp_path / "trip.db", (M.EV_SAFETY, M.SF_VMAX, 1, 2_000_000, 0), end_trip)
    out = run_outcome(trip, M.ST_TRIPPED, None, LIMITS, "p1")
    assert (out.kind, out.exit_code) == ("safety trip", EXIT_TRIPPED)
    assert out.line.startswith("safety trip, V max: measured +2.0000 V cell (2.6200 V vs Li)")
    assert out.line.endswith("in step 1 ('lith')")
    fault = _db(tmp_path / "fault.db", (M.EV_ERROR, M.FAULT_TICK, 0, 321, 1), end_trip)
    out = run_outcome(fault, M.ST_TRIPPED, M.RE_SAFETY, None, "p1")
    assert (out.kind, out.exit_code) == ("firmware fault", EXIT_TRIPPED)
    assert "exception in the control tick (source line 321) in step 0" in out.line
    end_limit: Ev = (M.EV_RUN_END, M.RE_LIMIT, 1, 7, 0)
    limit = _db(tmp_path / "limit.db", (M.EV_LIMIT, 2, 1, 5, 0), end_limit)
    out = run_outcome(limit, M.ST_DONE, None, None, "p1")  # the end read from the database
    assert (out.kind, out.exit_code, out.line) == (
        "limit",
        EXIT_OK,
        "ended by a limit with action end in step 1 ('lith')",
    )
    reset = _db(tmp_path / "reset.db", (M.EV_INTERRUPTED, M.RC_WATCHDOG, 0, 7, 1))
    out = run_outcome(reset, M.ST_INTERRUPTED, None, None, "emu://rc?board=a&linger=5")
    assert (out.kind, out.exit_code) == ("board reset", EXIT_BOARD_RESET)
    assert out.line.startswith("interrupted by a board reset (watchdog) in step 1 ('lith');")
    assert "`sicell stop --port 'emu://rc?board=a&linger=5'` ends the run" in out.line
    done = _db(tmp_path / "done.db", (M.EV_RUN_END, M.RE_COMPLETE, 1, 7, 0))
    assert run_outcome(done, M.ST_DONE, M.RE_COMPLETE, None, "p1") == Outcome("complete", 0)
    missing = tmp_path / "none.db"
    assert run_outcome(missing, None, None, None, "p1").exit_code == EXIT_ERROR
    out = run_outcome(missing, M.ST_STOPPED, None, None, "p1")
    assert (out.exit_code, out.line) == (EXIT_STOPPED, "stopped by a user (STOP)")
