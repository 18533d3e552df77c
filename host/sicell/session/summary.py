"""What a run session reports: the summary at its end and the live progress while it runs."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sicell import store as store_mod
from sicell.client import Status, state_name
from sicell.cyclemodel import CycleModel
from sicell.progress import Progress, fmt_capacity, fmt_duration
from sicell.protocol import messages as M
from sicell.session.outcome import Outcome
from sicell.session.seqbook import SeqBook

END_REASONS = {
    M.RE_COMPLETE: "complete",
    M.RE_LIMIT: "limit",
    M.RE_SAFETY: "safety trip",
    M.RE_HOST: "stopped by host",
    M.RE_HOLD: "host-loss hold",
}


def end_reason(code: int) -> str:
    """EV_RUN_END's reason in words."""
    return END_REASONS.get(code, f"reason {code}")


@dataclass
class CycleCapacity:
    cycle: int
    lith_ah: float | None
    delith_ah: float | None
    delith_mah_g: float | None = None  # when the run's metadata gives the active mass
    delith_mah_cm2: float | None = None  # when it gives the electrode area

    @property
    def ce(self) -> float | None:
        if self.lith_ah and self.delith_ah is not None and self.lith_ah > 0:
            return self.delith_ah / self.lith_ah
        return None


@dataclass
class RunSummary:
    db_path: Path
    board: str
    run_id: int
    state: str
    end_reason: str | None
    samples: int
    events: int
    first_seq: int | None
    last_seq: int | None
    elapsed_s: float | None
    cycles: list[CycleCapacity] = field(default_factory=list)
    complete_cycles: int = 0
    last_cycle: int | None = None  # the cycle of the last sample (first lithiation = 1)
    reconnects: int = 0
    replays: int = 0
    lost_seqs: int = 0
    decimated: int = 0
    framing_errors: int = 0
    reset_skipped: int = 0  # seqs skipped when the board reset (never lost by the host)
    cycles_error: str | None = None  # why the cycle table could not be computed
    outcome: Outcome | None = None  # how the run ended, and the exit code (session.outcome)

    def lines(self) -> list[str]:
        missing = self.decimated + self.lost_seqs + self.reset_skipped
        out = [
            f"run {self.run_id:08x} on {self.board}: {self.state}"
            + (f" ({self.end_reason})" if self.end_reason else ""),
            f"database: {self.db_path}",
            f"stored: {self.samples} samples, {self.events} events"
            + (
                (
                    f" (seq {self.first_seq}..{self.last_seq}, each exactly once)"
                    if not missing
                    else f" (seq {self.first_seq}..{self.last_seq}, none twice, "
                    f"{missing} missing: see below)"
                )
                if self.first_seq is not None
                else ""
            ),
            f"test time: {fmt_duration(self.elapsed_s)}",
            f"link: {self.reconnects} reconnects, {self.replays} replays, "
            f"{self.framing_errors} bad frames, {self.lost_seqs} records lost",
        ]
        if self.outcome is not None and self.outcome.line:
            out.insert(1, self.outcome.line)
        if self.decimated:
            out.append(
                f"decimated by the board while no host listened: {self.decimated} records "
                "(host-loss policy; the samples after them carry the gap flag)"
            )
        if self.reset_skipped:
            out.append(
                f"skipped at board resets: {self.reset_skipped} seqs (the board numbers on "
                "above all it had sent; what it held unsent went with its memory)"
            )
        out.append(
            f"cycles: {self.complete_cycles} complete"
            + (f" (the last sample is in cycle {self.last_cycle})" if self.last_cycle else "")
        )
        if self.cycles_error:
            out.append(f"  cycle table not available: {self.cycles_error}")
        shown: list[CycleCapacity | None] = list(self.cycles)
        if len(shown) > 8:
            shown = [*self.cycles[:3], None, *self.cycles[-3:]]
        for c in shown:
            if c is None:
                out.append(f"  ... ({len(self.cycles) - 6} more cycles in the database)")
                continue
            ce = c.ce
            norm = [
                f"{v:{f}} {unit}"
                for v, f, unit in (
                    (c.delith_mah_g, ".0f", "mAh/g"),
                    (c.delith_mah_cm2, ".3f", "mAh/cm²"),
                )
                if v is not None
            ]
            out.append(
                f"  cycle {c.cycle}: lithiation {fmt_capacity(c.lith_ah)}, "
                f"delithiation {fmt_capacity(c.delith_ah)}"
                + (f" ({', '.join(norm)})" if norm else "")
                + (f", CE {ce * 100:.2f} %" if ce is not None else "")
            )
        return out


def cycle_capacities(db: Path) -> tuple[list[CycleCapacity], str | None]:
    """Complete cycles of the run, straight from the analysis module's cycle table, and why
    there are none when the table could not be computed."""
    from sicell import analysis, rundata

    try:
        table = analysis.cycle_table(rundata.load_run(db))
    except (sqlite3.Error, OSError) as e:
        return [], f"cannot read {db}: {e}"
    except Exception as e:  # broad on purpose: the run is stored, the table is a courtesy
        # A bug or odd data in the analysis must not turn a finished run into a failure:
        # the summary says the table is missing, and why.
        return [], f"{type(e).__name__}: {e}"
    cycles = [
        CycleCapacity(
            r.cycle, r.lith_mah / 1e3, r.delith_mah / 1e3, r.delith_mah_g, r.delith_mah_cm2
        )
        for r in table.rows
    ]
    return cycles, None


def summarize(
    db_path: Path,
    board: str,
    run_id: int,
    book: SeqBook[Any],
    live: LiveView,
    *,
    end_reason: str | None,
    samples: int,
    events: int,
    reconnects: int,
    framing_errors: int,
) -> RunSummary:
    """The summary of a session's run: its own counts, the database's seq range and cycles."""
    cycles, cycles_error = cycle_capacities(db_path)
    try:
        ext: store_mod.StoredExtent | None = store_mod.read_extent(db_path)
    except (sqlite3.Error, OSError):
        ext = None  # the figures below come from the session; the range is left out
    elapsed = live.elapsed_s
    if elapsed is None and ext is not None:
        elapsed = ext.last_t_s
    last = live.last_sample
    state = book.board_state
    return RunSummary(
        db_path=db_path,
        board=board,
        run_id=run_id,
        state=state_name(state) if state is not None else "unknown",
        end_reason=end_reason,
        samples=samples,
        events=events,
        first_seq=ext.first_seq if ext is not None else None,
        last_seq=ext.last_seq if ext is not None else None,
        elapsed_s=elapsed,
        cycles=cycles,
        complete_cycles=len(cycles),
        last_cycle=live.tracker.cycle if last is not None else None,
        reconnects=reconnects,
        replays=book.replays,
        lost_seqs=book.lost,
        decimated=book.decimated,
        framing_errors=framing_errors,
        reset_skipped=book.reset_skipped,
        cycles_error=cycles_error,
    )


# ---- live progress --------------------------------------------------------------------------
class HalfCycleTracker(CycleModel):
    """The cycle model (:mod:`sicell.cyclemodel`) fed SAMPLE records one at a time: the cycle
    (:attr:`cycle`) and the half-cycle capacity (the board's count) at the latest sample."""

    def add_fields(self, f: dict[str, int]) -> None:
        """One SAMPLE record's fields (wire units)."""
        self.add(f["step"], f["cycle"], f["flags"], f["q_nah"] * 1e-9)

    @property
    def capacity_ah(self) -> float:
        """:attr:`half_cycle_ah`, the name the live display reads."""
        return self.half_cycle_ah


class LiveView:
    """Builds the :class:`Progress` snapshots of one session from its stored samples."""

    def __init__(self, board: str) -> None:
        self.progress = Progress(board=board)
        self.tracker = HalfCycleTracker()
        self.last_sample: dict[str, int] | None = None
        self.offset_v = 0.0
        self._step_kinds: list[str] = []
        self._have_steps = False
        self.estimate_s: float | None = None

    @property
    def step_kinds(self) -> list[str]:
        return self._step_kinds

    @step_kinds.setter
    def step_kinds(self, kinds: list[str]) -> None:
        self._step_kinds = list(kinds)
        if not self._have_steps:  # kinds alone: a CC step's direction from its charge's sign
            self.tracker.set_steps(dict(enumerate((k, None) for k in self._step_kinds)))

    def set_steps(self, rows: Sequence[tuple[int, str, float | None, float | None, Any]]) -> None:
        """The schedule's step rows (``Schedule.step_rows()``: index, kind, set current A, ...),
        so the live half-cycles follow the set currents exactly as the stored run's do."""
        self._have_steps = True
        self._step_kinds = [str(r[1]) for r in sorted(rows, key=lambda r: r[0])]
        self.tracker.set_steps({int(r[0]): (str(r[1]), r[2]) for r in rows})

    def add_sample(self, f: dict[str, int]) -> None:
        self.tracker.add_fields(f)
        self.last_sample = f

    @property
    def elapsed_s(self) -> float | None:
        f = self.last_sample
        return None if f is None else f["t_s"] + f["t_ms"] / 1000.0

    def snapshot(
        self,
        *,
        samples: int,
        events: int,
        last_seq: int,
        state: int | None,
        status: Status | None = None,
        final: bool = False,
    ) -> Progress:
        kw: dict[str, Any] = {"samples": samples, "events": events, "last_seq": last_seq}
        if state is not None:
            kw["state"] = state_name(state)
        f = self.last_sample
        if f is not None:
            v = f["v_uv"] * 1e-6
            t = f["t_s"] + f["t_ms"] / 1000.0
            step = f["step"]
            kw.update(
                step=step,
                step_kind=self.step_kinds[step] if 0 <= step < len(self.step_kinds) else None,
                cycle=self.tracker.cycle,
                voltage_v=v,
                we_v=v + self.offset_v,
                current_a=f["i_na"] * 1e-9,
                half_cycle_ah=self.tracker.capacity_ah,
                elapsed_s=t,
                eta_s=(max(0.0, self.estimate_s - t) if self.estimate_s is not None else None),
            )
        elif status is not None:
            v = status.v_uv * 1e-6
            kw.update(
                step=status.step,
                voltage_v=v,
                we_v=v + self.offset_v,
                current_a=status.i_na * 1e-9,
                elapsed_s=status.t_s,
            )
        if final:
            kw["eta_s"] = 0.0
            kw["final"] = True
        self.progress = dataclasses.replace(self.progress, **kw)
        return self.progress
