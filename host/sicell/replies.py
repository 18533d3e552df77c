"""Typed forms of what a board sends: INFO, STATUS, calibration entries, records, stray NACKs,
and the names of states, reset causes, capabilities and calibration channels."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from dataclasses import fields as dc_fields
from typing import Any

from sicell.protocol import messages

_SEQ_MASK = 0xFFFFFFFF  # seqs are u32; STATUS.acked_seq is this (the board's -1) until an ACK
RUNNING_STATES = (messages.ST_RUNNING, messages.ST_PAUSED, messages.ST_HOLD)
TERMINAL_STATES = (
    messages.ST_DONE,
    messages.ST_TRIPPED,
    messages.ST_INTERRUPTED,
    messages.ST_STOPPED,
)
RESET_CAUSE_NAMES = {
    messages.RC_POWER_ON: "power-on",
    messages.RC_WATCHDOG: "watchdog",
    messages.RC_SOFT: "soft reset",
    messages.RC_BROWNOUT: "brown-out",
}
CAP_NAMES = {
    messages.CAP_ADC24: "adc24",
    messages.CAP_DAC16: "dac16",
    messages.CAP_TEMP: "temperature",
    messages.CAP_AUTORANGE: "autorange",
    messages.CAP_CAL: "calibration",
    messages.CAP_REPL: "repl",
    messages.CAP_EMULATOR: "emulator",
    messages.CAP_WDT: "watchdog",
}

# Channels of a calibration entry (CAL_GET / CAL_SET ``channel``; messages.CH_* define them).
CHANNELS = (messages.CH_VOLTAGE, messages.CH_CURRENT, messages.CH_SETPOINT)
CHANNEL_NAMES = {
    messages.CH_VOLTAGE: "voltage",
    messages.CH_CURRENT: "current",
    messages.CH_SETPOINT: "setpoint",
}


# errno numbers as MicroPython gives them (py/mperrno.h: Linux's), whatever the host's OS:
# FAULT_FRONTEND's detail. The ones a bus or a chip driver raises carry what they mean there.
ERRNO_NAMES = {
    1: ("EPERM", ""),
    2: ("ENOENT", "a file is missing"),
    5: ("EIO", "input/output error on the bus"),
    9: ("EBADF", ""),
    11: ("EAGAIN", ""),
    12: ("ENOMEM", "out of memory"),
    13: ("EACCES", ""),
    16: ("EBUSY", "the bus is busy"),
    17: ("EEXIST", ""),
    19: ("ENODEV", "no chip answers at its I2C address: missing or miswired"),
    22: ("EINVAL", "a bad argument (pins, address or board config)"),
    28: ("ENOSPC", "the flash is full"),
    95: ("EOPNOTSUPP", ""),
    110: ("ETIMEDOUT", "a chip on the I2C bus did not answer in time (bus stuck, no pull-ups)"),
}


def errno_text(n: int) -> str:
    """``n`` as its errno name and meaning on the board, e.g. "ETIMEDOUT (errno 110: ...)"."""
    name, meaning = ERRNO_NAMES.get(n, (f"errno {n}", ""))
    if name.startswith("errno"):
        return name
    return f"{name} (errno {n}: {meaning})" if meaning else f"{name} (errno {n})"


def fault_text(fault: int, detail: int) -> str:
    """An EV_ERROR in words: the fault's name (``messages.FAULT_NAMES``, reason) and what its
    detail (value) means for that fault."""
    name = messages.FAULT_NAMES.get(fault, f"fault {fault}")
    if fault in (messages.FAULT_TICK, messages.FAULT_LINK):
        return f"{name} (source line {detail})" if detail else name
    if fault == messages.FAULT_FLASH:
        what = f"{detail} failures in a row" if detail else "the schedule's copy"
        return f"{name} ({what})"
    if fault == messages.FAULT_FRONTEND:
        return f"{name}: {errno_text(detail)}" if detail else f"{name} (not an I/O error)"
    if fault == messages.FAULT_LOOP:
        return f"{name} (step {detail})"
    if fault == messages.FAULT_COMMAND:
        return f"{name} ({messages.NAMES.get(detail, f'request {detail}')})"
    return f"{name} (detail {detail})"


def state_name(state: int) -> str:
    """A board state's name (``messages.STATE_NAMES``), or "state N" for an unknown one."""
    if 0 <= state < len(messages.STATE_NAMES):
        return str(messages.STATE_NAMES[state])
    return f"state {state}"


def payload_fields(msg_type: int, payload: bytes) -> dict[str, Any]:
    """The fixed part of a payload as the wire layout's names → values (ProtocolError when its
    length is wrong)."""
    return dict(zip(messages.LAYOUTS[msg_type][1], messages.unpack(msg_type, payload), strict=True))


def _init_args(cls: type[Any], f: dict[str, Any], **derived: Any) -> dict[str, Any]:
    """Arguments for dataclass ``cls``: each field from the wire field of the same name in ``f``,
    unless ``derived`` gives it."""
    args = {x.name: f[x.name] for x in dc_fields(cls) if x.name in f}
    args.update(derived)
    return args


def _decode_board_id(raw: bytes) -> str:
    text = raw.rstrip(b"\x00")
    if text and all(32 <= b < 127 for b in text):
        return text.decode("ascii")
    return raw.hex()


class _BoardState:
    """What INFO and STATUS tell alike about the board's state."""

    state: int

    @property
    def state_name(self) -> str:
        return state_name(self.state)

    @property
    def has_run(self) -> bool:
        """Whether an experiment is in progress (running, paused or held)."""
        return self.state in RUNNING_STATES


@dataclass(frozen=True)
class BoardInfo(_BoardState):
    """INFO, the board's answer to HELLO."""

    fw_version: tuple[int, int, int]
    proto_major: int
    proto_minor: int
    caps: int
    board_id: str
    v_min_uv: int
    v_max_uv: int
    compliance_uv: int
    ring_capacity: int
    tick_ms: int
    state: int
    reset_cause: int
    run_id: int
    ranges_na: tuple[int, ...]
    # INFO's extension (messages.INFO_EXT), µs; 0 = not measured, or a board that predates it
    tick_us: int = 0
    tick_max_us: int = 0
    idle_us: int = 0
    fields: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_payload(cls, payload: bytes) -> BoardInfo:
        f = payload_fields(messages.INFO, payload)
        ext = messages.unpack_info_ext(payload)
        if ext is not None:
            f.update(zip(messages.INFO_EXT[1], ext, strict=True))
        return cls(
            **_init_args(
                cls,
                f,
                fw_version=(f["fw_major"], f["fw_minor"], f["fw_patch"]),
                board_id=_decode_board_id(f["board_id"]),
                ranges_na=tuple(messages.unpack_info_ranges(payload)),
                fields=f,
            )
        )

    @property
    def fw_version_str(self) -> str:
        return ".".join(str(x) for x in self.fw_version)

    @property
    def protocol_version_str(self) -> str:
        return f"{self.proto_major}.{self.proto_minor}"

    @property
    def reset_cause_name(self) -> str:
        return RESET_CAUSE_NAMES.get(self.reset_cause, f"cause {self.reset_cause}")

    @property
    def cap_names(self) -> list[str]:
        return [n for bit, n in CAP_NAMES.items() if self.caps & bit]

    @property
    def n_ranges(self) -> int:
        return len(self.ranges_na)

    @property
    def is_emulator(self) -> bool:
        return bool(self.caps & messages.CAP_EMULATOR)

    def as_dict(self) -> dict[str, Any]:
        """INFO field names → values plus ``ranges_na`` and the extension's fields (what
        ``BoardLimits.from_info`` takes)."""
        d = dict(self.fields)
        d["board_id"] = self.board_id
        d["ranges_na"] = list(self.ranges_na)
        d.update(tick_us=self.tick_us, tick_max_us=self.tick_max_us, idle_us=self.idle_us)
        return d

    def metadata(self) -> dict[str, Any]:
        """What a run database records about the board."""
        return {
            "firmware_version": self.fw_version_str,
            "protocol_version": self.protocol_version_str,
            "board_id": self.board_id,
            "board_caps": self.cap_names,
            "board_ranges_na": list(self.ranges_na),
            "board_reset_cause": self.reset_cause_name,
        }


@dataclass(frozen=True)
class Status(_BoardState):
    """STATUS, the board's answer to STATUS_REQ."""

    state: int
    range: int
    step: int
    cycle: int
    flags: int
    t_s: float
    v_uv: int
    i_na: int
    q_nah: int
    run_id: int
    first_seq: int
    last_seq: int
    acked_seq: int
    dropped: int

    @classmethod
    def from_payload(cls, payload: bytes) -> Status:
        f = payload_fields(messages.STATUS, payload)
        return cls(**_init_args(cls, f, t_s=f["t_s"] + f["t_ms"] / 1000.0))

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def held(self) -> int:
        """How many records the board holds: first_seq .. last_seq (u32, wrapping); 0 when
        last_seq is first_seq - 1."""
        return (self.last_seq - self.first_seq + 1) & _SEQ_MASK

    @property
    def acked_any(self) -> bool:
        """Whether a host acknowledged any record since the board started (the board sends
        acked_seq 0xFFFFFFFF, its -1, until then)."""
        return self.acked_seq != _SEQ_MASK

    def records_text(self) -> str:
        """What the board holds and what a host acked, in words."""
        if self.held:
            text = f"seq {self.first_seq}..{self.last_seq} ({self.held})"
        else:
            text = f"none (ring empty; next seq {self.first_seq})"
        acked = f"host acked up to seq {self.acked_seq}" if self.acked_any else "host acked none"
        return f"{text}; {acked}; dropped {self.dropped}"


@dataclass(frozen=True)
class CalEntry:
    """One calibration entry: output = input × gain_ppm / 1e6 + offset (board units; see
    messages.CH_* for what input and output are)."""

    range: int
    channel: int
    offset: int
    gain_ppm: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class Record:
    """A SAMPLE or EVENT from the board: ``fields`` holds the wire layout's names → integers."""

    type: int
    seq: int
    fields: dict[str, int]

    @property
    def values(self) -> tuple[int, ...]:
        """The fields in wire layout order (what ``messages.unpack`` returns)."""
        return tuple(self.fields.values())

    @property
    def is_sample(self) -> bool:
        return self.type == messages.SAMPLE

    @property
    def is_event(self) -> bool:
        return self.type == messages.EVENT


@dataclass(frozen=True)
class Nack:
    """A NACK that answered no pending request (e.g. REPLAY's E_SEQ_GONE)."""

    request_id: int
    request: int
    code: int
    detail: int


RecordSink = Callable[[Record], None]
NackSink = Callable[[Nack], None]
