"""The emulator's options, defined once: the fields of EmulatorOptions.

Each field carries an OptionSpec in its metadata (kind, help, ``emu://`` key, command-line flag,
check, scope). Generated from it:

* the ``emu://`` query keys (``URL_KEYS``, read by ``sicell.urlhandler.protocol_emu``);
* ``EmulatorOptions.to_argv`` and, in ``sicell.emulator.cmdline``, the argparse options of
  ``python -m sicell.emulator`` (which read each other back) and the click options of
  ``sicell emulate``;
* the keyword arguments of ``start_emulator`` / ``run_emulator`` (``from_keywords``).

Scopes: ``board`` options reach the launcher and may be written everywhere; ``launcher``
options are not in URLs (``runtime``); ``start`` options only say how ``start_emulator`` waits
(``timeout``: URLs and keyword arguments); ``url`` options are the pyserial port's own
(``owner``). The link faults are one option, ``faults``, whose keys FaultConfig defines; URLs
and the command line also take each fault key on its own.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from sicell.emulator.faults import FAULT_FIELDS, FaultConfig
from sicell.errors import EmulatorConfigError

DEFAULT_LINGER_S = 600.0  # the control command ``linger`` without seconds
AUTO_LINGER = -1.0  # linger decided by the board's run (launcher.Launcher.linger_end)
IDLE_LINGER_S = 60.0  # auto: no run going on, nothing unclaimed
RESUME_LINGER_S = 3600.0  # auto: a run ended while no host was attached (--resume fetches it)
START_TIMEOUT_S = 15.0
HEAPSIZE = "200K"  # firmware heap budget: RP2040 MicroPython leaves ~190-200 KB to Python code
BALLAST_KB = 512  # heap the board holds while the firmware boots (emulator/mp/idle.py, world.py)

BOARD, LAUNCHER, START, URL = "board", "launcher", "start", "url"
SCALARS = ("int", "float", "bool", "str")
_BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True}
_BOOL_WORDS |= {"0": False, "false": False, "no": False, "off": False}
_BOARD_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

Check = Callable[[Any, "EmulatorOptions"], Any]


@dataclass(frozen=True)
class OptionSpec:
    """How one option is written and checked (the metadata of an EmulatorOptions field).

    ``kind``: cell (the positional cell name), int, float, bool, str, overrides (a dict of
    numbers: ``cell.<name>=x`` in a URL, JSON on the command line) or faults (FaultConfig keys).
    """

    help: str
    kind: str = "str"
    scope: str = BOARD
    url: str = ""  # emu:// key; "" = the field name
    flag: str = ""  # command-line flag; "" = --field-name, or --no-field-name for a true bool
    check: Check | None = None  # normalises the value or raises EmulatorConfigError
    match: bool = False  # a running board attached to by URL must have the value asked for
    directory: bool = False  # a path that, if it exists, is a directory (click checks it)


def _spec(kind: str, help: str, check: Check | None = None, **kw: Any) -> dict[str, OptionSpec]:
    return {"option": OptionSpec(help, kind, check=check, **kw)}


def _opt(default: Any, kind: str, help: str, **kw: Any) -> Any:
    """A field of EmulatorOptions with a plain default, carrying its OptionSpec."""
    return field(default=default, metadata=_spec(kind, help, **kw))


# ---- checks ---------------------------------------------------------------------------------
def default_board_id(cell: str, seed: int) -> str:
    return f"{cell}-{seed}"


def check_board_id(board: str) -> str:
    if not _BOARD_RE.match(board):
        raise EmulatorConfigError(
            f"bad board id {board!r}: use 1-64 characters from A-Z a-z 0-9 . _ - "
            "(it names files in the runtime directory)"
        )
    return board


def heap_bytes(size: str) -> int:
    """``200K`` / ``1M`` / ``204800`` in bytes."""
    m = re.match(r"^([0-9]+)([KkMm]?)$", size)
    if not m:
        raise EmulatorConfigError(f"bad heapsize {size!r} (e.g. 200K)")
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]


def _convert(typ: Callable[[Any], Any], v: Any, name: str, what: str) -> Any:
    try:
        return typ(v)
    except (TypeError, ValueError):
        raise EmulatorConfigError(f"{name} must be {what}, not {v!r}") from None


def _number(name: str, v: Any) -> float:
    return float(_convert(float, v, name, "a number"))


def _check_cell(v: Any, o: EmulatorOptions) -> str:
    from sicell.emulator.cellmodels import canonical_cell

    return canonical_cell(str(v))


def _check_seed(v: Any, o: EmulatorOptions) -> int:
    return int(_convert(int, v, "seed", "an integer"))


def _check_board(v: Any, o: EmulatorOptions) -> str:
    return check_board_id(v or default_board_id(o.cell, o.seed))


def _check_max_dt(v: Any, o: EmulatorOptions) -> float | None:
    if v is None:
        return None
    if not _number("max_dt_s", v) > 0:
        raise EmulatorConfigError(f"max_dt_s must be > 0, not {v!r}")
    return float(v)


def _check_linger(v: Any, o: EmulatorOptions) -> float:
    x = _number("linger", v)
    if x == AUTO_LINGER:
        return x
    if not math.isfinite(x) or x < 0:
        raise EmulatorConfigError(f"linger must be >= 0 seconds (0 = never) or -1 (auto), not {x}")
    return x


def _check_faults(v: Any, o: EmulatorOptions) -> dict[str, Any]:
    FaultConfig().updated(v)
    return dict(v)


def _check_overrides(v: Any, o: EmulatorOptions) -> dict[str, Any]:
    from sicell.emulator.cellmodels import check_overrides

    check_overrides(o.cell, v)
    return dict(v)


def _check_entry(v: Any, o: EmulatorOptions) -> str | None:
    if v is not None and not Path(v).is_file():
        raise EmulatorConfigError(f"entry script {v!r} does not exist")
    return v if v is None else str(v)


def _check_firmware(v: Any, o: EmulatorOptions) -> str | None:
    if v is not None and not (Path(v) / "main.py").is_file():
        raise EmulatorConfigError(f"firmware directory {v!r} has no main.py")
    return v if v is None else str(v)


def _check_heapsize(v: Any, o: EmulatorOptions) -> str:
    heap_bytes(str(v))
    return str(v)


# ---- the definition -------------------------------------------------------------------------
@dataclass
class EmulatorOptions:
    """Everything a launcher needs, and how a URL port starts it; ``validated()`` checks and
    fills defaults."""

    cell: str = field(metadata=_spec("cell", "cell model", _check_cell))
    seed: int = _opt(
        0,
        "int",
        "seed of the board (cell spread, noise) and link faults",
        check=_check_seed,
        match=True,
    )
    board: str | None = _opt(
        None, "str", "board id (default <cell>-<seed>); same id, same board", check=_check_board
    )
    realtime: bool = _opt(False, "bool", "pace virtual time to the wall clock", match=True)
    noise: bool = _opt(True, "bool", "ADC noise", match=True)
    max_dt_s: float | None = _opt(
        None,
        "float",
        "largest cell integration step, s",
        url="max_dt",
        flag="--max-dt",
        check=_check_max_dt,
    )
    linger: float = _opt(
        AUTO_LINGER,
        "float",
        "seconds without a host before the emulator exits (0 = never; -1 = auto: "
        f"{IDLE_LINGER_S:g} s, none while a run goes on, {RESUME_LINGER_S:g} s after a run "
        "ended with no host; a board run in the foreground (sicell emulate) stays)",
        check=_check_linger,
    )
    flash_dir: str | None = _opt(
        None,
        "str",
        "the board's flash directory (calibration, run state)",
        url="flash",
        match=True,
        directory=True,
    )
    faults: dict[str, Any] = field(
        default_factory=dict, metadata=_spec("faults", "link faults (JSON object)", _check_faults)
    )
    owner: bool = _opt(False, "bool", "closing the port also shuts the emulator down", scope=URL)
    fresh: bool = _opt(
        False,
        "bool",
        "a pristine cell: a running emulator of this board id is shut down and its flash's "
        "run state cleared first (calibration stays)",
        scope=URL,
    )
    timeout: float = _opt(
        START_TIMEOUT_S, "float", "seconds to wait for a new emulator's port", scope=START
    )
    cell_overrides: dict[str, Any] = field(
        default_factory=dict,
        metadata=_spec(
            "overrides",
            "cell model parameter overrides (e.g. fade)",
            _check_overrides,
            url="cell.",
            match=True,
        ),
    )
    entry: str | None = _opt(
        None, "str", "MicroPython entry script instead of emuboot.py (tests)", check=_check_entry
    )
    firmware: str | None = _opt(
        None, "str", "firmware source directory instead of the package's", check=_check_firmware
    )
    heapsize: str = _opt(
        HEAPSIZE,
        "str",
        "firmware heap budget (the emulator's own overhead is added)",
        check=_check_heapsize,
    )
    mpy: bool = _opt(True, "bool", "stage the firmware compiled with mpy-cross, like sicell flash")
    flashed: bool = _opt(
        False,
        "bool",
        "a board as on USB: it boots what its flash directory holds (what `sicell flash` put "
        "there; none: the MicroPython REPL), serves the REPL (raw and raw-paste: mpremote) "
        "after main.py, takes 0x03 as Ctrl-C until the firmware turns that off, and its port "
        "re-enumerates at a hard reset",
    )
    runtime: str | None = _opt(
        None,
        "str",
        "registry/socket directory ($SICELL_RUNTIME_DIR)",
        scope=LAUNCHER,
        flag="--runtime-dir",
    )

    def validated(self) -> Self:
        """A checked copy: canonical cell, default board id, numbers converted."""
        o = dataclasses.replace(
            self, faults=dict(self.faults), cell_overrides=dict(self.cell_overrides)
        )
        for opt in OPTIONS:
            if opt.spec.check is not None:
                setattr(o, opt.name, opt.spec.check(getattr(o, opt.name), o))
        return o

    def board_config(self) -> dict[str, Any]:
        """The JSON config the board reads from $SICELL_EMU_CONFIG (emulator/mp/world.py)."""
        cfg: dict[str, Any] = {
            "cell": self.cell,
            "cell_overrides": dict(self.cell_overrides),
            "seed": self.seed,
            "realtime": self.realtime,
            "noise": self.noise,
            "ballast_kb": BALLAST_KB,
        }
        if self.max_dt_s is not None:
            cfg["max_dt_s"] = float(self.max_dt_s)
        if self.flashed:
            cfg["flashed"] = True
        return cfg

    def to_argv(self) -> list[str]:
        """Command-line arguments of ``python -m sicell.emulator`` for these options."""
        a = [self.cell]
        for opt in OPTIONS:
            v = getattr(self, opt.name)
            if not opt.on_command_line or opt.kind == "cell":
                continue
            if opt.kind == "bool":
                if bool(v) != opt.default:
                    a.append(opt.flag)
            elif opt.kind in ("faults", "overrides"):
                if v:
                    a.append(f"{opt.flag}={json.dumps(v)}")
            elif v is not None and v != "":
                a.append(f"{opt.flag}={float(v)!r}" if opt.kind == "float" else f"{opt.flag}={v}")
        return a


@dataclass(frozen=True)
class Option:
    """One field of EmulatorOptions with its spec, default and spellings."""

    name: str
    spec: OptionSpec
    default: Any

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def flag(self) -> str:
        if self.spec.flag:
            return self.spec.flag
        dashed = self.name.replace("_", "-")
        return f"--no-{dashed}" if self.kind == "bool" and self.default else f"--{dashed}"

    @property
    def flag_help(self) -> str:
        """Help of the flag: a ``--no-...`` flag turns the option off."""
        negative = self.kind == "bool" and self.default
        return f"turn off: {self.spec.help}" if negative else self.spec.help

    @property
    def url_key(self) -> str:
        return self.spec.url or self.name

    @property
    def in_url(self) -> bool:
        return self.spec.scope != LAUNCHER

    @property
    def on_command_line(self) -> bool:
        """Reaches the launcher: a flag of ``python -m sicell.emulator``, a keyword of
        ``run_emulator``."""
        return self.spec.scope in (BOARD, LAUNCHER)

    @property
    def for_start(self) -> bool:
        """A keyword of ``start_emulator``."""
        return self.spec.scope != URL


def _option(f: dataclasses.Field[Any]) -> Option:
    if f.default_factory is not dataclasses.MISSING:
        default: Any = f.default_factory()
    else:
        default = None if f.default is dataclasses.MISSING else f.default
    return Option(f.name, f.metadata["option"], default)


OPTIONS: tuple[Option, ...] = tuple(_option(f) for f in dataclasses.fields(EmulatorOptions))
OPTION: dict[str, Option] = {o.name: o for o in OPTIONS}
MATCHED = tuple(o.name for o in OPTIONS if o.spec.match)  # must match a running board


# ---- emu:// query keys ----------------------------------------------------------------------
def from_text(kind: str, text: str, choices: Sequence[str] = ()) -> Any:
    """A URL query value as a value of ``kind``; ValueError's text says what is wrong (it
    follows ``key='value'`` in the message)."""
    if choices:
        if text not in choices:
            raise ValueError(f": valid are {', '.join(choices)}")
        return text
    if kind == "int":
        try:
            return int(text)
        except ValueError:
            raise ValueError(" is not an integer") from None
    if kind == "float":
        try:
            x = float(text)
        except ValueError:
            raise ValueError(" is not a number") from None
        if not math.isfinite(x):
            raise ValueError(" is not finite")
        return x
    if kind == "bool":
        b = _BOOL_WORDS.get(text.strip().lower())
        if b is None:
            raise ValueError(" is not a boolean (use 0/1)")
        return b
    return text


@dataclass(frozen=True)
class UrlKey:
    """One key of an ``emu://`` query and the field it sets."""

    key: str  # lower case; for a prefix key, what the parameter name follows
    field: str
    kind: str
    sub: str = ""  # the key inside a dict-valued field (a fault), or ""
    choices: tuple[str, ...] = ()
    prefix: bool = False  # key + <param>: one entry of a dict-valued field

    @property
    def label(self) -> str:
        return f"{self.key}<param>" if self.prefix else self.key

    def parse(self, text: str) -> Any:
        return from_text(self.kind, text, self.choices)


def _url_keys() -> tuple[UrlKey, ...]:
    keys: list[UrlKey] = []
    for o in OPTIONS:
        if not o.in_url or o.kind == "cell":
            continue
        if o.kind == "faults":
            for name, ff in FAULT_FIELDS.items():
                kind = "str" if ff.choices else "float"
                keys.append(UrlKey(name, o.name, kind, sub=name, choices=ff.choices))
        elif o.kind == "overrides":
            keys.append(UrlKey(o.url_key, o.name, "float", prefix=True))
        else:
            keys.append(UrlKey(o.url_key, o.name, o.kind))
    return tuple(keys)


URL_KEYS = _url_keys()
URL_FORM = "emu://<cell>[?option=value&...] with options " + ", ".join(k.label for k in URL_KEYS)


def _as_url_text(v: Any) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    return f"{v:g}" if isinstance(v, float) else str(v)


def url_help() -> str:
    """The ``emu://`` options as a text table: key, type, what it sets, default."""
    types = {"int": "int", "float": "number", "bool": "0/1", "str": "text"}
    rows = []
    for k in URL_KEYS:
        o = OPTION[k.field]
        what = FAULT_FIELDS[k.sub].help if k.sub else o.spec.help
        default = getattr(FaultConfig(), k.sub) if k.sub else o.default
        typ = " | ".join(k.choices) if k.choices else types[k.kind]
        shown = "" if default in (None, {}) else f"; default {_as_url_text(default)}"
        rows.append(f"    {k.label:<14}{typ}: {what}{shown}")
    return "\n".join(rows)


# ---- keyword arguments ----------------------------------------------------------------------
def from_keywords(
    cell: str | EmulatorOptions, kw: Mapping[str, Any], *, start: bool
) -> EmulatorOptions:
    """EmulatorOptions from a cell (or options) and keyword arguments of ``run_emulator``
    (``start=False``) or ``start_emulator`` (``start=True``); TypeError on an unknown one."""
    allowed = {
        o.name
        for o in OPTIONS
        if o.kind != "cell" and (o.for_start if start else o.on_command_line)
    }
    unknown = sorted(set(kw) - allowed)
    if unknown:
        raise TypeError(
            f"{unknown[0]!r} is not an emulator option here; valid: {', '.join(sorted(allowed))}"
        )
    values = dict(kw)
    for name, v in kw.items():
        if OPTION[name].kind in ("faults", "overrides"):
            values[name] = dict(v or {})
    base = cell if isinstance(cell, EmulatorOptions) else EmulatorOptions(cell=cell)
    return dataclasses.replace(base, **values)
