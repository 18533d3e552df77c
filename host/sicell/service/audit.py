"""The audit log: one JSON line per command the service ran (who asked, when, what, outcome).

Each line is written with one ``write`` on a file opened for appending, so lines from several
threads never interleave and a reader sees whole lines.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from sicell.session.runmeta import now_iso

__all__ = ["AuditLog"]


class AuditLog:
    """Appends ``{"at", "who", "op", "board_id", "args", "outcome"}`` lines to ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def write(
        self, who: str, op: str, board_id: str | None, args: dict[str, Any], outcome: str
    ) -> None:
        line = json.dumps(
            {
                "at": now_iso(),
                "who": who,
                "op": op,
                "board_id": board_id,
                "args": args,
                "outcome": outcome,
            },
            sort_keys=True,
            default=str,
        )
        data = (line + "\n").encode("utf-8")  # (JSON escapes newlines: one line)
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)

    def lines(self) -> list[dict[str, Any]]:
        """Every entry so far (tests, the API)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [json.loads(ln) for ln in text.splitlines() if ln.strip()]
