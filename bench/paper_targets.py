"""The paper's numbers as data (Sakabe et al., porous amorphous Si films in 80Li2S·20P2S5).

Every figure here is quoted from DESIGN.md §6 ("Reference numbers"); ``source`` repeats the
bullet it comes from, so a reader can check each one against the design. ``bench/paper.py``
prints them beside what the emulated films give through the whole system.

A target says which films it applies to, what it compares (``metric``, one of the keys that
``bench/paper.py`` computes), how (``relation``: ``"~"`` approximately, within ``rel_tol``;
``">"`` / ``"<"`` a bound; ``"qual"`` a qualitative statement checked by sign) and after how
many cycles the paper states it (``at_cycle``; a run with fewer cycles is not comparable).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Relation = Literal["~", ">", "<", "qual"]

FILMS = ("thin-porous", "thin-dense", "thick-porous", "thick-dense")
THIN = ("thin-porous", "thin-dense")
THICK = ("thick-porous", "thick-dense")
POROUS = ("thin-porous", "thick-porous")
DENSE = ("thin-dense", "thick-dense")


# ---- the protocols (DESIGN §6, first and rate bullets) ----------------------------------------
@dataclass(frozen=True)
class CyclingProtocol:
    current_density_ma_cm2: float = 0.1
    rest_h: float = 1.0
    v_low_vs_li: float = 0.01
    v_high_vs_li: float = 1.2
    cycles: int = 100
    reference_cycle: int = 10  # retention and fade are quoted against the 10th cycle
    source: str = "Cycling: 0.1 mA/cm², 1 h rest, 0.01–1.2 V vs Li+/Li, 100 cycles."


@dataclass(frozen=True)
class RateProtocol:
    charge_ma_cm2: float = 0.1
    hold_v_vs_li: float = 0.01
    hold_until_ua_cm2: float = 1.0
    discharge_ma_cm2: tuple[float, ...] = (0.1, 1.0, 2.0, 5.0, 10.0)
    ir_ohm_cm2: float = 150.0
    source: str = (
        "Rate test: CC–CV charge at 0.1 mA/cm² to 0.01 V, hold until 1 µA/cm²; discharge at "
        "0.1, 1, 2, 5, 10 mA/cm²; curves shown after subtracting I·R of the electrolyte layer "
        "(~150 Ω·cm²)."
    )


CYCLING = CyclingProtocol()
RATE = RateProtocol()


# ---- the films (DESIGN §6, film bullets) ------------------------------------------------------
@dataclass(frozen=True)
class Film:
    name: str
    loading_mg_cm2: float
    thickness_um: float
    nominal_mah_cm2: float
    porous: bool
    source: str


FILM_SPECS = {
    "thin-dense": Film(
        "thin-dense",
        0.22,
        0.93,
        0.6,
        False,
        "Thin films (~0.6 mAh/cm²): non-porous 0.22 mg/cm², 0.93 µm",
    ),
    "thin-porous": Film(
        "thin-porous",
        0.21,
        1.55,
        0.6,
        True,
        "Thin films (~0.6 mAh/cm²): porous 0.21 mg/cm², 1.55 µm",
    ),
    "thick-dense": Film(
        "thick-dense",
        0.70,
        3.00,
        2.0,
        False,
        "Thick films (~2 mAh/cm²): non-porous 0.70 mg/cm², 3.00 µm",
    ),
    "thick-porous": Film(
        "thick-porous",
        0.74,
        4.73,
        2.0,
        True,
        "Thick films (~2 mAh/cm²): porous 0.74 mg/cm², 4.73 µm",
    ),
}


# ---- cycling targets --------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    metric: str
    films: tuple[str, ...]
    relation: Relation
    value: float | None
    unit: str
    text: str  # how the paper's figure is shown in the table
    source: str  # the DESIGN §6 wording it comes from
    at_cycle: int | None = None  # the cycle count the paper quotes it after (None: any run)
    rel_tol: float = 0.2  # for "~"
    current_density_ma_cm2: float | None = None  # rate targets: the discharge rate
    note: str = ""

    def applies(self, film: str) -> bool:
        return film in self.films


_POROUS_SRC = (
    "Porous: ~3000 mAh/g, >93 % of 10th-cycle capacity after 100 cycles, CE > 99.8 %, "
    "fade 0.06 %/cycle; 2962 mAh/g and 2.19 mAh/cm² after 100 cycles; 1900 mAh/cm³."
)
_DENSE_SRC = (
    "Non-porous: 1 µm film keeps ~82 %, 3 µm film ~47 % of 10th-cycle capacity after 100 "
    "cycles; dQ/dV peaks drift apart as resistance grows."
)

CYCLING_TARGETS: tuple[Target, ...] = (
    Target(
        "first_delith_mah_g",
        POROUS,
        "~",
        3000.0,
        "mAh/g",
        "~3000",
        _POROUS_SRC,
        note="the paper's ~3000 mAh/g is the porous films' capacity, not tied to one cycle",
    ),
    Target(
        "first_delith_mah_cm2",
        THIN,
        "~",
        0.6,
        "mAh/cm²",
        "~0.6",
        FILM_SPECS["thin-porous"].source,
        note="nominal areal capacity of the thin films",
    ),
    Target(
        "first_delith_mah_cm2",
        THICK,
        "~",
        2.0,
        "mAh/cm²",
        "~2",
        FILM_SPECS["thick-porous"].source,
        note="nominal areal capacity of the thick films",
    ),
    Target(
        "last_delith_mah_g",
        ("thick-porous",),
        "~",
        2962.0,
        "mAh/g",
        "2962",
        _POROUS_SRC,
        at_cycle=100,
        rel_tol=0.05,
        note="2.19 mAh/cm² / 0.74 mg/cm² = 2960 mAh/g: the thick porous film",
    ),
    Target(
        "last_delith_mah_cm2",
        ("thick-porous",),
        "~",
        2.19,
        "mAh/cm²",
        "2.19",
        _POROUS_SRC,
        at_cycle=100,
        rel_tol=0.05,
    ),
    Target(
        "retention_pct",
        POROUS,
        ">",
        93.0,
        "%",
        ">93",
        _POROUS_SRC,
        at_cycle=100,
    ),
    Target(
        "retention_pct",
        ("thin-dense",),
        "~",
        82.0,
        "%",
        "~82",
        _DENSE_SRC,
        at_cycle=100,
        rel_tol=0.05,
    ),
    Target(
        "retention_pct",
        ("thick-dense",),
        "~",
        47.0,
        "%",
        "~47",
        _DENSE_SRC,
        at_cycle=100,
        rel_tol=0.1,
    ),
    Target(
        "mean_ce_pct",
        POROUS,
        ">",
        99.8,
        "%",
        ">99.8",
        _POROUS_SRC,
        at_cycle=100,
    ),
    Target(
        "fade_pct_per_cycle",
        POROUS,
        "~",
        0.06,
        "%/cycle",
        "0.06",
        _POROUS_SRC,
        at_cycle=100,
        rel_tol=0.25,
        note="least-squares slope of the retention",
    ),
    Target(
        "last_delith_mah_cm3_lithiated",
        POROUS,
        "~",
        1900.0,
        "mAh/cm³",
        "1900",
        _POROUS_SRC,
        at_cycle=100,
        rel_tol=0.1,
        note=(
            "basis assumed: the lithiated film (dense-Si volume × (1 + 3·q/3579), as in "
            "cells.py); on the pristine film volume the same capacity is ~4000+ mAh/cm³"
        ),
    ),
    Target(
        "peak_separation_growth_mv",
        DENSE,
        "qual",
        0.0,
        "mV",
        "drift apart (>0)",
        _DENSE_SRC,
        at_cycle=100,
    ),
    Target(
        "r_lith_growth_ohm_cm2",
        DENSE,
        "qual",
        0.0,
        "Ω·cm²",
        "grows (>0)",
        _DENSE_SRC,
        at_cycle=100,
    ),
)


# ---- rate targets -----------------------------------------------------------------------------
_RATE_SRC = (
    "Thin films keep >3000 mAh/g at 10 mA/cm²; thick films >2 mAh/cm² at 2 mA/cm² and "
    ">1700 mAh/g, 1.2 mAh/cm² at 10 mA/cm²."
)

RATE_TARGETS: tuple[Target, ...] = (
    Target(
        "rate_mah_g",
        THIN,
        ">",
        3000.0,
        "mAh/g",
        ">3000",
        _RATE_SRC,
        current_density_ma_cm2=10.0,
    ),
    Target(
        "rate_mah_cm2",
        THICK,
        ">",
        2.0,
        "mAh/cm²",
        ">2",
        _RATE_SRC,
        current_density_ma_cm2=2.0,
    ),
    Target(
        "rate_mah_g",
        THICK,
        ">",
        1700.0,
        "mAh/g",
        ">1700",
        _RATE_SRC,
        current_density_ma_cm2=10.0,
    ),
    Target(
        "rate_mah_cm2",
        THICK,
        "~",
        1.2,
        "mAh/cm²",
        "~1.2",
        _RATE_SRC,
        current_density_ma_cm2=10.0,
        rel_tol=0.1,
    ),
)


def cycling_targets(film: str, metric: str) -> list[Target]:
    return [t for t in CYCLING_TARGETS if t.metric == metric and t.applies(film)]


def rate_targets(film: str, metric: str, j_ma_cm2: float) -> list[Target]:
    return [
        t
        for t in RATE_TARGETS
        if t.metric == metric
        and t.applies(film)
        and t.current_density_ma_cm2 is not None
        and abs(t.current_density_ma_cm2 - j_ma_cm2) <= 0.05 * j_ma_cm2
    ]


def verdict(t: Target, ours: float | None) -> str:
    """Whether ours meets the paper: "meets", "misses" or "–" (nothing to compare)."""
    if ours is None or t.value is None:
        return "–"
    if t.relation == "~":
        ok = abs(ours - t.value) <= t.rel_tol * abs(t.value)
    elif t.relation == ">" or t.relation == "qual":
        ok = ours > t.value
    else:
        ok = ours < t.value
    return "meets" if ok else "misses"
