"""The ``calibrate`` request of an idle board, run by its worker on its own link.

Arguments (all checked here, nothing else reaches the board): ``range`` (int), optional
``resistor_ohm`` (the two-point routine on a known resistor, :mod:`sicell.session.twopoint`,
its result applied), ``fraction`` of full scale (default 0.5), ``save`` (write the
calibration to the board's flash). Without ``resistor_ohm`` it only reads the calibration.
"""

from __future__ import annotations

import math
from typing import Any

from sicell.client import Board
from sicell.errors import BoardBusyError, UsageError

__all__ = ["calibrate"]

_KEYS = {"range", "resistor_ohm", "fraction", "save"}


def _number(args: dict[str, Any], key: str, default: float | None) -> float | None:
    v = args.get(key, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise UsageError(f"calibrate: {key} must be a number, not {v!r}")
    return float(v)


def calibrate(board: Board, args: dict[str, Any]) -> dict[str, Any]:
    """Run the request on ``board`` (idle); returns {"lines", "entries", "saved"}."""
    from sicell.session import two_point_calibration

    unknown = set(args) - _KEYS
    if unknown:
        raise UsageError(
            f"calibrate: unknown argument {sorted(unknown)[0]!r}; expected {sorted(_KEYS)}"
        )
    info = board.info
    assert info is not None
    rng = args.get("range")
    if rng is not None and (
        isinstance(rng, bool) or not isinstance(rng, int) or not 0 <= rng < info.n_ranges
    ):
        raise UsageError(f"calibrate: range {rng!r}; the board has ranges 0..{info.n_ranges - 1}")
    resistor = _number(args, "resistor_ohm", None)
    fraction = _number(args, "fraction", 0.5)
    assert fraction is not None
    if not 0 < fraction <= 1:
        raise UsageError(f"calibrate: fraction {fraction:g}; expected 0 < fraction <= 1")
    save = args.get("save", False)
    if not isinstance(save, bool):
        raise UsageError(f"calibrate: save must be true or false, not {save!r}")
    lines: list[str] = []
    if resistor is not None:
        if rng is None:
            raise UsageError("calibrate: resistor_ohm needs range (the range to calibrate)")
        st = board.status()
        if st.has_run:
            raise BoardBusyError(
                f"{board.port} is {st.state_name} (run {st.run_id:08x}); calibrate an idle board"
            )
        result = two_point_calibration(board, rng, resistor, fraction=fraction, log=lines.append)
        lines.extend(result.lines())
        for e in result.entries:
            board.cal_set(e)
    if save:
        board.cal_save()
        lines.append("saved to the board's flash")
    entries = [e.as_dict() for e in board.calibration() if rng is None or e.range == rng]
    return {"lines": lines, "entries": entries, "saved": save}
