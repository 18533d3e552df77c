"""Schedule TOML → ``Schedule``: the file-level tables (``[cell]``, ``[reference]``,
``[safety]``, ``[recording]``, ``[control]``) and the step list, with their structural checks.
Everything that needs units resolved or the board's limits is checked by ``Schedule.compile``."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from sicell.errors import ScheduleError
from sicell.schedule import readers as rd
from sicell.schedule.document import Schedule
from sicell.schedule.model import ControlSpec, RecordSpec, SafetySpec, StepSpec
from sicell.schedule.parse_step import parse_step
from sicell.schedule.vocabulary import (
    CELL_KEYS,
    CONTROL_KEYS,
    RECORDING_KEYS,
    REFERENCE_KEYS,
    SAFETY_KEYS,
    TOP_KEYS,
)
from sicell.units import Reference, reference_from

__all__ = ["load_schedule", "parse_schedule"]


_UTF16_32_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")


def load_schedule(path: str | os.PathLike[str]) -> Schedule:
    """Read and parse a schedule file (UTF-8 TOML, with or without a byte-order mark)."""
    p = Path(path)
    return parse_schedule(decode_text(p.read_bytes(), str(p)), source=str(p))


def decode_text(data: bytes, source: str) -> str:
    """A schedule file's bytes as text: UTF-8, a leading byte-order mark dropped. Anything else
    (UTF-16, NUL bytes, bytes that are not UTF-8) is refused with a ``ScheduleError`` naming
    ``source``: it is not a text file this parser can read."""
    expected = "expected a TOML schedule saved as UTF-8 text"
    if data.startswith(_UTF16_32_BOMS):
        raise ScheduleError(f"{source}: saved as UTF-16 or UTF-32 text; {expected}")
    if b"\x00" in data:
        at = data.index(b"\x00")
        raise ScheduleError(f"{source}: not a text file (a NUL byte at offset {at}); {expected}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ScheduleError(
            f"{source}: not a text file (byte 0x{data[e.start]:02x} at offset {e.start} is not "
            f"UTF-8); {expected}"
        ) from None


def parse_schedule(text: str, source: str = "<string>") -> Schedule:
    """Parse schedule TOML. Structural problems (syntax, unknown keys, wrong types, a step kind
    missing its set point) raise ``ScheduleValidationError`` here; everything that needs units
    resolved or the board's limits is checked by ``Schedule.compile``."""
    text = text.removeprefix("\ufeff")  # a byte-order mark some editors write
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ScheduleError(f"{source}: not valid TOML: {e}") from e
    where = source
    rd.check_keys(where, doc, TOP_KEYS)

    name = doc.get("name")
    if name is None:
        name = Path(source).stem if source != "<string>" else "schedule"
    name = rd.as_str(where, "name", name)
    description = (
        rd.as_str(where, "description", doc["description"]) if "description" in doc else None
    )
    default_vs = rd.as_vs(where, doc["vs"]) if "vs" in doc else None
    charge_means = None
    if "charge_means" in doc:
        named = ("lithiation", "delithiation")
        charge_means = rd.as_choice(where, "charge_means", doc["charge_means"], named)

    def table(key: str) -> dict[str, Any]:
        return rd.as_table(where, doc.get(key, {}), f"[{key}]")

    reference = _reference(table("reference"))
    ct = table("cell")
    cell = _cell(ct)
    potential = rd.PotentialReader(reference, default_vs)
    safety = _safety(table("safety"), potential)
    recording = _recording(table("recording"))
    control = _control(table("control"))

    raw_steps = doc.get("step", [])
    if not isinstance(raw_steps, list):
        raise rd.err(where, "step must be an array of tables ([[step]])", key="step")
    steps = [parse_step(i, raw, potential, charge_means) for i, raw in enumerate(raw_steps)]
    _check_labels(steps)

    return Schedule(
        name=name,
        reference=reference,
        area_cm2=cell["area_cm2"],
        mass_mg=cell["mass_mg"],
        thickness_um=_opt_pos_cell(ct, "thickness_um"),
        density_g_cm3=_opt_pos_cell(ct, "density_g_cm3"),
        capacity_mah_g=cell["capacity_mah_g"],
        cell_name=rd.as_str("[cell]", "name", ct["name"]) if "name" in ct else None,
        description=description,
        resistance_ohm=cell["resistance_ohm"],
        default_vs=default_vs,
        safety=safety,
        recording=recording,
        control=control,
        steps=steps,
        source_text=text,
        source=source,
    )


def _reference(rt: dict[str, Any]) -> Reference:
    rd.check_keys("[reference]", rt, REFERENCE_KEYS)
    electrode = rd.as_str("[reference]", "electrode", rt.get("electrode", "In-Li"))
    offset = rd.as_num("[reference]", "offset_v", rt["offset_v"]) if "offset_v" in rt else None
    try:
        return reference_from(electrode, offset)
    except ValueError as e:
        raise rd.err("[reference]", str(e), key="electrode", value=electrode) from None


def _opt_pos_cell(ct: dict[str, Any], key: str) -> float | None:
    return rd.as_pos("[cell]", key, ct[key]) if key in ct else None


def _cell(ct: dict[str, Any]) -> dict[str, float | None]:
    """area_cm2, mass_mg, capacity_mah_g and resistance_ohm from ``[cell]``."""
    w = "[cell]"
    rd.check_keys(w, ct, CELL_KEYS)
    area = _opt_pos_cell(ct, "area_cm2")
    mass = _opt_pos_cell(ct, "mass_mg")
    loading = _opt_pos_cell(ct, "loading_mg_cm2")
    if loading is not None:
        if area is None:
            raise rd.err(w, "loading_mg_cm2 needs area_cm2 to give a mass", key="loading_mg_cm2")
        from_loading = loading * area
        if mass is not None and abs(mass - from_loading) > 0.01 * mass:
            raise rd.err(
                w,
                f"mass_mg = {mass:g} disagrees with loading_mg_cm2 × area_cm2 = "
                f"{from_loading:.4g} mg; expected one of them, or values that agree within 1 %",
                key="mass_mg",
                value=mass,
            )
        if mass is None:
            mass = from_loading
    if "capacity_mah_g" in ct and "theoretical_capacity_mah_g" in ct:
        raise rd.err(w, "give capacity_mah_g or theoretical_capacity_mah_g, not both")
    cap = _opt_pos_cell(ct, "capacity_mah_g") or _opt_pos_cell(ct, "theoretical_capacity_mah_g")
    res = _opt_pos_cell(ct, "resistance_ohm")
    res_cm2 = _opt_pos_cell(ct, "resistance_ohm_cm2")
    if res is not None and res_cm2 is not None:
        raise rd.err(w, "give resistance_ohm or resistance_ohm_cm2, not both", key="resistance_ohm")
    if res_cm2 is not None:
        if area is None:
            raise rd.err(w, "resistance_ohm_cm2 needs area_cm2", key="resistance_ohm_cm2")
        res = res_cm2 / area
    if "name" in ct:
        rd.as_str(w, "name", ct["name"])
    return {"area_cm2": area, "mass_mg": mass, "capacity_mah_g": cap, "resistance_ohm": res}


def _safety(stb: dict[str, Any], potential: rd.PotentialReader) -> SafetySpec:
    w = "[safety]"
    rd.check_keys(w, stb, SAFETY_KEYS)
    svs = rd.as_vs(w, stb["vs"]) if "vs" in stb else None
    v_min = potential(w, "v_min", stb["v_min"], svs) if "v_min" in stb else None
    v_max = potential(w, "v_max", stb["v_max"], svs) if "v_max" in stb else None
    ikey = rd.one_of(w, stb, {"i_max_ma": 0, "i_max_ua": 0}, "current ceiling")
    i_max = None
    if ikey:
        i_max = rd.as_pos(w, ikey, stb[ikey]) * (1e-3 if ikey == "i_max_ma" else 1e-6)
    temp = rd.as_num(w, "temp_max_c", stb["temp_max_c"]) if "temp_max_c" in stb else None
    deb = rd.as_pos(w, "debounce_s", stb.get("debounce_s", 0.5), zero_ok=True)
    return SafetySpec(
        v_min=v_min, v_max=v_max, i_max_a=i_max, i_max_key=ikey, temp_max_c=temp, debounce_s=deb
    )


def _recording(rec_t: dict[str, Any]) -> RecordSpec:
    rd.check_keys("[recording]", rec_t, RECORDING_KEYS)
    rec = rd.record_spec("[recording]", rec_t)
    return RecordSpec(
        dt_s=rec.dt_s if rec.dt_s is not None else 60.0,
        dv_mv=rec.dv_mv if rec.dv_mv is not None else 5.0,
        di_ua=rec.di_ua if rec.di_ua is not None else 0.0,
        dq_uah=rec.dq_uah if rec.dq_uah is not None else 0.0,
    )


def _control(ctl_t: dict[str, Any]) -> ControlSpec:
    w = "[control]"
    rd.check_keys(w, ctl_t, CONTROL_KEYS)
    tick = rd.as_int(w, "tick_ms", ctl_t.get("tick_ms", 100))
    slow = rd.as_int(w, "slow_tick_ms", ctl_t.get("slow_tick_ms", max(1000, tick)))
    if not 1 <= tick <= 60000:
        raise rd.err(w, f"tick_ms = {tick}; expected 1…60000", key="tick_ms", value=tick)
    if not tick <= slow <= 60000:
        raise rd.err(
            w, f"slow_tick_ms = {slow}; expected {tick}…60000", key="slow_tick_ms", value=slow
        )
    host_loss = ctl_t.get("host_loss", "decimate")
    host_loss = rd.as_choice(w, "host_loss", host_loss, ("decimate", "hold"))
    return ControlSpec(
        tick_ms=tick,
        slow_tick_ms=slow,
        host_loss="decimate" if host_loss == "decimate" else "hold",
    )


def _check_labels(steps: list[StepSpec]) -> None:
    seen: dict[str, int] = {}
    for st in steps:
        if st.label:
            if st.label in seen:
                raise rd.err(
                    st.where(),
                    f"label = {st.label!r} is already used by step {seen[st.label]}; expected "
                    "unique labels",
                    **rd.step_kw(st, "label", st.label),
                )
            seen[st.label] = st.index
