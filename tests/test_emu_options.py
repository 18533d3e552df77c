"""The emulator's options are defined once (``sicell.emulator.options.EmulatorOptions``): the
``emu://`` query keys, ``to_argv`` and the parser of ``python -m sicell.emulator``, the keyword
arguments of start_emulator / run_emulator and the click options of ``sicell emulate`` all come
from that definition, and each reads back what the others write."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import click
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from sicell.cli import cli
from sicell.emulator import cmdline, options
from sicell.emulator.__main__ import build_parser, main
from sicell.emulator.cellmodels import cell_names
from sicell.emulator.faults import FAULT_FIELDS, FaultConfig
from sicell.emulator.options import (
    AUTO_LINGER,
    OPTION,
    OPTIONS,
    SCALARS,
    URL_FORM,
    URL_KEYS,
    EmulatorOptions,
    Option,
    from_keywords,
)
from sicell.errors import EmulatorConfigError
from sicell.urlhandler.protocol_emu import parse_url

LAUNCHER_OPTS = [o for o in OPTIONS if o.on_command_line and o.kind != "cell"]
SCALAR_NAMES = [o.name for o in LAUNCHER_OPTS if o.kind in SCALARS]

TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1)
NUMBER = st.floats(allow_nan=False, allow_infinity=False)
PARAM = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True)
BOOL_WORDS = {True: ["1", "true", "yes", "on", "TRUE", "On"], False: ["0", "false", "no", "Off"]}


def fault_values() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            name: st.sampled_from(ff.choices) if ff.choices else st.floats(0, ff.high)
            for name, ff in FAULT_FIELDS.items()
        },
    )


def values_of(o: Option) -> st.SearchStrategy[Any]:
    """Values of one option, from its kind in the definition."""
    strategy: st.SearchStrategy[Any] = {
        "cell": st.sampled_from(cell_names()),
        "int": st.integers(-(10**12), 10**12),
        "float": NUMBER,
        "bool": st.booleans(),
        "str": TEXT,
        "overrides": st.dictionaries(PARAM, NUMBER, max_size=3),
        "faults": fault_values(),
    }[o.kind]
    return st.none() | strategy if o.default is None else strategy


def launcher_options(names: list[str] | None = None) -> st.SearchStrategy[EmulatorOptions]:
    chosen = [o for o in LAUNCHER_OPTS if names is None or o.name in names]
    return st.builds(
        EmulatorOptions,
        cell=values_of(OPTION["cell"]),
        **{o.name: values_of(o) for o in chosen},
    )


# ---- one definition, every form -------------------------------------------------------------
def test_every_option_appears_in_each_generated_form() -> None:
    url_fields = {k.field for k in URL_KEYS}
    actions = {a.dest: a for a in build_parser()._actions}
    for o in OPTIONS:
        assert (o.name in url_fields) == (o.in_url and o.kind != "cell"), o.name
        assert (o.name in actions) == o.on_command_line, o.name
        if o.on_command_line and o.kind in SCALARS:
            assert actions[o.name].default == o.default, o.name
            assert o.flag in actions[o.name].option_strings
    assert {k.sub for k in URL_KEYS if k.sub} == set(FAULT_FIELDS)
    for name, ff in FAULT_FIELDS.items():
        assert ff.flag in actions[f"fault_{name}"].option_strings
    for k in URL_KEYS:
        assert k.label in URL_FORM and k.label in options.url_help()


def test_scopes_mark_url_only_start_only_and_launcher_only_options() -> None:
    assert OPTION["owner"].in_url and not OPTION["owner"].for_start
    assert OPTION["timeout"].for_start and not OPTION["timeout"].on_command_line
    assert OPTION["runtime"].on_command_line and not OPTION["runtime"].in_url
    assert from_keywords("rc", {"timeout": 3.0}, start=True).timeout == 3.0
    assert from_keywords("rc", {"runtime": "/r"}, start=False).runtime == "/r"
    with pytest.raises(TypeError, match="'owner'"):
        from_keywords("rc", {"owner": True}, start=True)
    with pytest.raises(TypeError, match="'timeout'"):
        from_keywords("rc", {"timeout": 3.0}, start=False)
    with pytest.raises(TypeError, match="'colour' is not an emulator option"):
        from_keywords("rc", {"colour": "red"}, start=True)
    o = from_keywords("rc", {"faults": None, "cell_overrides": None, "seed": 4}, start=True)
    assert (o.faults, o.cell_overrides, o.seed) == ({}, {}, 4)
    assert set(options.MATCHED) == {"seed", "realtime", "noise", "flash_dir", "cell_overrides"}


def test_sicell_emulate_options_come_from_the_definition() -> None:
    emulate = cli.get_command(click.Context(cli), "emulate")
    assert emulate is not None
    params = {p.name: p for p in emulate.params}
    for name in ("seed", "board", "realtime", "linger", "flash_dir"):
        assert params[name].default == OPTION[name].default, name
        assert OPTION[name].flag in params[name].opts
    # automatic linger; run_emulator (sicell emulate's launcher) makes it "never"
    assert params["linger"].default == AUTO_LINGER
    with pytest.raises(ValueError, match="cannot be a command-line option"):
        cmdline.click_options(["faults"])


# ---- round trips ------------------------------------------------------------------------------
@settings(max_examples=80, deadline=None)
@given(opts=launcher_options())
def test_argv_round_trip(opts: EmulatorOptions) -> None:
    """EmulatorOptions -> to_argv -> the generated argparse parser -> the same options."""
    back = cmdline.from_namespace(build_parser().parse_args(opts.to_argv()))
    assert back == opts


@settings(max_examples=60, deadline=None)
@given(opts=launcher_options(SCALAR_NAMES))
def test_click_options_read_what_to_argv_writes(opts: EmulatorOptions) -> None:
    seen: dict[str, Any] = {}

    @click.command()
    @cmdline.click_options(SCALAR_NAMES)
    def probe(**kw: Any) -> None:
        seen.update(kw)

    res = CliRunner().invoke(probe, opts.to_argv()[1:], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert seen == {name: getattr(opts, name) for name in SCALAR_NAMES}


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_url_round_trip(data: st.DataObject) -> None:
    """Any set of URL keys, written in any case and any accepted spelling, parses back."""
    query: list[tuple[str, str]] = []
    expected: dict[str, Any] = {}
    for k in URL_KEYS:
        if not data.draw(st.booleans()):
            continue
        key = data.draw(st.sampled_from([k.key, k.key.upper(), k.key.title()]))
        if k.prefix:
            params = data.draw(st.dictionaries(PARAM, NUMBER, min_size=1, max_size=3))
            query += [(key + p, repr(v)) for p, v in params.items()]
            expected[k.field] = params
            continue
        if k.choices:
            value: Any = data.draw(st.sampled_from(k.choices))
        elif k.sub:
            value = data.draw(st.floats(0, 1))
        else:
            value = data.draw(values_of(OPTION[k.field]).filter(lambda v: v is not None))
        if k.kind == "bool":
            text = data.draw(st.sampled_from(BOOL_WORDS[value]))
        else:
            text = repr(value) if k.kind == "float" else str(value)
        query.append((key, text))
        if k.sub:
            expected.setdefault(k.field, {})[k.sub] = value
        else:
            expected[k.field] = value
    spec = parse_url("emu://rc?" + urlencode(query))
    for name, value in expected.items():
        assert getattr(spec, name) == value, name
    assert set(expected) <= spec.given


# ---- checks -----------------------------------------------------------------------------------
def test_validated_fills_defaults_and_normalises() -> None:
    o = EmulatorOptions("porous-thick", seed="3", linger="5").validated()  # type: ignore[arg-type]
    assert (o.cell, o.seed, o.board, o.linger) == ("thick-porous", 3, "thick-porous-3", 5.0)
    assert EmulatorOptions("rc").validated().board == "rc-0"
    assert FaultConfig().updated(EmulatorOptions("rc", faults={"drop": 0.5}).validated().faults)


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"cell": "porous-medium"}, "valid cells: rc"),
        ({"seed": "x"}, "seed must be an integer"),
        ({"board": "../etc"}, "bad board id"),
        ({"linger": -2}, "linger must be >= 0"),
        ({"linger": "soon"}, "linger must be a number"),
        ({"max_dt_s": 0}, "max_dt_s must be > 0"),
        ({"faults": {"drop": 2}}, "out of range"),
        ({"cell": "thin-porous", "cell_overrides": {"nope": 1}}, "bad cell override"),
        ({"heapsize": "lots"}, "bad heapsize"),
        ({"entry": "/nonexistent/entry.py"}, "does not exist"),
        ({"firmware": "/nonexistent"}, r"has no main\.py"),
    ],
)
def test_each_check_names_the_bad_value(changes: dict[str, Any], needle: str) -> None:
    with pytest.raises(EmulatorConfigError, match=needle):
        EmulatorOptions(**{"cell": "rc", **changes}).validated()


def test_module_main_without_a_cell_and_list(rt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "a cell model is required: rc, resistor" in capsys.readouterr().out
    assert main(["--list"]) == 0
    assert main(["--stop", "nobody"]) == 1
    with pytest.raises(SystemExit):
        main(["rc", "--fault-direction", "up"])
