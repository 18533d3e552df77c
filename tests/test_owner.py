"""A port has one opener (``sicell.owner``): port keys, claims and stale locks, the owner's
JSON-lines control socket, and the CLI reaching a board through its owner with the output it
prints without one. The end-to-end criterion (a ``sicell run`` steered 100 times from a second
terminal) is in test_owner_run.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st
from sicell import errors
from sicell.cli import cli
from sicell.client import Board
from sicell.errors import BoardError, BoardTimeoutError, PortOwnedError, SicellError, UsageError
from sicell.owner import RemoteBoard, claim, held_here, owner_of, port_key
from sicell.owner import server as srv
from sicell.owner.registry import OwnerFiles, key_stem
from sicell.owner.remote import reply_error
from sicell.protocol import messages as M
from sicell.session.controls import ControlRequest, Controls, execute
from sicell.transport import open_port

from tests.fakeboard import FAKE_TOML, FakeBoard

BOARD_IDS = st.from_regex(r"[A-Za-z0-9._-]{1,30}", fullmatch=True)


def _no_handler(op: str, args: dict[str, Any]) -> dict[str, Any]:
    raise UsageError(f"no requests here ({op})")


# ---- port keys ------------------------------------------------------------------------------
@given(
    board=BOARD_IDS,
    extra=st.lists(
        st.sampled_from(["seed=3", "linger=5", "realtime=1", "noise=0", "owner=1"]),
        unique=True,
        max_size=4,
    ),
    where=st.integers(min_value=0, max_value=4),
)
def test_an_emu_url_is_keyed_by_its_board_id_whatever_its_options(
    board: str, extra: list[str], where: int
) -> None:
    opts = list(extra)
    opts.insert(min(where, len(opts)), f"board={board}")
    assert port_key("emu://rc?" + "&".join(opts)) == f"emu:{board}"
    assert port_key(f"emu://thin-porous?board={board}") == f"emu:{board}"


def test_an_emu_url_without_a_board_id_is_keyed_by_its_default_one() -> None:
    assert port_key("emu://rc") == "emu:rc-0" == port_key("emu://rc?board=rc-0")
    assert port_key("emu://rc?seed=4") == "emu:rc-4"
    assert port_key("emu://rc?seed=4") != port_key("emu://rc?seed=5")


def test_a_device_is_keyed_by_its_real_path(tmp_path: Path) -> None:
    dev = tmp_path / "ttyFAKE0"
    dev.write_text("")
    link = tmp_path / "by-id"
    link.symlink_to(dev)
    assert port_key(str(link)) == port_key(str(dev)) == str(dev.resolve())
    assert port_key("socket://127.0.0.1:5") == "socket://127.0.0.1:5"
    assert port_key("loop://") == f"loop:{os.getpid()}"  # a loopback is private to a process


@given(a=st.text(min_size=1, max_size=200), b=st.text(min_size=1, max_size=200))
def test_key_stems_are_safe_file_names_and_tell_keys_apart(a: str, b: str) -> None:
    for k in (a, b):
        stem = key_stem(k)
        assert stem and "/" not in stem and not stem.startswith(".") and len(stem) <= 51
        assert all(c.isascii() and (c.isalnum() or c in "._-") for c in stem)
    if a != b:
        assert key_stem(a) != key_stem(b)


# ---- claims in this process -------------------------------------------------------------------
def test_a_claim_is_reentrant_here_and_gone_after_the_last_close() -> None:
    port = "emu://rc?board=claim-here"
    assert owner_of(port) is None and not held_here(port)
    outer = claim(port, "serve", _no_handler, board_id="b-1")
    inner = claim(port + "&linger=5", "run", _no_handler)  # the same board, another spelling
    info = owner_of(port)
    assert info is not None and info.pid == os.getpid()
    assert info.kind == "serve" and info.board_id == "b-1"  # the outer claim's
    files = OwnerFiles.of(port_key(port))
    written = json.loads(files.info.read_text())
    assert written["pid"] == os.getpid() and written["kind"] == "serve"
    assert written["socket"] == str(files.socket)
    assert stat.S_IMODE(files.socket.stat().st_mode) == 0o600
    outer.close()
    assert held_here(port)  # the inner claim still holds it
    inner.update(board_id="b-2")
    assert json.loads(files.info.read_text())["board_id"] == "b-2"
    inner.close()
    inner.close()  # (twice is harmless)
    assert not held_here(port) and owner_of(port) is None
    assert not files.info.exists() and not files.socket.exists()


# ---- an owner in another process ----------------------------------------------------------------
CLAIMER = """
import sys
from sicell.errors import UsageError
from sicell.owner import claim

def refuse(op, args):
    raise UsageError("no requests here")

c = claim(sys.argv[1], "run", refuse)
print("claimed", flush=True)
sys.stdin.read()
c.close()
"""


@pytest.fixture
def other_owner(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A process that claims a device path, holding it until its stdin closes."""
    dev = tmp_path / "ttyOWNED0"
    dev.write_text("")
    p = subprocess.Popen(
        [sys.executable, "-c", CLAIMER, str(dev)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None and p.stdout.readline().strip() == "claimed"
    yield str(dev), p
    if p.poll() is None:
        p.kill()
    p.wait(10)
    for f in (p.stdin, p.stdout):
        if f is not None:
            f.close()


def test_another_process_owns_the_port(other_owner: tuple[str, subprocess.Popen[str]]) -> None:
    dev, p = other_owner
    info = owner_of(dev)
    assert info is not None and info.pid == p.pid and info.kind == "run"
    assert not held_here(dev)
    with pytest.raises(PortOwnedError) as e:
        claim(dev, "run", _no_handler)
    assert f"is in use by `sicell run` (pid {p.pid}, since " in str(e.value)
    # the one opener refuses it before touching the device
    with pytest.raises(PortOwnedError) as e:
        open_port(dev)
    assert str(e.value).startswith(f"{dev} is in use by `sicell run` (pid {p.pid}")
    assert e.value.exit_code == errors.PortBusyError.exit_code


def test_a_run_session_on_an_owned_port_fails_at_once(
    other_owner: tuple[str, subprocess.Popen[str]], tmp_path: Path
) -> None:
    from sicell.schedule import parse_schedule
    from sicell.session import RunSession

    dev, p = other_owner
    db = tmp_path / "run.db"
    with pytest.raises(PortOwnedError, match=rf"in use by `sicell run` \(pid {p.pid},"):
        RunSession.new(parse_schedule(FAKE_TOML), dev, db).run()
    assert not db.exists()


def test_a_killed_owner_leaves_no_claim(other_owner: tuple[str, subprocess.Popen[str]]) -> None:
    dev, p = other_owner
    files = OwnerFiles.of(port_key(dev))
    assert owner_of(dev) is not None
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    assert files.info.exists()  # what a killed owner leaves ...
    assert owner_of(dev) is None  # ... is not an owner: the lock died with the process
    assert not files.info.exists() and not files.socket.exists()
    with claim(dev, "run", _no_handler) as c:
        assert c.info.pid == os.getpid()


# ---- the control socket -----------------------------------------------------------------------
def _echo(op: str, args: dict[str, Any]) -> dict[str, Any]:
    if op == "echo":
        return {"args": args}
    if op == "nack":
        raise BoardError(M.PAUSE, M.E_STATE, 0, "emu://x", "not running")
    if op == "crash":
        raise RuntimeError("boom\nsecond line")
    if op == "unjson":
        return {"x": object()}
    raise UsageError(f"unknown request {op!r}; this owner answers echo, nack, crash")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Path]:
    path = OwnerFiles.of("test:served").socket
    server = srv.ControlServer(path, _echo, max_line=4096)
    server.start()
    yield path
    server.close()
    assert not path.exists()


def _talk(path: Path, *lines: bytes) -> list[dict[str, Any]]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(b"".join(ln + b"\n" for ln in lines))
        with s.makefile("rb") as rf:
            return [json.loads(rf.readline()) for _ in lines]


def test_every_line_gets_one_reply_bad_ones_a_refusal(served: Path) -> None:
    bad = [
        b"not json",
        b"\xff\xfe\x00",
        b"[1, 2]",
        b'{"op": "echo"}',
        b'{"v": 2, "op": "echo"}',
        b'{"v": 1}',
        b'{"v": 1, "op": 7}',
        b'{"v": 1, "op": "echo", "args": [1]}',
        b'{"v": 1, "op": "nope"}',
    ]
    good = b'{"v": 1, "op": "echo", "args": {"a": [1, "x"]}}'
    replies = _talk(served, *bad, good)
    for line, r in zip(bad, replies, strict=False):
        assert r["ok"] is False and r["kind"] == "UsageError", (line, r)
        assert r["exit_code"] == errors.EXIT_USAGE and "\n" not in r["error"]
    assert "echo, nack, crash" in replies[len(bad) - 1]["error"]  # an unknown op names the ops
    assert replies[-1] == {"ok": True, "result": {"args": {"a": [1, "x"]}}}


def test_refusals_carry_their_class_and_a_failing_handler_is_not_the_end(served: Path) -> None:
    nack, crash, unjson, echo = _talk(
        served,
        b'{"v": 1, "op": "nack"}',
        b'{"v": 1, "op": "crash"}',
        b'{"v": 1, "op": "unjson"}',
        b'{"v": 1, "op": "echo"}',
    )
    assert nack["kind"] == "BoardError" and nack["error"] == ("emu://x: PAUSE refused: not running")
    assert crash["kind"] == "bug" and crash["exit_code"] == errors.EXIT_BUG
    assert crash["error"] == "bug in sicell: RuntimeError: boom; second line"
    assert unjson["ok"] is False and unjson["exit_code"] == errors.EXIT_BUG
    assert echo == {"ok": True, "result": {"args": {}}}


def test_an_overlong_line_is_refused_and_the_connection_goes_on(served: Path) -> None:
    too_long, echo = _talk(served, b"x" * 10_000, b'{"v": 1, "op": "echo"}')
    assert too_long["ok"] is False and "longer than 4096 bytes" in too_long["error"]
    assert echo["ok"] is True


def test_random_lines_never_break_the_server(served: Path) -> None:
    @settings(max_examples=150, deadline=None)
    @given(st.lists(st.binary(max_size=300).filter(lambda b: b"\n" not in b and b.strip())))
    def check(lines: list[bytes]) -> None:
        for r in _talk(served, *lines, b'{"v": 1, "op": "echo"}')[:-1]:
            assert isinstance(r["ok"], bool) and (r["ok"] or r["error"])
        assert _talk(served, b'{"v": 1, "op": "echo"}')[0]["ok"] is True

    check()


# ---- the bridge to the board's thread ---------------------------------------------------------
def test_a_request_nobody_takes_is_withdrawn_not_done(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(srv, "REQUEST_WAIT_S", 0.1)
    controls = Controls()
    handle = srv.controls_handler(controls)
    with pytest.raises(UsageError, match="this owner answers info, status, pause"):
        handle("calibrate", {})
    with pytest.raises(BoardTimeoutError, match="nothing was done"):
        handle("stop", {})
    (req,) = list(controls.pending())
    assert req.op == "stop" and req.future.cancelled()
    # the board's thread meets it later: it does nothing (no board request is sent)
    assert execute(None, req) is None  # type: ignore[arg-type]


def test_requests_left_when_the_owner_goes_are_refused() -> None:
    controls = Controls()
    fut = controls.submit("pause")
    taken = ControlRequest("status")
    taken.future.cancel()
    controls._q.put(taken)  # one the asker already gave up on
    controls.refuse_all(SicellError("gone"))
    with pytest.raises(SicellError, match="gone"):
        fut.result(0)


def test_a_refusal_is_raised_as_the_class_it_names() -> None:
    e = reply_error(
        {"ok": False, "error": "p: PAUSE refused: x", "exit_code": 1, "kind": "BoardError"}
    )
    assert type(e) is BoardError and str(e) == "p: PAUSE refused: x" and e.exit_code == 1
    e = reply_error({"ok": False, "error": "gone", "exit_code": 6, "kind": "LinkLostError"})
    assert type(e) is errors.LinkLostError and e.exit_code == errors.EXIT_LINK_LOST
    # a class whose text is made of fields, a name that is not ours: SicellError, same code
    for kind in ("StoreFullError", "bug", "KeyError", ""):
        e = reply_error({"ok": False, "error": "t", "exit_code": 70, "kind": kind})
        assert type(e) is SicellError and str(e) == "t" and e.exit_code == 70


# ---- the CLI through an owner: the output it prints without one --------------------------------
def _cli(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


class Owner:
    """This process owns the fake board's port: one thread has it open and runs requests."""

    def __init__(self, url: str) -> None:
        self.controls = Controls()
        self.claim = claim(url, "run", srv.controls_handler(self.controls))
        self.board = Board.open(url)  # (held here: the opener may open it)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            req = self.controls.wait(0.02)
            if req is not None:
                execute(self.board, req)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.board.close()
        self.claim.close()


def test_status_pause_continue_stop_print_the_same_through_the_owner(
    boards: list[FakeBoard],
) -> None:
    fb = FakeBoard(state=M.ST_RUNNING, run_id=0x1234, n_samples=10**6, record_interval=1.0)
    boards.append(fb)
    url = fb.serve_tcp()
    direct = {
        "status": json.loads(_cli("status", "--json", "--port", url).output),
        "pause": _cli("pause", "--port", url).output,
        "continue": _cli("continue", "--port", url).output,
    }
    owner = Owner(url)
    try:
        rb = RemoteBoard.connect(url)
        assert rb is not None
        with rb:
            assert rb.owner.pid == os.getpid() and rb.info.board_id == "fake0001"
        res = _cli("status", "--json", "--port", url)
        assert res.exit_code == 0, res.output
        remote = json.loads(res.output)
        assert remote["info"] == direct["status"]["info"]
        assert remote["status"].keys() == direct["status"]["status"].keys()
        assert remote["status"]["state"] == M.ST_RUNNING
        table = _cli("status", "--port", url)
        assert table.exit_code == 0 and "running" in table.output and "00001234" in table.output
        assert _cli("pause", "--port", url).output == direct["pause"]
        assert fb.state == M.ST_PAUSED
        assert _cli("pause", "--port", url).exit_code == 0  # (the fake takes a second pause)
        assert _cli("continue", "--port", url).output == direct["continue"]
        res = _cli("stop", "--port", url, "--yes")
        assert (
            res.exit_code == 0 and res.output == f"{url}: run 00001234 stopped (board is stopped)\n"
        )
        assert fb.state == M.ST_STOPPED
        # a refusal of the board's comes back as that error, one line and its exit code
        res = _cli("pause", "--port", url)
        assert res.exit_code == errors.EXIT_ERROR
        assert res.output.startswith(f"error: {url}: PAUSE refused: ")
        # calibration needs the port itself
        res = _cli("calibrate", "--port", url)
        assert res.exit_code == errors.EXIT_ERROR
        assert res.output == (
            f"error: {url} is in use by `sicell run` ({owner.claim.info.since()}); calibrate "
            "after the run ends (`sicell stop` ends it)\n"
        )
    finally:
        owner.close()
    assert fb.connections == 4  # three direct commands and the owner: nobody else opened it


def test_run_refuses_one_board_named_twice() -> None:
    """Two spellings of one emulated board in one `sicell run` would give it two sessions in
    one process (claims are re-entrant there): refused before any board is touched."""
    sch = Path(__file__).resolve().parents[1] / "host/sicell/examples/rc-check.toml"
    r = CliRunner().invoke(
        cli,
        ["run", str(sch), "--port", "emu://rc?board=dup1", "--port", "emu://rc?board=dup1&seed=3"],
    )
    assert r.exit_code == errors.EXIT_USAGE, r.output
    assert "names the same board as --port emu://rc?board=dup1" in r.output
