# USB CDC byte stream <-> frames, command dispatch, record streaming.
#
# poll() reads what the host sent without blocking, in batches into one preallocated buffer
# (io.readinto: up to RX_CHUNK bytes, ending at the latest with the 0x00 that closes a frame, so
# nothing after a frame is taken before that frame is handled), feeds each batch to a
# framing.Deframer through a preallocated view of its length (nothing is allocated until a whole
# frame is there) and answers every frame: OK (echoing the request type; frame seq = the request id)
# or NACK (request type, a messages.E_* code, a detail); malformed frames, unknown types, wrong
# lengths and absurd schedules get a NACK, never an exception out of here. Then it streams records
# from the ring's send pointer, at most MAX_TX frames per call. Nothing is streamed before the host
# asks for records with HELLO or REPLAY (after a reset the host learns of it from INFO.reset_cause
# and the EV_INTERRUPTED record). HELLO rewinds the send pointer to the oldest unacked record;
# REPLAY(seq) moves it (to the oldest held, with NACK E_SEQ_GONE, when seq is gone); ACK(seq) frees
# records. 0x03 is data here: main.py sets micropython.kbd_intr(-1) while the link runs.

import struct

from protocol import framing as F
from protocol import messages as M
from protocol import schedule as S

FW_VERSION = (0, 1, 0)
MAX_RX = 600  # bytes read per poll() (a few frames)
RX_CHUNK = 32  # bytes per batch (one preallocated view per batch length: ~0.6 KB)
MAX_TX = 16  # records streamed per poll()


class StdIO:
    # the USB CDC: sys.stdin / sys.stdout in binary
    def __init__(self):
        import select
        import sys

        self.inp = sys.stdin.buffer
        self.out = sys.stdout.buffer
        self.poller = select.poll()
        self.poller.register(sys.stdin, select.POLLIN)
        self.b1 = bytearray(1)
        self.prev = 0  # the last byte read (a 0x00 after a non-zero one closes a frame)

    def _ready(self):
        # a byte is waiting (ipoll allocates nothing, unlike poll)
        for _s, ev in self.poller.ipoll(0):
            if ev & 1:
                return True
        return False

    def read_byte(self):
        # next byte, or -1 when nothing is waiting (never blocks)
        if not self._ready() or self.inp.readinto(self.b1, 1) != 1:
            return -1
        self.prev = self.b1[0]
        return self.prev

    def readinto(self, buf):
        # The bytes waiting, into buf from 0: up to len(buf), and up to the first 0x00 that
        # follows a non-zero byte (a frame's end); returns how many (0: none). Never blocks:
        # stdin's readinto waits until every byte asked for came, so each byte is read alone
        # once ipoll says one is waiting. Allocates nothing.
        n = 0
        cap = len(buf)
        b1 = self.b1
        inp = self.inp
        poller = self.poller
        prev = self.prev
        while n < cap:
            ready = False
            for _s, ev in poller.ipoll(0):
                if ev & 1:
                    ready = True
            if not ready or inp.readinto(b1, 1) != 1:
                break
            b = b1[0]
            buf[n] = b
            n += 1
            if b == 0 and prev != 0:
                prev = 0
                break
            prev = b
        self.prev = prev
        return n

    def write(self, data):
        self.out.write(data)


class _ByteReader:
    # readinto() (as StdIO's) over an I/O that only has read_byte() (-1: nothing waiting)
    def __init__(self, io):
        self.io = io
        self.prev = 0

    def readinto(self, buf):
        n = 0
        cap = len(buf)
        io = self.io
        prev = self.prev
        while n < cap:
            b = io.read_byte()
            if b < 0:
                break
            buf[n] = b
            n += 1
            if b == 0 and prev != 0:
                prev = 0
                break
            prev = b
        self.prev = prev
        return n

    def write(self, data):
        self.io.write(data)


def _i32(x):
    # x mod 2**32 as the i32 NACK.detail carries (a u32 seq from 2**31 on reads negative), by
    # struct: no arithmetic on a value that may be beyond the RP2040's 31-bit small ints
    return struct.unpack_from("<i", struct.pack("<q", x), 0)[0]


class Link:
    def __init__(self, eng, fe, io=None, board_id=b"", caps=0, rs=None):
        self.eng = eng
        self.ring = eng.ring
        self.fe = fe
        io = io if io is not None else StdIO()
        self.io = io
        self.rx = io if hasattr(io, "readinto") else _ByteReader(io)
        self.rs = rs
        self.board_id = (bytes(board_id) + bytes(8))[:8]
        self.caps = caps
        self.dfr = F.Deframer()
        self.enc = F.Encoder()
        self.rxbuf = bytearray(RX_CHUNK)
        mv = memoryview(self.rxbuf)
        self.rxviews = [mv[:k] for k in range(RX_CHUNK + 1)]  # rxviews[k]: a batch of k bytes
        self.up_total = -1  # schedule upload in progress when >= 0
        self.up_crc = 0
        self.up_got = 0
        self.hello = False
        self.want_repl = False
        self.want_reset = False
        self.rx_bytes = 0
        self.rx_frames = 0
        self.tx_frames = 0
        self.nacks = 0
        self.errors = 0
        self.last_error = None
        self.uptime_ms = 0

    # ---- I/O ---------------------------------------------------------------------------
    def poll(self):
        n = 0
        rx = self.rx
        buf = self.rxbuf
        views = self.rxviews
        dfr = self.dfr
        while n < MAX_RX:
            k = rx.readinto(buf)
            if k <= 0:
                break
            n += k
            data = views[k]
            i = 0
            while i < k:
                i = dfr.push(data, i)
                if dfr.ready:
                    self.rx_frames += 1
                    self.handle()
                elif dfr.error is not None:
                    self._nack(M.REQ_NONE, 0, M.E_FRAME, dfr.error.code)
            if self.want_repl or self.want_reset:
                break  # a batch ends with the frame that asked: nothing after it was read
        self.rx_bytes += n
        if self.hello and not self.want_repl:
            self.stream()
        return n

    def feed(self, data):
        # push a whole byte string through the deframer (tests, and hosts of the link object)
        i = 0
        n = len(data)
        dfr = self.dfr
        while i < n:
            i = dfr.push(data, i)
            if dfr.ready:
                self.rx_frames += 1
                self.handle()
            elif dfr.error is not None:
                self._nack(M.REQ_NONE, 0, M.E_FRAME, dfr.error.code)

    def _send(self, typ, seq, payload):
        self.io.write(self.enc.encode(typ, seq, payload))
        self.tx_frames += 1

    def _ok(self, req, rid):
        self._send(M.OK, rid, struct.pack("<B", req & 0xFF))

    def _nack(self, req, rid, code, detail):
        self.nacks += 1
        self._send(M.NACK, rid, struct.pack("<BBi", req & 0xFF, code, _i32(detail)))

    def stream(self):
        ring = self.ring
        enc = self.enc
        k = 0
        while k < MAX_TX:
            off = ring.peek_send()
            if off < 0:
                break
            try:
                self.io.write(ring.encode(enc, off))  # the stored seq bytes: no u32 int made
            except OSError:
                break
            ring.mark_sent()
            self.tx_frames += 1
            k += 1
        return k

    # ---- commands ----------------------------------------------------------------------
    def handle(self):
        d = self.dfr
        typ = d.type
        rid = d.seq
        pay = d.payload
        if (d.version >> 4) != F.PROTO_MAJOR:
            self._nack(typ, rid, M.E_VERSION, F.VERSION_BYTE)
            return
        if typ >= M.FIRST_BOARD_TYPE or typ not in M.LAYOUTS:
            self._nack(typ, rid, M.E_UNKNOWN_TYPE, typ)
            return
        if M.check_length(typ, len(pay)):
            self._nack(typ, rid, M.E_LENGTH, M.size(typ))
            return
        try:
            self._dispatch(typ, rid, pay)
        except Exception as e:  # a firmware bug must not take the link down
            self.errors += 1
            self.last_error = e
            if typ in (M.START, M.RESUME, M.PAUSE, M.STOP):
                self.eng.fault(M.FAULT_COMMAND, typ)  # safe state, EV_ERROR
            self._nack(typ, rid, M.E_INTERNAL, typ)

    def _reply_rc(self, typ, rid, rc):
        if rc == 0:
            self._ok(typ, rid)
        else:
            self._nack(typ, rid, rc[0], rc[1])

    def _dispatch(self, typ, rid, pay):
        eng = self.eng
        ring = self.ring
        if typ == M.ACK:
            ring.ack_from(pay, 0)
            self._ok(typ, rid)
        elif typ == M.STATUS_REQ:
            self._send(M.STATUS, rid, self.status_payload())
        elif typ == M.PING:
            self._send(M.PONG, rid, struct.pack("<II", struct.unpack_from("<I", pay, 0)[0],
                                                self.uptime_ms // 1000))
        elif typ == M.HELLO:
            major = pay[0]
            if not M.compatible(major):
                self._nack(typ, rid, M.E_VERSION, F.VERSION_BYTE)
                return
            self.hello = True
            ring.sent = 0  # resend everything not yet acked
            self._send(M.INFO, rid, self.info_payload())
        elif typ == M.REPLAY:
            # an explicit request for records: streaming starts (like after HELLO); from a seq
            # no longer held, NACK with the oldest held and stream from there
            self.hello = True
            r = ring.replay_from(pay, 0)
            if r < 0:
                self._ok(typ, rid)
            else:
                ring.sent = 0
                self._nack(typ, rid, M.E_SEQ_GONE, r)
        elif typ == M.SCHED_BEGIN or typ == M.SCHED_CHUNK or typ == M.SCHED_END:
            self._upload(typ, rid, pay)
        elif typ == M.SCHED_READ:
            off, n = struct.unpack_from("<IH", pay, 0)
            blob = eng.blob()
            if blob is None:
                self._nack(typ, rid, M.E_NO_SCHEDULE, 0)
            elif n > M.MAX_CHUNK:
                self._nack(typ, rid, M.E_LENGTH, M.MAX_CHUNK)
            elif off > len(blob):
                self._nack(typ, rid, M.E_RANGE, len(blob))
            else:
                self._send(M.SCHED_DATA, rid, struct.pack("<I", off) + bytes(blob[off : off + n]))
        elif typ == M.START:
            self._reply_rc(typ, rid, eng.start(struct.unpack_from("<I", pay, 0)[0]))
        elif typ == M.PAUSE:
            self._reply_rc(typ, rid, eng.pause())
        elif typ == M.RESUME:
            self._reply_rc(typ, rid, eng.resume())
        elif typ == M.STOP:
            self._reply_rc(typ, rid, eng.stop())
        elif typ == M.CAL_GET or typ == M.CAL_SET:
            self._cal(typ, rid, pay)
        elif typ == M.CAL_SAVE:
            if self._busy():
                self._nack(typ, rid, M.E_STATE, eng.state)
                return
            self.fe.save_cal()
            self._ok(typ, rid)
        elif typ == M.ENTER_REPL:
            if self._busy():
                self._nack(typ, rid, M.E_STATE, eng.state)
                return
            self._ok(typ, rid)
            self.want_repl = True
        elif typ == M.RESET:
            self._ok(typ, rid)
            self.want_reset = True
        else:
            self._nack(typ, rid, M.E_UNKNOWN_TYPE, typ)

    def _busy(self):
        st = self.eng.state
        return st == M.ST_RUNNING or st == M.ST_HOLD or st == M.ST_PAUSED

    def _cal(self, typ, rid, pay):
        fe = self.fe
        if typ == M.CAL_GET:
            rng, ch = struct.unpack_from("<BB", pay, 0)
        else:
            rng, ch, off, gain = struct.unpack_from("<BBii", pay, 0)
            if self._busy():
                self._nack(typ, rid, M.E_STATE, self.eng.state)
                return
        if rng >= self.eng.n_ranges or ch > M.CH_SETPOINT:
            self._nack(typ, rid, M.E_RANGE, rng if rng >= self.eng.n_ranges else ch)
            return
        try:
            if typ == M.CAL_GET:
                off, gain = fe.get_cal(rng, ch)
                self._send(M.CAL, rid, struct.pack("<BBii", rng, ch, off, gain))
                return
            fe.set_cal(rng, ch, off, gain)
        except (ValueError, IndexError, KeyError):
            self._nack(typ, rid, M.E_RANGE, rng)
            return
        self._ok(typ, rid)

    def _upload(self, typ, rid, pay):
        eng = self.eng
        st = eng.state
        if st == M.ST_RUNNING or st == M.ST_PAUSED or st == M.ST_HOLD or st == M.ST_INTERRUPTED:
            self._nack(typ, rid, M.E_STATE, st)
            return
        if typ == M.SCHED_BEGIN:
            total, crc = struct.unpack_from("<IH", pay, 0)
            if total > S.MAX_BYTES:
                self._nack(typ, rid, M.E_TOO_LARGE, S.MAX_BYTES)
                return
            if total < S.HEADER_SIZE:
                self._nack(typ, rid, M.E_SCHEDULE, S.ScheduleError(S.ERR_LENGTH).nack_detail())
                return
            eng.unload()  # the upload goes straight into the engine's schedule buffer
            self.up_total = total
            self.up_crc = crc
            self.up_got = 0
            self._ok(typ, rid)
            return
        if self.up_total < 0:
            self._nack(typ, rid, M.E_STATE, st)
            return
        if typ == M.SCHED_CHUNK:
            off = struct.unpack_from("<I", pay, 0)[0]
            n = len(pay) - 4
            if off > self.up_got:
                self._nack(typ, rid, M.E_RANGE, self.up_got)  # detail: the offset expected
                return
            if off + n > self.up_total:
                self._nack(typ, rid, M.E_RANGE, self.up_total)
                return
            eng.blob_buf[off : off + n] = pay[4:]
            if off + n > self.up_got:
                self.up_got = off + n
            self._ok(typ, rid)
            return
        # SCHED_END
        total = self.up_total
        if self.up_got != total:
            self._nack(typ, rid, M.E_CHECKSUM, self.up_got)
            return
        crc = F.crc16(eng.blob_buf, 0, total)
        if crc != self.up_crc:
            self._nack(typ, rid, M.E_CHECKSUM, crc)
            return
        self.up_total = -1
        blob = memoryview(eng.blob_buf)[:total]
        try:
            eng.load(blob)
        except S.ScheduleError as e:
            self._nack(typ, rid, M.E_SCHEDULE, e.nack_detail())
            return
        except MemoryError:
            import gc

            gc.collect()
            self._nack(typ, rid, M.E_TOO_LARGE, gc.mem_free())  # detail: bytes free
            return
        except Exception:
            self._nack(typ, rid, M.E_SCHEDULE, S.ScheduleError(S.ERR_LENGTH).nack_detail())
            return
        if self.rs is not None:
            try:
                self.rs.save_blob(blob)
            except Exception:
                eng.fault(M.FAULT_FLASH, 0)  # logged; the schedule stays loaded in RAM
        self._ok(typ, rid)

    # ---- payloads ----------------------------------------------------------------------
    def info_payload(self):
        eng = self.eng
        fe = self.fe
        caps = self.caps | M.CAP_CAL | M.CAP_REPL
        if hasattr(fe, "autorange"):
            caps |= M.CAP_AUTORANGE
        if eng.has_temp:
            caps |= M.CAP_TEMP
        hv0 = eng.hw_v_min if eng.hw_v_min > -(2**31) else -(2**31)
        hv1 = eng.hw_v_max if eng.hw_v_max < 2**31 else 2**31 - 1
        return M.pack_info(
            (
                FW_VERSION[0],
                FW_VERSION[1],
                FW_VERSION[2],
                F.PROTO_MAJOR,
                F.PROTO_MINOR,
                eng.n_ranges,
                caps & 0xFFFF,
                self.board_id,
                hv0,
                hv1,
                eng.compliance,
                self.ring.capacity,
                eng.tick_ms,
                eng.state,
                eng.reset_cause,
                eng.run_id,
            ),
            eng.fs,
            eng.cost(),
        )

    def status_payload(self):
        eng = self.eng
        ring = self.ring
        return struct.pack(
            "<BBHHHIHiiiIIIII",
            eng.state,
            eng.range,
            eng.step & 0xFFFF,
            eng.cycle & 0xFFFF,
            eng.status_flags(),
            eng.rt_s,
            eng.rt_ms,
            eng.v,
            eng.i,
            eng.q_step,
            eng.run_id,
            ring.first_seq(),
            ring.last_seq(),
            ring.acked_seq(),
            ring.dropped,
        )
