"""Issue 13's criterion with a service: while ``sicell serve`` (a Service here) logs a run on an
emulated board, 100 rounds of ``sicell status`` + ``pause`` + ``continue`` from a second
"terminal" (click's CliRunner, and a few rounds as real processes) reach the board through the
service's control socket and all answer correctly; the service's logging session then reports 0
reconnects, 0 bad frames and 0 records lost (a REPLAY that heals a late record on a loaded
machine is the lossless path, not a fight), every pause and resume is in the run's database, and
each control call is in the audit log."""

from __future__ import annotations

import json
from pathlib import Path

from sicell.errors import EXIT_STOPPED
from sicell.rundata import load_run

from tests.servicehelp import BOARD_IDS, board_url, running_service, wait_board, wait_ended
from tests.steerhelp import (
    LINK_CLEAN,
    PROCESS_ROUNDS,
    ROUNDS,
    cli_in_process,
    long_cc_toml,
    steer_rounds,
)

LONG_TOML = long_cc_toml("served-long", "none")


def test_a_second_terminal_steers_a_served_run(tmp_path: Path, rt: Path) -> None:
    url = board_url(0, realtime=1)
    with running_service(tmp_path, ports=[url]) as svc:
        run = svc.start(BOARD_IDS[0], LONG_TOML, "rounds", "test")
        assert run["name"] == "rounds"
        wait_board(svc, 0, lambda b: b["state"] == "running", what="the run to stream")

        answers = steer_rounds(url)
        assert answers == ROUNDS + PROCESS_ROUNDS

        stop = cli_in_process("stop", "--port", url, "--yes")
        assert stop.exit_code == 0, stop.output
        end = wait_ended(svc, 0, "rounds")
        assert end["exit_code"] == EXIT_STOPPED, end
        text = "\n".join(end["summary"])
        assert LINK_CLEAN.search(text), text
        assert "each exactly once" in text, text
        audit = [json.loads(line) for line in svc.data.audit_path.read_text().splitlines()]

    pauses = ROUNDS + PROCESS_ROUNDS
    events = [e.name for e in load_run(svc.data.runs / "rounds.db").events]
    assert events.count("paused") == pauses and events.count("resumed") == pauses
    assert events.count("stopped") == 1
    ops = [a["op"] for a in audit if a.get("board_id") == BOARD_IDS[0]]
    assert ops.count("pause") == pauses and ops.count("resume") == pauses, ops[:10]
    assert ops.count("stop") == 1
