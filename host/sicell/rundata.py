"""Load a run database (one SQLite file per run, see ``schema.py``) into typed numpy arrays.

The loader only reads: it never writes to the database, so it is safe to point at a run that a
client is still logging (WAL mode). Units are the database's SI units (s, V, A, Ah); the
normalisation accessors convert the metadata to the units analysis needs (g, cm², cm, cm³).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sicell import schema

# SAMPLE flags, re-exported for analysis: first/last point of a step, CV phase, relay open,
# ADC clipped, range change, gap (protocol/messages.py owns them).
from sicell.protocol.messages import F_CLIPPED as F_CLIPPED
from sicell.protocol.messages import F_CV as F_CV
from sicell.protocol.messages import F_GAP as F_GAP
from sicell.protocol.messages import F_OPEN as F_OPEN
from sicell.protocol.messages import F_RANGE as F_RANGE
from sicell.protocol.messages import F_STEP_FIRST as F_STEP_FIRST
from sicell.protocol.messages import F_STEP_LAST as F_STEP_LAST
from sicell.store import EventRecord, read_events

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

# Step kinds during which no current flows (the cell rests or the relay is open).
REST_KINDS = frozenset({"rest", "ocv"})


@dataclass(frozen=True)
class StepDef:
    """One row of the ``steps`` table (the schedule as uploaded; voltages in cell volts)."""

    idx: int
    kind: str
    current_a: float | None
    voltage_v: float | None
    label: str | None

    @property
    def is_rest(self) -> bool:
        return self.kind.lower() in REST_KINDS


def _opt_float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        f = float(value)
        return f if np.isfinite(f) and f > 0.0 else None
    if isinstance(value, str):
        try:
            return _opt_float(float(value))
        except ValueError:
            return None
    return None


@dataclass
class RunData:
    """A run's samples as numpy arrays (ordered by ``seq``), its events, steps and metadata."""

    seq: IntArray
    t_s: FloatArray
    voltage_v: FloatArray
    we_v: FloatArray
    current_a: FloatArray
    charge_ah: FloatArray
    step: IntArray
    cycle: IntArray
    range_idx: IntArray
    flags: IntArray
    events: list[EventRecord] = field(default_factory=list)
    steps: dict[int, StepDef] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    board_charge: bool = True  # ``charge_ah`` holds the board's coulomb count (False: no count)
    record_dt_s: dict[int, float] = field(default_factory=dict)  # step → recording interval, s

    def __post_init__(self) -> None:
        n = len(self.t_s)
        for name in (
            "seq",
            "voltage_v",
            "we_v",
            "current_a",
            "charge_ah",
            "step",
            "cycle",
            "range_idx",
            "flags",
        ):
            if len(getattr(self, name)) != n:
                raise ValueError(f"column {name} has {len(getattr(self, name))} rows, t_s has {n}")

    @classmethod
    def from_arrays(
        cls,
        t_s: Any,
        voltage_v: Any,
        current_a: Any,
        *,
        we_v: Any = None,
        charge_ah: Any = None,
        step: Any = None,
        cycle: Any = None,
        range_idx: Any = None,
        flags: Any = None,
        seq: Any = None,
        steps: Mapping[int, StepDef] | None = None,
        events: list[EventRecord] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> RunData:
        """Build a run in memory (tests, benchmarks, data from other sources).

        Missing columns get neutral values: ``we_v`` = ``voltage_v`` + the meta reference
        offset, ``charge_ah`` zeros (and ``board_charge`` False: the analysis then uses the
        samples' integral as the step charge), ``step``/``cycle``/``range_idx``/``flags`` zeros
        and ``seq`` 0..n-1.
        """
        t = np.asarray(t_s, dtype=np.float64)
        n = len(t)
        v = np.asarray(voltage_v, dtype=np.float64)
        meta_d = dict(meta or {})
        offset = _opt_float_any(meta_d.get("reference_offset_v")) or 0.0

        def ints(x: Any) -> IntArray:
            return np.zeros(n, np.int64) if x is None else np.asarray(x, dtype=np.int64)

        return cls(
            seq=np.arange(n, dtype=np.int64) if seq is None else np.asarray(seq, np.int64),
            t_s=t,
            voltage_v=v,
            we_v=v + offset if we_v is None else np.asarray(we_v, dtype=np.float64),
            current_a=np.asarray(current_a, dtype=np.float64),
            charge_ah=np.zeros(n) if charge_ah is None else np.asarray(charge_ah, np.float64),
            step=ints(step),
            cycle=ints(cycle),
            range_idx=ints(range_idx),
            flags=ints(flags),
            events=list(events or []),
            steps=dict(steps or {}),
            meta=meta_d,
            board_charge=charge_ah is not None,
        )

    def __len__(self) -> int:
        return len(self.t_s)

    @property
    def name(self) -> str:
        """A short label: the ``cell`` metadata, else the file name without suffix."""
        cell = self.meta.get("cell")
        if isinstance(cell, str) and cell.strip():
            return cell.strip()
        if self.path is not None:
            return self.path.stem
        return "run"

    # ---- normalisation inputs (None when unknown) --------------------------------------
    def _meta_float(self, key: str) -> float | None:
        """The metadata value ``key`` as a positive finite float, else None."""
        return _opt_float(self.meta.get(key))

    @property
    def area_cm2(self) -> float | None:
        """Electrode area in cm² (meta ``area_cm2``)."""
        return self._meta_float("area_cm2")

    @property
    def mass_mg(self) -> float | None:
        """Active mass in mg: meta ``mass_mg``, else ``loading_mg_cm2`` × ``area_cm2``."""
        m = self._meta_float("mass_mg")
        if m is None:
            m = _product(self._meta_float("loading_mg_cm2"), self.area_cm2)
        return m

    @property
    def mass_g(self) -> float | None:
        """Active mass in g."""
        return _product(self.mass_mg, 1e-3)

    @property
    def loading_mg_cm2(self) -> float | None:
        """Active mass loading in mg/cm² (mass / area, or meta ``loading_mg_cm2``)."""
        m, a = self.mass_mg, self.area_cm2
        if m is None or a is None:
            return self._meta_float("loading_mg_cm2")
        return m / a

    @property
    def thickness_um(self) -> float | None:
        """Film thickness in µm (meta ``thickness_um``)."""
        return self._meta_float("thickness_um")

    @property
    def thickness_cm(self) -> float | None:
        """Film thickness in cm."""
        return _product(self.thickness_um, 1e-4)

    @property
    def density_g_cm3(self) -> float | None:
        """Film density in g/cm³ (meta ``density_g_cm3``)."""
        return self._meta_float("density_g_cm3")

    @property
    def volume_cm3(self) -> float | None:
        """Electrode (film) volume in cm³: area × thickness when both are known, else
        mass / density when both are known, else None."""
        v = _product(self.area_cm2, self.thickness_cm)
        if v is not None:
            return v
        m, d = self.mass_g, self.density_g_cm3
        if m is not None and d is not None:
            return m / d
        return None

    @property
    def reference_offset_v(self) -> float:
        """E(counter/reference) vs Li+/Li, V: ``we_v = voltage_v + offset``."""
        return _opt_float_any(self.meta.get("reference_offset_v")) or 0.0

    def step_table(self) -> dict[int, tuple[str, float | None]]:
        """Step index → (kind, set current A), what ``sicell.cyclemodel`` needs."""
        return {i: (s.kind, s.current_a) for i, s in self.steps.items()}

    def rest_mask(self, rest_current_a: float = 1e-9) -> NDArray[np.bool_]:
        """True for samples that belong to no half-cycle: rest/OCV steps (steps table), relay
        open (flag), or |I| ≤ ``rest_current_a`` (1 nA, the wire unit, by default)."""
        mask = np.abs(self.current_a) <= rest_current_a
        mask |= (self.flags & F_OPEN) != 0
        rest_steps = [s.idx for s in self.steps.values() if s.is_rest]
        if rest_steps:
            mask |= np.isin(self.step, np.asarray(rest_steps, dtype=np.int64))
        return np.asarray(mask, dtype=np.bool_)


def _product(a: float | None, b: float | None) -> float | None:
    """a × b, or None when either is unknown."""
    return None if a is None or b is None else a * b


def _opt_float_any(value: Any) -> float | None:
    """Like ``_opt_float`` but accepts zero and negative numbers (offsets)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


_SAMPLE_DTYPE = np.dtype(
    [
        ("seq", np.int64),
        ("t_s", np.float64),
        ("voltage_v", np.float64),
        ("we_v", np.float64),
        ("current_a", np.float64),
        ("charge_ah", np.float64),
        ("step", np.int64),
        ("cycle", np.int64),
        ("range", np.int64),
        ("flags", np.int64),
    ]
)


def load_run(path: str | Path) -> RunData:
    """Read a run database into a ``RunData`` (samples ordered by ``seq``). A file that is not
    a sicell run database (``schema.check_run_db``), or that turns out damaged while it is read,
    raises ``StoreSchemaError`` naming the file and the reason."""
    p = Path(path)
    con = schema.open_run_db(p)
    try:
        meta, rec, events, steps = _read(con)
    except sqlite3.DatabaseError as e:
        raise schema.not_a_run_db(p, f"damaged: {e}") from e
    finally:
        con.close()
    return RunData(
        seq=rec["seq"].copy(),
        t_s=rec["t_s"].copy(),
        voltage_v=rec["voltage_v"].copy(),
        we_v=rec["we_v"].copy(),
        current_a=rec["current_a"].copy(),
        charge_ah=rec["charge_ah"].copy(),
        step=rec["step"].copy(),
        cycle=rec["cycle"].copy(),
        range_idx=rec["range"].copy(),
        flags=rec["flags"].copy(),
        events=events,
        steps=steps,
        meta=meta,
        path=p,
        record_dt_s=_record_intervals(meta),
    )


def _read(
    con: sqlite3.Connection,
) -> tuple[dict[str, Any], NDArray[np.void], list[EventRecord], dict[int, StepDef]]:
    """(meta, samples as a record array, events, steps) of a checked run database."""
    meta = schema.read_meta(con)
    cur = con.execute(
        "SELECT seq, t_s, voltage_v, we_v, current_a, charge_ah, step, cycle, range, flags "
        "FROM samples ORDER BY seq"
    )
    rec = np.fromiter(cur, dtype=_SAMPLE_DTYPE)
    events = read_events(con)
    steps = {
        int(i): StepDef(
            int(i),
            str(k),
            None if ia is None else float(ia),
            None if vv is None else float(vv),
            None if lb is None else str(lb),
        )
        for i, k, ia, vv, lb in con.execute(
            "SELECT idx, kind, current_a, voltage_v, label FROM steps ORDER BY idx"
        )
    }
    return meta, rec, events, steps


def _record_intervals(meta: Mapping[str, Any]) -> dict[int, float]:
    """Step index → recording interval (s; steps without one left out), from the schedule the
    run stored in its metadata; empty when there is none or this sicell cannot read it."""
    text = meta.get("schedule_toml")
    if not isinstance(text, str) or not text.strip():
        return {}
    from sicell.errors import ScheduleError
    from sicell.schedule import parse_schedule
    from sicell.schedule.resolve import resolve_steps

    try:
        resolved = resolve_steps(parse_schedule(text), None)
    except ScheduleError:
        return {}
    return {r.index: r.record[0] / 1000.0 for r in resolved if r.record[0] > 0}
