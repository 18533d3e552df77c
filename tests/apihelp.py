"""A fake of the service the HTTP API serves (sicell.service.api.ServiceLike): fixed boards and
runs, every call recorded, events published by hand. Used by the API's tests and the page's."""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any

from sicell.errors import UnknownBoardError

TOKEN = "t0k3n-for-the-tests-only-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def board_dict(board_id: str, mode: str = "CC") -> dict[str, Any]:
    return {
        "board_id": board_id,
        "port": f"emu://rc?board={board_id}",
        "online": True,
        "mode": mode,
        "state": "running",
        "run": {
            "name": f"run-{board_id}",
            "run_id": "0000abcd",
            "db": f"runs/run-{board_id}.db",
            "schedule": "rc-check",
            "started_at": "2026-01-01T00:00:00Z",
        },
        "step": 2,
        "step_kind": "cc",
        "cycle": 1,
        "voltage_v": -0.125,
        "we_v": None,
        "current_a": 1e-4,
        "half_cycle_ah": 2.5e-7,
        "elapsed_s": 12.5,
        "eta_s": 200.0,
        "samples": 42,
        "last_seq": 50,
        "last_record_age_s": 0.4,
        "badges": [],
        "message": None,
    }


class FakeSub:
    def __init__(self) -> None:
        self.q: queue.Queue[dict[str, Any]] = queue.Queue()
        self.closed = threading.Event()
        self.gets = 0  # calls of get() begun

    def get(self, timeout: float) -> dict[str, Any] | None:
        self.gets += 1
        try:
            return self.q.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self.closed.set()


class FakeService:
    """Answers from fixed data and records every call; ``fail`` makes the next call raise."""

    def __init__(self, report_dir: Path) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.subs: list[FakeSub] = []
        self.fail: BaseException | None = None
        self.report_dir = report_dir
        report_dir.mkdir(parents=True, exist_ok=True)
        (report_dir / "report.html").write_text("<html><img src='fig.png'></html>")
        (report_dir / "fig.png").write_bytes(b"\x89PNG fake")

    def _call(self, *what: Any) -> None:
        self.calls.append(what)
        if self.fail is not None:
            err, self.fail = self.fail, None
            raise err

    def boards(self) -> list[dict[str, Any]]:
        self._call("boards")
        return [board_dict("b1"), board_dict("b2", "paused")]

    def board(self, board_id: str) -> dict[str, Any]:
        self._call("board", board_id)
        if board_id not in ("b1", "b2"):
            raise UnknownBoardError(f"no board {board_id!r}; known: b1, b2")
        return board_dict(board_id)

    def control(self, board_id: str, op: str, args: dict[str, Any], who: str) -> dict[str, Any]:
        self._call("control", board_id, op, args, who)
        return {"status": {"state": "paused" if op == "pause" else "running"}}

    def plan(self, board_id: str, toml_text: str) -> dict[str, Any]:
        self._call("plan", board_id, toml_text)
        return {"schedule": "x", "warnings": [], "steps": [], "estimate_s": 1.0}

    def start(self, board_id: str, toml_text: str, name: str, who: str) -> dict[str, Any]:
        self._call("start", board_id, toml_text, name, who)
        return {"name": name, "run_id": "00000001"}

    def runs(self) -> list[dict[str, Any]]:
        self._call("runs")
        return [{"name": "run-b1", "board_id": "b1", "run_id": "0000abcd", "state": "running"}]

    def run(self, name: str) -> dict[str, Any]:
        self._call("run", name)
        return {"name": name}

    def records(self, name: str, since_seq: int, limit: int) -> dict[str, Any]:
        self._call("records", name, since_seq, limit)
        recs = [
            {"seq": s, "t_s": s * 0.5, "v": 0.1, "e": None, "i": 1e-4, "q": 0.0, "step": 0}
            for s in range(since_seq + 1, since_seq + 1 + min(limit, 3))
        ]
        return {"records": recs, "next": recs[-1]["seq"]}

    def cycles(self, name: str) -> list[dict[str, Any]]:
        self._call("cycles", name)
        return [{"cycle": 1, "lith_ah": 1e-6, "delith_ah": 0.9e-6, "ce": 0.9}]

    def dqdv(self, name: str, cycle: int) -> dict[str, Any]:
        self._call("dqdv", name, cycle)
        return {"v": [0.1, 0.2], "dqdv": [1.0, 2.0]}

    def report(self, name: str) -> Path:
        self._call("report", name)
        return self.report_dir / "report.html"

    def subscribe(self) -> FakeSub:
        self._call("subscribe")
        sub = FakeSub()
        self.subs.append(sub)
        return sub

    def publish(self, ev: dict[str, Any]) -> None:
        for s in self.subs:
            s.q.put(ev)
