"""Boards the service finds again: one that went away and came back, and one that came back
under another device name (a USB board after a replug) while its run went on."""

from __future__ import annotations

from pathlib import Path

import pytest
from sicell.client import Board
from sicell.emulator.handle import EmulatorHandle
from sicell.emulator.registry import find_emulator
from sicell.errors import EXIT_STOPPED
from sicell.transport import RPI_VID, PortInfo

from tests.emuhelp import wait_for
from tests.servicehelp import (
    BOARD_IDS,
    LONG_TOML,
    board_url,
    db_seqs,
    running_service,
    wait_board,
    wait_ended,
)

A = BOARD_IDS[0]


def test_board_that_went_away_comes_back(tmp_path: Path, rt: Path) -> None:
    with running_service(tmp_path, 1) as svc:
        sub = svc.subscribe()
        info = find_emulator(A, rt)
        assert info is not None
        EmulatorHandle(info).shutdown(timeout=10)
        wait_board(svc, 0, lambda b: not b["online"], 30, "the board offline")
        # the worker opens its URL again, which starts the board again
        b = wait_board(svc, 0, lambda b: b["online"], 60, "the board back")
        assert b["mode"] == "idle" and b["board_id"] == A
        # and the listeners were told: offline, then idle again
        modes: list[str] = []

        def told() -> bool:
            ev = sub.get(0.1)
            if ev is not None and ev["type"] == "board":
                modes.append(ev["board"]["mode"])
            return "offline" in modes and modes[-1] == "idle"

        wait_for(told, 10, "board events")
        sub.close()


def test_board_found_again_under_another_device(
    tmp_path: Path, rt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Board.open(board_url(0)):  # start the emulated board (it lingers after the close)
        pass
    info = find_emulator(A, rt)
    assert info is not None
    device = [str(info["pty"])]  # what the fake USB scan lists: the pty, later its .tty link

    def fake_boards() -> list[PortInfo]:
        return [PortInfo(device[0], "fake", RPI_VID, 0x0005, A.upper())]

    monkeypatch.setattr("sicell.transport.list_boards", fake_boards)
    with running_service(tmp_path, ports=[], scan_serial=True, rescan_s=0.2) as svc:
        wait_for(lambda: svc.boards() and svc.boards()[0]["online"], 60, "the scanned board")
        svc.start(A, LONG_TOML, "moved", "tester")
        wait_board(svc, 0, lambda b: b["samples"] > 5, what="records")
        device[0] = str(info["link"])  # the board re-enumerated under another name
        b = wait_board(
            svc,
            0,
            lambda b: b["port"] == device[0] and b["run"]["active"] and b["samples"] > 0,
            60,
            "the run logged on the new device",
        )
        assert b["run"]["name"] == "moved"
        svc.control(A, "stop", {}, "tester")
        assert wait_ended(svc, 0, "moved")["exit_code"] == EXIT_STOPPED
    seqs = db_seqs(tmp_path / "data/runs/moved.db")
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
