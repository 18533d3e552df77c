"""Binary schedule format uploaded to the board (SCHED_BEGIN / SCHED_CHUNK / SCHED_END).

All values are in board units: cell volts as µV (the host has already applied the reference
offset), currents in nA with + = lithiation, charge in nAh, time in ms.

Layout (little-endian)::

    header  HEADER_FMT   magic b"SICS", format version, host-loss policy, n_steps,
                         control tick ms, slow tick ms, safety debounce ms, pad,
                         safety v_min µV, v_max µV, |i| max nA, temperature max (0.1 °C, 32767=off)
    n_steps x (STEP_FMT, then n_limits x LIMIT_FMT)

A step::

    kind, range (0xFF = autorange), flags, n_limits,
    i_set nA (CC, CCCV), v_set µV (CV, CCCV),
    loop_target, loop_count (LOOP: jump back to loop_target, loop_count more times),
    record every dt ms, |dV| µV, |dI| nA, |dQ| nAh (0 = criterion off)

A limit (step end conditions and conditional jumps, like EC-Lab "limits" or PyBaMM "until")::

    quantity, comparison, action, pad, value, target step (GOTO)

Steps end when any of their limits holds; ``action`` says where to go. A CC step's voltage
cutoff is a limit on Q_V; a CV step's current-decay end is a limit on Q_ABS_I; durations are
limits on Q_TIME.
"""

import struct

try:
    from typing import TYPE_CHECKING
except ImportError:  # MicroPython
    TYPE_CHECKING = False  # type: ignore[misc]

if TYPE_CHECKING:
    from typing import TypeAlias

    StepTuple: TypeAlias = tuple[int, int, int, int, int, int, int, int, int, int, int]
    Limit: TypeAlias = tuple[int, int, int, int, int]
    Header: TypeAlias = tuple[int, int, int, int, int, int, int, int]
    Step: TypeAlias = tuple[StepTuple, list[Limit]]

MAGIC = b"SICS"
FORMAT_VERSION = 1

HEADER_FMT = "<4sBBHHHHHiiih"
STEP_FMT = "<BBBBiiHHIIII"
LIMIT_FMT = "<BBBxiH"
HEADER_SIZE = struct.calcsize(HEADER_FMT)
STEP_SIZE = struct.calcsize(STEP_FMT)
LIMIT_SIZE = struct.calcsize(LIMIT_FMT)

MAX_STEPS = 64
MAX_LIMITS = 4
MAX_BYTES = HEADER_SIZE + MAX_STEPS * (STEP_SIZE + MAX_LIMITS * LIMIT_SIZE)
TEMP_OFF = 32767
RANGE_AUTO = 0xFF

# step kinds
K_REST = 0  # zero current, relay closed
K_CC = 1
K_CV = 2
K_CCCV = 3  # CC at i_set until v_set, then hold v_set (current decays)
K_OCV = 4  # relay open, measure open-circuit voltage
K_LOOP = 5  # control step: jump to loop_target loop_count more times
KIND_NAMES = ("rest", "cc", "cv", "cccv", "ocv", "loop")

# step flags
SF_NEW_CYCLE = 0x01  # force the cycle counter up at this step's start

# limit quantities
Q_V = 1  # cell voltage µV
Q_I = 2  # current nA (signed)
Q_ABS_I = 3  # |current| nA
Q_TIME = 4  # step time ms
Q_ABS_Q = 5  # |charge passed in the step| nAh
Q_DVDT = 6  # |dV/dt| µV/s (over the last recorded interval)
Q_TEMP = 7  # temperature 0.1 °C
QUANTITY_NAMES = ("", "voltage", "current", "|current|", "time", "|charge|", "|dV/dt|", "temp")

# comparisons
OP_LE = 0  # quantity <= value
OP_GE = 1  # quantity >= value

# actions
A_NEXT = 0
A_GOTO = 1
A_END = 2  # end the run

# host-loss policies
P_DECIMATE = 0  # drop every other old point (never step boundaries) to make room
P_HOLD = 1  # open the relay, keep the cell at rest until the host returns

# validation error codes (NACK E_SCHEDULE detail = step << 8 | code, step 0xFFFF = the header;
# see ScheduleError.nack_detail / split_nack_detail). Not the firmware's fault ids
# (messages.FAULT_*), which share numbers, never names.
ERR_MAGIC = 1
ERR_VERSION = 2
ERR_LENGTH = 3
ERR_STEPS = 4
ERR_KIND = 5
ERR_LIMITS = 6
ERR_TARGET = 7
ERR_CURRENT = 8
ERR_VOLTAGE = 9
ERR_QUANTITY = 10
ERR_LOOP = 11
ERR_TICK = 12
ERR_POLICY = 13
ERR_SAFETY = 14
ERR_RANGE = 15

ERR_TEXT: "dict[int, str]" = {
    ERR_MAGIC: "not a sicell schedule (bad magic)",
    ERR_VERSION: "unsupported schedule format version",
    ERR_LENGTH: "length does not match the step and limit counts",
    ERR_STEPS: "step count out of range",
    ERR_KIND: "unknown step kind",
    ERR_LIMITS: "too many limits on one step",
    ERR_TARGET: "goto or loop target outside the schedule",
    ERR_CURRENT: "current set point beyond the safety or hardware limit",
    ERR_VOLTAGE: "voltage set point outside the safety window",
    ERR_QUANTITY: "unknown limit quantity, comparison or action",
    ERR_LOOP: "loop must jump backwards with a count >= 1",
    ERR_TICK: "control tick out of range (1..60000 ms, slow tick >= tick)",
    ERR_POLICY: "unknown host-loss policy",
    ERR_SAFETY: "safety window inverted or outside the hardware range",
    ERR_RANGE: "range index beyond the board's ranges",
}


class ScheduleError(ValueError):
    """A schedule blob failed validation; ``step`` is -1 for the header."""

    def __init__(self, code: int, step: int = -1, detail: str = "") -> None:
        self.code = code
        self.step = step
        msg = ERR_TEXT.get(code, "invalid schedule")
        if step >= 0:
            msg = "step " + str(step) + ": " + msg
        if detail:
            msg = msg + " (" + detail + ")"
        super().__init__(msg)

    def nack_detail(self) -> int:
        return ((self.step & 0xFFFF) << 8) | self.code


def split_nack_detail(detail: int) -> "tuple[int, int]":
    """(step, ERR_* code) of a NACK E_SCHEDULE detail; step -1 = the header."""
    step = (detail >> 8) & 0xFFFF
    return (-1 if step == 0xFFFF else step), detail & 0xFF


def encode(header: "Header", steps: "list[Step]") -> bytes:
    """Build a schedule blob.

    ``header`` = (policy, tick_ms, slow_tick_ms, debounce_ms, v_min_uv, v_max_uv, i_max_na,
    temp_max_dc). ``steps`` = list of (step_tuple, limits) where step_tuple has STEP_FMT's
    fields without n_limits: (kind, range, flags, i_set_na, v_set_uv, loop_target, loop_count,
    rec_dt_ms, rec_dv_uv, rec_di_na, rec_dq_nah) and limits is a list of
    (quantity, op, action, value, target).
    """
    policy, tick, slow, deb, vmin, vmax, imax, tmax = header
    out = bytearray(
        struct.pack(
            HEADER_FMT,
            MAGIC,
            FORMAT_VERSION,
            policy,
            len(steps),
            tick,
            slow,
            deb,
            0,
            vmin,
            vmax,
            imax,
            tmax,
        )
    )
    for st, limits in steps:
        kind, rng, flags, iset, vset, ltgt, lcnt, rdt, rdv, rdi, rdq = st
        out += struct.pack(
            STEP_FMT, kind, rng, flags, len(limits), iset, vset, ltgt, lcnt, rdt, rdv, rdi, rdq
        )
        for q, op, act, val, tgt in limits:
            out += struct.pack(LIMIT_FMT, q, op, act, val, tgt)
    return bytes(out)


def decode(
    blob: "bytes | bytearray | memoryview",
    n_ranges: int = 255,
    hw_v_min: int = -(2**31),
    hw_v_max: int = 2**31 - 1,
    hw_i_max: int = 2**31 - 1,
) -> "tuple[Header, list[Step]]":
    """Parse and validate a schedule blob against the board's capabilities.

    Returns (header, steps) in the shapes ``encode`` takes. Raises ScheduleError naming the step
    and the problem. The board calls this once at SCHED_END, never in the control loop.
    """
    n = len(blob)
    if n < HEADER_SIZE:
        raise ScheduleError(ERR_LENGTH, -1, str(n) + " bytes")
    (magic, ver, policy, nsteps, tick, slow, deb, _pad, vmin, vmax, imax, tmax) = (
        struct.unpack_from(HEADER_FMT, blob, 0)
    )
    if magic != MAGIC:
        raise ScheduleError(ERR_MAGIC)
    if ver != FORMAT_VERSION:
        raise ScheduleError(ERR_VERSION, -1, "got " + str(ver))
    if nsteps < 1 or nsteps > MAX_STEPS:
        raise ScheduleError(ERR_STEPS, -1, "got " + str(nsteps) + ", allowed 1.." + str(MAX_STEPS))
    if tick < 1 or tick > 60000 or slow < tick:
        raise ScheduleError(ERR_TICK, -1, "tick " + str(tick) + " ms, slow " + str(slow) + " ms")
    if policy not in (P_DECIMATE, P_HOLD):
        raise ScheduleError(ERR_POLICY, -1, str(policy))
    if vmin >= vmax or vmin < hw_v_min or vmax > hw_v_max or imax <= 0 or imax > hw_i_max:
        raise ScheduleError(
            ERR_SAFETY,
            -1,
            "v %d..%d uV, |i| max %d nA; hardware %d..%d uV, %d nA"
            % (vmin, vmax, imax, hw_v_min, hw_v_max, hw_i_max),
        )
    header = (policy, tick, slow, deb, vmin, vmax, imax, tmax)
    steps: list[Step] = []
    pos = HEADER_SIZE
    for s in range(nsteps):
        if pos + STEP_SIZE > n:
            raise ScheduleError(ERR_LENGTH, s, "truncated step")
        (kind, rng, flags, nlim, iset, vset, ltgt, lcnt, rdt, rdv, rdi, rdq) = struct.unpack_from(
            STEP_FMT, blob, pos
        )
        pos += STEP_SIZE
        if kind > K_LOOP:
            raise ScheduleError(ERR_KIND, s, "kind " + str(kind))
        if nlim > MAX_LIMITS:
            raise ScheduleError(ERR_LIMITS, s, str(nlim) + " > " + str(MAX_LIMITS))
        if rng != RANGE_AUTO and rng >= n_ranges:
            raise ScheduleError(ERR_RANGE, s, "range " + str(rng))
        if kind in (K_CC, K_CCCV) and (iset == 0 or iset > imax or -iset > imax):
            raise ScheduleError(ERR_CURRENT, s, "%d nA, |i| max %d nA" % (iset, imax))
        if kind in (K_CV, K_CCCV) and (vset <= vmin or vset >= vmax):
            raise ScheduleError(ERR_VOLTAGE, s, "%d uV, window %d..%d uV" % (vset, vmin, vmax))
        if kind == K_LOOP and (ltgt >= s or lcnt < 1):
            raise ScheduleError(ERR_LOOP, s, "target %d, count %d" % (ltgt, lcnt))
        limits: list[Limit] = []
        for _ in range(nlim):
            if pos + LIMIT_SIZE > n:
                raise ScheduleError(ERR_LENGTH, s, "truncated limit")
            q, op, act, val, tgt = struct.unpack_from(LIMIT_FMT, blob, pos)
            pos += LIMIT_SIZE
            if q < Q_V or q > Q_TEMP or op > OP_GE or act > A_END:
                raise ScheduleError(ERR_QUANTITY, s, "quantity %d op %d action %d" % (q, op, act))
            if act == A_GOTO and tgt >= nsteps:
                raise ScheduleError(ERR_TARGET, s, "goto %d of %d steps" % (tgt, nsteps))
            limits.append((q, op, act, val, tgt))
        steps.append(((kind, rng, flags, iset, vset, ltgt, lcnt, rdt, rdv, rdi, rdq), limits))
    if pos != n:
        raise ScheduleError(ERR_LENGTH, -1, "%d trailing bytes" % (n - pos))
    return header, steps
