"""sicell.reenumerate: after a reset, the port goes away (or is replaced) and a board comes
back, the same board id; each bound names what it waited for. Ports here are symlinks to fake
boards' ptys, repointed as a re-enumeration replaces the device behind a name."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from sicell import reenumerate
from sicell.errors import BoardTimeoutError

from tests.fakeboard import FakeBoard


def _repoint(link: Path, target: str) -> None:
    tmp = link.with_name(link.name + ".new")
    tmp.symlink_to(target)
    os.replace(tmp, link)


def test_a_port_that_stays_is_no_reset(tmp_path: Path, fake: Callable[..., FakeBoard]) -> None:
    link = tmp_path / "ttyACM9"
    link.symlink_to(fake().serve_pty())
    before = reenumerate.snapshot(str(link))
    assert before.own is not None and before.now() == before.own
    with pytest.raises(
        BoardTimeoutError, match=r"did not reset: its port was still the same 0\.2 s"
    ):
        reenumerate.wait_gone(before, 0.2)


def test_the_board_comes_back_on_a_new_device(
    tmp_path: Path, fake: Callable[..., FakeBoard]
) -> None:
    link = tmp_path / "ttyACM9"
    link.symlink_to(fake().serve_pty())
    before = reenumerate.snapshot(str(link))
    _repoint(link, fake().serve_pty())  # the reset: another device behind the same name
    reenumerate.wait_gone(before, 1.0)
    with reenumerate.wait_back(before, "fake0001", 5.0) as b:
        assert b.info is not None and b.info.board_id == "fake0001"


def test_another_board_is_not_taken_for_it(tmp_path: Path, fake: Callable[..., FakeBoard]) -> None:
    link = tmp_path / "ttyACM9"
    link.symlink_to(fake().serve_pty())
    before = reenumerate.snapshot(str(link))
    _repoint(link, fake().serve_pty())
    with pytest.raises(BoardTimeoutError) as e:
        reenumerate.reopen_after_reset(str(link), before, "e661deadbeef0001", timeout=1.0)
    msg = str(e.value)
    assert "board e661deadbeef0001 did not come back within 1 s" in msg
    assert "answers as board fake0001, not e661deadbeef0001" in msg and "\n" not in msg


def test_a_port_that_never_comes_back(tmp_path: Path, fake: Callable[..., FakeBoard]) -> None:
    link = tmp_path / "ttyACM9"
    link.symlink_to(fake().serve_pty())
    before = reenumerate.snapshot(str(link))
    link.unlink()  # unplugged for good
    reenumerate.wait_gone(before, 1.0)
    with pytest.raises(BoardTimeoutError, match="no port came back"):
        reenumerate.wait_back(before, None, 0.3)
