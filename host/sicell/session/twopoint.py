"""Two-point calibration of one current range against a known resistor.

The board runs a rest, +I and -I through the resistor; the voltage read at rest gives the
voltage channel's zero, and I = -V/R (positive current lithiates) gives the true current to
fit the current-measurement and set-point channels against.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sicell.client import Board, CalEntry, Record, new_run_id
from sicell.errors import BoardError, CalibrationError, TransportError
from sicell.protocol import messages as M
from sicell.replies import CHANNEL_NAMES, CHANNELS
from sicell.session.summary import end_reason


@dataclass
class TwoPointResult:
    range: int
    resistor_ohm: float
    set_na: tuple[int, int]
    v_zero_uv: float  # voltage read at zero current (old calibration)
    v_uv: tuple[float, float]  # voltage read at +I and -I (old calibration)
    i_meas_na: tuple[float, float]  # current read at +I and -I (old calibration)
    i_true_na: tuple[float, float]  # -V/R after the voltage zero correction
    old: list[Any]
    entries: list[Any]

    def lines(self) -> list[str]:
        out = [
            f"range {self.range}, R = {self.resistor_ohm:g} Ω: zero {self.v_zero_uv:+.1f} µV",
        ]
        for k in (0, 1):
            out.append(
                f"  set {self.set_na[k]:+d} nA: V {self.v_uv[k]:+.1f} µV, read "
                f"{self.i_meas_na[k]:+.1f} nA, true {self.i_true_na[k]:+.1f} nA"
            )
        for o, n in zip(self.old, self.entries, strict=True):
            name = CHANNEL_NAMES.get(n.channel, str(n.channel))
            out.append(
                f"  {name}: offset {o.offset:+d} → {n.offset:+d}, "
                f"gain {o.gain_ppm / 1e6:.6f} → {n.gain_ppm / 1e6:.6f}"
            )
        return out


def _fit(x1: float, y1: float, x2: float, y2: float) -> tuple[int, int]:
    """(offset, gain_ppm) of y = x * gain + offset through two points (firmware's two_point)."""
    if x1 == x2:
        raise CalibrationError("two-point fit: both points are the same; check the wiring")
    g = (y2 - y1) / (x2 - x1)
    return round(y1 - x1 * g), round(g * 1_000_000)


def two_point_calibration(
    board: Board,
    rng: int,
    resistor_ohm: float,
    *,
    fraction: float = 0.5,
    settle_s: float = 5.0,
    measure_s: float = 5.0,
    timeout_s: float = 600.0,
    log: Callable[[str], None] | None = None,
) -> TwoPointResult:
    """Run rest, +I, -I on range ``rng`` through a known resistor and fit new calibration.

    Returns the new (offset, gain) for the voltage (zero only), current-measurement and
    set-point channels of that range; the caller applies them with ``cal_set``. The voltage
    channel is trusted for gain (calibrate it against a voltmeter); its zero comes from the
    rest at no current. The resistor obeys V = -I·R (positive current lithiates).
    """
    from sicell.schedule import BoardLimits, parse_schedule  # a large package: when needed

    info = board.info
    if info is None:
        info = board.hello()
    if resistor_ohm <= 0:
        raise CalibrationError("the resistor must be > 0 Ω")
    if not 0 <= rng < info.n_ranges:
        raise CalibrationError(f"range {rng}: the board has ranges 0..{info.n_ranges - 1}")
    fs_na = info.ranges_na[rng]
    v_lim = 0.8 * min(abs(info.v_min_uv), abs(info.v_max_uv)) * 1e-6
    i_a = min(fraction * fs_na * 1e-9, v_lim / resistor_ohm)
    i_ua = round(i_a * 1e6, 3)
    if i_ua <= 0:
        raise CalibrationError("the test current rounds to zero; use a smaller resistor")
    step_s = settle_s + measure_s
    toml = f"""
name = "two-point calibration"
vs = "cell"
[reference]
electrode = "Li"
[recording]
dt_s = {max(0.1, measure_s / 20):g}
dv_mv = 0
[[step]]
kind = "rest"
range = {rng}
duration_s = {step_s:g}
"""
    for direction in ("lithiation", "delithiation"):  # +I, then -I
        toml += f"""[[step]]
kind = "cc"
direction = "{direction}"
current_ua = {i_ua:g}
range = {rng}
duration_s = {step_s:g}
"""
    sch = parse_schedule(toml, "<two-point calibration>")
    blob = sch.compile(BoardLimits.from_info(info.as_dict()))
    old = [board.cal_get(rng, ch) for ch in CHANNELS]
    if log:
        log(f"two-point calibration of range {rng}: rest, +{i_ua:g} µA, -{i_ua:g} µA")
    records: list[Record] = []
    prev_sink = board.record_sink
    board.record_sink = records.append
    try:
        board.upload_schedule(blob)
        run_id = new_run_id()
        board.start(run_id)
        deadline = time.monotonic() + timeout_s
        done = False
        while not done:
            if time.monotonic() > deadline:
                with contextlib.suppress(TransportError, BoardError):
                    board.stop()
                raise CalibrationError(f"calibration run did not end within {timeout_s:g} s")
            board.poll(0.1)
            if records:
                board.ack(max(r.seq for r in records))
            done = any(r.is_event and r.fields["code"] == M.EV_RUN_END for r in records)
            if not done:
                st = board.status()
                if st.finished and st.last_seq <= max((r.seq for r in records), default=0):
                    done = True
        end = [r for r in records if r.is_event and r.fields["code"] == M.EV_RUN_END]
        if end and end[0].fields["reason"] != M.RE_COMPLETE:
            raise CalibrationError(
                f"calibration run ended early ({end_reason(end[0].fields['reason'])}); "
                "check the resistor and the connections"
            )
    finally:
        board.record_sink = prev_sink

    uniq = {r.seq: r for r in records if r.is_sample}
    by_step: dict[int, list[dict[str, int]]] = {0: [], 1: [], 2: []}
    for r in sorted(uniq.values(), key=lambda r: r.seq):
        f = r.fields
        t = f["t_s"] + f["t_ms"] / 1000.0
        if f["step"] in by_step:
            by_step[f["step"]].append({**f, "_t": round(t * 1000)})

    def means(step: int) -> tuple[float, float]:
        pts = by_step[step]
        if not pts:
            raise CalibrationError(f"no samples in step {step} of the calibration run")
        t_end = pts[-1]["_t"]
        sel = [p for p in pts if p["_t"] >= t_end - measure_s * 1000] or pts
        v = sum(p["v_uv"] for p in sel) / len(sel)
        i = sum(p["i_na"] for p in sel) / len(sel)
        return v, i

    v0, _ = means(0)
    va, ia = means(1)
    vb, ib = means(2)
    ov, oi, os_ = old
    g0 = ov.gain_ppm / 1e6
    g1 = oi.gain_ppm / 1e6
    g2 = os_.gain_ppm / 1e6
    # voltage channel: raw = true*g0 + off0; at zero current the true voltage is 0
    new_off0 = round(v0 * g0 + ov.offset)
    true_va = va - v0
    true_vb = vb - v0
    ta = -true_va / resistor_ohm * 1000.0  # µV / Ω = µA → nA
    tb = -true_vb / resistor_ohm * 1000.0
    # current measurement: raw = true*g1 + off1
    raw_ia = ia * g1 + oi.offset
    raw_ib = ib * g1 + oi.offset
    off1, gain1 = _fit(ta, raw_ia, tb, raw_ib)
    # set point: actual = command*g2 + off2, where the board commanded (want - off2)/g2
    want_a = round(i_ua * 1000)
    want_b = -want_a
    cmd_a = (want_a - os_.offset) / g2
    cmd_b = (want_b - os_.offset) / g2
    off2, gain2 = _fit(cmd_a, ta, cmd_b, tb)
    for name, g in (("current", gain1), ("setpoint", gain2)):
        if abs(g - 1_000_000) > 100_000:
            raise CalibrationError(
                f"{name} gain {g / 1e6:.4f} is more than 10 % off unity; check the resistor "
                f"value ({resistor_ohm:g} Ω) and the wiring"
            )
    entries = [
        CalEntry(rng, M.CH_VOLTAGE, new_off0, ov.gain_ppm),
        CalEntry(rng, M.CH_CURRENT, off1, gain1),
        CalEntry(rng, M.CH_SETPOINT, off2, gain2),
    ]
    return TwoPointResult(
        range=rng,
        resistor_ohm=resistor_ohm,
        set_na=(want_a, want_b),
        v_zero_uv=v0,
        v_uv=(va, vb),
        i_meas_na=(ia, ib),
        i_true_na=(ta, tb),
        old=old,
        entries=entries,
    )
