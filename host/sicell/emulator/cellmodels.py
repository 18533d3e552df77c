"""The emulator's cell models in CPython: ``emulator/mp/cells.py`` (pure Python, the module the
emulated board itself runs) loaded once from its file, and the names and parameters it knows."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from sicell.emulator.staging import mp_dir
from sicell.errors import EmulatorConfigError, EmulatorError

_MODULE_NAME = "_sicell_emu_cells"
_NO_FILM_PARAMS = ("rc", "resistor")  # circuit models: their overrides are checked on the board
_lock = threading.Lock()
_module: ModuleType | None = None
_runs: ModuleType | None = None


def _load(filename: str, name: str) -> ModuleType:
    path = mp_dir() / filename
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None or not path.is_file():
        raise EmulatorError(f"cannot load the emulator's cell models from {path}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def cells_module() -> ModuleType:
    """``emulator/mp/cells.py`` loaded into CPython (once); EmulatorError if it cannot be."""
    global _module
    with _lock:
        if _module is None:
            _module = _load("cells.py", _MODULE_NAME)
        return _module


def runs_module() -> ModuleType:
    """``emulator/mp/cellruns.py`` (model-only scenarios on a cell: CC to a cutoff, CV to an
    end current, cycling, the rate test) loaded into CPython (once)."""
    global _runs
    with _lock:
        if _runs is None:
            _runs = _load("cellruns.py", _MODULE_NAME + "_runs")
        return _runs


def cell_names() -> tuple[str, ...]:
    """Cell model names the emulator knows (aliases such as ``porous-thick`` also work)."""
    return tuple(str(n) for n in cells_module().CELL_NAMES)


def canonical_cell(name: str) -> str:
    """Canonical cell name, or EmulatorConfigError naming the bad value and the valid ones."""
    canon = str(cells_module().canonical_name(name))
    names = cell_names()
    if canon not in names:
        raise EmulatorConfigError(
            f"unknown emulator cell {name!r}; valid cells: {', '.join(names)}"
        )
    return canon


def film_params(name: str, **overrides: Any) -> dict[str, Any]:
    """Area, mass, thickness, density, nominal capacity and model parameters of a Si film
    (ValueError for a name that is not a film, TypeError for an unknown parameter)."""
    return dict(cells_module().film_params(name, **overrides))


def check_overrides(cell: str, overrides: Mapping[str, Any]) -> None:
    """EmulatorConfigError if ``overrides`` are not parameters of the film ``cell``."""
    if not overrides or cell in _NO_FILM_PARAMS:
        return
    try:
        film_params(cell, **overrides)
    except (TypeError, ValueError) as e:
        raise EmulatorConfigError(f"bad cell override for {cell}: {e}") from None
