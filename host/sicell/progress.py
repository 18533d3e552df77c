"""Live progress of runs: a rich table on a terminal, one plain line per update otherwise.

A :class:`RunSession` reports :class:`Progress` snapshots; a display shows them. Displays are
thread-safe, so several sessions (one thread per board) can share one.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, replace
from typing import IO, Protocol

from rich.console import Console
from rich.live import Live
from rich.table import Table


@dataclass(frozen=True)
class Progress:
    """A snapshot of one run, in SI units (V, A, Ah, s)."""

    board: str
    state: str = "starting"
    step: int | None = None
    step_kind: str | None = None
    cycle: int | None = None  # the first lithiation is cycle 1 (sicell.cyclemodel)
    voltage_v: float | None = None
    we_v: float | None = None
    current_a: float | None = None
    half_cycle_ah: float | None = None  # the board's count over the half-cycle in progress
    elapsed_s: float | None = None
    eta_s: float | None = None
    samples: int = 0
    events: int = 0
    last_seq: int = 0
    message: str | None = None
    final: bool = False  # the last update of a run: always shown

    def with_message(self, message: str | None) -> Progress:
        return replace(self, message=message)


_TERMINAL = frozenset({"done", "stopped", "tripped", "interrupted"})


def fmt_duration(s: float | None) -> str:
    """``3d 04:05:06`` / ``04:05:06`` / ``05:06``; ``-`` when unknown."""
    if s is None or s != s:
        return "-"
    s = max(0.0, s)
    total = round(s)
    d, rem = divmod(total, 86400)
    h, rem = divmod(rem, 3600)
    m, sec = divmod(rem, 60)
    if d:
        return f"{d}d {h:02d}:{m:02d}:{sec:02d}"
    if h:
        return f"{h:02d}:{m:02d}:{sec:02d}"
    return f"{m:02d}:{sec:02d}"


def fmt_current(a: float | None) -> str:
    if a is None:
        return "-"
    mag = abs(a)
    if mag >= 1e-3:
        return f"{a * 1e3:+.3f} mA"
    if mag >= 1e-6 or mag == 0:
        return f"{a * 1e6:+.2f} µA"
    return f"{a * 1e9:+.1f} nA"


def fmt_capacity(ah: float | None) -> str:
    if ah is None:
        return "-"
    mah = ah * 1e3
    if abs(mah) >= 0.1:
        return f"{mah:.4f} mAh"
    return f"{mah * 1e3:.3f} µAh"


def fmt_volts(v: float | None) -> str:
    return "-" if v is None else f"{v:+.4f} V"


def fmt_step(p: Progress) -> str:
    if p.step is None:
        return "-"
    return f"{p.step} {p.step_kind}" if p.step_kind else str(p.step)


def plain_line(p: Progress) -> str:
    parts = [
        f"[{p.board}]",
        p.state,
        f"step {fmt_step(p)}",
        f"cycle {'-' if p.cycle is None else p.cycle}",
        f"V {fmt_volts(p.voltage_v)}",
        f"E_we {fmt_volts(p.we_v)} vs Li",
        f"I {fmt_current(p.current_a)}",
        f"Q {fmt_capacity(p.half_cycle_ah)}",
        f"t {fmt_duration(p.elapsed_s)}",
        f"ETA {fmt_duration(p.eta_s)}",
        f"{p.samples} samples",
    ]
    line = "  ".join(parts)
    if p.message:
        line += f"  | {p.message}"
    return line


class Display(Protocol):
    def update(self, p: Progress) -> None: ...

    def note(self, board: str, text: str) -> None: ...

    def __enter__(self) -> Display: ...

    def __exit__(self, *exc: object) -> None: ...


class NullDisplay:
    """Shows nothing."""

    def update(self, p: Progress) -> None:
        pass

    def note(self, board: str, text: str) -> None:
        pass

    def __enter__(self) -> NullDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class PlainDisplay:
    """One line per update, at most one every ``interval`` s per board (notes always print)."""

    def __init__(self, stream: IO[str] | None = None, interval: float = 5.0) -> None:
        self.stream = stream
        self.interval = interval
        self._last: dict[str, float] = {}
        self._last_key: dict[str, tuple[object, ...]] = {}
        self._lock = threading.Lock()

    def _out(self) -> IO[str]:
        return self.stream if self.stream is not None else sys.stdout

    def update(self, p: Progress) -> None:
        now = time.monotonic()
        key = (p.state, p.step, p.cycle)
        if p.state in _TERMINAL and not p.final:
            return  # the run's final update follows with the settled figures; print that once
        with self._lock:
            changed = self._last_key.get(p.board) != key or p.final
            if not changed and now - self._last.get(p.board, -1e9) < self.interval:
                return
            self._last[p.board] = now
            self._last_key[p.board] = key
            print(plain_line(p), file=self._out(), flush=True)

    def note(self, board: str, text: str) -> None:
        with self._lock:
            print(f"[{board}] {text}", file=self._out(), flush=True)

    def __enter__(self) -> PlainDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class RichDisplay:
    """A live table, one row per board, refreshed a few times a second."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self._rows: dict[str, Progress] = {}
        self._lock = threading.Lock()
        self._live = Live(
            self._table(), console=self.console, refresh_per_second=4, transient=False
        )

    def _table(self) -> Table:
        t = Table(expand=False, show_edge=True, header_style="bold")
        for col, just in (
            ("board", "left"),
            ("state", "left"),
            ("step", "left"),
            ("cycle", "right"),
            ("V cell", "right"),
            ("E vs Li", "right"),
            ("I", "right"),
            ("Q half-cycle", "right"),
            ("elapsed", "right"),
            ("ETA", "right"),
            ("samples", "right"),
        ):
            t.add_column(col, justify=just)  # type: ignore[arg-type]
        for p in self._rows.values():
            t.add_row(
                p.board,
                p.state,
                fmt_step(p),
                "-" if p.cycle is None else str(p.cycle),
                fmt_volts(p.voltage_v),
                fmt_volts(p.we_v),
                fmt_current(p.current_a),
                fmt_capacity(p.half_cycle_ah),
                fmt_duration(p.elapsed_s),
                fmt_duration(p.eta_s),
                str(p.samples),
            )
        return t

    def update(self, p: Progress) -> None:
        with self._lock:
            self._rows[p.board] = p
            self._live.update(self._table())

    def note(self, board: str, text: str) -> None:
        with self._lock:
            self.console.print(f"[bold]\\[{board}][/bold] {text}", highlight=False)

    def __enter__(self) -> RichDisplay:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._live.update(self._table())
        self._live.__exit__(None, None, None)


def make_display(plain: bool | None = None, console: Console | None = None) -> Display:
    """A rich live table on a terminal, plain lines otherwise (or when ``plain`` is True)."""
    console = console or Console()
    if plain is None:
        plain = not console.is_terminal
    if plain:
        return PlainDisplay(stream=console.file)
    return RichDisplay(console)
