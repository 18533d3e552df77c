"""Small-int range check of the firmware's arithmetic, under CPython (issue 12).

On the RP2040, MicroPython's small ints are 31-bit (-2**30 .. 2**30-1). Any int outside is a
heap object: a constant such as 0xFFFFFFFF used in arithmetic, a result past the range, and
every result computed from such an operand (even a small one) allocates. The unix port's small
ints are 63-bit, so its heap_lock tests cannot see any of this.

Here the firmware modules, protocol/framing.py and the fake front end (tests/mp/eng_fakefe.py)
are compiled from an AST in which every BinOp, UnaryOp (-, +, ~) and AugAssign is a call that
checks each int operand and the int result against the range, and records the file, line,
function and value of whatever lies outside. Then the engine, ring, link and front-end
scenarios run on them (:data:`SCENARIOS`: the tests/mp scenario scripts, uninstrumented, plus
those in tests/intscen.py). Each run is a fresh process: the instrumented modules take the
firmware's module names there.

    python -m tests.intcheck [SCENARIO ...]     JSON report (every scenario when none named)
    python -m tests.intcheck --rev e0b653f      the same on firmware/, protocol/ and tests/mp/
                                                as of a commit (read with ``git show``)

A function whose ``def`` line carries ``# intcheck: skip`` is left uninstrumented (the fake's
report-only accessors for the test scripts: never called by the firmware). :data:`WAIVED`
lists the few firmware lines off the hot paths that may use big ints (boot, HELLO, START,
SCHED_END, a calibration change); their hits are reported apart and do not fail the check.
"""

from __future__ import annotations

import ast
import builtins
import copy
import importlib.abc
import importlib.machinery
import importlib.util
import json
import operator
import os
import subprocess
import sys
import tempfile
import traceback
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SMALL_MIN = -(1 << 30)
SMALL_MAX = (1 << 30) - 1

ROOT = Path(__file__).resolve().parents[1]
SKIP_MARK = "# intcheck: skip"

# (file name, function, text on the line): firmware lines off the hot paths whose big ints are
# accepted, with the reason. Their hits are reported under "waived".
WAIVED: dict[tuple[str, str, str], str] = {
    ("engine.py", "Engine.__init__", "-(2**31)"): "boot: the voltage window's default",
    ("engine.py", "Engine.__init__", "2**31 - 1"): "boot: the voltage window's default",
    ("engine.py", "Engine.load", "big = 2**30 - 1"): "SCHED_END: clamps into array('i')",
    ("engine.py", "Engine.load", "val // 1000"): "SCHED_END: a time limit to (s, ms) arrays",
    ("engine.py", "Engine.load", "val % 1000"): "SCHED_END: a time limit to (s, ms) arrays",
    ("engine.py", "Engine.start", "run_id & 0xFFFFFFFF"): "START: once per run",
    ("link.py", "Link.info_payload", "2**31"): "HELLO's INFO reply",
    ("calibration.py", "inv_dev", "10 ** 12"): "calibration load / CAL_SET, not measure()",
}

_BIN: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.MatMult: operator.matmul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.LShift: operator.lshift,
    ast.RShift: operator.rshift,
    ast.BitOr: operator.or_,
    ast.BitXor: operator.xor,
    ast.BitAnd: operator.and_,
}
_INPLACE: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.iadd,
    ast.Sub: operator.isub,
    ast.Mult: operator.imul,
    ast.MatMult: operator.imatmul,
    ast.Div: operator.itruediv,
    ast.FloorDiv: operator.ifloordiv,
    ast.Mod: operator.imod,
    ast.Pow: operator.ipow,
    ast.LShift: operator.ilshift,
    ast.RShift: operator.irshift,
    ast.BitOr: operator.ior,
    ast.BitXor: operator.ixor,
    ast.BitAnd: operator.iand,
}
_UN: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
    ast.Invert: operator.invert,
}
_FUNCS: list[Callable[..., Any]] = [*_BIN.values(), *_INPLACE.values(), *_UN.values()]
_FUNC_INDEX = {f: k for k, f in enumerate(_FUNCS)}


@dataclass
class Site:
    file: str
    line: int
    func: str
    text: str


@dataclass
class Hit:
    site: Site
    count: int = 0
    first: int = 0
    extreme: int = 0  # the value furthest outside the range

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.site.file,
            "line": self.site.line,
            "func": self.site.func,
            "text": self.site.text,
            "first": self.first,
            "extreme": self.extreme,
            "count": self.count,
        }


@dataclass
class Checker:
    """The sites of every instrumented operation and the hits outside the small-int range."""

    sites: list[Site] = field(default_factory=list)
    hits: dict[int, Hit] = field(default_factory=dict)
    static: list[tuple[Site, int]] = field(default_factory=list)  # big literals in arithmetic

    def site(self, s: Site) -> int:
        self.sites.append(s)
        return len(self.sites) - 1

    def _hit(self, k: int, v: int) -> None:
        h = self.hits.get(k)
        if h is None:
            h = self.hits[k] = Hit(self.sites[k], 0, v, v)
        h.count += 1
        if abs(v) > abs(h.extreme):
            h.extreme = v

    def binop(self, a: Any, b: Any, f: int, k: int) -> Any:
        if type(a) is int and not SMALL_MIN <= a <= SMALL_MAX:
            self._hit(k, a)
        if type(b) is int and not SMALL_MIN <= b <= SMALL_MAX:
            self._hit(k, b)
        r = _FUNCS[f](a, b)
        if type(r) is int and not SMALL_MIN <= r <= SMALL_MAX:
            self._hit(k, r)
        return r

    def unop(self, a: Any, f: int, k: int) -> Any:
        if type(a) is int and not SMALL_MIN <= a <= SMALL_MAX:
            self._hit(k, a)
        r = _FUNCS[f](a)
        if type(r) is int and not SMALL_MIN <= r <= SMALL_MAX:
            self._hit(k, r)
        return r

    def report(self) -> dict[str, list[dict[str, Any]]]:
        """Hits merged per source line: {"violations": [...], "waived": [...], "static": [...]}"""
        lines: dict[tuple[str, int], Hit] = {}
        for h in self.hits.values():
            m = lines.setdefault((h.site.file, h.site.line), Hit(h.site, 0, h.first, h.first))
            m.count += h.count
            if abs(h.extreme) > abs(m.extreme):
                m.extreme = h.extreme
        out: dict[str, list[dict[str, Any]]] = {"violations": [], "waived": []}
        for _k, h in sorted(lines.items()):
            d = h.as_dict()
            why = waiver(h.site)
            if why:
                d["why"] = why
                out["waived"].append(d)
            else:
                out["violations"].append(d)
        out["static"] = [
            {"file": s.file, "line": s.line, "func": s.func, "text": s.text, "value": v}
            for s, v in self.static
        ]
        return out


def waiver(s: Site) -> str:
    name = s.file.rsplit("/", 1)[-1]
    for (fname, func, text), why in WAIVED.items():
        if fname == name and func == s.func and text in s.text:
            return why
    return ""


class _Rewrite(ast.NodeTransformer):
    def __init__(self, checker: Checker, file: str, lines: Sequence[str]) -> None:
        self.checker = checker
        self.file = file
        self.lines = lines
        self.scope: list[str] = []

    def _site(self, node: ast.AST) -> int:
        line = getattr(node, "lineno", 0)
        text = self.lines[line - 1].strip() if 0 < line <= len(self.lines) else ""
        return self.checker.site(Site(self.file, line, ".".join(self.scope) or "<module>", text))

    def _note_literals(self, node: ast.AST, *operands: ast.expr) -> None:
        for o in operands:
            v = o.value if isinstance(o, ast.Constant) else None
            if type(v) is int and not SMALL_MIN <= v <= SMALL_MAX:
                s = self.checker.sites[self._site(node)]
                self.checker.static.append((s, v))

    def _call(self, fn: str, args: list[ast.expr]) -> ast.Call:
        return ast.Call(func=ast.Name(id=fn, ctx=ast.Load()), args=args, keywords=[])

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        if SKIP_MARK in self.lines[node.lineno - 1]:
            return node
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()
        return node

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AST:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()
        return node

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()
        return node

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self._note_literals(node, node.left, node.right)
        self.generic_visit(node)
        f = _FUNC_INDEX[_BIN[type(node.op)]]
        args = [node.left, node.right, ast.Constant(f), ast.Constant(self._site(node))]
        return ast.copy_location(self._call("__icbin__", args), node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        self.generic_visit(node)
        fn = _UN.get(type(node.op))
        if fn is None:  # not
            return node
        self._note_literals(node, node.operand)
        args = [node.operand, ast.Constant(_FUNC_INDEX[fn]), ast.Constant(self._site(node))]
        return ast.copy_location(self._call("__icun__", args), node)

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.AST:
        self._note_literals(node, node.value)
        self.generic_visit(node)
        load = copy.deepcopy(node.target)
        load.ctx = ast.Load()  # type: ignore[attr-defined]
        f = _FUNC_INDEX[_INPLACE[type(node.op)]]
        args = [load, node.value, ast.Constant(f), ast.Constant(self._site(node))]
        new = ast.Assign(targets=[node.target], value=self._call("__icbin__", args))
        return ast.copy_location(new, node)


def instrument(source: str, path: str, checker: Checker, name: str = "") -> types.CodeType:
    """``source`` compiled with every arithmetic operation checked by ``checker``."""
    tree = ast.parse(source, path)
    tree = _Rewrite(checker, name or path, source.splitlines()).visit(tree)
    ast.fix_missing_locations(tree)
    code: types.CodeType = compile(tree, path, "exec")
    return code


def checked_globals(checker: Checker, shims: dict[str, types.ModuleType]) -> dict[str, Any]:
    """Globals for instrumented code: the check hooks, and ``import`` of a MicroPython-only
    module name (``shims``) served from the shims."""

    real_import = builtins.__import__

    def _import(
        name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0
    ) -> Any:
        if level == 0 and name in shims:
            return shims[name]
        return real_import(name, globals, locals, fromlist, level)

    b = dict(vars(builtins))
    b["__import__"] = _import
    return {"__builtins__": b, "__icbin__": checker.binop, "__icun__": checker.unop}


# ---- the firmware under CPython ------------------------------------------------------------
class _VirtualTime(types.ModuleType):
    """``time`` as the firmware's drivers use it: a virtual clock the sleeps advance."""

    def __init__(self) -> None:
        super().__init__("time")
        self.us = 0

    def sleep_us(self, n: int) -> None:
        self.us += max(0, int(n))

    def sleep_ms(self, n: int) -> None:
        self.us += max(0, int(n)) * 1000

    def sleep(self, s: float) -> None:
        self.us += max(0, int(s * 1000000))

    def ticks_us(self) -> int:
        return self.us & SMALL_MAX

    def ticks_ms(self) -> int:
        return (self.us // 1000) & SMALL_MAX

    def ticks_add(self, a: int, b: int) -> int:
        return (a + b) & SMALL_MAX

    def ticks_diff(self, a: int, b: int) -> int:
        return ((a - b + (1 << 29)) & SMALL_MAX) - (1 << 29)


def shim_modules() -> dict[str, types.ModuleType]:
    """Stand-ins for what CPython lacks: ``micropython``, ``machine`` (pins only: a front end
    gets its I2C bus passed in), ``time``/``utime`` with a virtual clock."""
    mp = types.ModuleType("micropython")
    mp.const = lambda x: x  # type: ignore[attr-defined]
    for n in ("heap_lock", "heap_unlock", "kbd_intr", "mem_info", "alloc_emergency_exception_buf"):
        setattr(mp, n, lambda *a: 0)
    machine = types.ModuleType("machine")

    class Pin:
        OUT = 1
        IN = 0

        def __init__(self, pid: Any, mode: int = -1, value: int | None = None) -> None:
            self.id = pid
            self.v = value or 0

        def value(self, v: int | None = None) -> int:
            if v is not None:
                self.v = v
            return self.v

        def on(self) -> None:
            self.v = 1

        def off(self) -> None:
            self.v = 0

    class I2C:
        def __init__(self, *a: Any, **kw: Any) -> None:
            raise OSError(19, "no I2C bus here: pass the front end one")

    machine.Pin = Pin  # type: ignore[attr-defined]
    machine.I2C = I2C  # type: ignore[attr-defined]
    t = _VirtualTime()
    return {"micropython": mp, "machine": machine, "time": t, "utime": t}


class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports the named modules from their files, instrumented."""

    def __init__(self, modules: dict[str, Path], checker: Checker, root: Path) -> None:
        self.modules = modules
        self.checker = checker
        self.root = root
        self.shims = shim_modules()

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        p = self.modules.get(fullname)
        if p is None:
            return None
        return importlib.util.spec_from_file_location(
            fullname,
            p,
            loader=self,
            submodule_search_locations=[str(p.parent)] if p.name == "__init__.py" else None,
        )

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        p = self.modules[module.__name__]
        try:
            rel = str(p.relative_to(self.root))
        except ValueError:
            rel = str(p)
        code = instrument(p.read_text(encoding="utf-8"), str(p), self.checker, rel)
        d = module.__dict__
        d.update(checked_globals(self.checker, self.shims))
        exec(code, d)


def firmware_modules(root: Path) -> dict[str, Path]:
    """Module name -> file of everything instrumented: firmware/ (as the board imports it, at
    top level), protocol.framing, the fake front end."""
    fw = root / "firmware"
    mods = {p.stem: p for p in sorted(fw.glob("*.py"))}
    if (fw / "drivers" / "__init__.py").exists():
        mods["drivers"] = fw / "drivers" / "__init__.py"
        for p in sorted((fw / "drivers").glob("*.py")):
            if p.stem != "__init__":
                mods["drivers." + p.stem] = p
    mods["protocol.framing"] = root / "protocol" / "framing.py"
    mods["eng_fakefe"] = root / "tests" / "mp" / "eng_fakefe.py"
    return mods


def static_scan(root: Path = ROOT) -> list[dict[str, Any]]:
    """Int literals outside the range used as operands of arithmetic, in every instrumented
    file whether a scenario runs the line or not."""
    checker = Checker()
    for p in firmware_modules(root).values():
        instrument(p.read_text(encoding="utf-8"), str(p), checker, str(p.relative_to(root)))
    out = []
    for s, v in checker.static:
        d = {"file": s.file, "line": s.line, "func": s.func, "text": s.text, "value": v}
        d["why"] = waiver(s)
        out.append(d)
    return out


@dataclass
class Scenario:
    module: str  # imported uninstrumented (a tests/mp script or tests.intscen)
    func: str


def _scenarios() -> dict[str, Scenario]:
    s: dict[str, Scenario] = {}
    for name in ("cutoff", "cc_charge", "safety", "loops"):
        s["cut_" + name] = Scenario("eng_t_cut", "sc_" + name)
    for name in ("cv", "cccv", "cut_then_cccv", "rest_dvdt"):
        s["cv_" + name] = Scenario("eng_t_cv", "sc_" + name)
    for name in ("pause", "stop", "trip", "hold"):
        s["bound_" + name] = Scenario("eng_t_bound", "sc_" + name)
    s["heap_all"] = Scenario("eng_t_heap", "sc_heap_all")
    for name in (
        "ack_replay",
        "reserve_and_full",
        "wrap_and_chunks",
        "decimate",
        "sent_pointer_after_decimate",
        "u32_wrap",
        "hold_policy_engine",
        "decimate_policy_engine",
    ):
        s["ring_" + name] = Scenario("eng_t_ring", "check_" + name)
    s["link"] = Scenario("eng_t_link", "scenario")
    for name in (
        "cccv_step",
        "long_time_limit",
        "link_seqs",
        "ring_seqs",
        "frontend",
        "frontend_edges",
    ):
        s[name] = Scenario("tests.intscen", "sc_" + name)
    return s


SCENARIOS = _scenarios()


def run_here(names: Sequence[str], root: Path = ROOT) -> dict[str, Any]:
    """Run scenarios in this process (which it changes for good: a fresh process only)."""
    checker = Checker()
    finder = Finder(firmware_modules(root), checker, root)
    sys.meta_path.insert(0, finder)
    for p in (root / "tests" / "mp", ROOT, root, root / "firmware"):
        sys.path.insert(0, str(p))
    for k in ("micropython", "machine"):  # the scenario scripts import them too
        sys.modules.setdefault(k, finder.shims[k])
    for name in [m for m in list(sys.modules) if m == "protocol" or m.startswith("protocol.")]:
        del sys.modules[name]
    results: dict[str, str] = {}
    for name in names:
        sc = SCENARIOS[name]
        try:
            mod = importlib.import_module(sc.module)
            getattr(mod, sc.func)()
            results[name] = "ok"
        except Exception:  # a scenario that fails on this tree is part of the report
            results[name] = traceback.format_exc(limit=6)
    rep: dict[str, Any] = dict(checker.report())
    rep["scenarios"] = results
    rep["sites"] = len(checker.sites)
    return rep


def run(names: Sequence[str] = (), root: Path = ROOT, timeout: float = 900) -> dict[str, Any]:
    """Run scenarios (all when none named) in a fresh CPython process; return the report."""
    cmd = [sys.executable, "-m", "tests.intcheck", "--json", "--root", str(root), *names]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    with tempfile.TemporaryDirectory(prefix="intcheck-") as work:  # the firmware writes files
        p = subprocess.run(
            cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        raise RuntimeError("intcheck failed (exit %d)\n%s\n%s" % (p.returncode, p.stdout, p.stderr))
    rep: dict[str, Any] = json.loads(lines[-1])
    return rep


def old_tree(rev: str, dest: Path) -> Path:
    """firmware/, protocol/ and tests/mp/ as of ``rev`` (``git show`` only) under ``dest``."""

    def show(spec: str) -> str:
        return subprocess.run(
            ["git", "show", spec], cwd=str(ROOT), capture_output=True, text=True, check=True
        ).stdout

    def tree(path: str) -> Iterator[str]:
        for ln in show(rev + ":" + path).splitlines()[2:]:
            if ln:
                yield path + "/" + ln

    todo = ["firmware", "protocol", "tests/mp"]
    while todo:
        d = todo.pop()
        for p in tree(d):
            if p.endswith("/"):
                todo.append(p.rstrip("/"))
            elif p.endswith(".py") or p.endswith(".json"):
                out = dest / p
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(show(rev + ":" + p), encoding="utf-8")
    return dest


def format_hits(hits: Sequence[dict[str, Any]]) -> str:
    """One line per hit: file:line function(): source  [value, count] (why it is waived)"""
    return "\n".join(
        "%s:%d %s(): %s  [value %d, %d times]%s"
        % (
            h["file"],
            h["line"],
            h["func"],
            h["text"],
            h["extreme"],
            h["count"],
            "  (%s)" % h["why"] if h.get("why") else "",
        )
        for h in hits
    )


def main(argv: Sequence[str]) -> int:
    args = list(argv)
    as_json = "--json" in args
    if as_json:
        args.remove("--json")
    root = ROOT
    if "--root" in args:
        k = args.index("--root")
        root = Path(args[k + 1])
        del args[k : k + 2]
    if "--rev" in args:
        k = args.index("--rev")
        rev = args[k + 1]
        del args[k : k + 2]
        with tempfile.TemporaryDirectory() as tmp:
            old_tree(rev, Path(tmp))
            rep = run(args, Path(tmp))
    elif as_json:
        rep = run_here(args or list(SCENARIOS), root)
        print(json.dumps(rep))
        return 0
    else:
        rep = run(args, root)
    print("violations:\n" + format_hits(rep["violations"]))
    print("waived:\n" + format_hits(rep["waived"]))
    bad = {k: v for k, v in rep["scenarios"].items() if v != "ok"}
    for k, v in bad.items():
        print("scenario", k, "failed:\n" + v)
    return 1 if rep["violations"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
