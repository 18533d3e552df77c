"""What a run session reports: the summary at its end and the live progress while it runs."""

from __future__ import annotations

import dataclasses
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sicell import store as store_mod
from sicell.client import Status, state_name
from sicell.progress import Progress, fmt_capacity, fmt_duration
from sicell.protocol import messages as M
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
    board_cycle: int | None = None  # the board's cycle counter at the last sample
    reconnects: int = 0
    replays: int = 0
    lost_seqs: int = 0
    decimated: int = 0
    framing_errors: int = 0
    reset_skipped: int = 0  # seqs skipped when the board reset (never lost by the host)
    cycles_error: str | None = None  # why the cycle table could not be computed

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
            + (f" (board cycle counter at {self.board_cycle})" if self.board_cycle else "")
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
        board_cycle=last["cycle"] if last is not None else None,
        reconnects=reconnects,
        replays=book.replays,
        lost_seqs=book.lost,
        decimated=book.decimated,
        framing_errors=framing_errors,
        reset_skipped=book.reset_skipped,
        cycles_error=cycles_error,
    )


# ---- live progress --------------------------------------------------------------------------
class HalfCycleTracker:
    """Capacity of the half-cycle in progress from SAMPLE records (charge resets per step)."""

    def __init__(self, rest_na: int = 1) -> None:
        self.rest_na = rest_na
        self.sign = 0
        self.done_nah = 0
        self.step_key: tuple[int, int] | None = None
        self.step_q = 0
        self.step_sign = 0

    def add(self, f: dict[str, int]) -> None:
        key = (f["step"], f["cycle"])
        first = bool(f["flags"] & M.F_STEP_FIRST)
        if key != self.step_key or first:
            if self.step_key is not None and self.step_sign == self.sign:
                self.done_nah += abs(self.step_q)
            self.step_key = key
            self.step_q = 0
            self.step_sign = 0
        i = f["i_na"]
        if abs(i) > self.rest_na:
            s = 1 if i > 0 else -1
            if s != self.sign:
                self.sign = s
                self.done_nah = 0
            self.step_sign = s
        self.step_q = f["q_nah"]

    @property
    def capacity_ah(self) -> float:
        q = self.done_nah + (abs(self.step_q) if self.step_sign == self.sign else 0)
        return q * 1e-9


class LiveView:
    """Builds the :class:`Progress` snapshots of one session from its stored samples."""

    def __init__(self, board: str) -> None:
        self.progress = Progress(board=board)
        self.tracker = HalfCycleTracker()
        self.last_sample: dict[str, int] | None = None
        self.offset_v = 0.0
        self.step_kinds: list[str] = []
        self.estimate_s: float | None = None

    def add_sample(self, f: dict[str, int]) -> None:
        self.tracker.add(f)
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
                cycle=f["cycle"],
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
                cycle=status.cycle,
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
