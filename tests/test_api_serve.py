"""`sicell serve` as a user starts it: a process that says where the page and the token are,
serves the API for its board, and stops cleanly on SIGTERM (the board keeps running)."""

from __future__ import annotations

import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

import httpx
from sicell.service.api import API

from tests.emuhelp import wait_for
from tests.servicehelp import BOARD_IDS, board_url


def test_serve_prints_where_things_are_and_stops_on_sigterm(tmp_path: Path, rt: Path) -> None:
    data = tmp_path / "data"
    cmd = [
        sys.executable,
        "-m",
        "sicell.cli",
        "serve",
        "--data",
        str(data),
        "--http-port",
        "0",
        "--port",
        board_url(0),
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(4)]
        text = "".join(lines)
        url = re.search(r"^dashboard: (http://127\.0\.0\.1:\d+)/$", text, re.M)
        assert url, text
        assert f"API: {url[1]}/api/v1 (described at {url[1]}/api/v1/openapi.json)" in text
        token_file = data / "token"
        assert f"control token: in {token_file}" in text
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        assert token not in text  # the token itself is never printed

        with httpx.Client(base_url=url[1], timeout=30) as http:
            assert "<html" in http.get("/").text.lower()
            wait_for(
                lambda: [b["online"] for b in http.get(f"{API}/boards").json()] == [True],
                60,
                "the board online",
            )
            assert http.get(f"{API}/boards/{BOARD_IDS[0]}").json()["mode"] == "idle"
            assert http.post(f"{API}/boards/{BOARD_IDS[0]}/pause").status_code == 401
            r = http.get(f"{API}/boards", headers={"Host": "evil.example"})
            assert r.status_code == 400  # a page on another name cannot read a local service
            status = http.post(
                f"{API}/boards/{BOARD_IDS[0]}/pause", headers={"Authorization": f"Bearer {token}"}
            )
            assert status.status_code == 409, status.text  # nothing runs: the board says so
            assert "\n" not in status.json()["error"]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "sicell serve: stopped; the runs go on on the boards" in out
    audit = (data / "audit.log").read_text()
    assert '"pause"' in audit and "http 127.0.0.1" in audit
