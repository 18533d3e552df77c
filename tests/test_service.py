"""The service core on emulated boards: runs started, steered and ended through it, records
committed before they are broadcast, alerts, the audit log, names that cannot escape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sicell.errors import EXIT_OK, EXIT_STOPPED, EXIT_TRIPPED, ScheduleError, UsageError
from sicell.service.datadir import check_name

from tests.emuhelp import wait_for
from tests.servicehelp import (
    BOARD_IDS,
    LONG_TOML,
    SHORT_TOML,
    TRIP_TOML,
    db_seqs,
    rc_toml,
    running_service,
    wait_board,
    wait_ended,
)

A, B = BOARD_IDS[0], BOARD_IDS[1]


def test_two_boards_start_pause_continue_stop(tmp_path: Path, rt: Path) -> None:
    cmd = f'echo "$SICELL_ALERT_KIND $SICELL_ALERT_RUN" >> {tmp_path / "alerts.txt"}'
    with running_service(tmp_path, 2, alert_command=cmd) as svc:
        sub = svc.subscribe()
        plan = svc.plan(A, LONG_TOML)
        assert [s["kind"] for s in plan["steps"]] == ["rest", "cc"]
        assert plan["steps"][1]["current_a"] == pytest.approx(100e-6)
        run = svc.start(A, LONG_TOML, "long", "tester")
        assert run["status"] == "logging" and run["db"] == "runs/long.db"
        svc.start(B, TRIP_TOML, "trips", "tester")
        with pytest.raises(UsageError, match="exists"):
            svc.start(B, SHORT_TOML, "long", "tester")

        tripped = wait_ended(svc, 1, "trips")
        assert tripped["exit_code"] == EXIT_TRIPPED
        assert any("safety trip" in ln for ln in tripped["summary"])
        assert wait_board(svc, 1, lambda b: b["mode"] == "tripped")["badges"][0]["kind"] == "trip"

        wait_board(svc, 0, lambda b: b["samples"] > 5, what="records of the long run")
        assert svc.control(A, "pause", {}, "tester")["status"]["state"] == 3  # paused
        wait_board(svc, 0, lambda b: b["mode"] == "paused")
        svc.control(A, "continue", {}, "tester")
        wait_board(svc, 0, lambda b: b["mode"] in ("CC", "rest"))
        svc.control(A, "stop", {}, "tester")
        stopped = wait_ended(svc, 0, "long")
        assert stopped["exit_code"] == EXIT_STOPPED

        # records were committed before they were broadcast: each broadcast seq is in the db
        db = svc.data.runs / "long.db"
        stored = set(db_seqs(db))
        seen: list[int] = []
        alerts = []
        while (ev := sub.get(0.05)) is not None:
            if ev["type"] == "records" and ev["run"] == "long":
                seen += [r["seq"] for r in ev["records"]]
            elif ev["type"] == "alert":
                alerts.append(ev)
        sub.close()
        assert seen and set(seen) <= stored and seen == sorted(seen)
        assert [(a["kind"], a["run"]) for a in alerts] == [("trip", "trips")]

        # the records API pages through the stored samples
        page = svc.records("long", 0, 10)
        assert len(page["records"]) == 10 and page["next"] == page["records"][-1]["seq"]
        rest = svc.records("long", page["next"], 5000)["records"]
        n_samples = len(page["records"]) + len(rest)
        assert n_samples == svc.run("long")["samples"]
        assert {r["e"] for r in rest} == {None}  # no reference electrode

        runs = {r["name"]: r for r in svc.runs()}
        assert runs["long"]["status"] == "ended" and runs["long"]["end_state"] == "stopped"
        assert runs["trips"]["end_state"] == "tripped"
        assert svc.data.load_runs() == {}  # nothing to reattach
        # a run this board's worker did not log: its summary from the database
        other = svc.progress(A, "trips")
        assert other["ended"] and other["exit_code"] == EXIT_TRIPPED
        assert any("safety trip" in ln for ln in other["summary"])
        svc.alerts.wait()
    assert (tmp_path / "alerts.txt").read_text().split("\n") == ["trip trips", ""]
    audit = [json.loads(ln) for ln in (tmp_path / "data/audit.log").read_text().splitlines()]
    ops = [(a["op"], a["board_id"], a["who"]) for a in audit if a["who"] == "tester"]
    assert ops[:2] == [("start", A, "tester"), ("start", B, "tester")]
    assert ("pause", A, "tester") in ops and ("resume", A, "tester") in ops
    assert ("stop", A, "tester") in ops
    assert any(a["op"] == "start" and a["outcome"].startswith("error") for a in audit)
    assert any(a["op"] == "alert-command" and a["outcome"] == "exit 0" for a in audit)


def test_restart_reattaches_without_losing_a_seq(tmp_path: Path, rt: Path) -> None:
    with running_service(tmp_path, 1) as svc:
        svc.start(A, LONG_TOML, "kept", "tester")
        wait_board(svc, 0, lambda b: b["samples"] > 5, what="records")
        run_id = svc.board(A)["run"]["run_id"]
    # the service is gone; the board runs on and holds what nobody stored
    state = json.loads((tmp_path / "data/service.json").read_text())
    assert state["boards"][A]["run"] == "kept"
    db = tmp_path / "data/runs/kept.db"
    before = len(db_seqs(db))
    with running_service(tmp_path, 1) as svc:
        b = wait_board(svc, 0, lambda b: b["run"] and b["run"]["active"], what="reattached")
        assert b["run"]["name"] == "kept" and b["run"]["run_id"] == run_id
        wait_board(svc, 0, lambda b: b["samples"] > 5, what="records after the restart")
        svc.control(A, "stop", {}, "tester")
        assert wait_ended(svc, 0, "kept")["exit_code"] == EXIT_STOPPED
        assert svc.run("kept")["status"] == "ended"
    seqs = db_seqs(db)
    assert len(seqs) > before
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # none lost, none twice
    assert json.loads((tmp_path / "data/service.json").read_text())["boards"] == {}


def test_runs_it_cannot_reattach_are_marked(tmp_path: Path, rt: Path) -> None:
    with running_service(tmp_path, 1) as svc:
        svc.start(A, LONG_TOML, "gone", "tester")
        wait_board(svc, 0, lambda b: b["samples"] > 0, what="records")
    # a service without that board: after the grace time the run is marked, not forgotten
    with running_service(tmp_path, 0, ports=[], reattach_grace_s=0.2) as svc:
        r = wait_for(lambda: svc.run("gone")["note"], 10, "the note")
        assert "not found" in r and svc.run("gone")["status"] == "marked"
    # the board comes back, but as a fresh board (the run is no longer on it): marked for good
    fresh = [f"emu://rc?board={A}&linger=60&fresh=1"]
    with running_service(tmp_path, 1, ports=fresh) as svc:
        wait_for(lambda: "is idle" in (svc.run("gone")["note"] or ""), 30, "the new note")
        assert svc.board(A)["run"] is None
        assert svc.data.load_runs() == {}
    from sicell.schema import connect_readonly, read_meta

    con = connect_readonly(tmp_path / "data/runs/gone.db")
    try:
        assert "is idle" in read_meta(con)["service_note"]
    finally:
        con.close()


@pytest.mark.parametrize(
    "name", ["../escape", "a/b", ".hidden", "", "x" * 81, "ok\nno", "..", "a b", "/etc/x"]
)
def test_run_names_cannot_escape(tmp_path: Path, name: str) -> None:
    with running_service(tmp_path, 0, ports=[]) as svc:
        for call in (
            lambda: svc.start("any", SHORT_TOML, name, "tester"),
            lambda: svc.records(name, 0, 10),
            lambda: svc.report(name),
            lambda: svc.run(name),
        ):
            with pytest.raises(UsageError) as e:
                call()
            assert "\n" not in str(e.value) and "bad run name" in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    assert not any((tmp_path / "data/runs").iterdir())


def test_check_name_accepts_plain_names() -> None:
    for ok in ("a", "run-1.2_x", "A" * 80):
        assert check_name(ok) == ok


def test_bad_schedule_is_one_line(tmp_path: Path) -> None:
    with running_service(tmp_path, 0, ports=[]) as svc:
        from sicell.service.plan import read_schedule

        for bad in ("name = ", "[[step]]\nkind = 'warp'\n", b"\x00\x01binary"):
            with pytest.raises((ScheduleError, UsageError)) as e:
                read_schedule(bad)
            assert "\n" not in str(e.value)
        with pytest.raises(UsageError, match="no board"):
            svc.plan("nope", SHORT_TOML)


def test_short_run_summary(tmp_path: Path, rt: Path) -> None:
    with running_service(tmp_path, 1) as svc:
        # the checks before START: the idle RC load (0 V) lies outside this window
        outside = rc_toml("outside", dt_s=1, rest_s=5, cc_s=10, v_min=0.2)
        with pytest.raises(ScheduleError, match="open-circuit potential"):
            svc.plan(A, outside)
        with pytest.raises(ScheduleError, match="open-circuit potential"):
            svc.start(A, outside, "refused", "tester")
        assert svc.runs() == []
        # calibrate: arguments checked before anything reaches the board
        cal = svc.control(A, "calibrate", {"range": 0}, "tester")
        assert cal["entries"] and {e["range"] for e in cal["entries"]} == {0}
        for bad in ({"range": 99}, {"range": 0, "resistor_ohm": "1k"}, {"wire": "raw"}):
            with pytest.raises(UsageError, match="calibrate"):
                svc.control(A, "calibrate", bad, "tester")
        with pytest.raises(UsageError, match="unknown request"):
            svc.control(A, "reset", {}, "tester")
        svc.start(A, SHORT_TOML, "short", "tester")
        done = wait_ended(svc, 0, "short")
        assert done["exit_code"] == EXIT_OK
        assert any("each exactly once" in ln for ln in done["summary"])
        assert svc.cycles("short") == [] or svc.cycles("short")[0]["cycle"] == 1
        html = svc.report("short")
        assert html.is_file() and html.parent == tmp_path / "data/reports/short"
        assert svc.report("short") == html  # cached: the run did not grow
