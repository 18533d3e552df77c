"""sicell message catalogue: ids, fixed little-endian struct layouts, integer units.

Units on the wire are integers: voltage µV, current nA (+ = lithiation of the working
electrode), charge nAh, time as (s, ms) pairs so a two-month run never needs more than 31 bits
on the board, sequence numbers u32. Every payload is a fixed struct; INFO, SCHED_CHUNK and
SCHED_DATA carry a variable tail after the fixed part (described per message).

Host -> board ids are 0x01..0x3F, board -> host ids are 0x40..0x7F.

Every wire-visible id is defined here or in schedule.py (step kinds, limit quantities,
comparisons, actions, policies, schedule validation codes) or framing.py (framing errors), once.
The firmware keeps ``const()`` copies (``const`` needs a literal); tests/test_wire_ids.py ties
each copy to the value here.
"""

import struct

from .framing import PROTO_MAJOR, ProtocolError

try:
    from typing import TYPE_CHECKING
except ImportError:  # MicroPython
    TYPE_CHECKING = False  # type: ignore[misc]

if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

    from .framing import Buf

# ---- message ids -------------------------------------------------------------------------
HELLO = 0x01  # host_major, host_minor                 -> INFO
PING = 0x02  # nonce                                   -> PONG
STATUS_REQ = 0x03  # (empty)                           -> STATUS
ACK = 0x04  # highest seq committed by the host (records <= seq may be freed)
REPLAY = 0x05  # resend every record from seq on          -> records, or NACK E_SEQ_GONE
SCHED_BEGIN = 0x06  # total_len, crc16 of the whole schedule blob -> OK
SCHED_CHUNK = 0x07  # offset + tail bytes                    -> OK
SCHED_END = 0x08  # (empty): board checks length+CRC, parses -> OK or NACK
SCHED_READ = 0x09  # offset, length (<= MAX_CHUNK)           -> SCHED_DATA
START = 0x0A  # run_id                                   -> OK
PAUSE = 0x0B  # -> OK
RESUME = 0x0C  # -> OK
STOP = 0x0D  # -> OK
CAL_GET = 0x0E  # range, channel                         -> CAL
CAL_SET = 0x0F  # range, channel, offset, gain_ppm       -> OK (applied, not yet saved)
CAL_SAVE = 0x10  # write calibration to flash            -> OK
ENTER_REPL = 0x11  # -> OK, then the board leaves binary mode so mpremote can take the port
RESET = 0x12  # soft reset of the board                   -> OK, then a reboot

INFO = 0x41
PONG = 0x42
STATUS = 0x43
SAMPLE = 0x44
EVENT = 0x45
OK = 0x46  # echo of the request type; frame seq echoes the request id
NACK = 0x47  # request type, error code, detail
CAL = 0x48
SCHED_DATA = 0x49
FIRST_BOARD_TYPE = 0x40  # ids from here up go board -> host; requests are below

# ---- layouts ------------------------------------------------------------------------------
# fixed-part struct formats, field names, and whether a variable tail follows
LAYOUTS: "dict[int, tuple[str, tuple[str, ...]]]" = {
    HELLO: ("<BB", ("host_major", "host_minor")),
    PING: ("<I", ("nonce",)),
    STATUS_REQ: ("<", ()),
    ACK: ("<I", ("seq",)),
    REPLAY: ("<I", ("from_seq",)),
    SCHED_BEGIN: ("<IH", ("total_len", "crc")),
    SCHED_CHUNK: ("<I", ("offset",)),  # + tail: schedule bytes
    SCHED_END: ("<", ()),
    SCHED_READ: ("<IH", ("offset", "length")),
    START: ("<I", ("run_id",)),
    PAUSE: ("<", ()),
    RESUME: ("<", ()),
    STOP: ("<", ()),
    CAL_GET: ("<BB", ("range", "channel")),
    CAL_SET: ("<BBii", ("range", "channel", "offset", "gain_ppm")),
    CAL_SAVE: ("<", ()),
    ENTER_REPL: ("<", ()),
    RESET: ("<", ()),
    # board -> host
    INFO: (
        "<BBBBBBH8siiiIHBBI",
        (
            "fw_major",
            "fw_minor",
            "fw_patch",
            "proto_major",
            "proto_minor",
            "n_ranges",
            "caps",
            "board_id",
            "v_min_uv",
            "v_max_uv",
            "compliance_uv",
            "ring_capacity",
            "tick_ms",
            "state",
            "reset_cause",
            "run_id",
        ),
    ),  # + tail: n_ranges x "<i" full-scale current in nA
    PONG: ("<II", ("nonce", "uptime_s")),
    STATUS: (
        "<BBHHHIHiiiIIIII",
        (
            "state",
            "range",
            "step",
            "cycle",
            "flags",
            "t_s",
            "t_ms",
            "v_uv",
            "i_na",
            "q_nah",
            "run_id",
            "first_seq",
            "last_seq",
            "acked_seq",
            "dropped",
        ),
    ),
    SAMPLE: (
        "<IHiiiHHBB",
        ("t_s", "t_ms", "v_uv", "i_na", "q_nah", "step", "cycle", "range", "flags"),
    ),
    EVENT: (
        "<IHBBHHii",
        ("t_s", "t_ms", "code", "reason", "step", "cycle", "value", "aux"),
    ),
    OK: ("<B", ("request",)),
    NACK: ("<BBi", ("request", "code", "detail")),
    CAL: ("<BBii", ("range", "channel", "offset", "gain_ppm")),
    SCHED_DATA: ("<I", ("offset",)),  # + tail: schedule bytes
}

# INFO's extension, after its range tail: what a tick costs the board, measured by its own clock
# (µs; 0 = none measured since boot): the 94th percentile and the longest of its recent control
# ticks (a run's), and the 94th percentile of its recent idle ticks (a measurement only). A board
# whose firmware predates it sends none (unpack_info_ext gives None).
INFO_EXT: "tuple[str, tuple[str, ...]]" = ("<III", ("tick_us", "tick_max_us", "idle_us"))

HAS_TAIL = (INFO, SCHED_CHUNK, SCHED_DATA)
MAX_CHUNK = 192  # schedule bytes per SCHED_CHUNK / SCHED_DATA

NAMES = {
    HELLO: "HELLO",
    PING: "PING",
    STATUS_REQ: "STATUS_REQ",
    ACK: "ACK",
    REPLAY: "REPLAY",
    SCHED_BEGIN: "SCHED_BEGIN",
    SCHED_CHUNK: "SCHED_CHUNK",
    SCHED_END: "SCHED_END",
    SCHED_READ: "SCHED_READ",
    START: "START",
    PAUSE: "PAUSE",
    RESUME: "RESUME",
    STOP: "STOP",
    CAL_GET: "CAL_GET",
    CAL_SET: "CAL_SET",
    CAL_SAVE: "CAL_SAVE",
    ENTER_REPL: "ENTER_REPL",
    RESET: "RESET",
    INFO: "INFO",
    PONG: "PONG",
    STATUS: "STATUS",
    SAMPLE: "SAMPLE",
    EVENT: "EVENT",
    OK: "OK",
    NACK: "NACK",
    CAL: "CAL",
    SCHED_DATA: "SCHED_DATA",
}

# ---- NACK error codes ---------------------------------------------------------------------
E_FRAME = 1  # CRC/COBS/length problem at the framing layer
E_UNKNOWN_TYPE = 2  # message id not known to this firmware
E_LENGTH = 3  # payload length does not match the message layout
E_VERSION = 4  # incompatible protocol major version
E_STATE = 5  # command not allowed in the current run state (detail = state)
E_CHECKSUM = 6  # schedule length or CRC mismatch at SCHED_END
E_SCHEDULE = 7  # schedule rejected (detail = step index << 8 | schedule.ERR_* code)
E_RANGE = 8  # a value outside what the hardware can do (detail = the value)
E_NO_SCHEDULE = 9  # START without a loaded schedule
E_TOO_LARGE = 10  # schedule larger than the board's buffer (detail = max bytes)
E_SEQ_GONE = 11  # REPLAY from a seq no longer held (detail = oldest seq held)
E_BUSY = 12
E_INTERNAL = 13  # firmware exception handling the request (detail = the request type; for
#                  START / PAUSE / RESUME / STOP the board also logs EV_ERROR FAULT_COMMAND)
REQ_NONE = 0  # NACK.request of a frame too broken to have a type (E_FRAME)

ERROR_NAMES = {
    E_FRAME: "malformed frame",
    E_UNKNOWN_TYPE: "unknown message type",
    E_LENGTH: "wrong payload length",
    E_VERSION: "incompatible protocol version",
    E_STATE: "not allowed in the current state",
    E_CHECKSUM: "schedule checksum mismatch",
    E_SCHEDULE: "schedule rejected",
    E_RANGE: "value out of hardware range",
    E_NO_SCHEDULE: "no schedule loaded",
    E_TOO_LARGE: "too large",
    E_SEQ_GONE: "records no longer held",
    E_BUSY: "busy",
    E_INTERNAL: "internal firmware error",
}

# ---- run states (INFO.state, STATUS.state) -----------------------------------------------
ST_IDLE = 0  # no schedule
ST_LOADED = 1  # schedule verified, not started
ST_RUNNING = 2
ST_PAUSED = 3  # relay open, clock of the step stopped
ST_DONE = 4  # schedule finished normally
ST_TRIPPED = 5  # safety limit tripped: relay open, DAC zero
ST_HOLD = 6  # host-loss policy "hold": relay open until the host returns
ST_INTERRUPTED = 7  # board reset during a run (watchdog, brown-out): relay open
ST_STOPPED = 8  # stopped by the host
STATE_NAMES = (
    "idle",
    "loaded",
    "running",
    "paused",
    "done",
    "tripped",
    "hold",
    "interrupted",
    "stopped",
)

# ---- EVENT codes and reasons --------------------------------------------------------------
EV_RUN_START = 1  # value = run_id
EV_RUN_END = 2  # reason: RE_*, value = run_id
EV_STEP_START = 3  # value = step kind (schedule.K_*), aux = loop count
EV_STEP_END = 4  # reason: SE_*, value = limit index (SE_ABORT: the SF_* or FAULT_* id), aux =
#                  step charge nAh
EV_CUTOFF = 5  # voltage cutoff: reason = limit index, value = V at detection µV, aux =
#                overshoot past cutoff µV
EV_LIMIT = 6  # conditional limit tripped: reason = quantity (schedule.Q_*), value = measured
#               quantity, aux = limit index
EV_SAFETY = 7  # safety trip: reason SF_*, value = measured quantity, aux = debounce ms
EV_HOST_LOSS = 8  # ring full with host silent: reason = policy (schedule.P_*), value = records
#                   affected
EV_ERROR = 9  # firmware fault: reason = FAULT_* id, value = detail (see FAULT_*), aux = faults
#               since boot
EV_INTERRUPTED = 10  # run interrupted by a board reset: reason = reset cause (RC_*), value =
#                      run_id, aux = step
EV_PAUSED = 11  # value = step
EV_RESUMED = 12  # reason = RE_HOLD after a host-loss hold (else 0), value = step
EV_RANGE = 13  # autorange switched: value = new range index
EV_DECIMATED = 14  # host-loss policy decimate: value = records dropped so far
EV_STOPPED = 15  # stopped by the host: value = run_id

EVENT_NAMES = {
    EV_RUN_START: "run_start",
    EV_RUN_END: "run_end",
    EV_STEP_START: "step_start",
    EV_STEP_END: "step_end",
    EV_CUTOFF: "cutoff",
    EV_LIMIT: "limit",
    EV_SAFETY: "safety_trip",
    EV_HOST_LOSS: "host_loss",
    EV_ERROR: "error",
    EV_INTERRUPTED: "interrupted",
    EV_PAUSED: "paused",
    EV_RESUMED: "resumed",
    EV_RANGE: "range",
    EV_DECIMATED: "decimated",
    EV_STOPPED: "stopped",
}

RE_COMPLETE = 0  # schedule ran to its end
RE_LIMIT = 1  # a limit with action END
RE_SAFETY = 2
RE_HOST = 3  # STOP from the host
RE_HOLD = 4  # host-loss hold

SE_ABORT = 0  # cut short by a safety trip (value = SF_*) or a firmware fault (value = FAULT_*)
SE_TIME = 1
SE_LIMIT = 2  # a conditional limit (value = limit index)
SE_CUTOFF = 3
SE_CURRENT = 4  # CV current decay end
SE_DVDT = 5
SE_CHARGE = 6
SE_HOST = 7  # stopped by host

SF_VMIN = 1
SF_VMAX = 2
SF_IMAX = 3
SF_TEMP = 4
SF_COMPLIANCE = 5

# ---- firmware fault ids (EV_ERROR reason) ---------------------------------------------------
# What went wrong inside the firmware; the board goes safe, and a run in progress ends (step end
# SE_ABORT, run end RE_SAFETY). Not the schedule validation codes (schedule.ERR_*, carried in
# NACK E_SCHEDULE's detail): the two namespaces share numbers, never names.
FAULT_TICK = 1  # exception in the engine tick: value = source line
FAULT_LINK = 2  # exception while serving the link: value = source line
FAULT_FLASH = 3  # flash write failed: value = failures in a row (0: the schedule copy)
FAULT_FRONTEND = 4  # front end missing or broken at boot: runs cannot start; value = the
#                    OSError's errno (MicroPython's numbers: ETIMEDOUT 110, ENODEV 19), 0 when
#                    another exception stopped it
FAULT_LOOP = 5  # LOOP steps jumping without ever entering a step: value = step index
FAULT_SCHEDULE = 6  # schedule unusable after loading (reserved: not raised by firmware 0.1)
FAULT_COMMAND = 7  # exception in START / PAUSE / RESUME / STOP: value = request type

FAULT_NAMES = {
    FAULT_TICK: "exception in the control tick",
    FAULT_LINK: "exception in the link",
    FAULT_FLASH: "flash write failed",
    FAULT_FRONTEND: "front end not available",
    FAULT_LOOP: "runaway loop in the schedule",
    FAULT_SCHEDULE: "schedule unusable",
    FAULT_COMMAND: "exception in a run command",
}

# ---- SAMPLE flags -------------------------------------------------------------------------
F_STEP_FIRST = 0x01  # first point of a step
F_STEP_LAST = 0x02  # last point of a step
F_CV = 0x04  # CV phase of a CV or CC-CV step
F_OPEN = 0x08  # relay open (OCV, hold, trip)
F_CLIPPED = 0x10  # ADC at full scale on a channel
F_RANGE = 0x20  # current range changed at this point
F_GAP = 0x40  # points before this one were decimated (host-loss policy)

# ---- INFO capability bits -----------------------------------------------------------------
CAP_ADC24 = 0x01
CAP_DAC16 = 0x02
CAP_TEMP = 0x04
CAP_AUTORANGE = 0x08
CAP_CAL = 0x10
CAP_REPL = 0x20
CAP_EMULATOR = 0x40
CAP_WDT = 0x80

# ---- reset causes (INFO.reset_cause) ------------------------------------------------------
RC_POWER_ON = 0
RC_WATCHDOG = 1
RC_SOFT = 2
RC_BROWNOUT = 3
# A reset the host asked for (RESET, `sicell flash`) leaves this note in the RP2040 watchdog's
# SCRATCH0 (address RESET_NOTE_ADDR) before machine.reset(), a watchdog reboot there; the
# scratch registers survive it (power-on clears them), so the board reports RC_SOFT, not
# RC_WATCHDOG. SCRATCH0..3 are free: pico-sdk's watchdog_reboot uses 4..7.
RESET_NOTE = 0x2E5E7A5C
RESET_NOTE_ADDR = 0x4005800C

# ---- calibration channels (CAL_GET / CAL_SET channel) ---------------------------------------
# Each is the forward model of the hardware, output = input × gain + offset.
CH_VOLTAGE = 0  # voltage measurement: raw µV = true µV × gain + offset
CH_CURRENT = 1  # current measurement: raw nA = true nA × gain + offset
CH_SETPOINT = 2  # current set point: actual nA = commanded nA × gain + offset

_SIZES: "dict[int, int]" = {}
for _k in LAYOUTS:
    _SIZES[_k] = struct.calcsize(LAYOUTS[_k][0])
_EXT_SIZE = struct.calcsize(INFO_EXT[0])


def size(msg_type: int) -> int:
    """Size in bytes of the fixed part of a message's payload."""
    return _SIZES[msg_type]


def pack(msg_type: int, *values: "Any") -> bytes:
    """Pack the fixed part of ``msg_type`` from positional ``values`` (tail not included)."""
    return struct.pack(LAYOUTS[msg_type][0], *values)


def check_length(msg_type: int, n: int) -> int:
    """Return a NACK code (0 when fine) for a payload of ``n`` bytes of ``msg_type``."""
    lay = LAYOUTS.get(msg_type)
    if lay is None:
        return E_UNKNOWN_TYPE
    need = _SIZES[msg_type]
    if msg_type in HAS_TAIL:
        if n < need:
            return E_LENGTH
        if msg_type == SCHED_CHUNK and n - need > MAX_CHUNK:
            return E_LENGTH
        return 0
    return E_LENGTH if n != need else 0


def unpack(msg_type: int, payload: "Buf") -> "tuple[Any, ...]":
    """Unpack the fixed part; return a tuple of values. Raises ProtocolError on bad length."""
    code = check_length(msg_type, len(payload))
    if code:
        raise ProtocolError(
            "%s: %s (got %d bytes, layout needs %d)"
            % (
                NAMES.get(msg_type, "type 0x%02x" % msg_type),
                ERROR_NAMES[code],
                len(payload),
                _SIZES.get(msg_type, 0),
            )
        )
    return struct.unpack_from(LAYOUTS[msg_type][0], payload, 0)


def tail(msg_type: int, payload: "Buf") -> "Buf":
    """The variable tail of INFO / SCHED_CHUNK / SCHED_DATA."""
    return payload[_SIZES[msg_type] :]


def pack_info(
    values: "Iterable[Any]", ranges_na: "Iterable[int]", ext: "Iterable[int] | None" = None
) -> bytes:
    """INFO payload: the fixed fields in LAYOUTS order, one i32 per range, then the INFO_EXT
    fields when ``ext`` is given."""
    out = bytearray(struct.pack(LAYOUTS[INFO][0], *values))
    for r in ranges_na:
        out += struct.pack("<i", r)
    if ext is not None:
        out += struct.pack(INFO_EXT[0], *ext)
    return bytes(out)


def _info_ext_at(payload: "Buf") -> int:
    # offset of INFO's extension (== len(payload) when there is none); ProtocolError when the
    # tail is neither the ranges nor the ranges and the extension
    base = _SIZES[INFO]
    n = payload[5]
    end = base + 4 * n
    if len(payload) != end and len(payload) != end + _EXT_SIZE:
        raise ProtocolError(
            "INFO: %d ranges announced but %d tail bytes" % (n, len(payload) - base)
        )
    return end


def unpack_info_ranges(payload: "Buf") -> list[int]:
    """Full-scale currents (nA) listed after INFO's fixed part."""
    base = _SIZES[INFO]
    _info_ext_at(payload)
    return [struct.unpack_from("<i", payload, base + 4 * i)[0] for i in range(payload[5])]


def unpack_info_ext(payload: "Buf") -> "tuple[Any, ...] | None":
    """INFO_EXT's fields after the range tail, or None from a board that sends none."""
    at = _info_ext_at(payload)
    if at == len(payload):
        return None
    return struct.unpack_from(INFO_EXT[0], payload, at)


def compatible(major: int) -> bool:
    """Whether a peer's protocol major version can talk to this one."""
    return major == PROTO_MAJOR
