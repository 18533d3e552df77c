"""Names and constants shared by the analysis modules."""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray

from ..cyclemodel import DELITH as DELITH
from ..cyclemodel import LITH as LITH
from ..cyclemodel import Kind as Kind

IndexArray = NDArray[np.intp]
Normalize = Literal["auto", "mass", "area", "none"]
Potential = Literal["we", "cell"]

DEFAULT_REST_CURRENT_A = 1e-9  # |I| at or below it reads as no current (the wire's 1 nA)
DEFAULT_REFERENCE_CYCLE = 10


def per_unit(x_mah: float, d: float | None) -> float | None:
    """``x_mah`` divided by a mass, area or volume; None when that is unknown or not positive."""
    return None if d is None or d <= 0 else x_mah / d
