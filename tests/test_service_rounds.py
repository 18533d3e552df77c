"""Issue 13's criterion with a service: while ``sicell serve`` (a Service here) logs a run on an
emulated board, 100 rounds of ``sicell status`` + ``pause`` + ``continue`` from a second
"terminal" (click's CliRunner, and a few rounds as real processes) reach the board through the
service's control socket and all answer correctly; the service's logging session then reports
0 reconnects, 0 replays and 0 bad frames, every pause and resume is in the run's database, and
each control call is in the audit log."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner, Result
from sicell.cli import cli
from sicell.errors import EXIT_STOPPED
from sicell.rundata import load_run

from tests.servicehelp import BOARD_IDS, board_url, running_service, wait_board, wait_ended

ROUNDS = 100
PROCESS_ROUNDS = 3

# one CC step of an hour at the wall clock's pace: still running when the rounds are done
LONG_TOML = """
name = "served-long"
vs = "cell"
[reference]
electrode = "none"
offset_v = 0.0
[safety]
v_min = -1.0
v_max = 1.0
[recording]
dt_s = 1
dv_mv = 5
[[step]]
label = "lith"
kind = "cc"
direction = "lithiation"
current_ua = 100
duration_s = 3600
"""

STATE_RUNNING = re.compile(r"│ state\s+│ running\s+│")


def _cli(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def _sicell(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sicell.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_second_terminal_steers_a_served_run(tmp_path: Path, rt: Path) -> None:
    url = board_url(0, realtime=1)
    with running_service(tmp_path, ports=[url]) as svc:
        run = svc.start(BOARD_IDS[0], LONG_TOML, "rounds", "test")
        assert run["name"] == "rounds"
        wait_board(svc, 0, lambda b: b["state"] == "running", what="the run to stream")

        paused = f"{url}: paused (board is paused)\n"
        continued = f"{url}: continued (board is running)\n"
        answers = 0
        for _ in range(ROUNDS):
            st, pa, co = (
                _cli("status", "--port", url),
                _cli("pause", "--port", url),
                _cli("continue", "--port", url),
            )
            assert st.exit_code == 0 and STATE_RUNNING.search(st.output), st.output
            assert (pa.exit_code, pa.output) == (0, paused)
            assert (co.exit_code, co.output) == (0, continued)
            answers += 1
        for _ in range(PROCESS_ROUNDS):
            st, pa, co = (
                _sicell("status", "--port", url),
                _sicell("pause", "--port", url),
                _sicell("continue", "--port", url),
            )
            assert st.returncode == 0 and STATE_RUNNING.search(st.stdout), st.stdout + st.stderr
            assert (pa.returncode, pa.stdout, pa.stderr) == (0, paused, "")
            assert (co.returncode, co.stdout, co.stderr) == (0, continued, "")
            answers += 1
        assert answers == ROUNDS + PROCESS_ROUNDS

        stop = _cli("stop", "--port", url, "--yes")
        assert stop.exit_code == 0, stop.output
        end = wait_ended(svc, 0, "rounds")
        assert end["exit_code"] == EXIT_STOPPED, end
        text = "\n".join(end["summary"])
        assert "link: 0 reconnects, 0 replays, 0 bad frames, 0 records lost" in text, text
        assert "each exactly once" in text, text
        audit = [json.loads(line) for line in svc.data.audit_path.read_text().splitlines()]

    pauses = ROUNDS + PROCESS_ROUNDS
    events = [e.name for e in load_run(svc.data.runs / "rounds.db").events]
    assert events.count("paused") == pauses and events.count("resumed") == pauses
    assert events.count("stopped") == 1
    ops = [a["op"] for a in audit if a.get("board_id") == BOARD_IDS[0]]
    assert ops.count("pause") == pauses and ops.count("resume") == pauses, ops[:10]
    assert ops.count("stop") == 1
