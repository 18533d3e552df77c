"""Smoothing and thinning of a curve's points (numpy only)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..rundata import FloatArray
from .common import IndexArray


def level_filter(v: Any, min_dv: float) -> IndexArray:
    """Indices of the points kept when each kept point is at least ``min_dv`` (V) away from the
    previously kept one (the first point is always kept)."""
    arr = np.asarray(v, dtype=np.float64)
    if arr.size == 0:
        return np.zeros(0, dtype=np.intp)
    if min_dv <= 0:
        return np.arange(arr.size, dtype=np.intp)
    thr = min_dv * (1.0 - 1e-9)
    keep = [0]
    last = float(arr[0])
    for i, x in enumerate(arr.tolist()):
        if abs(x - last) >= thr:
            keep.append(i)
            last = x
    return np.asarray(keep, dtype=np.intp)


def savgol_coefficients(window: int, polyorder: int, deriv: int = 0) -> FloatArray:
    """Savitzky–Golay convolution weights (centre point) for an odd ``window``."""
    if window % 2 != 1 or window < 1:
        raise ValueError("window must be a positive odd number")
    if polyorder >= window:
        raise ValueError("polyorder must be less than window")
    half = window // 2
    x = np.arange(-half, half + 1, dtype=np.float64)
    a = np.vander(x, polyorder + 1, increasing=True)
    return np.asarray(np.linalg.pinv(a)[deriv] * math.factorial(deriv), dtype=np.float64)


def savgol_smooth(y: Any, window: int = 7, polyorder: int = 2) -> FloatArray:
    """Savitzky–Golay smoothing in numpy. Edges are filled by evaluating the polynomial fitted
    to the first/last window (like scipy's ``mode='interp'``). The window shrinks to the data
    length (kept odd); with too few points for the order the data comes back unchanged."""
    arr = np.asarray(y, dtype=np.float64)
    n = arr.size
    w = min(window, n if n % 2 == 1 else n - 1)
    if w <= polyorder or w < 3:
        return arr.copy()
    coef = savgol_coefficients(w, polyorder)
    half = w // 2
    out = np.empty_like(arr)
    out[half : n - half] = np.convolve(arr, coef[::-1], mode="valid")
    x = np.arange(w, dtype=np.float64)
    lo = np.polyval(np.polyfit(x, arr[:w], polyorder), x[:half])
    hi = np.polyval(np.polyfit(x, arr[n - w :], polyorder), x[w - half :])
    out[:half] = lo
    out[n - half :] = hi
    return out


def moving_average(y: Any, window: int = 5) -> FloatArray:
    """Centred moving average; the window shrinks symmetrically at the edges."""
    arr = np.asarray(y, dtype=np.float64)
    if window <= 1 or arr.size == 0:
        return arr.copy()
    half = window // 2
    c = np.concatenate(([0.0], np.cumsum(arr)))
    i = np.arange(arr.size)
    lo = np.maximum(i - half, 0)
    hi = np.minimum(i + half + 1, arr.size)
    # Symmetric shrink at the edges keeps the average centred.
    k = np.minimum(i - lo, hi - 1 - i)
    lo, hi = i - k, i + k + 1
    return np.asarray((c[hi] - c[lo]) / (hi - lo), dtype=np.float64)
