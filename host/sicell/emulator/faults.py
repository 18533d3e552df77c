"""Link faults of the emulator's byte relay: their settings (FaultConfig) and the seeded
per-byte injector (FaultInjector).

Each FaultConfig field carries its own description (help, command-line flag, range), from which
``sicell.emulator.options`` generates the fault keys of ``emu://`` URLs and of
``python -m sicell.emulator``.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sicell.errors import EmulatorConfigError

DIRECTIONS = ("both", "to_host", "to_board")
_NEVER = 2**62  # a gap (in bytes) no link reaches


@dataclass(frozen=True)
class FaultField:
    """How one fault setting is written and checked."""

    help: str
    flag: str  # command-line flag of python -m sicell.emulator
    high: float = 1.0  # numbers: valid range 0..high
    unit: str = ""
    choices: tuple[str, ...] = ()  # a word from this list instead of a number


def _meta(help: str, flag: str, **kw: Any) -> dict[str, FaultField]:
    return {"fault": FaultField(help, flag, **kw)}


@dataclass
class FaultConfig:
    """Link faults applied by the relay. Probabilities are per byte."""

    drop: float = field(default=0.0, metadata=_meta("per-byte probability of dropping", "--drop"))
    corrupt: float = field(
        default=0.0, metadata=_meta("per-byte probability of corrupting", "--corrupt")
    )
    duplicate: float = field(
        default=0.0, metadata=_meta("per-byte probability of doubling", "--duplicate")
    )
    delay_ms: float = field(
        default=0.0,
        metadata=_meta("latency added to relayed bytes, ms", "--delay-ms", high=60000, unit="ms"),
    )
    direction: str = field(
        default="both",
        metadata=_meta("where the link faults apply", "--fault-direction", choices=DIRECTIONS),
    )

    def updated(self, changes: Mapping[str, Any]) -> FaultConfig:
        """A copy with ``changes`` applied and validated (EmulatorConfigError on bad values)."""
        new = dataclasses.replace(self)
        for k, v in changes.items():
            spec = FAULT_FIELDS.get(k)
            if spec is None:
                raise EmulatorConfigError(
                    f"unknown fault {k!r}; valid faults: {', '.join(FAULT_KEYS)}"
                )
            if spec.choices:
                if v not in spec.choices:
                    raise EmulatorConfigError(
                        f"bad fault {k} {v!r}; valid: {', '.join(spec.choices)}"
                    )
                setattr(new, k, str(v))
                continue
            try:
                x = float(v)
            except (TypeError, ValueError):
                raise EmulatorConfigError(f"fault {k}={v!r} is not a number") from None
            if not (math.isfinite(x) and 0 <= x <= spec.high):
                unit = f" {spec.unit}" if spec.unit else ""
                raise EmulatorConfigError(f"fault {k}={v!r} out of range (0..{spec.high:g}{unit})")
            setattr(new, k, x)
        if new.drop + new.corrupt + new.duplicate > 1.0 + 1e-12:
            raise EmulatorConfigError("drop + corrupt + duplicate must not exceed 1")
        return new

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def applies_to(self, direction: str) -> bool:
        """Whether the faults act on the ``to_host`` or ``to_board`` direction."""
        return self.direction in ("both", direction)


FAULT_FIELDS: dict[str, FaultField] = {
    f.name: f.metadata["fault"] for f in dataclasses.fields(FaultConfig)
}
FAULT_KEYS = tuple(FAULT_FIELDS)


class FaultInjector:
    """Per-direction byte faults from a seeded generator.

    The gap to the next faulty byte is drawn from the geometric distribution, so clean bytes
    cost nothing per byte and the outcome depends only on the seed and the byte stream (not on
    how it was split into chunks).
    """

    def __init__(self, seed: str) -> None:
        self._rng = random.Random(seed)
        self.drop = 0.0
        self.corrupt = 0.0
        self.duplicate = 0.0
        self._gap: int | None = None
        self.dropped = 0
        self.corrupted = 0
        self.duplicated = 0

    def configure(self, drop: float, corrupt: float, duplicate: float) -> None:
        self.drop, self.corrupt, self.duplicate = drop, corrupt, duplicate
        self._gap = self._draw()

    @property
    def active(self) -> bool:
        return self._gap is not None

    def _draw(self) -> int | None:
        p = self.drop + self.corrupt + self.duplicate
        if p <= 0.0:
            return None
        if p >= 1.0:
            return 0
        u = self._rng.random()
        gap = math.log1p(-u) / math.log1p(-p)  # inf for a p too small to ever fire
        return int(gap) if gap < _NEVER else _NEVER

    def process(self, data: bytes) -> bytes:
        gap = self._gap
        if gap is None:
            return data
        n = len(data)
        if gap >= n:
            self._gap = gap - n
            return data
        out = bytearray()
        pos = 0
        p = self.drop + self.corrupt + self.duplicate
        rng = self._rng
        while gap is not None and pos + gap < n:
            i = pos + gap
            out += data[pos:i]
            b = data[i]
            r = rng.random() * p
            if r < self.drop:
                self.dropped += 1
            elif r < self.drop + self.corrupt:
                out.append(b ^ rng.randrange(1, 256))
                self.corrupted += 1
            else:
                out.append(b)
                out.append(b)
                self.duplicated += 1
            pos = i + 1
            gap = self._draw()
        out += data[pos:]
        self._gap = None if gap is None else gap - (n - pos)
        return bytes(out)
