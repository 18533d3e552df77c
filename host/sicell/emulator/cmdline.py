"""The emulator's options on command lines, generated from their one definition
(``sicell.emulator.options.EmulatorOptions``): the argparse options of
``python -m sicell.emulator`` (they read back what ``EmulatorOptions.to_argv`` writes) and the
click options of ``sicell emulate``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sicell.emulator.faults import FAULT_FIELDS
from sicell.emulator.options import OPTION, OPTIONS, SCALARS, EmulatorOptions

F = TypeVar("F", bound=Callable[..., Any])
_PY: dict[str, Callable[[str], Any]] = {"int": int, "float": float, "str": str}


def _json_object(text: str) -> dict[str, Any]:
    try:
        v = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from None
    if not isinstance(v, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return v


def _metavar(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_").upper()


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add every option the launcher takes to ``p`` (the cell is an optional positional)."""
    for o in OPTIONS:
        if not o.on_command_line:
            continue
        if o.kind == "cell":
            from sicell.emulator.cellmodels import cell_names

            p.add_argument("cell", nargs="?", help=f"{o.spec.help}: {', '.join(cell_names())}")
        elif o.kind == "bool":
            action = "store_false" if o.default else "store_true"
            p.add_argument(o.flag, dest=o.name, action=action, help=o.flag_help)
        elif o.kind in ("faults", "overrides"):
            p.add_argument(o.flag, dest=o.name, type=_json_object, metavar="JSON", help=o.spec.help)
            if o.kind == "faults":
                for name, ff in FAULT_FIELDS.items():
                    if ff.choices:
                        p.add_argument(
                            ff.flag, dest=f"fault_{name}", choices=ff.choices, help=ff.help
                        )
                    else:
                        p.add_argument(
                            ff.flag,
                            dest=f"fault_{name}",
                            type=float,
                            metavar=_metavar(ff.flag),
                            help=ff.help,
                        )
        else:
            shown = "" if o.default is None else " (default %(default)s)"
            p.add_argument(
                o.flag,
                dest=o.name,
                type=_PY[o.kind],
                default=o.default,
                metavar=_metavar(o.flag),
                help=o.spec.help + shown,
            )


def from_namespace(ns: argparse.Namespace) -> EmulatorOptions:
    """EmulatorOptions from arguments parsed by a parser ``add_arguments`` set up."""
    kw: dict[str, Any] = {}
    for o in OPTIONS:
        if not o.on_command_line:
            continue
        v = getattr(ns, o.name)
        if o.kind in ("faults", "overrides"):
            v = dict(v or {})
        if o.kind == "faults":
            for name in FAULT_FIELDS:
                x = getattr(ns, f"fault_{name}", None)
                if x is not None:
                    v[name] = x
        kw[o.name] = v
    return EmulatorOptions(**kw)


def click_options(names: Sequence[str]) -> Callable[[F], F]:
    """A decorator adding the click options ``names`` (fields of EmulatorOptions); the command
    receives them as keyword arguments under the field names."""
    import click

    decorators: list[Callable[[Any], Any]] = []
    for name in names:
        o = OPTION[name]
        if not o.on_command_line or o.kind not in SCALARS:
            raise ValueError(f"{name!r} cannot be a command-line option")
        if o.kind == "bool":
            d = click.option(
                o.flag, name, is_flag=True, flag_value=not o.default, default=o.default,
                help=o.flag_help,
            )  # fmt: skip
        else:
            typ: Any = click.Path(file_okay=False) if o.spec.directory else _PY[o.kind]
            d = click.option(
                o.flag, name, type=typ, default=o.default, show_default=o.default is not None,
                help=o.spec.help,
            )  # fmt: skip
        decorators.append(d)

    def apply(fn: F) -> F:
        for d in reversed(decorators):
            fn = d(fn)
        return fn

    return apply
