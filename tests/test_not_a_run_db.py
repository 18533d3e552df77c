"""Files that are not a sicell run database: report, export, the loader, the notebook view and
``run --resume`` all answer "FILE is not a sicell run database (reason)" with exit code 2, and
none of them writes to the file or next to it."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from sicell import errors, open_run
from sicell.cli import cli
from sicell.protocol import messages
from sicell.rundata import load_run
from sicell.store import RunStore, SampleRecord, read_extent

from tests.fakeboard import FakeBoard

STEPS = [(0, "cc", 1e-4, None, "lith")]


def _valid(path: Path) -> Path:
    with RunStore.create(path, {"reference_offset_v": 0.62, "run_id": 7}, STEPS) as s:
        s.add([SampleRecord(i, float(i), 0.1, 1e-4, 1e-6 * i, 0, 0, 1, 0) for i in range(50)], [])
    assert not Path(str(path) + "-wal").exists()  # the writer checkpointed on close
    return path


def _empty(d: Path) -> Path:
    p = d / "empty.db"
    p.write_bytes(b"")
    return p


def _text(d: Path) -> Path:
    p = d / "notes.db"
    p.write_text("cycle 1: 0.42 mAh\n")
    return p


def _damaged(d: Path) -> Path:
    """A run database whose first page (the table of tables) was overwritten."""
    p = _valid(d / "damaged.db")
    data = bytearray(p.read_bytes())
    data[100:4096] = bytes((i * 37 + 11) % 256 for i in range(3996))
    p.write_bytes(bytes(data))
    return p


def _truncated(d: Path) -> Path:
    p = _valid(d / "truncated.db")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 3])
    return p


def _foreign(d: Path) -> Path:
    p = d / "inventory.db"
    con = sqlite3.connect(p)
    con.execute("CREATE TABLE parts(name TEXT, count INTEGER)")
    con.execute("INSERT INTO parts VALUES ('cell', 3)")
    con.commit()
    con.close()
    return p


def _lookalike(d: Path) -> Path:
    """Tables with sicell's names but not its columns."""
    p = d / "lookalike.db"
    con = sqlite3.connect(p)
    for t in ("meta", "samples", "events", "steps"):
        con.execute(f"CREATE TABLE {t}(x)")
    con.commit()
    con.close()
    return p


def _newer(d: Path) -> Path:
    p = _valid(d / "newer.db")
    con = sqlite3.connect(p)
    con.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    return p


CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "empty": (_empty, "(empty file)"),
    "text": (_text, "(not an SQLite database"),
    "damaged": (_damaged, "(damaged: database disk image is malformed)"),
    "truncated": (_truncated, "(damaged: "),
    "foreign": (_foreign, "(an SQLite database without sicell's tables events, meta, samples"),
    "lookalike": (_lookalike, "(table meta lacks columns key, value)"),
    "newer": (_newer, "(schema version 2 is newer than this sicell's 1; update sicell)"),
}


def _state(d: Path) -> dict[str, str]:
    """Every file in the folder with its content hash and modification time."""
    return {
        p.name: f"{hashlib.sha256(p.read_bytes()).hexdigest()} {p.stat().st_mtime_ns}"
        for p in sorted(d.iterdir())
    }


@pytest.fixture(params=sorted(CASES))
def bad(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str]:
    d = tmp_path / "files"
    d.mkdir()
    make, reason = CASES[request.param]
    return make(d), reason


def _refusal(path: Path, reason: str) -> str:
    return f"{path} is not a sicell run database {reason}"


@pytest.mark.parametrize(
    "reader",
    [load_run, read_extent, RunStore.open, open_run],
    ids=["load_run", "read_extent", "RunStore.open", "open_run"],
)
def test_readers_refuse_and_write_nothing(
    bad: tuple[Path, str], reader: Callable[[Path], object]
) -> None:
    path, reason = bad
    if reader is open_run:
        pytest.importorskip("pandas")
    before = _state(path.parent)
    with pytest.raises(errors.StoreSchemaError) as ei:
        reader(path)
    assert str(ei.value).startswith(_refusal(path, reason))
    assert ei.value.exit_code == errors.EXIT_USAGE
    assert _state(path.parent) == before


def _invoke(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return res.exit_code, res.output


def test_export_refuses(bad: tuple[Path, str], tmp_path: Path) -> None:
    path, reason = bad
    before = _state(path.parent)
    out = tmp_path / "out.csv"
    code, text = _invoke("export", str(path), "--out", str(out))
    assert code == 2, text
    assert f"error: {_refusal(path, reason)}" in text and "bug" not in text
    assert _state(path.parent) == before
    assert (
        not out.exists() and not list(tmp_path.glob("*.part")) and not list(tmp_path.glob("*.json"))
    )


def test_report_refuses(bad: tuple[Path, str], tmp_path: Path) -> None:
    path, reason = bad
    before = _state(path.parent)
    code, text = _invoke("report", str(path), "--out", str(tmp_path / "report"))
    assert code == 2, text
    assert f"error: {_refusal(path, reason)}" in text and "bug" not in text
    assert _state(path.parent) == before


def test_resume_refuses_without_writing(bad: tuple[Path, str], boards: list[FakeBoard]) -> None:
    """``run --resume`` checks the file read-only before it opens it for writing: no table
    is created in it, no journal appears next to it, and the board is not touched."""
    path, reason = bad
    fb = FakeBoard(state=messages.ST_RUNNING, run_id=7)
    boards.append(fb)
    before = _state(path.parent)
    code, text = _invoke("run", "--resume", str(path), "-p", fb.serve_tcp(), "-q")
    assert code == 2, text
    assert f"error: {_refusal(path, reason)}" in text
    assert _state(path.parent) == before
    assert fb.connections == 0


def test_a_run_database_still_opens(tmp_path: Path) -> None:
    """The check passes a real run, and one from another writer of the documented layout
    (no schema version) for reading, not for appending."""
    p = _valid(tmp_path / "run.db")
    assert len(load_run(p)) == 50
    other = tmp_path / "other.db"
    shutil.copy(p, other)
    con = sqlite3.connect(other)
    con.execute("DELETE FROM meta WHERE key = 'schema_version'")
    con.commit()
    con.close()
    assert len(load_run(other)) == 50
    with pytest.raises(errors.StoreSchemaError, match="schema version None"):
        RunStore.open(other)  # appending needs the version this sicell writes
