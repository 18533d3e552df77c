"""The schedule reference (``host/docs/schedule.md``) is executed: its TOML examples compile,
its one-liners expand to the keys shown beside them, and its key tables list exactly the keys
the parser accepts, so page and code cannot drift apart."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import sicell.schedule
from sicell.protocol import schedule as wire
from sicell.schedule import DEFAULT_LIMITS, parse_schedule
from sicell.schedule import vocabulary as V
from sicell.schedule.oneliner import expand_one_liner

ROOT = Path(__file__).resolve().parents[1]
DOC_PATH = ROOT / "host" / "docs" / "schedule.md"
DOC = DOC_PATH.read_text(encoding="utf-8")

FENCE_RE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
TOML_BLOCKS = [body for lang, body in FENCE_RE.findall(DOC) if lang == "toml"]
PROSE = FENCE_RE.sub("", DOC)

SECTION_KEYS: dict[str, set[str]] = {
    "Top level": V.TOP_KEYS,
    "`[cell]`": V.CELL_KEYS,
    "`[reference]`": V.REFERENCE_KEYS,
    "`[safety]`": V.SAFETY_KEYS,
    "`[recording]`": V.RECORDING_KEYS,
    "`[control]`": V.CONTROL_KEYS,
    "`[[step]]`": V.STEP_KEYS,
    "`[[step.limit]]`": V.LIMIT_KEYS,
}
ONE_LINER_RE = re.compile(
    r"^(?!.*<\w)(?:Rest|OCV|Open circuit|Lithiate|Delithiate|Lithiation|Delithiation|Hold|"
    r"Charge|Discharge) (?:at|for) "
)
"""A concrete one-liner (grammar such as ``at <x> V`` has placeholders)."""


def sections() -> dict[str, str]:
    """``## heading`` → its prose (with its ``###`` subsections), code blocks removed."""
    parts = re.split(r"^## (.+)$", PROSE, flags=re.MULTILINE)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the markdown tables in ``text`` (cells split on unescaped ``|``)."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("|") or re.match(r"^\|[\s|:-]+\|$", line):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if cells[0] in ("key", "one-liner"):
            continue
        rows.append(cells)
    return rows


def spans(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", text)


def one_liner_table() -> list[tuple[str, str]]:
    rows = table_rows(sections()["One-liners"])
    return [(spans(a)[0], spans(b)[0]) for a, b in rows]


def doc_head() -> str:
    """The first example's tables (everything before its first ``[[step]]``)."""
    first = TOML_BLOCKS[0]
    return first[: first.index("[[step]]")]


# ---- examples ---------------------------------------------------------------------------------


def test_the_page_has_its_examples() -> None:
    assert len(TOML_BLOCKS) >= 4
    for needle in ("ir_corrected = true", "[[step.limit]]", "step = "):
        assert any(needle in b for b in TOML_BLOCKS), needle


@pytest.mark.parametrize("n", range(len(TOML_BLOCKS)))
def test_toml_example_compiles(n: int) -> None:
    blob = parse_schedule(TOML_BLOCKS[n], source=f"docs/schedule.md example {n}").compile()
    header, steps = wire.decode(
        blob,
        n_ranges=len(DEFAULT_LIMITS.ranges_a),
        hw_v_min=round(DEFAULT_LIMITS.v_min_v * 1e6),
        hw_v_max=round(DEFAULT_LIMITS.v_max_v * 1e6),
        hw_i_max=round(DEFAULT_LIMITS.i_max_a * 1e9),
    )
    assert steps
    if n == 0:  # the paper's cycling protocol, as its comments say
        assert steps[-1][0][6] == 99  # "count = 100": 99 more passes
        assert (header[4], header[5]) == (-620_000, 1_980_000)  # 0.0…2.6 V vs Li, In-Li


# ---- one-liners -------------------------------------------------------------------------------


def test_one_liner_table_is_there() -> None:
    table = one_liner_table()
    assert len(table) >= 8
    kinds = {tomllib.loads(f"x = {same}")["x"]["kind"] for _, same in table}
    assert kinds == {"rest", "ocv", "cc", "cv", "cccv"}


@pytest.mark.parametrize(("text", "same"), one_liner_table())
def test_one_liner_expands_as_shown(text: str, same: str) -> None:
    expected = tomllib.loads(f"x = {same}")["x"]
    assert expand_one_liner("doc", text, None, 0) == expected
    as_text = parse_schedule(f'step = [{{ step = "{text}" }}]\n' + doc_head()).compile()
    as_table = parse_schedule(f"step = [{same}]\n" + doc_head()).compile()
    assert as_text == as_table


def test_every_one_liner_in_the_prose_is_in_the_table() -> None:
    shown = {s for s in spans(PROSE) if ONE_LINER_RE.match(s)}
    assert shown == {text for text, _ in one_liner_table()}


# ---- keys -------------------------------------------------------------------------------------


@pytest.mark.parametrize("heading", list(SECTION_KEYS))
def test_key_table_lists_exactly_the_accepted_keys(heading: str) -> None:
    secs = sections()
    assert heading in secs, f"no '## {heading}' section"
    documented = {k for row in table_rows(secs[heading]) for k in spans(row[0])}
    accepted = SECTION_KEYS[heading]
    assert documented - accepted == set(), f"{heading}: documented but not accepted"
    assert accepted - documented == set(), f"{heading}: accepted but not documented"


def test_every_key_named_on_the_page_is_accepted() -> None:
    every_key = set().union(*SECTION_KEYS.values())
    named = {s for s in spans(PROSE) if re.fullmatch(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)+", s)}
    assert named, "no keys found"
    assert named - every_key == set()
    for block in TOML_BLOCKS:  # and the keys in the examples (they compile, but say it)
        for key in re.findall(r"^([a-z_0-9]+) =", block, re.MULTILINE):
            assert key in every_key, key


def test_pointers_to_the_page() -> None:
    assert "host/docs/schedule.md" in (sicell.schedule.__doc__ or "")
    assert "host/docs/schedule.md" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert not (ROOT / "host" / "sicell" / "schedule.py").exists()
