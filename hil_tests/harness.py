"""What the HIL tests share: schedules as TOML text, running them through the real host session
into a run database, reading that database back, and the zero-loss / zero-duplicate check.

Nothing here talks to firmware objects: a test drives the system exactly as a user does (a
schedule file, ``RunSession`` or the ``sicell`` command, a port, a run database).
"""

from __future__ import annotations

import bisect
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sicell import schema
from sicell.protocol import messages as M
from sicell.schedule.tomlwrite import dump_toml
from sicell.store import EventRecord, SampleRecord, read_events, read_extent

# ---- schedules as TOML text -------------------------------------------------------------------


@dataclass
class Plan:
    """A schedule in the TOML vocabulary of ``sicell.schedule`` (potentials in cell volts)."""

    name: str
    steps: list[dict[str, Any]]
    v_min: float = -1.5
    v_max: float = 1.5
    i_max_ma: float = 10.0
    debounce_s: float = 0.1
    tick_ms: int = 20
    slow_tick_ms: int = 20
    dt_s: float = 0.5
    dv_mv: float = 5.0
    di_ua: float = 0.0
    host_loss: str = "decimate"
    cell: str = "rc dummy"

    def document(self) -> dict[str, Any]:
        """The schedule as the document ``tomllib`` reads from :meth:`toml`."""
        doc: dict[str, Any] = {
            "name": self.name,
            "vs": "cell",
            "cell": {"name": self.cell},
            "reference": {"electrode": "none", "offset_v": 0.0},
            "safety": {
                "v_min": self.v_min,
                "v_max": self.v_max,
                "i_max_ma": self.i_max_ma,
                "debounce_s": self.debounce_s,
            },
            "control": {
                "tick_ms": self.tick_ms,
                "slow_tick_ms": self.slow_tick_ms,
                "host_loss": self.host_loss,
            },
            "recording": {"dt_s": self.dt_s, "dv_mv": self.dv_mv, "di_ua": self.di_ua},
        }
        if self.steps:
            doc["step"] = [dict(st) for st in self.steps]
        return doc

    def toml(self) -> str:
        return dump_toml(self.document())

    def schedule(self) -> Any:
        from sicell.schedule import parse_schedule

        return parse_schedule(self.toml(), source=f"<hil:{self.name}>")


# ---- the run database, read back --------------------------------------------------------------


class Sample(SampleRecord):
    """A stored sample (``sicell.store.SampleRecord``) with the short names the HIL tests use:
    ``v`` (V), ``i`` (A), ``q_ah`` (Ah)."""

    @property
    def v(self) -> float:
        return self.voltage_v

    @property
    def i(self) -> float:
        return self.current_a

    @property
    def q_ah(self) -> float:
        return self.charge_ah


@dataclass
class RunDb:
    path: Path
    samples: list[Sample]
    events: list[EventRecord]
    meta: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path) -> RunDb:
        p = Path(path)
        with closing(schema.connect_readonly(p)) as con:
            samples = [
                Sample(*row)
                for row in con.execute(
                    "SELECT seq, t_s, voltage_v, current_a, charge_ah, step, cycle, range, flags "
                    "FROM samples ORDER BY seq"
                )
            ]
            events = read_events(con)
            meta = schema.read_meta(con)
        return cls(p, samples, events, meta)

    def events_of(self, code: int) -> list[EventRecord]:
        return [e for e in self.events if e.code == code]

    def step_samples(self, step: int) -> list[Sample]:
        return [s for s in self.samples if s.step == step]

    def step_end(self, step: int) -> EventRecord | None:
        for e in self.events:
            if e.code == M.EV_STEP_END and e.step == step:
                return e
        return None

    @property
    def run_end(self) -> EventRecord | None:
        ends = self.events_of(M.EV_RUN_END)
        return ends[-1] if ends else None


def count_rows(path: str | Path) -> int:
    """Samples + events stored so far (0 when the database does not exist yet)."""
    p = Path(path)
    if not p.exists():
        return 0
    try:
        ext = read_extent(p)
    except sqlite3.Error:  # created but not yet laid out by the session
        return 0
    return ext.samples + ext.events


# ---- zero lost, zero duplicated -------------------------------------------------------------


@dataclass
class SeqReport:
    """Every seq of the run accounted for: stored once, or dropped by the decimate policy."""

    first: int
    last: int
    stored: int
    in_both_tables: list[int]
    missing: list[int]
    decimated: int  # records the board says it decimated (EV_DECIMATED)
    gap_flags: int  # samples carrying F_GAP
    holes: list[tuple[int, int]]  # runs of missing seqs
    holes_without_gap_flag: list[tuple[int, int]]
    board_last: int | None
    reset_skips: list[tuple[int, int]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        """Missing seqs the decimate policy does not account for."""
        return max(0, len(self.missing) - self.decimated)

    def text(self) -> str:
        skipped = sum(b - a + 1 for a, b in self.reset_skips)
        return (
            f"seq {self.first}..{self.last}: {self.stored} stored, {len(self.missing)} missing "
            f"({self.decimated} decimated by policy, {len(self.holes)} holes, "
            f"{len(self.holes_without_gap_flag)} without F_GAP), "
            f"{len(self.in_both_tables)} in both tables, board last seq {self.board_last}"
            + (f", {skipped} seqs skipped at board resets {self.reset_skips}" if skipped else "")
        )


def _runs(xs: Iterable[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for x in xs:
        if out and out[-1][1] == x - 1:
            out[-1] = (out[-1][0], x)
        else:
            out.append((x, x))
    return out


def seq_report(db: RunDb, board_last: int | None = None) -> SeqReport:
    """Account for every seq from the run's EV_RUN_START to the last the board emitted.

    ``board_last`` is STATUS.last_seq read from the board after the run (None: use the highest
    stored seq). EV_DECIMATED carries the number of records dropped so far, so the largest value
    is the run's total.
    """
    s_seqs = [s.seq for s in db.samples]
    e_seqs = [e.seq for e in db.events]
    starts = db.events_of(M.EV_RUN_START)
    all_seqs = sorted(set(s_seqs) | set(e_seqs))
    first = starts[0].seq if starts else (all_seqs[0] if all_seqs else 0)
    last = max(all_seqs) if all_seqs else first
    notes = []
    if board_last is not None and board_last > last:
        notes.append(f"board emitted up to seq {board_last}, the database stops at {last}")
        last = board_last
    both = sorted(set(s_seqs) & set(e_seqs))
    present = set(all_seqs)
    # A board reset loses its RAM; the firmware resumes numbering past every seq it may have
    # used (never reusing one), so the seqs just before EV_INTERRUPTED are a skip, not a loss.
    # Records the board still held unsent at the reset are gone with its RAM and fall in here.
    resets = {e.seq for e in db.events_of(M.EV_INTERRUPTED)}
    reset_skips = [
        (a, b)
        for a, b in _runs(s for s in range(first, last + 1) if s not in present)
        if b + 1 in resets
    ]
    skipped = {s for a, b in reset_skips for s in range(a, b + 1)}
    missing = [s for s in range(first, last + 1) if s not in present and s not in skipped]
    dec_values = [e.value for e in db.events_of(M.EV_DECIMATED)]
    decimated = max(dec_values) if dec_values else 0
    by_seq = {s.seq: s for s in db.samples}
    holes = _runs(missing)
    no_flag = []
    sample_seqs = sorted(by_seq)
    for a, b in holes:
        # the first sample after the hole (an event may come between) must carry F_GAP
        k = bisect.bisect_right(sample_seqs, b)
        if k >= len(sample_seqs) or not (by_seq[sample_seqs[k]].flags & M.F_GAP):
            no_flag.append((a, b))
    return SeqReport(
        first=first,
        last=last,
        stored=len(present),
        in_both_tables=both,
        missing=missing,
        decimated=decimated,
        gap_flags=sum(1 for s in db.samples if s.flags & M.F_GAP),
        holes=holes,
        holes_without_gap_flag=no_flag,
        board_last=board_last,
        reset_skips=reset_skips,
        notes=notes,
    )


def assert_no_loss(rep: SeqReport, *, decimate_allowed: bool = False) -> None:
    """ZERO lost, ZERO duplicated; holes only where the decimate policy dropped by design."""
    assert not rep.in_both_tables, (
        f"seqs stored twice (sample and event): {rep.in_both_tables[:10]}"
    )
    if not decimate_allowed:
        assert not rep.missing, f"lost records: {rep.text()}; first holes {rep.holes[:5]}"
        return
    # A record the host stored but had not yet acknowledged when the link went is still held
    # by the board and may be decimated too: then it is counted by EV_DECIMATED and present.
    assert len(rep.missing) <= rep.decimated, (
        f"more seqs missing than EV_DECIMATED accounts for: {rep.text()}; "
        f"first holes {rep.holes[:5]}"
    )
    assert not rep.holes_without_gap_flag, (
        f"decimated holes without F_GAP on the next sample: {rep.holes_without_gap_flag[:5]}"
    )


# ---- running a schedule through the real session ----------------------------------------------


@dataclass
class RunOutcome:
    db: RunDb
    summary: Any  # sicell.session.RunSummary
    elapsed_s: float
    error: BaseException | None = None
    plan: Plan | None = None  # what ran: the plan with the ticks fit_ticks gave it


def fit_ticks(port: str, plan: Plan) -> Plan:
    """``plan`` with its ticks raised to the shortest the board on ``port`` accepts (twice the
    control tick cost it reports, sicell.schedule.model.min_tick_ms): a test never asks a board
    for ticks it would overrun, and a faster board keeps the plan's own."""
    from dataclasses import replace

    from sicell.client import Board
    from sicell.schedule.model import BoardLimits, min_tick_ms

    with Board.open(port, hello_timeout=20.0) as b:
        assert b.info is not None
        cost = BoardLimits.from_info(b.info.as_dict()).tick_cost_us
    if cost is None:
        return plan
    least = min_tick_ms(cost)
    return replace(
        plan, tick_ms=max(plan.tick_ms, least), slow_tick_ms=max(plan.slow_tick_ms, least)
    )


class BackgroundRun:
    """``RunSession.run()`` in a thread, so a test can inject faults while it streams."""

    def __init__(
        self,
        port: str,
        plan: Plan,
        db_path: Path,
        *,
        options: Any = None,
    ) -> None:
        from sicell.session import RunSession, SessionOptions

        opts = options or SessionOptions(
            batch_interval_s=0.1, status_interval_s=0.5, reconnect_max_s=1.0
        )
        self.db_path = db_path
        self.plan = plan = fit_ticks(port, plan)
        self.session = RunSession.new(plan.schedule(), port, db_path, options=opts)
        self.summary: Any = None
        self.error: BaseException | None = None
        self.t0 = time.monotonic()
        self._thread = threading.Thread(target=self._work, name="hil-run", daemon=True)

    def _work(self) -> None:
        try:
            self.summary = self.session.run()
        except BaseException as e:
            self.error = e

    def start(self) -> BackgroundRun:
        self.t0 = time.monotonic()
        self._thread.start()
        return self

    def alive(self) -> bool:
        return self._thread.is_alive()

    def wait_started(self, timeout: float) -> None:
        """Wait until the session has seen this run's EV_RUN_START (the board is running)."""
        end = time.monotonic() + timeout
        while self.session.base is None:
            if not self.alive():
                raise AssertionError(f"session ended before the run started: {self.error!r}")
            if time.monotonic() > end:
                raise AssertionError(f"run not started within {timeout:g} s")
            time.sleep(0.005)

    def wait_rows(self, n: int, timeout: float) -> int:
        """Wait until ``n`` records are stored (or the run ends); return how many are."""
        end = time.monotonic() + timeout
        while True:
            got = count_rows(self.db_path)
            if got >= n or not self.alive():
                return got
            if time.monotonic() > end:
                raise AssertionError(
                    f"only {got} of {n} records stored after {timeout:g} s "
                    f"(session error: {self.error!r})"
                )
            time.sleep(0.05)

    def join(self, timeout: float) -> RunOutcome:
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.session.request_stop()
            self._thread.join(30)
            raise AssertionError(f"run did not finish within {timeout:g} s")
        if self.error is not None:
            raise self.error
        return RunOutcome(
            RunDb.load(self.db_path),
            self.summary,
            time.monotonic() - self.t0,
            self.error,
            self.plan,
        )


def run_plan(
    port: str,
    plan: Plan,
    db_path: Path,
    *,
    timeout: float = 120.0,
    during: Callable[[BackgroundRun], None] | None = None,
    options: Any = None,
) -> RunOutcome:
    """Run ``plan`` on ``port`` to its end through ``RunSession``; return the stored run."""
    bg = BackgroundRun(port, plan, db_path, options=options).start()
    if during is not None:
        try:
            during(bg)
        except BaseException:
            bg.session.request_stop()
            bg._thread.join(30)
            raise
    return bg.join(timeout)


def board_last_seq(port: str) -> tuple[int, int]:
    """(STATUS.last_seq, STATUS.state) of the board on ``port`` after a run."""
    from sicell.client import Board

    with Board.open(port) as b:
        st = b.status()
        return st.last_seq, st.state


# ---- calibration ------------------------------------------------------------------------------


def run_calibration(
    port: str, rig: Any, ranges: Iterable[int] | None = None, log: Callable[[str], None] = print
) -> list[Any]:
    """Run the project's calibration routine (``sicell calibrate --resistor``, i.e.
    ``sicell.session.two_point_calibration``) on every range against the rig's dummy at DC,
    apply and save the result; return the new entries.

    The dummy's capacitor must settle at each point, so the settle time is 8 time constants
    (the routine's default of 5 s leaves e^-5 = 0.7 % of the step on a 1 s dummy).
    """
    from sicell.client import Board
    from sicell.session import two_point_calibration

    d = rig.dummy
    settle = max(5.0, 8.0 * d.tau_s)
    out: list[Any] = []
    with Board.open(port, hello_timeout=20.0) as b:
        assert b.info is not None
        todo = list(ranges) if ranges is not None else list(range(b.info.n_ranges))
        for r in todo:
            res = two_point_calibration(
                b,
                r,
                d.r_dc_ohm,
                fraction=rig.tol.current_test_fraction,
                settle_s=settle,
                measure_s=3.0,
                timeout_s=30.0,
                log=log,
            )
            for line in res.lines():
                log(line)
            for e in res.entries:
                b.cal_set(e)
            out += list(res.entries)
        b.cal_save()
    return out


# ---- small numerics --------------------------------------------------------------------------


def trapz(t: list[float], y: list[float]) -> float:
    return sum((t[k + 1] - t[k]) * (y[k + 1] + y[k]) / 2 for k in range(len(t) - 1))


def mean(xs: Iterable[float]) -> float:
    v = list(xs)
    return sum(v) / len(v) if v else float("nan")


# ---- how long to wait for a board's answer --------------------------------------------------
LINK_FLOOR_BPS = 2000  # bytes/s a board reads at worst (an RP2040 reading one byte per poll
# managed ~5.5 kB/s; a third of that), so a burst of n bytes is read within n / this


def reply_wait_s(board: Any, sent_bytes: int = 0) -> float:
    """Bound on the wait for the board's answer to ``sent_bytes`` just written: the client's
    request timeout, the time the board needs to read the bytes, and a few of its ticks
    (``INFO.tick_ms``). A bound, not a sleep: callers return as soon as the answer is in."""
    tick_s = (board.info.tick_ms if board.info is not None else 100) / 1000.0
    return float(board.timeout) + sent_bytes / LINK_FLOOR_BPS + 10 * tick_s
