"""A run's records as the database holds them: SI units (s, V, A, Ah), from the wire's integers.

``sicell.store`` writes and reads them (and is where callers import them from); the analysis
loader (``sicell.rundata``) returns the same classes.
"""

from __future__ import annotations

from dataclasses import dataclass

from sicell.protocol import messages


@dataclass(frozen=True)
class SampleRecord:
    """One recorded point in SI units (s, V, A, Ah); current + = lithiation."""

    seq: int
    t_s: float
    voltage_v: float
    current_a: float
    charge_ah: float
    step: int
    cycle: int
    range: int
    flags: int

    @classmethod
    def from_wire(cls, seq: int, fields: tuple[int, ...]) -> SampleRecord:
        """From ``messages.unpack(SAMPLE, payload)``: (t_s, t_ms, v_uv, i_na, q_nah, step,
        cycle, range, flags) → s, V, A, Ah."""
        t_s, t_ms, v_uv, i_na, q_nah, step, cycle, rng, flags = fields
        return cls(
            seq=int(seq),
            t_s=t_s + t_ms * 1e-3,
            voltage_v=v_uv * 1e-6,
            current_a=i_na * 1e-9,
            charge_ah=q_nah * 1e-9,
            step=int(step),
            cycle=int(cycle),
            range=int(rng),
            flags=int(flags),
        )


@dataclass(frozen=True)
class EventRecord:
    """One board event; ``name`` from ``messages.EVENT_NAMES``, ``reason`` as on the wire."""

    seq: int
    t_s: float
    code: int
    name: str
    step: int
    cycle: int
    value: int
    aux: int
    reason: int = 0

    @classmethod
    def from_wire(cls, seq: int, fields: tuple[int, ...]) -> EventRecord:
        """From ``messages.unpack(EVENT, payload)``: (t_s, t_ms, code, reason, step, cycle,
        value, aux)."""
        t_s, t_ms, code, reason, step, cycle, value, aux = fields
        return cls(
            seq=int(seq),
            t_s=t_s + t_ms * 1e-3,
            code=int(code),
            name=event_name(int(code)),
            step=int(step),
            cycle=int(cycle),
            value=int(value),
            aux=int(aux),
            reason=int(reason),
        )


def event_name(code: int) -> str:
    """The event's name (``messages.EVENT_NAMES``), ``event_<code>`` for unknown codes."""
    name: str | None = messages.EVENT_NAMES.get(code)
    return name if name is not None else f"event_{code}"
