"""The cycle model (DESIGN.md §5): which samples form a half-cycle, its cycle number and its
capacity. The one place this rule lives; the live display, the run summary, the export and the
analysis all use it. Pure Python (no numpy), cheap enough to be fed one sample at a time.

* A **step run** is one execution of a schedule step: it starts at a sample flagged
  ``F_STEP_FIRST`` (or where the step index or the board's cycle counter changes) and lasts
  until the next one. A board reset ends a step run; the resumed step is a new one.
* A step's **direction** is the sign of its set current (CC, and CC–CV with its CC current:
  + lithiation, − delithiation). A CV step (or a step missing from the steps table) takes the
  sign of the charge the board counted over it; rest, OCV and loop steps have no direction.
* A **half-cycle** is a sequence of step runs of one direction; steps without a direction in
  between neither end nor join it. A new half-cycle starts when the direction changes, or when
  the board's cycle counter moved on between two steps whose set currents have the same
  direction (a schedule's ``new_cycle``).
* **Cycle** n (from 1) is the n-th lithiation half-cycle and what follows it up to the next
  lithiation; whatever comes before the first lithiation is cycle 0. The board's own counter
  (0-based, the ``cycle`` of a SAMPLE) only tells where a schedule forced a new cycle.
* A half-cycle's **capacity** is the sum over its step runs of the board's coulomb count (a
  SAMPLE's ``q``: the step's charge since the step started, counted exactly on the board),
  times the direction. It accumulates from 0 at the half-cycle start and holds its value through
  the steps without a direction that follow. Nothing here integrates samples: a pause, a hold or
  a trip (the relay open, the board's count frozen) cannot change a capacity.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from sicell.protocol.messages import F_STEP_FIRST, F_STEP_LAST

__all__ = [
    "DELITH",
    "LITH",
    "CycleModel",
    "HalfCycleSpan",
    "Kind",
    "StepRun",
    "StepTable",
    "kind_of",
    "step_direction",
]

Kind = Literal["lith", "delith"]
LITH: Kind = "lith"
DELITH: Kind = "delith"

NO_DIRECTION_KINDS = frozenset({"rest", "ocv", "loop"})
SET_CURRENT_KINDS = frozenset({"cc", "cccv"})


def step_direction(kind: str | None, current_a: float | None) -> int | None:
    """+1 (lithiation) / −1 (delithiation) from a step's set current, 0 for a step without a
    direction, None when the sign of the step's charge decides (CV, unknown steps)."""
    k = (kind or "").lower()
    if k in NO_DIRECTION_KINDS:
        return 0
    if k in SET_CURRENT_KINDS and current_a:
        return 1 if current_a > 0 else -1
    return None


def kind_of(direction: int) -> Kind:
    """The half-cycle kind of a direction (+1 lithiation, −1 delithiation)."""
    return LITH if direction > 0 else DELITH


@dataclass(eq=False)
class StepRun:
    """One execution of a schedule step; ``first``/``last`` are positions in the sample feed."""

    index: int  # in CycleModel.runs
    step: int
    board_cycle: int
    set_direction: int | None  # from the set current; None: the sign of the charge decides
    first: int
    last: int
    charge_ah: float = 0.0  # the board's count at the last sample so far (signed, Ah)
    ended: bool = False  # its last sample carries the step-last flag
    half_cycle: int = -1  # the half-cycle it belongs to (-1: none); set when it is placed
    cycle: int = 0  # the cycle it is in (first lithiation = 1)
    base_ah: float = 0.0  # capacity of its (or, without a direction, the last) half-cycle before it
    hold_direction: int = 0  # direction of that half-cycle (0: none yet)

    @property
    def direction(self) -> int:
        if self.set_direction is not None:
            return self.set_direction
        q = self.charge_ah
        return 1 if q > 0 else (-1 if q < 0 else 0)

    def capacity_at(self, charge_ah: float) -> float:
        """The half-cycle capacity at a sample of this run whose step charge is ``charge_ah``."""
        if self.half_cycle < 0:
            return self.base_ah
        return self.base_ah + self.direction * charge_ah


@dataclass(eq=False)
class HalfCycleSpan:
    """A half-cycle as the model sees it: its step runs, cycle and direction."""

    number: int  # 0, 1, ... in the order of the run
    cycle: int  # first lithiation = 1; 0 before it
    direction: int
    runs: list[StepRun] = field(default_factory=list)

    @property
    def kind(self) -> Kind:
        return kind_of(self.direction)

    @property
    def capacity_ah(self) -> float:
        """The board's count over the half-cycle's steps (≥ 0 for normal steps)."""
        return sum(self.direction * r.charge_ah for r in self.runs)

    @property
    def steps(self) -> tuple[int, ...]:
        return tuple(dict.fromkeys(r.step for r in self.runs))


StepTable = Mapping[int, tuple[str, float | None]]


class CycleModel:
    """Feed samples in sequence order with :meth:`add`; read the cycle and half-cycle capacity
    at the latest sample (:attr:`cycle`, :attr:`half_cycle_ah`), or call :meth:`finish` and read
    :attr:`runs` / :attr:`half_cycles` for a stored run.

    ``steps`` maps a step index to (kind, set current A) — the run database's steps table. The
    direction of a step run still in progress that depends on its charge (CV) is provisional.
    """

    def __init__(self, steps: StepTable | None = None) -> None:
        self._dirs: dict[int, int | None] = {}
        self.set_steps(steps or {})
        self.runs: list[StepRun] = []
        self.half_cycles: list[HalfCycleSpan] = []  # placed (the open run not included)
        self.n_samples = 0
        self._open: StepRun | None = None
        self._n_lith = 0
        self._last_directed: StepRun | None = None

    def set_steps(self, steps: StepTable) -> None:
        """The schedule's steps (index → (kind, set current A))."""
        self._dirs = {int(k): step_direction(kind, cur) for k, (kind, cur) in steps.items()}

    # ---- feeding ------------------------------------------------------------------------------
    def add(self, step: int, board_cycle: int, flags: int, charge_ah: float) -> None:
        """One sample: its step index, the board's cycle counter, its flags and its step charge
        (Ah, the board's count since the step started)."""
        k = self.n_samples
        r = self._open
        if r is None or flags & F_STEP_FIRST or step != r.step or board_cycle != r.board_cycle:
            if r is not None:
                self._place(r)
            r = StepRun(len(self.runs), step, board_cycle, self._dirs.get(step), k, k)
            self.runs.append(r)
            self._open = r
        r.last = k
        r.charge_ah = charge_ah
        if flags & F_STEP_LAST:
            r.ended = True
        self.n_samples = k + 1

    def feed(
        self,
        steps: Iterable[int],
        cycles: Iterable[int],
        flags: Iterable[int],
        charges: Iterable[float],
    ) -> CycleModel:
        """:meth:`add` for whole columns, then :meth:`finish`; returns self."""
        for s, c, f, q in zip(steps, cycles, flags, charges, strict=True):
            self.add(int(s), int(c), int(f), float(q))
        self.finish()
        return self

    def finish(self) -> None:
        """Place the step run in progress with its final direction (end of a stored run)."""
        if self._open is not None:
            self._place(self._open)
            self._open = None

    # ---- the rule -----------------------------------------------------------------------------
    def _where(self, r: StepRun) -> tuple[int, bool]:
        """(half-cycle number the run belongs to or −1, whether it starts a new one)."""
        d = r.direction
        if d == 0:
            return -1, False
        last = self.half_cycles[-1] if self.half_cycles else None
        if last is None or last.direction != d:
            return len(self.half_cycles), True
        prev = self._last_directed
        forced = (
            prev is not None
            and prev.set_direction is not None
            and r.set_direction is not None
            and r.board_cycle > prev.board_cycle
        )
        return (len(self.half_cycles), True) if forced else (last.number, False)

    def _place(self, r: StepRun) -> None:
        n, new = self._where(r)
        if n < 0:
            last = self.half_cycles[-1] if self.half_cycles else None
            r.cycle = self._n_lith
            r.base_ah = last.capacity_ah if last is not None else 0.0
            r.hold_direction = last.direction if last is not None else 0
            return
        d = r.direction
        if new:
            if d > 0:
                self._n_lith += 1
            self.half_cycles.append(HalfCycleSpan(n, self._n_lith, d))
        h = self.half_cycles[n]
        r.half_cycle = n
        r.cycle = h.cycle
        r.base_ah = h.capacity_ah
        r.hold_direction = d
        h.runs.append(r)
        self._last_directed = r

    # ---- the state at the latest sample -------------------------------------------------------
    @property
    def cycle(self) -> int:
        """The cycle at the latest sample (first lithiation = 1; 0 before it)."""
        r = self._open
        if r is not None:
            _, new = self._where(r)
            if new and r.direction > 0:
                return self._n_lith + 1
        return self._n_lith

    @property
    def half_cycle_ah(self) -> float:
        """Capacity of the half-cycle in progress at the latest sample (held through the steps
        without a direction after it; 0 before the first half-cycle)."""
        r = self._open
        if r is not None:
            n, new = self._where(r)
            if n >= 0:
                base = 0.0 if new else self.half_cycles[n].capacity_ah
                return base + r.direction * r.charge_ah
        return self.half_cycles[-1].capacity_ah if self.half_cycles else 0.0

    @property
    def direction(self) -> int:
        """Direction of the half-cycle in progress (or the last one; 0 before any)."""
        r = self._open
        if r is not None and self._where(r)[0] >= 0:
            return r.direction
        return self.half_cycles[-1].direction if self.half_cycles else 0

    # ---- per sample, for a finished run ---------------------------------------------------------
    def run_of_sample(self) -> list[int]:
        """For each sample fed, the index of its step run in :attr:`runs`."""
        out: list[int] = []
        for j, r in enumerate(self.runs):
            out.extend([j] * (r.last - r.first + 1))
        return out

    def capacities(self, charges: Sequence[float]) -> list[float]:
        """For each sample fed (with ``charges`` its step charges), the capacity of its
        half-cycle at that sample (held through steps without a direction)."""
        out: list[float] = []
        for r in self.runs:
            out.extend(r.capacity_at(float(charges[k])) for k in range(r.first, r.last + 1))
        return out
