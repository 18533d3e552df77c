"""The service's data directory: where run databases, reports, the audit log and the state live.

::

    <data>/runs/<name>.db        one run database per run (sicell.store)
    <data>/reports/<name>/       a report of that run (sicell.report), made on demand
    <data>/service.json          which run each board id is running (read at the next start)
    <data>/alerts.json           the alert events already sent (never sent twice)
    <data>/audit.log             JSON lines: every command the service ran, who asked, outcome

Run names are checked here (:func:`check_name`): nothing a caller names can leave ``runs/``.
JSON files are written atomically (a reader sees the old file or the new one).
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

from sicell.emulator.registry import write_json_atomic
from sicell.errors import RunExistsError, UnknownRunError, UsageError

__all__ = ["NAME_RE", "DataDir", "check_name"]

NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,80}")
STATE_VERSION = 1


def check_name(name: object) -> str:
    """``name`` when it is a run name (1-80 of A-Z a-z 0-9 . _ -, no leading dot); else a
    one-line UsageError saying what a name may be."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or name.startswith("."):
        shown = repr(name)[:60] if isinstance(name, str) else type(name).__name__
        raise UsageError(
            f"bad run name {shown}: use 1-80 characters from A-Z a-z 0-9 . _ - , not starting "
            "with a dot"
        )
    return name


class DataDir:
    """Paths in one data directory, and the service's state file (thread-safe)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        self.runs = self.root / "runs"
        self.reports = self.root / "reports"
        self.state_path = self.root / "service.json"
        self.alerts_path = self.root / "alerts.json"
        self.audit_path = self.root / "audit.log"
        self._lock = threading.Lock()

    def create(self) -> None:
        """Make the directories (the data directory itself private to its user)."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.runs.mkdir(exist_ok=True)
        self.reports.mkdir(exist_ok=True)

    # ---- runs -------------------------------------------------------------------------------
    def db(self, name: str) -> Path:
        """The run database of a checked ``name``."""
        return self.runs / f"{check_name(name)}.db"

    def existing_db(self, name: str) -> Path:
        """The database of run ``name``; UsageError when there is none."""
        p = self.db(name)
        if not p.is_file():
            raise UnknownRunError(f"no run named {name!r} in {self.runs}")
        return p

    def new_db(self, name: str) -> Path:
        """The database path for a new run ``name``; UsageError when the name is taken."""
        p = self.db(name)
        taken = [Path(f"{p}{s}") for s in ("", "-wal", "-shm", "-journal")]
        if any(q.exists() for q in taken):
            raise RunExistsError(f"a run named {name!r} exists in {self.runs}; choose another name")
        return p

    def report_dir(self, name: str) -> Path:
        return self.reports / check_name(name)

    def run_names(self) -> list[str]:
        """Names of the run databases in ``runs/``, sorted."""
        out = []
        for p in self.runs.glob("*.db"):
            if NAME_RE.fullmatch(p.stem) and not p.stem.startswith("."):
                out.append(p.stem)
        return sorted(out)

    def relative(self, path: Path) -> str:
        """``path`` relative to the data directory (as the API shows it)."""
        try:
            return str(Path(path).absolute().relative_to(self.root))
        except ValueError:
            return str(path)

    # ---- state ------------------------------------------------------------------------------
    def _read(self, path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise UsageError(f"{path}: cannot read the service's state ({e})") from e
        return data if isinstance(data, dict) else {}

    def load_runs(self) -> dict[str, dict[str, Any]]:
        """board id -> {"run": name, "run_id": int, "port": str, ...} from service.json."""
        with self._lock:
            boards = self._read(self.state_path).get("boards", {})
        return {str(k): dict(v) for k, v in boards.items() if isinstance(v, dict)}

    def update_run(self, board_id: str, entry: dict[str, Any] | None) -> None:
        """Set (or with None remove) the state entry of ``board_id``, atomically."""
        with self._lock:
            data = self._read(self.state_path)
            boards = data.get("boards")
            boards = dict(boards) if isinstance(boards, dict) else {}
            if entry is None:
                if board_id not in boards:
                    return
                boards.pop(board_id)
            else:
                boards[board_id] = entry
            write_json_atomic(self.state_path, {"version": STATE_VERSION, "boards": boards})

    def load_alert_keys(self) -> list[str]:
        with self._lock:
            keys = self._read(self.alerts_path).get("sent", [])
        return [str(k) for k in keys] if isinstance(keys, list) else []

    def save_alert_keys(self, keys: list[str]) -> None:
        with self._lock:
            write_json_atomic(self.alerts_path, {"version": STATE_VERSION, "sent": keys})
