"""``sicell.schedule.tomlwrite.dump_toml``: what it writes, ``tomllib`` reads back unchanged."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sicell.schedule import parse_schedule
from sicell.schedule.tomlwrite import dump_toml

EXAMPLES = Path(__file__).resolve().parents[1] / "host" / "sicell" / "examples"

keys = st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True)
"""Bare keys, as the schedule vocabulary's are."""
strings = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    strings,
)
"""The value types a schedule uses: true/false, integers, floats, strings."""
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)
"""Scalars, arrays (``[1, "a"]``) and inline tables (``record = { dt_s = 1 }``)."""
tables = st.dictionaries(keys, values, max_size=6)
documents = st.dictionaries(
    keys,
    st.one_of(values, tables, st.lists(tables, min_size=1, max_size=3)),
    max_size=8,
)
"""Top level: plain values, tables (``[cell]``) and arrays of tables (``[[step]]``)."""
comments = st.text(st.characters(categories=("L", "N", "P", "Zs")), max_size=40)


@settings(max_examples=200, deadline=None)
@given(documents, st.lists(comments, max_size=3).map("\n".join))
def test_dump_toml_round_trips(doc: dict[str, Any], header: str) -> None:
    text = dump_toml(doc, header)
    assert tomllib.loads(text) == doc
    if header:
        assert text.startswith("#")


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_examples_survive_a_rewrite(path: Path) -> None:
    """A schedule read and written again compiles to the same bytes."""
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    text = dump_toml(doc, header=f"rewritten from {path.name}")
    assert tomllib.loads(text) == doc
    assert parse_schedule(text).compile() == parse_schedule(path.read_text()).compile()


def test_layout() -> None:
    doc = {
        "name": "x",
        "cell": {"area_cm2": 0.5},
        "step": [{"kind": "rest", "duration_s": 1.0, "record": {"dt_s": 1}}],
        "tags": ["a", 1],
    }
    assert dump_toml(doc, "one\n\ntwo") == (
        "# one\n#\n# two\n"
        'name = "x"\n'
        'tags = ["a", 1]\n'
        "\n[cell]\narea_cm2 = 0.5\n"
        '\n[[step]]\nkind = "rest"\nduration_s = 1.0\nrecord = { dt_s = 1 }\n'
    )
    assert dump_toml({"s": 'a"b\\c\n\x7f'}) == 's = "a\\"b\\\\c\\u000a\\u007f"\n'


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_refuses_non_finite_floats(bad: float) -> None:
    with pytest.raises(ValueError, match="cannot write"):
        dump_toml({"x": bad})


def test_refuses_other_types() -> None:
    with pytest.raises(TypeError, match="cannot write NoneType"):
        dump_toml({"x": None})
