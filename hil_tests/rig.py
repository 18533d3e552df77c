"""The rig file: what load is wired to the board and the tolerances every check asserts.

Format documented in ``hil_tests/rig-example.toml``; ``rig-emulator.toml`` is the emulator's.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
EMULATOR_RIG = HERE / "rig-emulator.toml"
EMULATOR_RIGS = (EMULATOR_RIG, HERE / "rig-emulator-resistor.toml")  # CI runs the suite on each


class RigError(ValueError):
    """The rig file is missing a key or has a value that makes no sense."""


KINDS = ("rc", "resistor", "cell")
"""What can be wired to the cell terminals (rig-example.toml documents each):
``rc`` a series resistor then a capacitor with a parallel leak resistor; ``resistor`` a plain
resistor; ``cell`` a real cell of known capacity (tests that would drive it past its window or
need a dummy's equations skip on it)."""


@dataclass(frozen=True)
class Dummy:
    """The load: ``r_series`` then ``c`` ∥ ``r_parallel`` (rc), a plain resistor, or a real
    cell of ``capacity_mah`` (its ``r_series_ohm`` is its internal resistance, for estimates)."""

    kind: str
    r_series_ohm: float
    c_farad: float = 0.0
    r_parallel_ohm: float = 0.0
    v0_v: float = 0.0
    capacity_mah: float = 0.0

    @property
    def has_dynamics(self) -> bool:
        """Whether the terminal voltage moves gradually under a constant current (a capacitor
        or a cell), so a cutoff is approached and a CV current tapers."""
        return self.kind == "cell" or (self.kind == "rc" and self.c_farad > 0)

    @property
    def dc_path(self) -> bool:
        """Whether a settled current flows through known resistance (I = -V / R holds)."""
        return self.kind != "cell" and self.r_dc_ohm < float("inf")

    @property
    def r_dc_ohm(self) -> float:
        """Resistance the load presents at DC (what a settled current sees)."""
        if self.kind == "cell":
            return float("inf")
        if self.kind == "resistor":
            return self.r_series_ohm
        if self.r_parallel_ohm <= 0:
            return float("inf")
        return self.r_series_ohm + self.r_parallel_ohm

    @property
    def tau_s(self) -> float:
        """RC time constant of the capacitor with its leak (0 for a resistor or no leak)."""
        if self.kind == "resistor" or self.r_parallel_ohm <= 0:
            return 0.0
        return self.r_parallel_ohm * self.c_farad

    def emu_query(self) -> dict[str, str]:
        """``emu://`` query overrides that make the emulated cell this dummy."""
        if self.kind == "cell":
            raise RigError("a rig with a real cell needs a real board (--port)")
        if self.kind == "resistor":
            return {"cell.r_ohm": f"{self.r_series_ohm:g}"}
        return {
            "cell.r_series": f"{self.r_series_ohm:g}",
            "cell.c_farad": f"{self.c_farad:g}",
            "cell.r_parallel": f"{self.r_parallel_ohm:g}",
            "cell.v0": f"{self.v0_v:g}",
        }

    @property
    def emu_cell(self) -> str:
        """The emulator's cell model for this dummy."""
        return "resistor" if self.kind == "resistor" else "rc"


@dataclass(frozen=True)
class Tolerance:
    current_fs_pct: tuple[float, ...]
    current_test_fraction: float
    charge_pct: float
    cutoff_overshoot_mv: float
    cv_end_current_pct: float
    cv_ripple_pct: float
    rest_dvdt_pct: float
    debounce_ms: float
    watchdog_recovery_s: float

    def current_fs_pct_for(self, rng: int) -> float:
        if rng < len(self.current_fs_pct):
            return self.current_fs_pct[rng]
        return self.current_fs_pct[-1]


@dataclass(frozen=True)
class Rig:
    name: str
    notes: str
    dummy: Dummy
    v_min_v: float
    v_max_v: float
    compliance_v: float
    ranges: tuple[int, ...] | None
    tol: Tolerance
    flash_enabled: bool
    path: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


def _get(d: dict[str, Any], table: str, key: str, default: Any = None) -> Any:
    sect = d.get(table)
    if not isinstance(sect, dict):
        if default is not None:
            return default
        raise RigError(f"rig file has no [{table}] table")
    if key not in sect:
        if default is not None:
            return default
        raise RigError(f"rig file: [{table}] needs {key}")
    return sect[key]


def _num(d: dict[str, Any], table: str, key: str, default: float | None = None) -> float:
    v = _get(d, table, key, default)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise RigError(f"rig file: [{table}] {key} must be a number, got {v!r}")
    return float(v)


def parse_rig(text: str, path: Path | None = None) -> Rig:
    d = tomllib.loads(text)
    kind = str(_get(d, "dummy", "kind"))
    if kind not in KINDS:
        raise RigError(
            f"rig file: [dummy] kind must be one of {', '.join(map(repr, KINDS))}, got {kind!r}"
        )
    dummy = Dummy(
        kind=kind,
        r_series_ohm=_num(d, "dummy", "r_series_ohm"),
        c_farad=_num(d, "dummy", "c_farad") if kind == "rc" else 0.0,
        r_parallel_ohm=_num(d, "dummy", "r_parallel_ohm") if kind == "rc" else 0.0,
        v0_v=_num(d, "dummy", "v0_v", 0.0) if "v0_v" in d.get("dummy", {}) else 0.0,
        capacity_mah=_num(d, "dummy", "capacity_mah") if kind == "cell" else 0.0,
    )
    if kind == "cell" and dummy.capacity_mah <= 0:
        raise RigError("rig file: [dummy] capacity_mah must be > 0 for a cell")
    if dummy.r_series_ohm <= 0:
        raise RigError("rig file: [dummy] r_series_ohm must be > 0")
    fs = _get(d, "tolerance", "current_fs_pct")
    if isinstance(fs, int | float):
        fs = [fs]
    if not isinstance(fs, list) or not fs:
        raise RigError("rig file: [tolerance] current_fs_pct must be a number or a list")
    ranges_raw = d.get("board", {}).get("ranges")
    tol = Tolerance(
        current_fs_pct=tuple(float(x) for x in fs),
        current_test_fraction=_num(d, "tolerance", "current_test_fraction", 0.5),
        charge_pct=_num(d, "tolerance", "charge_pct"),
        cutoff_overshoot_mv=_num(d, "tolerance", "cutoff_overshoot_mv"),
        cv_end_current_pct=_num(d, "tolerance", "cv_end_current_pct"),
        cv_ripple_pct=_num(d, "tolerance", "cv_ripple_pct", 1.0),
        rest_dvdt_pct=_num(d, "tolerance", "rest_dvdt_pct", 50.0),
        debounce_ms=_num(d, "tolerance", "debounce_ms"),
        watchdog_recovery_s=_num(d, "tolerance", "watchdog_recovery_s", 30.0),
    )
    rig = Rig(
        name=str(d.get("rig", {}).get("name", path.stem if path else "rig")),
        notes=str(d.get("rig", {}).get("notes", "")),
        dummy=dummy,
        v_min_v=_num(d, "board", "v_min_v"),
        v_max_v=_num(d, "board", "v_max_v"),
        compliance_v=_num(d, "board", "compliance_v", 4.5),
        ranges=tuple(int(r) for r in ranges_raw) if isinstance(ranges_raw, list) else None,
        tol=tol,
        flash_enabled=bool(d.get("flash", {}).get("enabled", False)),
        path=path,
        raw=d,
    )
    if rig.v_min_v >= rig.v_max_v:
        raise RigError("rig file: [board] v_min_v must be below v_max_v")
    return rig


def load_rig(path: str | Path | None = None) -> Rig:
    p = Path(path) if path is not None else EMULATOR_RIG
    try:
        text = p.read_text()
    except OSError as e:
        raise RigError(f"cannot read rig file {p}: {e}") from e
    try:
        return parse_rig(text, p)
    except tomllib.TOMLDecodeError as e:
        raise RigError(f"rig file {p}: {e}") from e
