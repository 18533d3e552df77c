"""A second terminal steering a logged run: issue 13's rounds of ``sicell status`` + ``pause`` +
``continue``, shared by the test without a service (tests/test_owner_run.py) and the one with a
service (tests/test_service_rounds.py)."""

from __future__ import annotations

import re
import subprocess
import sys

from click.testing import CliRunner, Result
from sicell.cli import cli

ROUNDS = 100
PROCESS_ROUNDS = 3
CURRENT_A = 100e-6


def long_cc_toml(name: str, electrode: str) -> str:
    """One CC step of an hour at CURRENT_A (run it at realtime=1): still running when the
    rounds are done. ``electrode`` "none" gives a cell-only run."""
    ref = (
        'electrode = "none"\noffset_v = 0.0'
        if electrode == "none"
        else f'electrode = "{electrode}"'
    )
    return f"""
name = "{name}"
vs = "cell"
[reference]
{ref}
[safety]
v_min = -0.9
v_max = 0.9
[recording]
dt_s = 1
dv_mv = 5
[[step]]
label = "lith"
kind = "cc"
direction = "lithiation"
current_ua = {round(CURRENT_A * 1e6)}
duration_s = 3600
"""


STATE_RUNNING = re.compile(r"│ state\s+│ running\s+│")
# the logging session's link line after the rounds: the second terminal cost no reconnect, no
# bad frame and no record (a REPLAY may heal a record that was late on a loaded machine)
LINK_CLEAN = re.compile(r"link: 0 reconnects, \d+ replays, 0 bad frames, 0 records lost")


def cli_in_process(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def cli_process(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sicell.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def steer_rounds(url: str) -> int:
    """ROUNDS in-process and PROCESS_ROUNDS real-process rounds of status + pause + continue
    on ``url``, each answer checked to the letter; returns how many rounds answered right."""
    paused = f"{url}: paused (board is paused)\n"
    continued = f"{url}: continued (board is running)\n"
    answers = 0
    for _ in range(ROUNDS):
        st, pa, co = (
            cli_in_process("status", "--port", url),
            cli_in_process("pause", "--port", url),
            cli_in_process("continue", "--port", url),
        )
        assert st.exit_code == 0 and STATE_RUNNING.search(st.output), st.output
        assert (pa.exit_code, pa.output) == (0, paused)
        assert (co.exit_code, co.output) == (0, continued)
        answers += 1
    for _ in range(PROCESS_ROUNDS):
        sp, pp, cp = (
            cli_process("status", "--port", url),
            cli_process("pause", "--port", url),
            cli_process("continue", "--port", url),
        )
        assert sp.returncode == 0 and STATE_RUNNING.search(sp.stdout), sp.stdout + sp.stderr
        assert (pp.returncode, pp.stdout, pp.stderr) == (0, paused, "")
        assert (cp.returncode, cp.stdout, cp.stderr) == (0, continued, "")
        answers += 1
    return answers
