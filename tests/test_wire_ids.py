"""Wire ids: protocol/ defines each one once; every copy elsewhere is tied to it here.

The firmware keeps ``const()`` copies of protocol ids (``const`` needs a literal, and a
module-level ``_NAME = const(...)`` costs no RAM on the board); the MicroPython test scripts keep
plain copies. These checks parse the files (AST) instead of importing them:

* every module-level ``NAME = const(<int>)`` / ``NAME = <int>`` in ``firmware/**`` and
  ``tests/mp/**`` whose name, with leading underscores stripped (or through ALIASES), is a
  protocol name must have the protocol's value; one that is named like a wire id
  (WIRE_PREFIXES) but has no protocol counterpart fails as well;
* no call of an id-taking firmware function (ID_ARGS: ``fault``, ``_event``, ``_nack`` ...)
  passes a bare integer literal where an id goes, and a named constant passed there belongs to
  the right family (``fault`` takes FAULT_* ids, never schedule ERR_* codes);
* the host (``host/sicell``) keeps no copy that differs from the protocol;
* within protocol/, each wire id is defined once, ids of a family are distinct, and the word
  tables (EVENT_NAMES, ERROR_NAMES, FAULT_NAMES, ...) cover their family.

Each checker is also run on a small source string with planted violations, so a checker that
silently finds nothing fails.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from sicell.protocol import framing, messages, schedule

from tests.mputil import FW, MP_DIR, ROOT

PROTOCOL_DIR = ROOT / "protocol"
HOST_DIR = ROOT / "host" / "sicell"
PROTOCOL_MODULES: dict[str, ModuleType] = {
    "framing": framing,
    "messages": messages,
    "schedule": schedule,
}

# A constant whose name (leading underscores stripped) starts with one of these is a wire id.
WIRE_PREFIXES = (
    "A_",  # limit actions (schedule)
    "CAP_",  # INFO capability bits
    "CH_",  # calibration channels (CAL_GET / CAL_SET)
    "E_",  # NACK codes (messages), framing errors (framing: NACK E_FRAME detail)
    "ERR_",  # schedule validation codes (NACK E_SCHEDULE detail)
    "EV_",  # event codes
    "F_",  # SAMPLE flags
    "FAULT_",  # firmware fault ids (EV_ERROR reason)
    "K_",  # step kinds
    "OP_",  # limit comparisons
    "P_",  # host-loss policies
    "Q_",  # limit quantities
    "RC_",  # reset causes
    "RE_",  # run-end reasons
    "SE_",  # step-end reasons
    "SF_",  # safety causes (messages), step flags (schedule)
    "ST_",  # run states
)

# Copies named differently from their protocol name: stripped copy name -> "module.NAME".
# (None today: every copy is named like its protocol name.)
ALIASES: dict[str, str] = {}

# Firmware functions taking wire ids: name -> (argument index, family prefix or "" for any,
# whether a literal 0 is allowed there as "none").
ID_ARGS: dict[str, tuple[tuple[int, str, bool], ...]] = {
    "fault": ((0, "FAULT_", False),),
    "_event": ((0, "EV_", False), (1, "", True)),
    "push_event": ((2, "EV_", False), (3, "", True)),
    "_finish": ((0, "RE_", False),),
    "_sample": ((0, "F_", True),),
    "_nack": ((0, "", False), (2, "E_", False)),
    "_ok": ((0, "", False),),
    "_send": ((0, "", False),),
}


@dataclass(frozen=True)
class Const:
    """A module-level integer constant found in a source file."""

    where: str  # file:line
    name: str
    value: int


@dataclass(frozen=True)
class Definition:
    module: str
    value: int
    line: int


# ---- the checkers ---------------------------------------------------------------------------
def _int_value(node: ast.expr) -> int | None:
    """The value of an int literal (``3``, ``0x40``, ``-1``), else None."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        v = _int_value(node.operand)
        return None if v is None else -v
    return None


def module_consts(source: str, filename: str) -> list[Const]:
    """Module-level ``NAME = const(<int>)`` and ``NAME = <int>`` (upper-case names)."""
    out = []
    for node in ast.parse(source, filename).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target = node.targets[0]
        if not isinstance(target, ast.Name) or not target.id.lstrip("_")[:1].isupper():
            continue
        if target.id.lstrip("_").upper() != target.id.lstrip("_"):
            continue
        val = node.value
        if (
            isinstance(val, ast.Call)
            and isinstance(val.func, ast.Name)
            and val.func.id == "const"
            and len(val.args) == 1
        ):
            val = val.args[0]
        v = _int_value(val)
        if v is not None:
            out.append(Const(f"{filename}:{node.lineno}", target.id, v))
    return out


def is_wire_name(name: str) -> bool:
    return name.lstrip("_").startswith(WIRE_PREFIXES)


def protocol_index(sources: dict[str, str]) -> dict[str, list[Definition]]:
    """Wire definitions of protocol modules (module stem -> source): name -> definitions."""
    index: dict[str, list[Definition]] = {}
    for module, text in sources.items():
        for c in module_consts(text, module + ".py"):
            if c.name.startswith("_"):
                continue
            line = int(c.where.rsplit(":", 1)[1])
            index.setdefault(c.name, []).append(Definition(module, c.value, line))
    return index


def check_copies(
    consts: Iterable[Const],
    index: dict[str, list[Definition]],
    aliases: dict[str, str],
    require_counterpart: bool = True,
) -> list[str]:
    """Problems: a copy whose value differs from its protocol name's, a copy matching two
    protocol definitions of different values (needs an alias), and (``require_counterpart``)
    a wire-looking constant with no protocol counterpart."""
    problems = []
    for c in consts:
        key = c.name.lstrip("_")
        if key in aliases:
            module, _, pname = aliases[key].partition(".")
            defs = [d for d in index.get(pname, []) if d.module == module]
            if not defs:
                problems.append(f"{c.where}: {c.name}: alias {aliases[key]} is not in protocol/")
                continue
        else:
            pname = key
            defs = index.get(key, [])
        if not defs:
            if require_counterpart and is_wire_name(c.name):
                problems.append(
                    f"{c.where}: {c.name} = {c.value} looks like a wire id but protocol/ has no "
                    f"{key} (define it there, or name the constant otherwise)"
                )
            continue
        values = {d.value for d in defs}
        if len(values) > 1:
            problems.append(
                f"{c.where}: {c.name} matches {pname} in several protocol modules with different "
                f"values ({', '.join(f'{d.module}={d.value}' for d in defs)}): add an alias"
            )
        elif c.value not in values:
            d = defs[0]
            problems.append(
                f"{c.where}: {c.name} = {c.value}, but protocol/{d.module}.py:{d.line} has "
                f"{pname} = {d.value}"
            )
    return problems


def _call_name(node: ast.Call) -> str | None:
    f = node.func
    if isinstance(f, ast.Name):
        return f.id
    if isinstance(f, ast.Attribute):
        return f.attr
    return None


def _const_name(node: ast.expr) -> str | None:
    """The identifier of ``NAME`` / ``M.NAME`` when it is upper case (a constant), else None."""
    if isinstance(node, ast.Name):
        name = node.id
    elif isinstance(node, ast.Attribute):
        name = node.attr
    else:
        return None
    stripped = name.lstrip("_")
    return name if stripped and stripped.upper() == stripped else None


def _branches(node: ast.expr) -> Iterator[ast.expr]:
    """``a if c else b`` -> a, b (recursively); anything else -> itself."""
    if isinstance(node, ast.IfExp):
        yield from _branches(node.body)
        yield from _branches(node.orelse)
    else:
        yield node


def bare_id_calls(
    source: str, filename: str, id_args: dict[str, tuple[tuple[int, str, bool], ...]]
) -> list[str]:
    """Problems: an id argument of an ``id_args`` call that is an int literal (0 where allowed
    excepted), or a constant of the wrong family."""
    problems = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        fname = _call_name(node)
        if fname not in id_args:
            continue
        for pos, family, zero_ok in id_args[fname]:
            if pos >= len(node.args):
                continue
            for arg in _branches(node.args[pos]):
                where = f"{filename}:{arg.lineno}"
                v = _int_value(arg)
                if v is not None:
                    if not (zero_ok and v == 0):
                        problems.append(
                            f"{where}: {fname}(...) argument {pos} is the bare number {v}; "
                            "use the protocol name (or its const copy)"
                        )
                    continue
                name = _const_name(arg)
                if family and name is not None and not name.lstrip("_").startswith(family):
                    problems.append(
                        f"{where}: {fname}(...) argument {pos} takes a {family}* id, got {name}"
                    )
    return problems


# ---- the files ------------------------------------------------------------------------------
def _rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


def firmware_files() -> list[Path]:
    return sorted(FW.rglob("*.py"))


def mp_script_files() -> list[Path]:
    return sorted(MP_DIR.rglob("*.py"))


def host_files() -> list[Path]:
    # host/sicell/firmware and host/sicell/protocol are symlinks to the real trees
    skip = (HOST_DIR / "firmware", HOST_DIR / "protocol")
    return sorted(p for p in HOST_DIR.rglob("*.py") if not any(p.is_relative_to(s) for s in skip))


def _consts_of(files: Iterable[Path]) -> list[Const]:
    out: list[Const] = []
    for p in files:
        out += module_consts(p.read_text(encoding="utf-8"), _rel(p))
    return out


@pytest.fixture(scope="module")
def index() -> dict[str, list[Definition]]:
    # every protocol module, not only the ones named above
    return protocol_index(
        {
            p.stem: p.read_text(encoding="utf-8")
            for p in sorted(PROTOCOL_DIR.glob("*.py"))
            if p.stem != "__init__"
        }
    )


# ---- the checkers catch planted violations ----------------------------------------------------
SYNTH_PROTOCOL = {
    "messages": "EV_RUN_END = 2\nE_FRAME = 1\nFAULT_COMMAND = 7\nHEADER_SIZE = 6\n",
    "schedule": "K_REST = 0\nERR_LOOP = 11\nHEADER_SIZE = 24\n",
}

SYNTH_FIRMWARE = """\
from micropython import const
_EV_RUN_END = const(3)
_EV_MADE_UP = const(99)
_K_REST = const(0)
_SLOW_HORIZON = const(3)
_HEADER_SIZE = const(6)
_KIND_REST = const(0)
SAMPLE = 0x44
lower = 5


def f(self, eng, typ, M):
    eng.fault(7, typ)
    self.fault(_ERR_LOOP, 1)
    self.fault(_FAULT_COMMAND, typ)
    self._event(_EV_RUN_END, 2, 0, 0)
    self._event(_EV_RUN_END, _RE_HOLD if typ else 0, 0, 0)
    self._event(_EV_RUN_END, 0 if typ else 4, 0, 0)
    self._nack(0, 0, M.E_FRAME, 1)
    self._nack(typ, 0, M.ST_IDLE, 1)
    self._nack(typ, 0, M.E_FRAME, 1)
"""


def test_const_scan_finds_the_planted_copies() -> None:
    found = {(c.name, c.value) for c in module_consts(SYNTH_FIRMWARE, "fw.py")}
    assert ("_EV_RUN_END", 3) in found and ("SAMPLE", 0x44) in found
    assert ("_SLOW_HORIZON", 3) in found
    assert not any(n == "lower" for n, _ in found)


def test_copy_check_catches_planted_violations() -> None:
    idx = protocol_index(SYNTH_PROTOCOL)
    consts = module_consts(SYNTH_FIRMWARE, "fw.py")
    problems = check_copies(consts, idx, {"KIND_REST": "schedule.K_REST"})
    text = "\n".join(problems)
    assert "fw.py:2: _EV_RUN_END = 3, but protocol/messages.py:1 has EV_RUN_END = 2" in text
    assert "fw.py:3: _EV_MADE_UP = 99 looks like a wire id" in text
    assert "fw.py:6: _HEADER_SIZE matches HEADER_SIZE in several protocol modules" in text
    assert len(problems) == 3, problems  # _K_REST, _KIND_REST (alias), _SLOW_HORIZON are fine
    # a wrong alias value is caught too
    bad_alias = check_copies(consts, idx, {"KIND_REST": "schedule.ERR_LOOP"})
    assert any("fw.py:7: _KIND_REST = 0, but protocol/schedule.py:2" in p for p in bad_alias)
    assert check_copies(consts, idx, {"KIND_REST": "schedule.NOPE"})[-1].endswith(
        "alias schedule.NOPE is not in protocol/"
    )


def test_call_check_catches_planted_violations() -> None:
    problems = bare_id_calls(SYNTH_FIRMWARE, "fw.py", ID_ARGS)
    lines = sorted(int(p.split(":")[1]) for p in problems)
    # 13: fault(7), 14: fault(_ERR_LOOP) (wrong family), 16: reason 2, 18: reason 4 in a
    # branch, 19: _nack(0, ...) request type, 20: _nack code of the wrong family
    assert lines == [13, 14, 16, 18, 19, 20], problems
    assert any("fw.py:13: fault(...) argument 0 is the bare number 7" in p for p in problems)
    assert any("takes a FAULT_* id, got _ERR_LOOP" in p for p in problems)


# ---- the real tree ----------------------------------------------------------------------------
def test_protocol_sources_match_the_modules(index: dict[str, list[Definition]]) -> None:
    # the AST index is what the runtime modules hold (sicell.protocol is the same tree)
    assert len(index) > 100
    for name, defs in index.items():
        for d in defs:
            module = importlib.import_module("sicell.protocol." + d.module)
            assert getattr(module, name) == d.value, (d.module, name)


def test_each_wire_id_defined_once_in_protocol(index: dict[str, list[Definition]]) -> None:
    twice = {n: d for n, d in index.items() if is_wire_name(n) and len(d) > 1}
    assert not twice, twice


def test_firmware_copies_match_protocol(index: dict[str, list[Definition]]) -> None:
    consts = _consts_of(firmware_files())
    problems = check_copies(consts, index, ALIASES)
    assert not problems, "\n".join(problems)
    # the scan is not vacuous: it sees the engine's copies
    names = {c.name for c in consts if c.where.startswith("firmware/engine.py")}
    assert {"_EV_ERROR", "_SE_ABORT", "_K_REST", "ST_RUNNING"} <= names
    assert sum(1 for c in consts if c.name.lstrip("_") in index) > 100


def test_mp_script_copies_match_protocol(index: dict[str, list[Definition]]) -> None:
    consts = _consts_of(mp_script_files())
    problems = check_copies(consts, index, ALIASES)
    assert not problems, "\n".join(problems)
    assert any(c.name == "SAMPLE" for c in consts)


def test_host_copies_match_protocol(index: dict[str, list[Definition]]) -> None:
    # the host imports protocol names; should a module keep a copy, it must at least agree
    problems = check_copies(_consts_of(host_files()), index, ALIASES, require_counterpart=False)
    assert not problems, "\n".join(problems)


def test_no_bare_ids_in_firmware_calls() -> None:
    problems: list[str] = []
    calls = 0
    for p in firmware_files():
        text = p.read_text(encoding="utf-8")
        problems += bare_id_calls(text, _rel(p), ID_ARGS)
        calls += sum(
            1
            for n in ast.walk(ast.parse(text))
            if isinstance(n, ast.Call) and _call_name(n) in ID_ARGS
        )
    assert not problems, "\n".join(problems)
    assert calls > 50  # the check looked at the real call sites


# ---- protocol families and word tables ------------------------------------------------------
def _family(module: ModuleType, prefix: str, exclude: tuple[str, ...] = ()) -> dict[str, int]:
    return {
        n: v
        for n, v in vars(module).items()
        if n.startswith(prefix) and not n.startswith(exclude) and type(v) is int
    }


FAMILIES = [
    (messages, "EV_", ()),
    (messages, "E_", ()),
    (messages, "ST_", ()),
    (messages, "RE_", ()),
    (messages, "SE_", ()),
    (messages, "SF_", ()),
    (messages, "F_", ()),
    (messages, "CAP_", ()),
    (messages, "RC_", ()),
    (messages, "FAULT_", ()),
    (messages, "CH_", ()),
    (framing, "E_", ()),
    (schedule, "K_", ()),
    (schedule, "Q_", ()),
    (schedule, "OP_", ()),
    (schedule, "A_", ()),
    (schedule, "P_", ()),
    (schedule, "ERR_", ()),
]


@pytest.mark.parametrize(
    ("module", "prefix", "exclude"),
    FAMILIES,
    ids=[f"{m.__name__.rsplit('.', 1)[1]}.{p}" for m, p, _ in FAMILIES],
)
def test_family_values_distinct(module: ModuleType, prefix: str, exclude: tuple[str, ...]) -> None:
    fam = _family(module, prefix, exclude)
    assert len(fam) >= 2
    assert len(set(fam.values())) == len(fam), fam
    if prefix in ("F_", "CAP_"):  # bit flags
        assert all(v > 0 and v & (v - 1) == 0 for v in fam.values()), fam


def test_word_tables_cover_their_family() -> None:
    assert set(messages.EVENT_NAMES) == set(_family(messages, "EV_").values())
    assert set(messages.ERROR_NAMES) == set(_family(messages, "E_").values())
    assert set(messages.FAULT_NAMES) == set(_family(messages, "FAULT_").values())
    assert set(messages.NAMES) == set(messages.LAYOUTS)
    states = _family(messages, "ST_")
    assert sorted(states.values()) == list(range(len(messages.STATE_NAMES)))
    kinds = _family(schedule, "K_")
    assert sorted(kinds.values()) == list(range(len(schedule.KIND_NAMES)))
    quantities = _family(schedule, "Q_")
    assert sorted(quantities.values()) == list(range(1, len(schedule.QUANTITY_NAMES)))
    assert set(schedule.ERR_TEXT) == set(_family(schedule, "ERR_").values())
    assert set(framing._ERR_TEXT) == set(_family(framing, "E_").values())


def test_fault_ids_are_not_schedule_codes() -> None:
    # the two namespaces travel in different fields; their names must not collide
    faults = {n.removeprefix("FAULT_") for n in _family(messages, "FAULT_")}
    assert faults >= {"TICK", "LINK", "FLASH", "FRONTEND", "LOOP", "SCHEDULE", "COMMAND"}
    assert not any(hasattr(messages, "ERR_" + n) for n in faults)
    assert all(messages.FAULT_NAMES[v] for v in _family(messages, "FAULT_").values())
