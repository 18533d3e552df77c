"""A scripted fake board speaking the sicell protocol over a pty or a TCP socket.

It runs a schedule-less "experiment" that emits numbered SAMPLE/EVENT records, holds them until
ACKed, answers REPLAY, and can drop, duplicate and reorder records or vanish (unplug) on
request. The client, CLI and session tests share it (the ``fake``/``boards`` fixtures in
tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import threading
import time
import tty
from collections.abc import Callable

from sicell.protocol import framing, messages
from sicell.protocol import schedule as wire_schedule

M = messages


FAKE_TOML = """
name = "fake"
vs = "cell"
[reference]
electrode = "In-Li"
[[step]]
kind = "cc"
direction = "lithiation"
current_ua = 100
duration_s = 10
"""
"""A one-step schedule the fake board runs (the CLI and session tests upload it)."""


def sched_blob(n_steps: int = 30) -> bytes:
    steps = []
    for k in range(n_steps):
        kind = wire_schedule.K_CC if k % 2 else wire_schedule.K_REST
        steps.append(
            (
                (kind, 0, 0, 1000 if kind == wire_schedule.K_CC else 0, 0, 0, 0, 1000, 0, 0, 0),
                [(wire_schedule.Q_TIME, wire_schedule.OP_GE, wire_schedule.A_NEXT, 60000, 0)],
            )
        )
    header = (wire_schedule.P_HOLD, 10, 100, 50, -1_000_000, 1_000_000, 100_000, 32767)
    return wire_schedule.encode(header, steps)


class FakeBoard:
    """A scripted board. Serve it with ``serve_pty()`` or ``serve_tcp()``.

    Faults: ``drop``/``dup``/``reorder`` are probabilities applied to every record sent (also
    replays); ``mute`` = set of message types it ignores (to provoke timeouts); ``mute_count``
    ignores only the first N of each muted type; ``garbage`` answers every byte with noise.
    """

    def __init__(
        self,
        *,
        proto_major: int = framing.PROTO_MAJOR,
        state: int = M.ST_IDLE,
        run_id: int = 0,
        n_samples: int = 300,
        record_interval: float = 0.001,
        first_seq: int = 1,
        drop: float = 0.0,
        dup: float = 0.0,
        reorder: float = 0.0,
        seed: int = 1,
        mute: set[int] | None = None,
        mute_count: int | None = None,
        garbage: bool = False,
        corrupt_readback: bool = False,
        end_nack: tuple[int, int] | None = None,
        ranges_na: tuple[int, ...] = (10_000, 100_000, 1_000_000, 10_000_000),
        lose: tuple[int, int] | None = None,
    ) -> None:
        self.proto_major = proto_major
        self.state = state
        self.run_id = run_id
        self.n_samples = n_samples
        self.record_interval = record_interval
        self.next_seq = first_seq
        self.first_seq = first_seq
        self.drop = drop
        self.dup = dup
        self.reorder = reorder
        self.rng = random.Random(seed)
        self.mute = set(mute or ())
        self.mute_count = mute_count
        self.muted: dict[int, int] = {}
        self.garbage = garbage
        self.corrupt_readback = corrupt_readback
        self.end_nack = end_nack
        self.ranges_na = ranges_na
        self.lose = lose  # records with seq in [a, b] vanish, and the ring forgets all <= b
        self.ack_hook: Callable[[int], None] | None = None
        self.sched = bytearray()
        self.sched_len = 0
        self.sched_crc = 0
        self.loaded = b""
        self.ring: dict[int, bytes] = {}  # seq -> encoded frame
        self.acked = 0
        self.acks: list[int] = []
        self.replays: list[int] = []
        self.received: list[tuple[int, int, bytes]] = []
        self.cal: dict[tuple[int, int], tuple[int, int]] = {}
        self.samples_made = 0
        self.held_back: bytes | None = None
        self._lock = threading.RLock()
        self._conn_write: Callable[[bytes], None] | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._deframer = framing.Deframer()
        self._enc = framing.Encoder()
        self._server: socket.socket | None = None
        self._conn: socket.socket | None = None
        self._master: int | None = None
        self.connections = 0

    # -- serving -----------------------------------------------------------------------------
    def serve_pty(self) -> str:
        master, slave = os.openpty()
        tty.setraw(slave)
        self._master = master
        path = os.ttyname(slave)
        self._slave = slave  # keep it open so the master never sees a hangup

        def w(b: bytes) -> None:
            os.write(master, b)

        self._conn_write = w
        self._start(self._pty_loop)
        return path

    def _pty_loop(self) -> None:
        import select

        assert self._master is not None
        while not self._stop.is_set():
            r, _, _ = select.select([self._master], [], [], 0.05)
            if not r:
                continue
            try:
                data = os.read(self._master, 4096)
            except OSError:
                return
            self._on_bytes(data)

    def serve_tcp(self) -> str:
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)
        srv.settimeout(0.05)
        self._server = srv
        self._start(self._tcp_loop)
        return f"socket://127.0.0.1:{srv.getsockname()[1]}"

    def _tcp_loop(self) -> None:
        assert self._server is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except (TimeoutError, OSError):
                continue
            conn.settimeout(0.05)
            with self._lock:
                old = self._conn
                self._conn = conn
                self.connections += 1
                self._deframer.reset()
                self._conn_write = self._make_sock_writer(conn)
            if old is not None:
                old.close()
            while not self._stop.is_set() and self._conn is conn:
                try:
                    data = conn.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not data:
                    break
                self._on_bytes(data)

    def _make_sock_writer(self, conn: socket.socket) -> Callable[[bytes], None]:
        def w(b: bytes) -> None:
            with contextlib.suppress(OSError):
                conn.sendall(b)

        return w

    def unplug(self) -> None:
        """Drop the current TCP connection (the host sees its port fail)."""
        with self._lock:
            conn = self._conn
            self._conn = None
            self._conn_write = None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _start(self, target: Callable[[], None]) -> None:
        for t in (target, self._producer):
            th = threading.Thread(target=t, daemon=True)
            th.start()
            self._threads.append(th)

    def close(self) -> None:
        self._stop.set()
        for th in self._threads:
            th.join(2)
        self.unplug()
        if self._server is not None:
            self._server.close()
        if self._master is not None:
            os.close(self._master)
            os.close(self._slave)

    # -- output ------------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        with self._lock:
            w = self._conn_write
        if w is not None:
            w(data)

    def _frame(self, t: int, seq: int, payload: bytes = b"", version: int | None = None) -> bytes:
        v = version if version is not None else (self.proto_major << 4)
        return bytes(self._enc.encode(t, seq, payload, v))

    def _reply(self, t: int, seq: int, payload: bytes = b"") -> None:
        self._write(self._frame(t, seq, payload))

    def _ok(self, req: int, rid: int) -> None:
        self._reply(M.OK, rid, M.pack(M.OK, req))

    def _nack(self, req: int, rid: int, code: int, detail: int = 0) -> None:
        self._reply(M.NACK, rid, M.pack(M.NACK, req, code, detail))

    def _send_record(self, frame: bytes) -> None:
        """Send one record frame through the fault model."""
        r = self.rng.random
        if self.drop and r() < self.drop:
            return
        if self.reorder and r() < self.reorder and self.held_back is None:
            self.held_back = frame
            return
        self._write(frame)
        if self.held_back is not None and frame is not self.held_back:
            hb, self.held_back = self.held_back, None
            self._write(hb)
        if self.dup and r() < self.dup:
            self._write(frame)

    # -- records -----------------------------------------------------------------------------
    def _emit(self, t: int, payload: bytes) -> None:
        with self._lock:
            seq = self.next_seq
            self.next_seq += 1
            fr = self._frame(t, seq, payload, framing.VERSION_BYTE)
            if self.lose and self.lose[0] <= seq <= self.lose[1]:
                if seq == self.lose[1]:
                    for s in [s for s in self.ring if s <= seq]:
                        del self.ring[s]
                return
            self.ring[seq] = fr
            self._send_record(fr)

    def _event(self, code: int, reason: int = 0, value: int = 0) -> None:
        ts = self.samples_made
        self._emit(M.EVENT, M.pack(M.EVENT, ts, 0, code, reason, 0, 0, value, 0))

    def _producer(self) -> None:
        while not self._stop.is_set():
            time.sleep(self.record_interval)
            with self._lock:
                if self.state != M.ST_RUNNING:
                    continue
                k = self.samples_made
                if k >= self.n_samples:
                    self._event(M.EV_RUN_END, M.RE_COMPLETE)
                    self.state = M.ST_DONE
                    continue
                step = (k // 50) % 4
                cycle = k // 200
                cur = 100_000 if step == 0 else (-100_000 if step == 2 else 0)
                q = (k % 50) * (cur // 1000)
                self._emit(
                    M.SAMPLE,
                    M.pack(M.SAMPLE, k, 0, 100_000 + 37 * k, cur, q, step, cycle, 1, 0),
                )
                self.samples_made += 1

    # -- input -------------------------------------------------------------------------------
    def _on_bytes(self, data: bytes) -> None:
        if self.garbage:
            self._write(b"\r\n>>> " + bytes(self.rng.randrange(1, 256) for _ in range(20)))
            return
        d = self._deframer
        i = 0
        while i < len(data):
            i = d.push(data, i)
            if d.ready:
                with self._lock:
                    self._handle(d.type, d.seq, bytes(d.payload))

    def _handle(self, t: int, rid: int, p: bytes) -> None:
        self.received.append((t, rid, p))
        if t in self.mute:
            n = self.muted.get(t, 0)
            self.muted[t] = n + 1
            if self.mute_count is None or n < self.mute_count:
                return
        if M.check_length(t, len(p)):
            self._nack(t, rid, M.check_length(t, len(p)))
            return
        if t == M.HELLO:
            vals = (
                0, 3, 1, self.proto_major, 0, len(self.ranges_na), M.CAP_CAL | M.CAP_EMULATOR,
                b"fake0001", -2_500_000, 2_500_000, 4_000_000, 4096, 10, self.state,
                M.RC_POWER_ON, self.run_id,
            )  # fmt: skip
            self._reply(M.INFO, rid, M.pack_info(vals, self.ranges_na))
        elif t == M.PING:
            (nonce,) = M.unpack(t, p)
            self._reply(M.PONG, rid, M.pack(M.PONG, nonce, 42))
        elif t == M.STATUS_REQ:
            last = self.next_seq - 1
            first = min(self.ring) if self.ring else self.next_seq
            self._reply(
                M.STATUS,
                rid,
                M.pack(
                    M.STATUS, self.state, 1, 0, 0, 0, self.samples_made, 0, 100_000, 0, 0,
                    self.run_id, first, last, self.acked, 0,
                ),
            )  # fmt: skip
        elif t == M.SCHED_BEGIN:
            self.sched_len, self.sched_crc = M.unpack(t, p)
            self.sched = bytearray(self.sched_len)
            self._ok(t, rid)
        elif t == M.SCHED_CHUNK:
            (off,) = M.unpack(t, p)
            data = M.tail(t, p)
            self.sched[off : off + len(data)] = data
            self._ok(t, rid)
        elif t == M.SCHED_END:
            if self.end_nack:
                self._nack(t, rid, *self.end_nack)
                return
            if framing.crc16(bytes(self.sched)) != self.sched_crc:
                self._nack(t, rid, M.E_CHECKSUM)
                return
            self.loaded = bytes(self.sched)
            self.state = M.ST_LOADED
            self._ok(t, rid)
        elif t == M.SCHED_READ:
            off, n = M.unpack(t, p)
            data = bytearray(self.loaded[off : off + n])
            if self.corrupt_readback and data:
                data[0] ^= 0xFF
            self._reply(M.SCHED_DATA, rid, M.pack(M.SCHED_DATA, off) + bytes(data))
        elif t == M.START:
            if self.state != M.ST_LOADED:
                self._nack(t, rid, M.E_NO_SCHEDULE if self.state == M.ST_IDLE else M.E_STATE,
                           self.state)  # fmt: skip
                return
            (self.run_id,) = M.unpack(t, p)
            self.state = M.ST_RUNNING
            self._ok(t, rid)
            self._event(M.EV_RUN_START, 0, self.run_id - (1 << 32) * (self.run_id >> 31))
        elif t in (M.PAUSE, M.RESUME, M.STOP):
            if self.state not in (M.ST_RUNNING, M.ST_PAUSED):
                self._nack(t, rid, M.E_STATE, self.state)
                return
            self._ok(t, rid)
            if t == M.STOP:
                self._event(M.EV_STOPPED)
                self._event(M.EV_RUN_END, M.RE_HOST)
                self.state = M.ST_STOPPED
            else:
                self.state = M.ST_PAUSED if t == M.PAUSE else M.ST_RUNNING
        elif t == M.ACK:
            (seq,) = M.unpack(t, p)
            if self.ack_hook is not None:
                self.ack_hook(seq)
            self.acks.append(seq)
            self.acked = max(self.acked, seq)
            for s in [s for s in self.ring if s <= seq]:
                del self.ring[s]
        elif t == M.REPLAY:
            (frm,) = M.unpack(t, p)
            self.replays.append(frm)
            if self.ring and frm < min(self.ring):
                self._nack(t, rid, M.E_SEQ_GONE, min(self.ring))
                return
            for s in sorted(self.ring):
                if s >= frm:
                    self._send_record(self.ring[s])
        elif t == M.CAL_GET:
            r, c = M.unpack(t, p)
            if r >= len(self.ranges_na):
                self._nack(t, rid, M.E_RANGE, r)
                return
            off, gain = self.cal.get((r, c), (0, 1_000_000))
            self._reply(M.CAL, rid, M.pack(M.CAL, r, c, off, gain))
        elif t == M.CAL_SET:
            r, c, off, gain = M.unpack(t, p)
            self.cal[(r, c)] = (off, gain)
            self._ok(t, rid)
        elif t in (M.CAL_SAVE, M.ENTER_REPL, M.RESET):
            self._ok(t, rid)
        else:
            self._nack(t, rid, M.E_UNKNOWN_TYPE)
