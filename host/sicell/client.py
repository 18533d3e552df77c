"""Talk to one sicell board: handshake, requests with ids, timeouts and retries, records.

The client is single-threaded and synchronous: :meth:`Board.request` sends a command and reads
frames until its reply arrives, and :meth:`Board.poll` reads whatever arrives. SAMPLE and EVENT
records can arrive at any moment (also while waiting for a reply); each is handed to the record
sink as a :class:`Record`. A NACK becomes a :class:`BoardError` that names the request and the
error in words.

The typed replies and name tables live in ``sicell.replies``, the NACK texts in ``sicell.nack``;
the ones other modules import from here are re-exported.
"""

from __future__ import annotations

import contextlib
import math
import struct
import time
from collections.abc import Callable, Collection, Container
from typing import Any, TypedDict, Unpack

from sicell import upload
from sicell.errors import (
    BoardError,
    BoardTimeoutError,
    NoFirmwareError,
    TransportError,
    VersionMismatchError,
)
from sicell.nack import describe_nack, version_text
from sicell.protocol import framing, messages
from sicell.replies import (
    CHANNEL_NAMES,
    CHANNELS,
    BoardInfo,
    CalEntry,
    Nack,
    NackSink,
    Record,
    RecordSink,
    Status,
    payload_fields,
    state_name,
)
from sicell.retry import MIN_WAIT_S, Attempts, RoundTrip
from sicell.transport import HOST_VERSION, Frame, Link

# Besides Board: the names other modules import from here (replies, NACK texts, errors).
__all__ = [
    "CHANNEL_NAMES",
    "IDEMPOTENT",
    "Board",
    "BoardError",
    "BoardInfo",
    "BoardOptions",
    "CalEntry",
    "Nack",
    "Record",
    "Status",
    "describe_nack",
    "new_run_id",
    "state_name",
]

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


class BoardOptions(TypedDict, total=False):
    """Keyword options of :class:`Board` that :meth:`Board.open` passes through."""

    record_sink: RecordSink | None
    nack_sink: NackSink | None
    timeout: float
    retries: int


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
        self.round_trip = RoundTrip()
        self.answered = b""  # the payload the last reply answered (see request)

    @classmethod
    def open(
        cls,
        port: str,
        *,
        hello_timeout: float = 5.0,
        handshake: bool = True,
        exclusive: bool = True,
        **options: Unpack[BoardOptions],
    ) -> Board:
        """Open ``port`` and (by default) handshake; close the port again if that fails."""
        link = Link.open(port, exclusive=exclusive)
        board = cls(link, **options)
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

    def _handle(
        self,
        frames: list[Frame],
        rids: Container[int] = (),
        accept: Collection[int] = (),
        stale: Collection[int] = (),
    ) -> Frame | None:
        """Handle frames read together; return the first that answers a request id in ``rids``
        with a type in ``accept``.

        Every other frame is dispatched, those after the reply included (records that arrive
        in the same read as the reply must reach the sink, not vanish); an answer to ``rids``
        with a type in ``stale`` (an OK where another reply was expected) is counted and
        dropped; one whose payload does not fit its type's layout is counted in
        ``bad_payloads`` and dropped (noise that passed the CRC). A frame of an incompatible
        protocol version raises VersionMismatchError.
        """
        reply: Frame | None = None
        for fr in frames:
            self._check_version(fr)
            if reply is None and fr.seq in rids:
                if fr.type in accept:
                    if messages.check_length(fr.type, len(fr.payload)):
                        # a spoilt frame that passed the CRC (~1 in 65,536 do): as if lost
                        self.bad_payloads += 1
                        continue
                    reply = fr
                    continue
                if fr.type in stale:
                    self.stale_replies += 1
                    continue
            self._dispatch(fr)
        return reply

    def _dispatch(self, frame: Frame) -> None:
        """Hand a frame that is no reply we wait for to the record sink (or keep it)."""
        t = frame.type
        if t in (messages.SAMPLE, messages.EVENT):
            try:
                rec = Record(t, frame.seq, payload_fields(t, frame.payload))
            except framing.ProtocolError:
                self.bad_payloads += 1
                return
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

    def _spoilt(self) -> int:
        """Frames that arrived spoilt so far: bad frames and payloads of the wrong length."""
        return self.link.framing_errors + self.bad_payloads

    def _nack_error(self, frame: Frame, request: int) -> BoardError:
        """The BoardError for a NACK that answers ``request``."""
        req, code, detail = messages.unpack(messages.NACK, frame.payload)
        return BoardError(req or request, code, detail, self.port, describe_nack(code, detail))

    def poll(self, timeout: float = 0.1) -> int:
        """Read for up to ``timeout`` s (returns early once frames arrive); dispatch them.

        Returns the number of frames read.
        """
        frames = self.link.receive(timeout)
        self._handle(frames)
        return len(frames)

    def request(
        self,
        msg_type: int,
        payload: bytes | Callable[[int], bytes] = b"",
        *,
        expect: int = messages.OK,
        timeout: float | None = None,
        retries: int | None = None,
        first_wait: float | None = None,
    ) -> Frame:
        """Send a command and return its reply frame (of type ``expect``).

        An idempotent request is resent while no reply arrives: the first wait follows the
        measured round trip (``first_wait`` overrides it) and grows up to ``timeout`` s (see
        ``sicell.retry``); it gives up after ``timeout × (1 + retries)`` s in which the board
        sent nothing, or four times that in all. ``payload`` may be a function of the try
        (0, 1, ...): a try with a new payload goes under a new request id, and a late reply to
        an earlier try counts; :attr:`answered` is the payload the reply answers. Others are
        sent once and waited for ``first_wait`` (default ``timeout``) s. A NACK raises
        :class:`BoardError`.
        """
        cap = self.timeout if timeout is None else timeout
        once = msg_type not in IDEMPOTENT
        budget = cap * (1 + (self.retries if retries is None else retries))
        if first_wait is None:
            first_wait = cap if once else self.round_trip.wait(cap)
        plan = Attempts(first_wait, cap, budget)
        payload_for = payload if callable(payload) else (lambda _k: payload)
        sent: dict[int, bytes] = {}  # request id -> payload
        rid, last = 0, None
        while True:
            p = payload_for(plan.tries)
            if p != last:
                rid, last = self._new_id(), p
                sent[rid] = p
            t0 = time.monotonic()
            heard, bad = self.link.reader.bytes_in, self._spoilt()
            self.link.send(msg_type, rid, p)
            reply = self._await(sent, (expect, messages.NACK), t0 + plan.wait)
            if reply is not None:
                if plan.tries == 0:
                    self.round_trip.sample(time.monotonic() - t0)
                if reply.type == messages.NACK and expect != messages.NACK:
                    raise self._nack_error(reply, msg_type)
                self.answered = sent[reply.seq]
                return reply
            name = messages.NAMES.get(msg_type, f"request 0x{msg_type:02x}")
            if once:
                raise BoardTimeoutError(f"{self.port}: no reply to {name} within {plan.wait:g} s")
            plan.failed(heard=self.link.reader.bytes_in != heard, lost=self._spoilt() != bad)
            if plan.exhausted():
                raise BoardTimeoutError(f"{self.port}: no reply to {name} {plan.describe()}")

    def exchange(
        self, msg_type: int, payload_for: Callable[[int], bytes], **kw: Any
    ) -> tuple[Frame, bytes]:
        """:meth:`request` with a payload per try; returns the reply and the payload it
        answers."""
        reply = self.request(msg_type, payload_for, **kw)
        return reply, self.answered

    def _await(
        self, rids: Container[int], accept: Collection[int], deadline: float
    ) -> Frame | None:
        """Read until a frame answers one of ``rids`` with a type in ``accept``, or
        ``deadline``."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            reply = self._handle(
                self.link.receive(min(left, 0.2)), rids, accept=accept, stale=(messages.OK,)
            )
            if reply is not None:
                return reply

    def request_settled(
        self,
        msg_type: int,
        payload: bytes = b"",
        *,
        took_effect: Callable[[Status], bool],
        timeout: float | None = None,
    ) -> None:
        """Send a request that is not repeatable blindly. When its reply does not come, ask
        STATUS whether the board acted on it (``took_effect``); if not, the request never
        reached it (the board handles requests in order), so it is sent again, up to
        ``3 × (1 + retries)`` times in all."""
        cap = self.timeout if timeout is None else timeout
        plan = Attempts(self.round_trip.wait(cap), cap, cap * (1 + self.retries))
        most = 3 * (1 + self.retries)
        while True:
            try:
                self.request(msg_type, payload, timeout=cap, first_wait=plan.wait)
                return
            except BoardTimeoutError as e:
                if took_effect(self.status()):
                    return
                plan.failed(heard=True, lost=True)
                if plan.tries >= most or plan.exhausted():
                    name = messages.NAMES.get(msg_type, f"request 0x{msg_type:02x}")
                    raise BoardTimeoutError(
                        f"{self.port}: no reply to {name} in {plan.tries} tries; STATUS said "
                        f"after each that the board had not acted on it"
                    ) from e

    # -- handshake ---------------------------------------------------------------------------
    def hello(self, timeout: float = 5.0) -> BoardInfo:
        """HELLO → INFO. Raises NoFirmwareError, VersionMismatchError, BoardError."""
        payload = messages.pack(messages.HELLO, framing.PROTO_MAJOR, framing.PROTO_MINOR)
        rid = self._new_id()
        deadline = time.monotonic() + timeout
        errors_before = self.link.framing_errors
        bytes_before = self.link.reader.bytes_in
        # HELLO is resent every 0.1 s while frames arrive garbled (a noisy link), and less
        # often, up to every 0.5 s, while the board says nothing (still booting, or absent).
        plan = Attempts(MIN_WAIT_S, 0.5, math.inf)
        self.link.reader.reset()
        # A leading delimiter flushes whatever partial frame the board holds.
        self.link.write_raw(b"\x00")
        while True:
            now = time.monotonic()
            if now >= deadline:
                break
            heard, bad = self.link.reader.bytes_in, self._spoilt()
            self.link.send(messages.HELLO, rid, payload)
            reply = self._await(
                (rid,), (messages.NACK, messages.INFO), min(deadline, now + plan.wait)
            )
            if reply is not None:
                if plan.tries == 0:
                    self.round_trip.sample(time.monotonic() - now)
                return self._hello_reply(reply)
            plan.failed(heard=self.link.reader.bytes_in != heard, lost=self._spoilt() != bad)
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
        if fr.type == messages.NACK:
            err = self._nack_error(fr, messages.HELLO)
            if err.code == messages.E_VERSION:
                raise VersionMismatchError(self.port, version_text(err.detail), HOST_VERSION)
            raise err
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
        """SCHED_BEGIN, SCHED_CHUNK × n, SCHED_END; then verify (``sicell.upload``)."""
        upload.upload(self, blob, progress)

    def read_schedule(self, length: int) -> bytes:
        """Read ``length`` bytes of the loaded schedule back with SCHED_READ."""
        return upload.read(self, length)

    def verify_schedule(self, blob: bytes) -> None:
        upload.verify(self, blob)

    def start(self, run_id: int) -> None:
        """START a loaded schedule as run ``run_id``.

        START is not repeatable, so a lost reply is settled by asking STATUS whether the board
        runs this run id.
        """
        self.request_settled(
            messages.START,
            messages.pack(messages.START, run_id & 0xFFFFFFFF),
            took_effect=lambda st: (
                st.run_id == run_id and st.state not in (messages.ST_IDLE, messages.ST_LOADED)
            ),
        )

    def pause(self) -> None:
        """PAUSE the run (a lost reply is settled with STATUS, like START)."""
        self.request_settled(messages.PAUSE, took_effect=lambda st: st.state == messages.ST_PAUSED)

    def resume(self) -> None:
        """RESUME a paused, held or interrupted run (a lost reply is settled with STATUS)."""
        self.request_settled(
            messages.RESUME,
            took_effect=lambda st: (
                st.state not in (messages.ST_PAUSED, messages.ST_HOLD, messages.ST_INTERRUPTED)
            ),
        )

    def stop(self) -> None:
        """STOP the run (a lost reply is settled with STATUS, like START)."""
        self.request_settled(messages.STOP, took_effect=lambda st: not st.has_run)

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
        # a flash write: its first wait is a whole timeout, so a slow write is not asked twice
        self.request(messages.CAL_SAVE, timeout=max(self.timeout, 3.0), first_wait=self.timeout)

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
