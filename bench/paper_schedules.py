"""bench/paper.py's schedules: the paper's examples rewritten for each emulated film.

``cycling_toml`` and ``rate_toml`` take ``host/sicell/examples/paper-cycling.toml`` and
``paper-rate.toml`` (both written for the thin porous film), put the film's [cell] values in
(``sicell.emulator.cellmodels.film_params``), scale the guard durations to the film's capacity
and set the cycle count, rests and rates asked for. The rate test delithiates to the paper's
1.2 V vs Li at every rate (IR-corrected: 2.08 V measured at 10 mA/cm², inside the board's
±2.4 V window), with the safety window's top 0.1 V above the highest measured cutoff. The
helpers below read such a schedule back (its rate cutoffs, cycle count and rest length).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import sicell
from sicell.emulator.cellmodels import film_params
from sicell.schedule import parse_schedule
from sicell.schedule.tomlwrite import dump_toml
from sicell.schedule.vocabulary import DURATION_KEYS

EXAMPLES = Path(sicell.__file__).resolve().parent / "examples"
CYCLING_TOML = EXAMPLES / "paper-cycling.toml"
RATE_TOML = EXAMPLES / "paper-rate.toml"
PAPER_CUTOFF_V_LI = 1.2  # the paper's delithiation cutoff (DESIGN §6: 0.01-1.2 V vs Li+/Li)
SAFETY_ABOVE_CUTOFF_V = 0.1  # the rate test's safety v_max above its highest measured cutoff


def _duration_s(step: Mapping[str, Any]) -> float | None:
    for k, scale in DURATION_KEYS.items():
        if k in step:
            return float(step[k]) * scale
    return None


def _set_duration_min(step: dict[str, Any], minutes: float) -> None:
    for k in DURATION_KEYS:
        step.pop(k, None)
    step["duration_min"] = float(minutes) if minutes != int(minutes) else int(minutes)


def _film_doc(example: Path, film: str, protocol: str) -> tuple[dict[str, Any], float]:
    """The example's document with ``film``'s [cell] values; also the guard scale factor (the
    film's theoretical capacity over the example film's, at least 1)."""
    doc = tomllib.loads(example.read_text(encoding="utf-8"))
    p = film_params(film)
    cell = doc["cell"]
    base_loading = float(cell["loading_mg_cm2"])
    porous = "porous" if p["porous"] else "non-porous"
    size = film.split("-")[0]
    cell.update(
        name=(
            f"{porous} {size} a-Si film ({p['loading_mg_cm2']:g} mg/cm2, "
            f"{p['thickness_um']:g} um), emulated '{film}'"
        ),
        area_cm2=float(p["area_cm2"]),
        loading_mg_cm2=float(p["loading_mg_cm2"]),
        thickness_um=float(p["thickness_um"]),
        density_g_cm3=round(float(p["density_g_cm3"]), 3),
    )
    doc["name"] = f"paper-{protocol}-{film}"
    return doc, max(1.0, float(p["loading_mg_cm2"]) / base_loading)


def _scale_guards(steps: list[dict[str, Any]], scale: float, rest_min: float | None) -> None:
    for st in steps:
        kind = st.get("kind")
        d = _duration_s(st)
        if kind == "rest" and rest_min is not None:
            _set_duration_min(st, rest_min)
        elif kind in ("cc", "cccv", "cv") and d is not None and scale > 1.0:
            _set_duration_min(st, math.ceil(d * scale / 60.0))


def _header(example: Path, film: str, scale: float, *parts: str) -> str:
    """The comment on top of a written schedule: where it comes from and what was changed."""
    return (
        f"Written by bench/paper.py from {example.name} for the emulated film '{film}':\n"
        f"[cell] from cells.film_params, guard durations x{scale:.3g}"
        + "".join(f", {p}" for p in parts if p)
        + "."
    )


def cycling_toml(film: str, cycles: int, rest_min: float | None = None) -> str:
    """The paper's cycling schedule for ``film``: ``cycles`` cycles (the loop's count)."""
    if cycles < 1:
        raise ValueError("cycles must be >= 1")
    doc, scale = _film_doc(CYCLING_TOML, film, "cycling")
    steps: list[dict[str, Any]] = doc["step"]
    _scale_guards(steps, scale, rest_min)
    for st in steps:
        if st.get("kind") == "loop":
            st["count"] = cycles
    doc["description"] = (
        f"{film}: 0.1 mA/cm2, {'1 h' if rest_min is None else f'{rest_min:g} min'} rests, "
        f"0.01-1.2 V vs Li, {cycles} cycles"
    )
    rests = f"rests {rest_min:g} min" if rest_min is not None else ""
    return dump_toml(doc, _header(CYCLING_TOML, film, scale, f"{cycles} cycles", rests))


def rate_toml(
    film: str, rates: Sequence[float] | None = None, rest_min: float | None = None
) -> str:
    """The paper's rate test for ``film`` (blocks of CC-CV lithiation, rest, delithiation at
    one rate, rest); ``rates`` picks some of the example's delithiation current densities."""
    doc, scale = _film_doc(RATE_TOML, film, "rate")
    steps: list[dict[str, Any]] = doc["step"]
    blocks: list[list[dict[str, Any]]] = []
    for st in steps:
        if str(st.get("label", "")).startswith("lith-") or not blocks:
            blocks.append([])
        blocks[-1].append(st)
    have = [_block_rate(b) for b in blocks]
    if rates is not None:
        missing = [j for j in rates if not any(_same_j(j, h) for h in have if h is not None)]
        if missing:
            raise ValueError(
                f"rates {missing} are not in {RATE_TOML.name} "
                f"(it has {', '.join(f'{h:g}' for h in have if h is not None)} mA/cm2)"
            )
        blocks = [b for b, h in zip(blocks, have, strict=True) if h is None or is_in(h, rates)]
    doc["step"] = [st for b in blocks for st in b]
    _scale_guards(doc["step"], scale, rest_min)
    v_max = _paper_cutoffs(doc)
    kept = [h for h in (_block_rate(b) for b in blocks) if h is not None]
    doc["description"] = (
        f"{film}: CC-CV lithiation at 0.1 mA/cm2, delithiation at "
        f"{', '.join(f'{j:g}' for j in kept)} mA/cm2 to {PAPER_CUTOFF_V_LI:g} V vs Li"
    )
    rests = f"rests {rest_min:g} min" if rest_min is not None else ""
    picked = f"rates {', '.join(f'{j:g}' for j in kept)} mA/cm2" if rates is not None else ""
    cut = (
        f"delithiation to the paper's {PAPER_CUTOFF_V_LI:g} V vs Li at every rate, "
        f"safety v_max {v_max:.2f} V cell"
    )
    return dump_toml(doc, _header(RATE_TOML, film, scale, rests, picked, cut))


def _paper_cutoffs(doc: dict[str, Any]) -> float:
    """Set every delithiation's cutoff to the paper's (vs Li) and the safety window's top, in
    cell volts, ``SAFETY_ABOVE_CUTOFF_V`` above the highest measured cutoff (an IR-corrected
    one is shifted by I·R, as the schedule's own step rows give it); returns that top."""
    steps: list[dict[str, Any]] = doc["step"]
    for st in steps:
        if st.get("direction") == "delithiation" and "current_density_ma_cm2" in st:
            st["until_v"] = PAPER_CUTOFF_V_LI
    rows = parse_schedule(dump_toml(doc, "")).step_rows()
    measured = [v for (_, kind, _, v, _) in rows if kind == "cc" and v is not None]
    safety = doc.setdefault("safety", {})
    top = math.ceil((max(measured) + SAFETY_ABOVE_CUTOFF_V) * 20) / 20  # up to 50 mV
    if safety.get("vs", doc.get("vs")) != "cell":
        raise ValueError(f'{RATE_TOML.name}: expected [safety] in cell volts (vs = "cell")')
    safety["v_max"] = max(float(safety.get("v_max", top)), top)
    return float(safety["v_max"])


def _delith_steps(steps: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The delithiation steps set by a current density (one per rate block)."""
    return [
        st
        for st in steps
        if st.get("direction") == "delithiation" and "current_density_ma_cm2" in st
    ]


def _block_rate(block: Sequence[Mapping[str, Any]]) -> float | None:
    found = _delith_steps(block)
    return float(found[0]["current_density_ma_cm2"]) if found else None


def _same_j(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(abs(a), abs(b), 1e-12)


def is_in(j: float, rates: Sequence[float]) -> bool:
    """``j`` is one of ``rates`` (to 1 ppm)."""
    return any(_same_j(j, r) for r in rates)


def rate_cutoffs(toml_text: str) -> list[tuple[float, float, bool]]:
    """(current density mA/cm², delithiation cutoff vs Li, IR-corrected) per rate block."""
    return [
        (
            float(st["current_density_ma_cm2"]),
            float(st["until_v"]),
            bool(st.get("ir_corrected", False)),
        )
        for st in _delith_steps(tomllib.loads(toml_text)["step"])
    ]


def toml_cycles(text: str) -> int:
    """The cycle count of a schedule: its loop's count (1 without a loop)."""
    loops = [st for st in tomllib.loads(text)["step"] if st.get("kind") == "loop"]
    return int(loops[0]["count"]) if loops else 1


def toml_rest_s(text: str) -> float:
    """The rest length of a schedule (its first rest step), s."""
    for st in tomllib.loads(text)["step"]:
        if st.get("kind") == "rest":
            d = _duration_s(st)
            if d is not None:
                return d
    return 3600.0
