"""bench/paper.py's tables: the paper's figure, ours and the model's side by side, per
protocol, the run speeds, and the notes on what a shortened run cannot be compared with."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import paper_targets as T
from paper_analysis import Metrics, RateResult
from paper_model import RateModel
from paper_runs import JobResult
from paper_schedules import is_in
from sicell.emulator.cellmodels import film_params


def _f(x: Any, fmt: str) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return format(float(x), fmt)


def format_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()
) -> str:
    """A plain-text table with ' | ' between columns; the ``right`` columns right-aligned."""
    w = [max(len(str(r[k])) for r in [header, *rows]) for k in range(len(header))]

    def line(r: Sequence[str]) -> str:
        out = [c.rjust(w[k]) if k in right else c.ljust(w[k]) for k, c in enumerate(r)]
        return " | ".join(out).rstrip()

    sep = "-+-".join("-" * x for x in w)
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


@dataclass(frozen=True)
class Row:
    label: str
    metric: str
    fmt: str
    porous_only: bool = False


def cycling_rows(m: Metrics) -> list[Row]:
    """The cycling table's quantities, labelled with the cycles the run's figures are for."""
    first = m.get("first_cycle", 1)
    ref = m.get("reference_cycle", T.CYCLING.reference_cycle)
    last = m.get("last_cycle", "N")
    ce0, ce1 = m.get("mean_ce_span", (ref, last))
    s0, s1 = m.get("peak_span", (ref, last))
    kinds = ("lith", "delith")

    def capacity(which: str, cycle: Any) -> list[Row]:
        return [
            Row(f"cycle {cycle} delithiation, mAh/{u}", f"{which}_delith_mah_{k}", fmt)
            for u, k, fmt in (("g", "g", ".0f"), ("cm²", "cm2", ".3f"))
        ]

    return [
        *capacity("first", first),
        Row(f"cycle {first} CE, %", "first_ce_pct", ".2f"),
        *capacity("last", last),
        Row(f"retention cycle {last} vs {ref}, %", "retention_pct", ".2f"),
        Row(f"mean CE cycles {ce0}–{ce1}, %", "mean_ce_pct", ".3f"),
        Row(f"fade rate cycles {ref}–{last}, %/cycle", "fade_pct_per_cycle", ".4f"),
        Row(f"cycle {last}, mAh/cm³ (pristine film)", "last_delith_mah_cm3", ".0f", True),
        Row(f"cycle {last}, mAh/cm³ (lithiated)", "last_delith_mah_cm3_lithiated", ".0f", True),
        *(Row(f"dQ/dV {k}. peak drift {s0}→{s1}, mV", f"peak_{k}_drift_mv", "+.1f") for k in kinds),
        Row(f"dQ/dV peak separation growth {s0}→{s1}, mV", "peak_separation_growth_mv", "+.1f"),
        *(
            Row(f"R (rest→{k}.) growth {ref}→{last}, Ω·cm²", f"r_{k}_growth_ohm_cm2", "+.1f")
            for k in kinds
        ),
    ]


def cycling_table(
    results: Mapping[str, Metrics], models: Mapping[str, Metrics], n_cycles: int
) -> str:
    header = ["film", "quantity", "paper", "ours", "model", "verdict", "note"]
    rows: list[list[str]] = []
    for film, m in results.items():
        if "error" in m:
            rows.append([film, "run failed", "", "–", "", "", str(m["error"])])
            continue
        done = int(m.get("cycles", 0))
        porous = bool(film_params(film)["porous"])
        mo = models.get(film, {})
        for r in cycling_rows(m):
            if r.porous_only and not porous:
                continue
            ours = m.get(r.metric)
            notes: list[str] = []
            if r.metric.endswith("_growth_ohm_cm2"):  # R at (reference, last) beside its growth
                r_ends = m.get(r.metric.replace("_growth", ""))
                if r_ends is not None:
                    notes.append(f"{r_ends[0]:.0f} → {r_ends[1]:.0f} Ω·cm²")
            if r.metric == "peak_separation_growth_mv" and "peaks" in m:
                l0, d0, l1, d1 = m["peaks"]
                notes.append(
                    f"lith/delith peaks {_f(l0, '.3f')}/{_f(d0, '.3f')} → "
                    f"{_f(l1, '.3f')}/{_f(d1, '.3f')} V vs Li"
                )
            if r.metric == "r_lith_growth_ohm_cm2":
                notes.append("model: R_grow only")
            tg = T.cycling_targets(film, r.metric)
            paper = "; ".join(t.text for t in tg)
            verdicts = []
            for t in tg:
                if t.at_cycle is not None and done < t.at_cycle:
                    verdicts.append(f"n/c ({done}<{t.at_cycle} cyc)")
                else:
                    verdicts.append(T.verdict(t, ours))
                if t.note:
                    notes.append(t.note)
            rows.append(
                [
                    film,
                    r.label,
                    paper,
                    _f(ours, r.fmt),
                    _f(mo.get(r.metric), r.fmt),
                    "; ".join(verdicts),
                    "; ".join(notes),
                ]
            )
    title = f"CYCLING (0.1 mA/cm², 0.01–1.2 V vs Li, {n_cycles} cycles asked)"
    return title + "\n" + format_table(header, rows, right=(2, 3, 4))


def rate_table(
    results: Mapping[str, RateResult | str],
    models: Mapping[str, RateModel],
    rates: Sequence[float],
) -> str:
    header = [
        "film",
        "mA/cm²",
        "paper",
        "ours mAh/g",
        "ours mAh/cm²",
        "model mAh/g",
        "model mAh/cm²",
        "verdict",
        "note",
    ]
    rows: list[list[str]] = []
    for film, res in results.items():
        if isinstance(res, str):
            rows.append([film, "run failed", "", "–", "–", "", "", res, ""])
            continue
        mo = models.get(film)
        for j in rates:
            g, a = res.get(j, (None, None))
            mg, ma = mo.schedule.get(j, (None, None)) if mo is not None else (None, None)
            note = ""
            cut = mo.cutoff_v.get(j) if mo is not None else None
            if mo is not None and cut is not None and cut != T.CYCLING.v_high_vs_li:
                pg, pa = mo.paper_cutoff.get(j, (None, None))
                note = (
                    f"cutoff {cut:g} V vs Li (board window); model at the paper's "
                    f"{T.CYCLING.v_high_vs_li:g} V: {_f(pg, '.0f')} mAh/g, {_f(pa, '.3f')} mAh/cm²"
                )
            tg_g = T.rate_targets(film, "rate_mah_g", j)
            tg_a = T.rate_targets(film, "rate_mah_cm2", j)
            paper = "; ".join([f"{t.text} {t.unit}" for t in tg_g + tg_a])
            verdicts = [T.verdict(t, g) for t in tg_g] + [T.verdict(t, a) for t in tg_a]
            rows.append(
                [
                    film,
                    f"{j:g}",
                    paper,
                    _f(g, ".0f"),
                    _f(a, ".3f"),
                    _f(mg, ".0f"),
                    _f(ma, ".3f"),
                    "; ".join(verdicts),
                    note,
                ]
            )
    title = (
        "RATE (CC–CV lithiation 0.1 mA/cm² to 0.01 V vs Li, held to 1 µA/cm²; delithiation "
        "to IR-free cutoffs, 150 Ω·cm²)"
    )
    return title + "\n" + format_table(header, rows, right=(1, 3, 4, 5, 6))


def speed_table(results: Sequence[JobResult]) -> str:
    header = [
        "film",
        "protocol",
        "state",
        "cycles",
        "test time / h",
        "wall / s",
        "sim-s/wall-s",
        "samples",
    ]
    rows = []
    for r in results:
        s = r.summary
        rows.append(
            [
                r.job.film,
                r.job.protocol,
                (s.state + (f" ({s.end_reason})" if s.end_reason else ""))
                if s
                else (f"error: {r.error}" if r.error else "–"),
                str(s.complete_cycles) if s else "–",
                _f(None if r.sim_s is None else r.sim_s / 3600.0, ".1f"),
                _f(r.wall_s, ".0f"),
                _f(r.speed, ".0f"),
                str(s.samples) if s else "–",
            ]
        )
    return "SPEED (wall time from port open to the last record stored)\n" + format_table(
        header, rows, right=(3, 4, 5, 6, 7)
    )


def shortened_notes(
    n_cycles: int, rest_min: float | None, rates: Sequence[float] | None, rate: bool
) -> list[str]:
    out: list[str] = []
    full = T.CYCLING.cycles
    if 0 < n_cycles < full:
        nc = sorted(
            {
                f"{t.text} {t.unit} ({t.metric})"
                for t in T.CYCLING_TARGETS
                if t.at_cycle is not None and t.at_cycle > n_cycles
            }
        )
        out.append(
            f"SHORTENED RUN: {n_cycles} of the paper's {full} cycles. Not comparable with the "
            f"paper (marked n/c): its after-{full}-cycle figures: " + ", ".join(nc) + ". "
            "Retention, fade and mean CE here are over the cycles run; comparable: the "
            "first-cycle capacities."
        )
    if rest_min is not None and rest_min != 60.0:
        out.append(
            f"SHORTENED RESTS: {rest_min:g} min instead of the paper's 1 h (the relaxation "
            "before each half-cycle is shorter; capacities shift slightly)."
        )
    if rate and rates is not None:
        left = [j for j in T.RATE.discharge_ma_cm2 if not is_in(j, rates)]
        if left:
            out.append(
                "SHORTENED RATE TEST: delithiation at "
                + ", ".join(f"{j:g}" for j in rates)
                + " mA/cm² only (the paper also has "
                + ", ".join(f"{j:g}" for j in left)
                + "); each rate's lithiation follows the previous rate's delithiation."
            )
    return out
