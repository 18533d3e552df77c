"""Schedule upload and read-back over SCHED_BEGIN / SCHED_CHUNK / SCHED_END / SCHED_READ.

Chunks shrink while they get lost and grow again while they get through (:class:`ChunkSize`):
on a link that spoils 2 % of the bytes a 192-byte chunk arrives one time in fifty, a 24-byte one
every other time. A chunk is written at its offset, so a resent one (its OK lost) rewrites the
same bytes; SCHED_END checks length and CRC, and the read-back compares every byte.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from sicell.errors import BoardError, ScheduleVerifyError
from sicell.protocol import framing, messages

if TYPE_CHECKING:
    from sicell.client import Board

MIN_CHUNK = 16  # the smallest chunk a lost try shrinks to


class ChunkSize:
    """Bytes per chunk: halved on each lost try (down to ``MIN_CHUNK``), doubled after one that
    got through at its first try (up to ``messages.MAX_CHUNK``)."""

    def __init__(self) -> None:
        self.size = messages.MAX_CHUNK
        self._try = 0

    def for_try(self, k: int, left: int) -> int:
        """The chunk length of try ``k`` of one chunk with ``left`` bytes to go."""
        self._try = k
        return min(left, max(MIN_CHUNK, self.size >> k))

    def got_through(self, n: int) -> None:
        """A try of ``n`` bytes was answered (the last try, or a late answer to an earlier)."""
        self.size = min(messages.MAX_CHUNK, 2 * n) if self._try == 0 else max(MIN_CHUNK, n)


def upload(board: Board, blob: bytes, progress: Callable[[int, int], None] | None = None) -> None:
    """SCHED_BEGIN, SCHED_CHUNK × n, SCHED_END; then read back and compare.

    SCHED_END answered with E_STATE while no run is in progress means the board dropped the
    upload (it reset, or a first SCHED_END whose NACK was lost ended it): the upload is done
    once more, so the board's real answer is the one raised.
    """
    for again in (False, True):
        try:
            _send(board, blob, progress)
        except BoardError as e:
            if again or e.request != messages.SCHED_END or e.code != messages.E_STATE:
                raise
            if board.status().has_run:
                raise
            continue
        break
    verify(board, blob)


def _send(board: Board, blob: bytes, progress: Callable[[int, int], None] | None) -> None:
    total = len(blob)
    board.request(
        messages.SCHED_BEGIN, messages.pack(messages.SCHED_BEGIN, total, framing.crc16(blob))
    )
    size = ChunkSize()
    off = 0
    while off < total:
        head = messages.pack(messages.SCHED_CHUNK, off)

        def chunk(k: int, off: int = off, head: bytes = head) -> bytes:
            return head + blob[off : off + size.for_try(k, total - off)]

        _, sent = board.exchange(messages.SCHED_CHUNK, chunk)
        n = len(sent) - len(head)
        size.got_through(n)
        off += n
        if progress is not None:
            progress(off, total)
    # SCHED_END is not blindly repeatable: a lost reply is settled by the LOADED state.
    board.request_settled(
        messages.SCHED_END,
        took_effect=lambda st: st.state == messages.ST_LOADED,
        timeout=max(board.timeout, 3.0),
    )


def read(board: Board, length: int) -> bytes:
    """Read ``length`` bytes of the loaded schedule back with SCHED_READ."""
    out = bytearray()
    size = ChunkSize()
    off = 0
    while off < length:

        def ask(k: int, off: int = off) -> bytes:
            return messages.pack(messages.SCHED_READ, off, size.for_try(k, length - off))

        fr, sent = board.exchange(messages.SCHED_READ, ask, expect=messages.SCHED_DATA)
        (got_off,) = messages.unpack(messages.SCHED_DATA, fr.payload)
        data = messages.tail(messages.SCHED_DATA, fr.payload)
        if got_off != off:
            raise ScheduleVerifyError(
                f"{board.port}: SCHED_DATA for offset {got_off}, asked for {off}"
            )
        _, n = messages.unpack(messages.SCHED_READ, sent)
        size.got_through(n)
        out += data
        off += len(data)
        if len(data) < n:
            break
    return bytes(out)


def verify(board: Board, blob: bytes) -> None:
    """Read the schedule back and compare; a difference is read once more before it counts (a
    spoilt frame passes the CRC-16 about once in 65,536)."""
    back = read(board, len(blob))
    if back != blob:
        back = read(board, len(blob))
    if back != blob:
        where = next(
            (i for i, (a, b) in enumerate(zip(back, blob, strict=False)) if a != b),
            min(len(back), len(blob)),
        )
        raise ScheduleVerifyError(
            f"{board.port}: schedule read back differs from the upload at byte {where} "
            f"({len(back)} of {len(blob)} bytes read); not starting"
        )
