"""Talk to one sicell board: handshake, requests with ids, timeouts and retries, records.

The client is single-threaded and synchronous: :meth:`Board.request` sends a command and reads
frames until its reply arrives, and :meth:`Board.poll` reads whatever arrives. SAMPLE and EVENT
records can arrive at any moment (also while waiting for a reply); each is handed to the record
sink as a :class:`Record`. A NACK becomes a :class:`BoardError` that names the request and the
error in words.
"""

from __future__ import annotations

import contextlib
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sicell.errors import (
    BoardError,
    BoardTimeoutError,
    NoFirmwareError,
    ScheduleVerifyError,
    TransportError,
    VersionMismatchError,
)
from sicell.protocol import framing, messages
from sicell.protocol import schedule as wire_schedule
from sicell.transport import HOST_VERSION, Frame, Link

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
# Requests that can be sent twice with the same effect, so a lost reply may be retried.
IDEMPOTENT = frozenset(
    {
        messages.HELLO,
        messages.PING,
        messages.STATUS_REQ,
        messages.SCHED_BEGIN,
        messages.SCHED_CHUNK,
        messages.SCHED_READ,
        messages.CAL_GET,
        messages.CAL_SET,
        messages.CAL_SAVE,
    }
)
# Channels of a calibration entry (CAL_GET / CAL_SET ``channel``, firmware/calibration.py):
# each is the forward model of the hardware, ``output = input × gain + offset``.
CH_VOLTAGE = 0  # voltage measurement: raw µV = true µV × gain + offset
CH_CURRENT = 1  # current measurement: raw nA = true nA × gain + offset
CH_SETPOINT = 2  # current set point: actual nA = commanded nA × gain + offset
CHANNELS = (CH_VOLTAGE, CH_CURRENT, CH_SETPOINT)
CHANNEL_NAMES = {CH_VOLTAGE: "voltage", CH_CURRENT: "current", CH_SETPOINT: "setpoint"}


def state_name(state: int) -> str:
    if 0 <= state < len(messages.STATE_NAMES):
        return str(messages.STATE_NAMES[state])
    return f"state {state}"


def describe_nack(code: int, detail: int) -> str:
    """The NACK error in words, with its detail decoded where the protocol defines it."""
    name = messages.ERROR_NAMES.get(code, f"error {code}")
    if code == messages.E_SCHEDULE:
        step = (detail >> 8) & 0xFFFF
        err = detail & 0xFF
        text = wire_schedule.ERR_TEXT.get(err, f"schedule error {err}")
        where = "header" if step == 0xFFFF else f"step {step}"
        return f"{name}: {where}: {text}"
    if code == messages.E_STATE:
        return f"{name} (board is {state_name(detail)})"
    if code == messages.E_SEQ_GONE:
        return f"{name} (oldest record held is seq {detail})"
    if code == messages.E_TOO_LARGE:
        return f"{name} (board holds at most {detail} bytes)"
    if code == messages.E_RANGE:
        return f"{name} (value {detail})"
    if code == messages.E_VERSION:
        return f"{name} (board speaks {_version_text(detail)})"
    if code == messages.E_FRAME:
        ftext: str | None = framing._ERR_TEXT.get(detail)
        return f"{name} ({ftext})" if ftext else name
    if detail:
        return f"{name} (detail {detail})"
    return name


def _version_text(detail: int) -> str:
    """E_VERSION's detail: the board's version byte (major << 4 | minor), or a bare major."""
    if detail >= 16:
        return f"{detail >> 4}.{detail & 0x0F}"
    return f"{detail}.x"


# ---- typed replies --------------------------------------------------------------------------
def _decode_board_id(raw: bytes) -> str:
    text = raw.rstrip(b"\x00")
    if text and all(32 <= b < 127 for b in text):
        return text.decode("ascii")
    return raw.hex()


@dataclass(frozen=True)
class BoardInfo:
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
    fields: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_payload(cls, payload: bytes) -> BoardInfo:
        values = messages.unpack(messages.INFO, payload)
        names = messages.LAYOUTS[messages.INFO][1]
        f = dict(zip(names, values, strict=True))
        ranges = messages.unpack_info_ranges(payload)
        return cls(
            fw_version=(f["fw_major"], f["fw_minor"], f["fw_patch"]),
            proto_major=f["proto_major"],
            proto_minor=f["proto_minor"],
            caps=f["caps"],
            board_id=_decode_board_id(f["board_id"]),
            v_min_uv=f["v_min_uv"],
            v_max_uv=f["v_max_uv"],
            compliance_uv=f["compliance_uv"],
            ring_capacity=f["ring_capacity"],
            tick_ms=f["tick_ms"],
            state=f["state"],
            reset_cause=f["reset_cause"],
            run_id=f["run_id"],
            ranges_na=tuple(ranges),
            fields=f,
        )

    @property
    def fw_version_str(self) -> str:
        return ".".join(str(x) for x in self.fw_version)

    @property
    def protocol_version_str(self) -> str:
        return f"{self.proto_major}.{self.proto_minor}"

    @property
    def state_name(self) -> str:
        return state_name(self.state)

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

    @property
    def has_run(self) -> bool:
        """Whether an experiment is in progress (running, paused or held)."""
        return self.state in RUNNING_STATES

    def as_dict(self) -> dict[str, Any]:
        """INFO field names → values plus ``ranges_na`` (what ``BoardLimits.from_info`` takes)."""
        d = dict(self.fields)
        d["board_id"] = self.board_id
        d["ranges_na"] = list(self.ranges_na)
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
class Status:
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
        f = dict(
            zip(
                messages.LAYOUTS[messages.STATUS][1],
                messages.unpack(messages.STATUS, payload),
                strict=True,
            )
        )
        return cls(
            state=f["state"],
            range=f["range"],
            step=f["step"],
            cycle=f["cycle"],
            flags=f["flags"],
            t_s=f["t_s"] + f["t_ms"] / 1000.0,
            v_uv=f["v_uv"],
            i_na=f["i_na"],
            q_nah=f["q_nah"],
            run_id=f["run_id"],
            first_seq=f["first_seq"],
            last_seq=f["last_seq"],
            acked_seq=f["acked_seq"],
            dropped=f["dropped"],
        )

    @property
    def state_name(self) -> str:
        return state_name(self.state)

    @property
    def has_run(self) -> bool:
        return self.state in RUNNING_STATES

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES


@dataclass(frozen=True)
class CalEntry:
    """One calibration entry: output = input × gain_ppm / 1e6 + offset (board units; see
    CH_VOLTAGE, CH_CURRENT, CH_SETPOINT for what input and output are)."""

    range: int
    channel: int
    offset: int
    gain_ppm: int

    def as_dict(self) -> dict[str, int]:
        return {
            "range": self.range,
            "channel": self.channel,
            "offset": self.offset,
            "gain_ppm": self.gain_ppm,
        }


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


# ---- the board ------------------------------------------------------------------------------
class Board:
    """One board on one link. Not thread-safe: use one Board per thread."""

    def __init__(
        self,
        link: Link,
        *,
        record_sink: RecordSink | None = None,
        nack_sink: NackSink | None = None,
        timeout: float = 1.0,
        retries: int = 3,
    ) -> None:
        self.link = link
        self.port = link.name
        self.record_sink = record_sink
        self.nack_sink = nack_sink
        self.timeout = timeout
        self.retries = retries
        self.info: BoardInfo | None = None
        self._next_id = 1
        self.stale_replies = 0
        self.bad_payloads = 0
        self.unsolicited: list[Frame] = []

    @classmethod
    def open(
        cls,
        port: str,
        *,
        record_sink: RecordSink | None = None,
        nack_sink: NackSink | None = None,
        timeout: float = 1.0,
        hello_timeout: float = 5.0,
        handshake: bool = True,
        exclusive: bool = True,
    ) -> Board:
        """Open ``port`` and (by default) handshake; close the port again if that fails."""
        link = Link.open(port, exclusive=exclusive)
        board = cls(link, record_sink=record_sink, nack_sink=nack_sink, timeout=timeout)
        if handshake:
            try:
                board.hello(timeout=hello_timeout)
            except BaseException:
                link.close()
                raise
        return board

    def close(self) -> None:
        self.link.close()

    def __enter__(self) -> Board:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- low level ---------------------------------------------------------------------------
    def _new_id(self) -> int:
        rid = self._next_id
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF or 1
        return rid

    def send(self, msg_type: int, payload: bytes = b"") -> int:
        """Send a command without waiting; return its request id."""
        rid = self._new_id()
        self.link.send(msg_type, rid, payload)
        return rid

    def _check_version(self, frame: Frame) -> None:
        major = frame.version >> 4
        if not messages.compatible(major):
            raise VersionMismatchError(self.port, f"{major}.{frame.version & 0x0F}", HOST_VERSION)

    def _dispatch(self, frame: Frame) -> None:
        """Hand a frame that is no reply we wait for to the record sink (or keep it)."""
        t = frame.type
        if t in (messages.SAMPLE, messages.EVENT):
            try:
                values = messages.unpack(t, frame.payload)
            except framing.ProtocolError:
                self.bad_payloads += 1
                return
            rec = Record(t, frame.seq, dict(zip(messages.LAYOUTS[t][1], values, strict=True)))
            if self.record_sink is not None:
                self.record_sink(rec)
            return
        if t == messages.NACK:
            try:
                req, code, detail = messages.unpack(messages.NACK, frame.payload)
            except framing.ProtocolError:
                self.bad_payloads += 1
                return
            nack = Nack(frame.seq, req, code, detail)
            if self.nack_sink is not None:
                self.nack_sink(nack)
            else:
                self.unsolicited.append(frame)
            return
        if t == messages.OK:
            # A late OK to a request that already timed out, or to ACK/REPLAY.
            self.stale_replies += 1
            return
        self.unsolicited.append(frame)
        del self.unsolicited[:-32]

    def poll(self, timeout: float = 0.1) -> int:
        """Read for up to ``timeout`` s (returns early once frames arrive); dispatch them.

        Returns the number of frames read.
        """
        frames = self.link.receive(timeout)
        for fr in frames:
            if not messages.compatible(fr.version >> 4):
                self._check_version(fr)
            self._dispatch(fr)
        return len(frames)

    def request(
        self,
        msg_type: int,
        payload: bytes = b"",
        *,
        expect: int = messages.OK,
        timeout: float | None = None,
        retries: int | None = None,
    ) -> Frame:
        """Send a command and return its reply frame (of type ``expect``).

        Idempotent requests are resent (with the same request id) when no reply arrives within
        ``timeout``; others are sent once. A NACK raises :class:`BoardError`.
        """
        tmo = self.timeout if timeout is None else timeout
        tries = 1
        if msg_type in IDEMPOTENT:
            tries = 1 + (self.retries if retries is None else retries)
        rid = self._new_id()
        name = messages.NAMES.get(msg_type, f"request 0x{msg_type:02x}")
        for _attempt in range(tries):
            self.link.send(msg_type, rid, payload)
            deadline = time.monotonic() + tmo
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                reply: Frame | None = None
                # Every frame read is handled, the ones after the reply included: records that
                # arrive in the same read as the reply must reach the sink, not vanish.
                for fr in self.link.receive(min(left, 0.2)):
                    if (
                        reply is None
                        and fr.seq == rid
                        and fr.type in (expect, messages.NACK, messages.OK)
                    ):
                        self._check_version(fr)
                        if fr.type in (expect, messages.NACK):
                            reply = fr
                        else:
                            # an OK where another reply was expected: not ours; keep waiting.
                            self.stale_replies += 1
                        continue
                    if not messages.compatible(fr.version >> 4):
                        self._check_version(fr)
                    self._dispatch(fr)
                if reply is not None:
                    if reply.type == messages.NACK and expect != messages.NACK:
                        req, code, detail = messages.unpack(messages.NACK, reply.payload)
                        raise BoardError(
                            req or msg_type, code, detail, self.port, describe_nack(code, detail)
                        )
                    return reply
        tries_text = f" after {tries} tries" if tries > 1 else ""
        raise BoardTimeoutError(f"{self.port}: no reply to {name} within {tmo:g} s{tries_text}")

    # -- handshake ---------------------------------------------------------------------------
    def hello(self, timeout: float = 5.0) -> BoardInfo:
        """HELLO → INFO. Raises NoFirmwareError, VersionMismatchError, BoardError."""
        payload = messages.pack(messages.HELLO, framing.PROTO_MAJOR, framing.PROTO_MINOR)
        rid = self._new_id()
        deadline = time.monotonic() + timeout
        errors_before = self.link.framing_errors
        bytes_before = self.link.reader.bytes_in
        interval = 0.5
        next_send = 0.0
        self.link.reader.reset()
        # A leading delimiter flushes whatever partial frame the board holds.
        self.link.write_raw(b"\x00")
        while True:
            now = time.monotonic()
            if now >= deadline:
                break
            if now >= next_send:
                self.link.send(messages.HELLO, rid, payload)
                next_send = now + interval
            reply: Frame | None = None
            for fr in self.link.receive(min(0.1, max(0.0, deadline - now))):
                if reply is None and fr.seq == rid and fr.type in (messages.NACK, messages.INFO):
                    reply = fr  # records read together with INFO still go to the sink below
                    continue
                if not messages.compatible(fr.version >> 4):
                    self._check_version(fr)
                self._dispatch(fr)
            if reply is not None:
                return self._hello_reply(reply)
        got = self.link.reader.bytes_in - bytes_before
        bad = self.link.framing_errors - errors_before
        if got:
            raise NoFirmwareError(
                f"no sicell firmware on {self.port}: it answered with {got} bytes but no "
                f"sicell INFO frame ({bad} bad frames) within {timeout:g} s; "
                f"flash it with `sicell flash --port {self.port}`"
            )
        raise NoFirmwareError(
            f"no sicell firmware on {self.port}: no answer to HELLO within {timeout:g} s; "
            f"check the cable, or flash it with `sicell flash --port {self.port}`"
        )

    def _hello_reply(self, fr: Frame) -> BoardInfo:
        self._check_version(fr)
        if fr.type == messages.NACK:
            req, code, detail = messages.unpack(messages.NACK, fr.payload)
            if code == messages.E_VERSION:
                raise VersionMismatchError(self.port, _version_text(detail), HOST_VERSION)
            raise BoardError(
                req or messages.HELLO, code, detail, self.port, describe_nack(code, detail)
            )
        try:
            info = BoardInfo.from_payload(fr.payload)
        except framing.ProtocolError as e:
            raise NoFirmwareError(
                f"{self.port}: board answered HELLO with a malformed INFO ({e}); "
                f"flash matching firmware with `sicell flash --port {self.port}`"
            ) from e
        if not messages.compatible(info.proto_major):
            raise VersionMismatchError(self.port, info.protocol_version_str, HOST_VERSION)
        self.info = info
        return info

    # -- commands ----------------------------------------------------------------------------
    def ping(self, nonce: int = 0x51CE11) -> tuple[int, float]:
        """PING → (uptime_s, round trip s)."""
        t0 = time.monotonic()
        fr = self.request(messages.PING, messages.pack(messages.PING, nonce), expect=messages.PONG)
        got, uptime = messages.unpack(messages.PONG, fr.payload)
        if got != nonce:
            raise TransportError(f"{self.port}: PONG carries nonce {got:#x}, sent {nonce:#x}")
        return int(uptime), time.monotonic() - t0

    def status(self) -> Status:
        fr = self.request(messages.STATUS_REQ, expect=messages.STATUS)
        return Status.from_payload(fr.payload)

    def upload_schedule(
        self, blob: bytes, progress: Callable[[int, int], None] | None = None
    ) -> None:
        """SCHED_BEGIN, SCHED_CHUNK × n (MAX_CHUNK bytes each), SCHED_END; then verify."""
        total = len(blob)
        crc = framing.crc16(blob)
        self.request(messages.SCHED_BEGIN, messages.pack(messages.SCHED_BEGIN, total, crc))
        step = messages.MAX_CHUNK
        for off in range(0, total, step):
            chunk = blob[off : off + step]
            self.request(messages.SCHED_CHUNK, messages.pack(messages.SCHED_CHUNK, off) + chunk)
            if progress is not None:
                progress(off + len(chunk), total)
        try:
            self.request(messages.SCHED_END, timeout=max(self.timeout, 3.0))
        except BoardTimeoutError:
            # SCHED_END is not blindly repeatable; ask the board whether it took the schedule.
            st = self.status()
            if st.state != messages.ST_LOADED:
                raise
        self.verify_schedule(blob)

    def read_schedule(self, length: int) -> bytes:
        """Read ``length`` bytes of the loaded schedule back with SCHED_READ."""
        out = bytearray()
        step = messages.MAX_CHUNK
        for off in range(0, length, step):
            n = min(step, length - off)
            fr = self.request(
                messages.SCHED_READ,
                messages.pack(messages.SCHED_READ, off, n),
                expect=messages.SCHED_DATA,
            )
            (got_off,) = messages.unpack(messages.SCHED_DATA, fr.payload)
            data = messages.tail(messages.SCHED_DATA, fr.payload)
            if got_off != off:
                raise ScheduleVerifyError(
                    f"{self.port}: SCHED_DATA for offset {got_off}, asked for {off}"
                )
            out += data
            if len(data) < n:
                break
        return bytes(out)

    def verify_schedule(self, blob: bytes) -> None:
        back = self.read_schedule(len(blob))
        if back != blob:
            where = next(
                (i for i, (a, b) in enumerate(zip(back, blob, strict=False)) if a != b),
                min(len(back), len(blob)),
            )
            raise ScheduleVerifyError(
                f"{self.port}: schedule read back differs from the upload at byte {where} "
                f"({len(back)} of {len(blob)} bytes read); not starting"
            )

    def start(self, run_id: int) -> None:
        """START a loaded schedule as run ``run_id``.

        START is not repeatable, so a lost reply is settled by asking STATUS whether the board
        runs this run id.
        """
        try:
            self.request(messages.START, messages.pack(messages.START, run_id & 0xFFFFFFFF))
        except BoardTimeoutError:
            st = self.status()
            if st.run_id != run_id or st.state in (messages.ST_IDLE, messages.ST_LOADED):
                raise

    def pause(self) -> None:
        self.request(messages.PAUSE)

    def resume(self) -> None:
        self.request(messages.RESUME)

    def stop(self) -> None:
        """STOP the run (a lost reply is settled with STATUS, like START)."""
        try:
            self.request(messages.STOP)
        except BoardTimeoutError:
            if self.status().has_run:
                raise

    def ack(self, seq: int) -> None:
        """Tell the board every record up to ``seq`` is stored (no reply)."""
        self.send(messages.ACK, messages.pack(messages.ACK, seq & 0xFFFFFFFF))

    def replay(self, from_seq: int) -> int:
        """Ask for every record from ``from_seq`` on; returns the request id.

        The records arrive through the record sink; E_SEQ_GONE arrives through the NACK sink.
        """
        return self.send(messages.REPLAY, messages.pack(messages.REPLAY, from_seq & 0xFFFFFFFF))

    def cal_get(self, rng: int, channel: int) -> CalEntry:
        fr = self.request(
            messages.CAL_GET, messages.pack(messages.CAL_GET, rng, channel), expect=messages.CAL
        )
        r, c, off, gain = messages.unpack(messages.CAL, fr.payload)
        return CalEntry(r, c, off, gain)

    def cal_set(self, entry: CalEntry) -> None:
        self.request(
            messages.CAL_SET,
            messages.pack(
                messages.CAL_SET, entry.range, entry.channel, entry.offset, entry.gain_ppm
            ),
        )

    def cal_save(self) -> None:
        self.request(messages.CAL_SAVE, timeout=max(self.timeout, 3.0))

    def calibration(self) -> list[CalEntry]:
        """Every range × channel entry the board reports (an empty list if it has none)."""
        n = self.info.n_ranges if self.info is not None else 0
        out: list[CalEntry] = []
        for r in range(n):
            for ch in CHANNELS:
                try:
                    out.append(self.cal_get(r, ch))
                except BoardError:
                    continue
        return out

    def enter_repl(self) -> None:
        """Ask the board to leave binary mode so mpremote can take the port."""
        self.request(messages.ENTER_REPL)

    def reset(self) -> None:
        """Soft-reset the board (its OK may be lost in the reboot)."""
        with contextlib.suppress(TransportError):
            self.request(messages.RESET, timeout=1.0)


def new_run_id() -> int:
    """A random non-zero run id below 2**31.

    START carries it as u32, but EV_RUN_START / EV_INTERRUPTED carry it in an i32 ``value``:
    31 bits keep it the same number on both.
    """
    import secrets

    while True:
        rid = struct.unpack("<I", secrets.token_bytes(4))[0] & 0x7FFFFFFF
        if rid:
            return int(rid)
