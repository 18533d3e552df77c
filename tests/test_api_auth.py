"""The control token file and the checks of `sicell serve` made before any board is touched."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from sicell.cli import cli
from sicell.errors import EXIT_ERROR, EXIT_USAGE, UsageError
from sicell.service import auth


def test_token_file_is_made_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "data" / "token"
    tok = auth.load_token(path)
    assert len(tok) >= 32 and not any(c.isspace() for c in tok)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert auth.load_token(path) == tok  # the same token next time
    assert [p.name for p in path.parent.iterdir()] == ["token"]  # no temp file left
    assert auth.load_token(tmp_path / "other") != tok


def test_an_existing_token_is_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("mine-and-only-mine-0123456789\n")
    path.chmod(0o600)
    auth._create(path)  # a second service racing to make one
    assert auth.load_token(path) == "mine-and-only-mine-0123456789"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o606])
def test_a_token_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "token"
    path.write_text("a-perfectly-good-token-0123456789\n")
    path.chmod(mode)
    with pytest.raises(UsageError, match="chmod 600") as e:
        auth.load_token(path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("text", ["", "short", "two words in a token file here"])
def test_a_bad_token_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "token"
    path.write_text(text)
    path.chmod(0o600)
    with pytest.raises(UsageError, match="one word"):
        auth.load_token(path)


def test_missing_token_file_without_create(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such token file"):
        auth.load_token(tmp_path / "nope", create=False)


@given(st.text(max_size=40), st.text(max_size=40))
def test_token_matches_only_itself(a: str, b: str) -> None:
    assert auth.token_matches(a, a)
    assert auth.token_matches(a, b) == (a == b)


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("lab-pc.example", False),
        ("", False),
    ],
)
def test_is_local_host(host: str, local: bool) -> None:
    assert auth.is_local_host(host) is local


# ---- sicell serve refuses before it touches a board -------------------------------------------
def serve(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(cli, ["serve", *args])
    return r.exit_code, r.output


def test_serve_refuses_a_non_local_host_without_a_token(tmp_path: Path) -> None:
    for host in ("0.0.0.0", "192.168.1.5", "::"):
        code, out = serve(
            "--data", str(tmp_path), "--port", "emu://rc", "--host", host, "--no-token"
        )
        assert code == EXIT_USAGE, out
        assert out.count("error:") == 1 and "needs a token" in out
    assert list(tmp_path.iterdir()) == []  # nothing made


def test_serve_refuses_a_readable_token_file(tmp_path: Path) -> None:
    tok = tmp_path / "tok"
    tok.write_text("a-perfectly-good-token-0123456789\n")
    tok.chmod(0o644)
    code, out = serve("--data", str(tmp_path / "d"), "--port", "emu://rc", "--token-file", str(tok))
    assert code == EXIT_USAGE and "chmod 600" in out


def test_serve_wants_boards_and_one_token_choice(tmp_path: Path) -> None:
    code, out = serve("--data", str(tmp_path))
    assert code == EXIT_USAGE and "--port" in out
    code, out = serve(
        "--data",
        str(tmp_path),
        "--port",
        "emu://rc",
        "--no-token",
        "--token-file",
        str(tmp_path / "t"),
    )
    assert code == EXIT_USAGE and "not both" in out


def test_serve_says_when_the_http_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code, out = serve("--data", str(tmp_path), "--port", "emu://rc", "--http-port", str(port))
    assert code == EXIT_ERROR, out
    assert f"cannot listen on 127.0.0.1:{port}" in out and out.count("\n") == 1
    assert os.path.exists(tmp_path / "token")  # made before the bind; kept for next time
