"""``sicell run`` on a port a service owns goes through the service: the same summary lines and
exit code, the database in the service's data directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner
from sicell.cli import cli
from sicell.errors import EXIT_TRIPPED

from tests.servicehelp import SHORT_TOML, TRIP_TOML, board_url, db_seqs, running_service


def test_run_in_process_through_the_service(tmp_path: Path, rt: Path) -> None:
    sched = tmp_path / "short.toml"
    sched.write_text(SHORT_TOML)
    with running_service(tmp_path, 1) as svc:
        port = board_url(0)
        res = CliRunner().invoke(cli, ["run", str(sched), "--port", port, "--plain"])
        assert res.exit_code == 0, res.output
        assert "started on" in res.output and "by sicell serve" in res.output, res.output
        assert "each exactly once" in res.output
        (run,) = svc.runs()
        assert run["name"].startswith("short-") and run["status"] == "ended"
        db = svc.data.runs / f"{run['name']}.db"
        assert f"database: {db}" in res.output
        seqs = db_seqs(db)
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        # --db names a file the service does not write: refused in one line, nothing started
        res = CliRunner().invoke(cli, ["run", str(sched), "--port", port, "--db", "x.db"])
        assert res.exit_code == 2 and "drop --db" in res.output
        assert len(svc.runs()) == 1
        # status from a second command goes through the service too
        res = CliRunner().invoke(cli, ["status", "--port", port])
        assert res.exit_code == 0, res.output


def test_run_subprocess_through_the_service(tmp_path: Path, rt: Path) -> None:
    sched = tmp_path / "trip.toml"
    sched.write_text(TRIP_TOML)
    exe = shutil.which("sicell")
    cmd = [exe] if exe else [sys.executable, "-m", "sicell.cli"]
    with running_service(tmp_path, 1) as svc:
        proc = subprocess.run(
            [*cmd, "run", str(sched), "--port", board_url(0), "--quiet"],
            capture_output=True,
            text=True,
            timeout=300,
            env=dict(os.environ),
            cwd=tmp_path,
            check=False,
        )
        assert proc.returncode == EXIT_TRIPPED, proc.stdout + proc.stderr
        assert "safety trip" in proc.stdout and "Traceback" not in proc.stderr
        (run,) = svc.runs()
        assert run["end_state"] == "tripped"
