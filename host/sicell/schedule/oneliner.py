"""One-liner steps (PyBaMM style): ``"Lithiate at 0.1 mA/cm2 until 0.01 V vs Li"`` → the
equivalent ``[[step]]`` keys. The grammar is in ``docs/schedule.md``."""

from __future__ import annotations

import re
from typing import Any

from sicell.schedule.readers import err
from sicell.units import parse_current, parse_duration

__all__ = ["expand_one_liner"]

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_CUR_TOKEN = (
    rf"(?:{_NUM}\s*(?:a|ma|ua|µa|μa|na)(?:\s*/\s*cm\^?2|\s*/\s*cm²)?|c\s*/\s*{_NUM}|{_NUM}\s*c)"
)
_CUR_RE = re.compile(rf"^{_CUR_TOKEN}$", re.IGNORECASE)
_V_RE = re.compile(rf"^({_NUM})\s*v(?:\s+vs\.?\s+(li|li\+/li|cell))?$", re.IGNORECASE)
_Q_RE = re.compile(rf"^({_NUM})\s*(mah|uah|µah|μah)\s*(/\s*g|/\s*cm\^?2|/\s*cm²)?$", re.IGNORECASE)
_DVDT_RE = re.compile(
    rf"^\|?dv/dt\|?\s*(?:<=?|<)\s*({_NUM})\s*(mv/h|uv/s|µv/s|μv/s)$", re.IGNORECASE
)
_VERB_RE = re.compile(
    r"^(rest|ocv|open circuit|lithiate|delithiate|lithiation|delithiation|charge|discharge|hold)"
    r"\b\s*(.*)$",
    re.IGNORECASE,
)
_VERB_ALIASES = {"lithiation": "lithiate", "delithiation": "delithiate", "open circuit": "ocv"}


def _current_keys(text: str) -> tuple[str, float | str]:
    """One-liner current → (TOML key, value in that key's unit)."""
    spec = parse_current(text)
    if spec.kind == "c_rate":
        return "c_rate", spec.value
    m = re.match(rf"^\s*({_NUM})\s*(a|ma|ua|µa|μa|na)", text, re.IGNORECASE)
    assert m is not None
    num = float(m.group(1))
    unit = m.group(2).lower().replace("µ", "u").replace("μ", "u")
    if spec.kind == "density":
        if unit == "ma":
            return "current_density_ma_cm2", num
        if unit == "ua":
            return "current_density_ua_cm2", num
        if unit == "a":
            return "current_density_ma_cm2", num * 1e3
        return "current_density_ua_cm2", num * 1e-3
    if unit == "ma":
        return "current_ma", num
    if unit == "ua":
        return "current_ua", num
    if unit == "a":
        return "current_a", num
    return "current_ua", num * 1e-3


class _Expansion:
    """The keys of one one-liner, filled in as its words are read."""

    def __init__(self, where: str, text: str, idx: int) -> None:
        self.where = where
        self.text = text
        self.kw: dict[str, Any] = {"step": idx, "key": "step", "value": text}
        self.out: dict[str, Any] = {}

    def fail(self, msg: str) -> Exception:
        return err(self.where, f"step = {self.text!r}: {msg}", **self.kw)

    def add(self, key: str, value: Any) -> None:
        if key in self.out:
            raise self.fail(f"two conditions set {key}")
        self.out[key] = value

    def add_vs(self, vs_word: str | None) -> None:
        if vs_word:
            vs = "cell" if vs_word.lower() == "cell" else "Li"
            if self.out.get("vs", vs) != vs:
                raise self.fail("potentials vs Li and vs cell mixed")
            self.out["vs"] = vs

    def condition(self, c: str, *, end_current_ok: bool) -> None:
        """One condition after ``until``/``or``/``for``."""
        vm = _V_RE.match(c)
        if vm:
            self.add("until_v", float(vm.group(1)))
            self.add_vs(vm.group(2))
            return
        qm = _Q_RE.match(c)
        if qm:
            num, unit, per = float(qm.group(1)), qm.group(2).lower(), qm.group(3)
            milli = unit == "mah"
            if per and "g" in per:
                self.add("until_capacity_mah_g", num if milli else num * 1e-3)
            elif per:
                self.add("until_capacity_mah_cm2", num if milli else num * 1e-3)
            else:
                self.add("until_charge_mah" if milli else "until_charge_uah", num)
            return
        dm = _DVDT_RE.match(c)
        if dm:
            unit = dm.group(2).lower()
            key = "until_dvdt_mv_h" if unit == "mv/h" else "until_dvdt_uv_s"
            self.add(key, float(dm.group(1)))
            return
        if _CUR_RE.match(c):
            if not end_current_ok:
                raise self.fail(f"an end current ({c!r}) only ends a hold (CV) phase")
            key, val = _current_keys(c)
            self.add("until_" + key, val)
            return
        try:
            self.add("duration_s", parse_duration(c))
            return
        except ValueError:
            pass
        raise self.fail(
            f"cannot read the condition {c!r}; expected '<x> V [vs Li]', "
            "a current, '<x> mAh', 'dV/dt < <x> mV/h' or a duration"
        )


def _verb(x: _Expansion, verb: str, charge_means: str | None) -> str:
    """The verb in canonical form (charge/discharge mapped by ``charge_means``)."""
    if verb in ("charge", "discharge"):
        if charge_means not in ("lithiation", "delithiation"):
            raise x.fail(
                f"{verb!r} is ambiguous for a Si half cell (the paper calls "
                "lithiation 'charging' of the Si anode, a Si-vs-Li half cell calls it "
                "'discharge'); write 'Lithiate'/'Delithiate', or set charge_means = "
                '"lithiation" or "delithiation" at the top of the file'
            )
        lith = (verb == "charge") == (charge_means == "lithiation")
        verb = "lithiate" if lith else "delithiate"
    return _VERB_ALIASES.get(verb, verb)


def _set_point(x: _Expansion, verb: str, rest: str) -> str:
    """Read ``at <current or potential>`` into ``x.out``; the text after it."""
    am = re.match(r"^at\s+(.+?)(?=\s+(?:for|until|or)\b|$)(.*)$", rest, re.IGNORECASE)
    if not am:
        raise x.fail("expected 'at <current or potential>'")
    what, rest = am.group(1).strip(), am.group(2)
    if verb == "hold":
        vm = _V_RE.match(what)
        if not vm:
            raise x.fail("expected 'Hold at <x> V [vs Li|cell]'")
        x.out["kind"] = "cv"
        x.out["hold_v"] = float(vm.group(1))
        if vm.group(2):
            x.out["vs"] = "cell" if vm.group(2).lower() == "cell" else "Li"
    else:
        try:
            key, val = _current_keys(what)
        except ValueError as e:
            raise x.fail(str(e)) from None
        x.out["kind"] = "cc"
        x.out[key] = val
        x.out["direction"] = "lithiation" if verb == "lithiate" else "delithiation"
    return rest


def _conditions(x: _Expansion, rest: str) -> list[str]:
    """``for ... until ... or ...`` → the condition texts."""
    conds: list[str] = []
    rest = re.sub(r"\bor\s+until\b", "or", rest, flags=re.IGNORECASE)
    for part in re.split(r"\s+(?=for\b|until\b|or\b)", rest.strip(), flags=re.IGNORECASE):
        p = part.strip()
        if not p:
            continue
        pm = re.match(r"^(for|until|or)\s+(.*)$", p, re.IGNORECASE)
        if not pm:
            raise x.fail(f"cannot read {p!r}")
        conds.append(pm.group(2).strip())
    return conds


def expand_one_liner(where: str, text: str, charge_means: str | None, idx: int) -> dict[str, Any]:
    """A PyBaMM-style string → the equivalent ``[[step]]`` keys."""
    x = _Expansion(where, text, idx)
    src = " ".join(text.strip().rstrip(".").split())
    m = _VERB_RE.match(src)
    if not m:
        raise x.fail(
            "expected it to start with Rest, OCV, Lithiate, Delithiate or "
            "Hold (e.g. 'Lithiate at 0.1 mA/cm2 until 0.01 V vs Li')"
        )
    verb = _verb(x, m.group(1).lower(), charge_means)
    rest = m.group(2)

    # split off "then hold until ..." (cccv)
    hold_part = None
    hm = re.search(r"(?:,\s*|\s+)(?:then\s+|and\s+)?hold\b\s*(.*)$", rest, re.IGNORECASE)
    if verb in ("lithiate", "delithiate") and hm:
        hold_part = hm.group(1)
        rest = rest[: hm.start()]

    if verb in ("lithiate", "delithiate", "hold"):
        rest = _set_point(x, verb, rest)
    else:
        x.out["kind"] = verb  # rest / ocv

    for c in _conditions(x, rest):
        x.condition(c, end_current_ok=x.out["kind"] == "cv")

    if hold_part is not None:
        if "until_v" not in x.out:
            raise x.fail("'... then hold' needs 'until <x> V' first")
        x.out["kind"] = "cccv"
        x.out["hold_v"] = x.out.pop("until_v")
        for part in re.split(r"\s+or\s+", re.sub(r"^until\s+", "", hold_part.strip(), flags=re.I)):
            if part.strip():
                x.condition(part.strip(), end_current_ok=True)
    return x.out
