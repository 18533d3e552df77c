"""sicell wire framing, identical on CPython (host) and MicroPython (board).

A frame on the wire is ``0x00 | COBS(raw) | 0x00`` where ``raw`` is::

    offset size  field
    0      1     version   (major << 4 | minor)
    1      1     type      message id (see messages.py)
    2      4     seq       little-endian u32: record sequence number for SAMPLE/EVENT,
                           request id for commands (replies echo it)
    6      n     payload   fixed struct per message type, little-endian
    6+n    2     crc       CRC-16/CCITT-FALSE over bytes 0..6+n-1, big-endian

The leading delimiter flushes any partial frame the receiver holds (after a reconnect or
line noise). COBS guarantees no 0x00 inside a frame, so a receiver always resynchronises at the
next delimiter. Nothing here allocates per byte; ``encode_into`` writes into a caller's buffer.
"""

import struct

try:
    from typing import TYPE_CHECKING
except ImportError:  # MicroPython has no typing module; annotations are never evaluated there
    TYPE_CHECKING = False  # type: ignore[misc]

if TYPE_CHECKING:
    from typing import TypeAlias

    Buf: TypeAlias = bytes | bytearray | memoryview
    WBuf: TypeAlias = bytearray | memoryview

PROTO_MAJOR = 1
PROTO_MINOR = 0
VERSION_BYTE = (PROTO_MAJOR << 4) | PROTO_MINOR

HEADER_SIZE = 6
CRC_SIZE = 2
MAX_PAYLOAD = 248
MAX_RAW = HEADER_SIZE + MAX_PAYLOAD + CRC_SIZE
# COBS adds one byte per 254 and we add two delimiters.
MAX_ENCODED = MAX_RAW + MAX_RAW // 254 + 1 + 2

# FrameError codes (also NACK E_FRAME's detail)
E_EMPTY = 1
E_COBS = 2
E_SHORT = 3
E_LONG = 4
E_CRC = 5

_ERR_TEXT = {
    E_EMPTY: "empty frame",
    E_COBS: "malformed COBS encoding",
    E_SHORT: "frame shorter than header + CRC (8 bytes)",
    E_LONG: "frame longer than the maximum",
    E_CRC: "CRC-16 mismatch",
}


class ProtocolError(Exception):
    """Base of every error the protocol code raises."""


class FrameError(ProtocolError):
    """A frame could not be decoded; ``code`` is one of the E_* constants."""

    def __init__(self, code: int, detail: str = "") -> None:
        self.code = code
        msg = _ERR_TEXT.get(code, "frame error")
        if detail:
            msg = msg + ": " + detail
        super().__init__(msg)


def _make_table() -> tuple[int, ...]:
    tab = []
    for i in range(256):
        c = i << 8
        for _ in range(8):
            c = ((c << 1) ^ 0x1021) if c & 0x8000 else (c << 1)
        tab.append(c & 0xFFFF)
    return tuple(tab)


_CRC_TABLE = _make_table()


def crc16(data: "Buf", start: int = 0, end: int = -1, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no xorout).

    ``crc16(b"123456789") == 0x29B1``. ``end=-1`` means len(data).
    """
    if end < 0:
        end = len(data)
    tab = _CRC_TABLE
    for i in range(start, end):
        crc = ((crc << 8) & 0xFF00) ^ tab[((crc >> 8) ^ data[i]) & 0xFF]
    return crc


def cobs_encode_into(src: "Buf", n: int, dst: "WBuf", pos: int) -> int:
    """COBS-encode ``src[0:n]`` into ``dst`` at ``pos``; return the new end position."""
    code_pos = pos
    pos += 1
    code = 1
    for i in range(n):
        b = src[i]
        if b == 0:
            dst[code_pos] = code
            code_pos = pos
            pos += 1
            code = 1
        else:
            dst[pos] = b
            pos += 1
            code += 1
            if code == 0xFF:
                dst[code_pos] = code
                code_pos = pos
                pos += 1
                code = 1
    dst[code_pos] = code
    return pos


def cobs_decode_into(src: "Buf", n: int, dst: "WBuf") -> int:
    """Decode COBS ``src[0:n]`` (no delimiters) into ``dst``; return the decoded length.

    Raises FrameError(E_COBS) on a zero byte, a code that runs past the end, or output that
    would not fit ``dst``.
    """
    i = 0
    out = 0
    cap = len(dst)
    while i < n:
        code = src[i]
        if code == 0:
            raise FrameError(E_COBS, "zero byte inside frame")
        i += 1
        end = i + code - 1
        if end > n:
            raise FrameError(E_COBS, "block runs past end of frame")
        if out + (end - i) > cap:
            raise FrameError(E_LONG)
        while i < end:
            b = src[i]
            if b == 0:
                raise FrameError(E_COBS, "zero byte inside frame")
            dst[out] = b
            out += 1
            i += 1
        if code < 0xFF and i < n:
            if out >= cap:
                raise FrameError(E_LONG)
            dst[out] = 0
            out += 1
    return out


class Encoder:
    """Builds frames into one preallocated buffer (no allocation per frame on the board)."""

    def __init__(self) -> None:
        self._raw = bytearray(MAX_RAW)
        self.buf = bytearray(MAX_ENCODED)
        self.mv = memoryview(self.buf)

    def encode(
        self, msg_type: int, seq: int, payload: "Buf" = b"", version: int = VERSION_BYTE
    ) -> memoryview:
        """Encode one frame; return a memoryview of the wire bytes (valid until next call)."""
        n = len(payload)
        if n > MAX_PAYLOAD:
            raise FrameError(E_LONG, "payload " + str(n) + " > " + str(MAX_PAYLOAD) + " bytes")
        raw = self._raw
        # seq mod 2**32 in 16-bit halves: no operand or result beyond the RP2040's 31-bit small
        # ints (a request id the board echoes stays small; the host may pass any int)
        struct.pack_into("<BBHH", raw, 0, version, msg_type, seq & 0xFFFF, (seq >> 16) & 0xFFFF)
        raw[HEADER_SIZE : HEADER_SIZE + n] = payload
        return self._seal(HEADER_SIZE + n)

    def encode_at(self, msg_type: int, src: "Buf", seq_off: int, payload: "Buf") -> memoryview:
        """encode() with the seq given as 4 little-endian bytes at ``src[seq_off]``.

        The board's ring streams a record with its stored seq bytes this way, so no u32 seq
        becomes an int (from 2**30 on, a heap int on the RP2040)."""
        n = len(payload)
        if n > MAX_PAYLOAD:
            raise FrameError(E_LONG, "payload " + str(n) + " > " + str(MAX_PAYLOAD) + " bytes")
        raw = self._raw
        raw[0] = VERSION_BYTE
        raw[1] = msg_type
        for k in range(4):
            raw[2 + k] = src[seq_off + k]
        raw[HEADER_SIZE : HEADER_SIZE + n] = payload
        return self._seal(HEADER_SIZE + n)

    def encode_payload_struct(self, msg_type: int, seq: int, fmt: str, *values: int) -> memoryview:
        """Pack ``values`` with ``fmt`` straight into the frame and encode it (board hot path)."""
        raw = self._raw
        n = struct.calcsize(fmt)
        struct.pack_into(fmt, raw, HEADER_SIZE, *values)
        struct.pack_into(
            "<BBHH", raw, 0, VERSION_BYTE, msg_type, seq & 0xFFFF, (seq >> 16) & 0xFFFF
        )
        return self._seal(HEADER_SIZE + n)

    def _seal(self, end: int) -> memoryview:
        """Append the CRC to raw[0:end], COBS-encode between delimiters, return the wire view."""
        raw = self._raw
        crc = crc16(raw, 0, end)
        raw[end] = crc >> 8
        raw[end + 1] = crc & 0xFF
        buf = self.buf
        buf[0] = 0
        pos = cobs_encode_into(raw, end + 2, buf, 1)
        buf[pos] = 0
        return self.mv[: pos + 1]


def encode_frame(
    msg_type: int, seq: int, payload: "Buf" = b"", version: int = VERSION_BYTE
) -> bytes:
    """Encode one frame and return it as new bytes (convenience for the host and tests)."""
    return bytes(Encoder().encode(msg_type, seq, payload, version))


def decode_raw(raw: "Buf", n: int) -> tuple[int, int, int, int]:
    """Check CRC and split a decoded frame; return (version, type, seq, payload_len)."""
    if n == 0:
        raise FrameError(E_EMPTY)
    if n < HEADER_SIZE + CRC_SIZE:
        raise FrameError(E_SHORT, str(n) + " bytes")
    crc = crc16(raw, 0, n - 2)
    got = (raw[n - 2] << 8) | raw[n - 1]
    if crc != got:
        raise FrameError(E_CRC, "computed 0x%04x, frame carries 0x%04x" % (crc, got))
    version, msg_type, seq = struct.unpack_from("<BBI", raw, 0)
    return version, msg_type, seq, n - HEADER_SIZE - CRC_SIZE


def decode_frame(frame: "Buf") -> tuple[int, int, int, bytes]:
    """Decode one frame given without or with its 0x00 delimiters.

    Returns (version, type, seq, payload bytes). Raises FrameError on anything malformed.
    """
    start = 0
    end = len(frame)
    while start < end and frame[start] == 0:
        start += 1
    while end > start and frame[end - 1] == 0:
        end -= 1
    if end == start:
        raise FrameError(E_EMPTY)
    if end - start > MAX_ENCODED:
        raise FrameError(E_LONG)
    for i in range(start, end):
        if frame[i] == 0:
            raise FrameError(E_COBS, "delimiter inside frame")
    raw = bytearray(MAX_RAW)
    n = cobs_decode_into(memoryview(frame)[start:end], end - start, raw)
    version, msg_type, seq, plen = decode_raw(raw, n)
    return version, msg_type, seq, bytes(raw[HEADER_SIZE : HEADER_SIZE + plen])


class Deframer:
    """Streaming receiver with fixed buffers: feed it any byte chunks, collect whole frames.

    ``push(data, start)`` consumes bytes from ``data[start:]`` up to and including the end of
    the next complete frame and returns the index after the last byte consumed. After each call
    check ``ready``: when True, ``version``, ``type``, ``seq`` and ``payload`` (a memoryview
    into the internal buffer, valid until the next push) describe a good frame. When a frame
    was bad, ``error`` holds the FrameError (the protocol's own exception) and ``errors`` counts
    them; the receiver is already resynchronised on the delimiter that ended it.
    """

    def __init__(self) -> None:
        self._enc = bytearray(MAX_ENCODED)
        self._n = 0
        self._overflow = False
        self._raw = bytearray(MAX_RAW)
        self._rawmv = memoryview(self._raw)
        self.ready = False
        self.error: FrameError | None = None
        self.errors = 0
        self.frames = 0
        self.version = 0
        self.type = 0
        self.seq = 0
        self.payload = self._rawmv[HEADER_SIZE:HEADER_SIZE]

    def reset(self) -> None:
        self._n = 0
        self._overflow = False

    def push(self, data: "Buf", start: int = 0) -> int:
        self.ready = False
        self.error = None
        enc = self._enc
        cap = MAX_ENCODED
        n = len(data)
        i = start
        while i < n:
            b = data[i]
            i += 1
            if b != 0:
                if self._n < cap:
                    enc[self._n] = b
                    self._n += 1
                else:
                    self._overflow = True
                continue
            # delimiter
            if self._n == 0 and not self._overflow:
                continue
            self._finish()
            return i
        return i

    def _finish(self) -> None:
        length = self._n
        self._n = 0
        if self._overflow:
            self._overflow = False
            self._fail(FrameError(E_LONG, "more than " + str(MAX_ENCODED) + " bytes"))
            return
        try:
            n = cobs_decode_into(self._enc, length, self._raw)
            self.version, self.type, self.seq, plen = decode_raw(self._raw, n)
        except FrameError as e:
            self._fail(e)
            return
        self.payload = self._rawmv[HEADER_SIZE : HEADER_SIZE + plen]
        self.ready = True
        self.frames += 1

    def _fail(self, err: FrameError) -> None:
        self.error = err
        self.errors += 1
