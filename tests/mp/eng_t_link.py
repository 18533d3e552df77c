# Link scenario: a scripted byte stream (good frames, garbage, truncated frames, bit flips, an
# oversized frame, unknown types, wrong lengths, absurd schedules, a whole run with ACK/REPLAY)
# fed to link.Link with a fake I/O; every reply is decoded. Runs under MicroPython (prints JSON)
# and CPython (tests/test_link.py imports scenario()).
import gc
import struct
import sys

import ring

RG = ring.Ring(256)

import eng_sched as H  # noqa: E402
import engine  # noqa: E402
import link  # noqa: E402
from eng_fakefe import Clock, Frontend  # noqa: E402

from protocol import framing as F  # noqa: E402
from protocol import messages as M  # noqa: E402
from protocol import schedule as S  # noqa: E402


class FakeIO:
    def __init__(self):
        self.inp = bytearray()
        self.pos = 0
        self.out = []

    def read_byte(self):
        if self.pos >= len(self.inp):
            return -1
        b = self.inp[self.pos]
        self.pos += 1
        return b

    def write(self, data):
        self.out.append(bytes(data))


def frame(typ, rid, payload=b"", version=F.VERSION_BYTE):
    return F.encode_frame(typ, rid, payload, version)


def decode_out(chunks):
    d = F.Deframer()
    res = []
    for c in chunks:
        i = 0
        while i < len(c):
            i = d.push(c, i)
            if d.ready:
                t = d.type
                p = bytes(d.payload)
                if t == M.NACK:
                    res.append(("NACK", d.seq) + struct.unpack("<BBi", p))
                elif t == M.OK:
                    res.append(("OK", d.seq, p[0]))
                elif t in (M.SAMPLE, M.EVENT):
                    f = struct.unpack("<IHiiiHHBB" if t == M.SAMPLE else "<IHBBHHii", p)
                    res.append(("S" if t == M.SAMPLE else "E", d.seq) + f)
                elif t == M.SCHED_DATA:
                    res.append(
                        ("SCHED_DATA", d.seq, struct.unpack_from("<I", p, 0)[0], list(p[4:]))
                    )
                elif t == M.INFO:
                    res.append(
                        ("INFO", d.seq)
                        + M.unpack(M.INFO, p)[:7]
                        + (list(M.unpack(M.INFO, p)[7]),)
                        + M.unpack(M.INFO, p)[8:]
                        + (M.unpack_info_ranges(p),)
                    )
                else:
                    res.append((M.NAMES.get(t, str(t)), d.seq) + tuple(M.unpack(t, p)))
            elif d.error is not None:
                res.append(("BADFRAME", d.error.code))
    return res


def scenario(emit=None):
    # emit(label, replies) per step (MicroPython prints right away: the heap is small)
    clk = Clock(1000)
    fe = Frontend(clock=clk, model="rc", r_ohm=250, c_uf=1000000, v0_uv=0)
    RG.head = RG.count = RG.sent = RG.next_seq = RG.dropped = 0
    RG.acked = -1
    RG.gap = False
    eng = engine.Engine(
        fe,
        clock=clk,
        cfg={"v_min_uV": -2000000, "v_max_uV": 2000000, "compliance_uV": 4500000},
        ring=RG,
    )
    io = FakeIO()
    lk = link.Link(eng, fe, io=io, board_id=b"\x01\x02\x03\x04\x05\x06\x07\x08", caps=M.CAP_WDT)
    out = []

    def step(label, data, ticks_ms=0):
        io.inp = bytearray(data)
        io.pos = 0
        io.out = []
        while io.pos < len(io.inp):
            lk.poll()
        t_end = clk.t + ticks_ms
        while clk.t < t_end:
            d = clk.ticks_diff(eng.due, clk.ticks_ms())
            if d > 0:
                clk.advance(min(d, t_end - clk.t))
            if clk.ticks_diff(clk.ticks_ms(), eng.due) >= 0:
                eng.tick()
            lk.poll()
        while lk.poll() or (RG.pending() and lk.hello):
            pass
        res = decode_out(io.out)
        io.out = []
        if emit is None:
            out.append((label, res))
        else:
            emit(label, res)
        gc.collect()

    ping = frame(M.PING, 1, M.pack(M.PING, 7))
    step("ping_before_hello", ping)
    step("status_before_hello", frame(M.STATUS_REQ, 2))
    step("garbage", b"\x00hello world\x00")
    step("truncated", ping[: len(ping) // 2] + b"\x00")
    bad = bytearray(ping)
    bad[5] ^= 0x10
    if bad[5] == 0:
        bad[5] = 0x11
    step("bitflip", bytes(bad))
    step("oversized", b"\x00" + b"\x55" * 600 + b"\x00")
    step("unknown_type", frame(0x3E, 3) + frame(M.SAMPLE, 4, bytes(24)))
    step("wrong_length", frame(M.PING, 5, b"\x01\x02\x03") + frame(M.STATUS_REQ, 6, b"\x00"))
    step("bad_version", frame(M.PING, 7, M.pack(M.PING, 1), version=0x20))
    step("hello_bad_major", frame(M.HELLO, 8, M.pack(M.HELLO, 2, 0)))
    step("hello", frame(M.HELLO, 9, M.pack(M.HELLO, 1, 0)))
    step("start_no_sched", frame(M.START, 10, M.pack(M.START, 77)))
    step("sched_too_large", frame(M.SCHED_BEGIN, 11, M.pack(M.SCHED_BEGIN, 5000, 0)))
    step("chunk_without_begin", frame(M.SCHED_CHUNK, 12, M.pack(M.SCHED_CHUNK, 0) + b"abc"))

    def upload(blob, rid, crc=None, chunk=192, skip=False):
        f = frame(
            M.SCHED_BEGIN,
            rid,
            M.pack(M.SCHED_BEGIN, len(blob), F.crc16(blob) if crc is None else crc),
        )
        off = 0
        k = 1
        while off < len(blob):
            if not (skip and k == 2):
                f += frame(
                    M.SCHED_CHUNK, rid + k, M.pack(M.SCHED_CHUNK, off) + blob[off : off + chunk]
                )
            off += chunk
            k += 1
        return f + frame(M.SCHED_END, rid + 50)

    tick0 = H.build(H.hdr(), [H.step(S.K_REST, limits=[H.lim(S.Q_TIME, S.OP_GE, 1000)])])
    tick0 = tick0[:8] + b"\x00\x00" + tick0[10:]  # control tick 0 ms
    step("absurd_tick", upload(tick0, 100))
    big_i = H.build(
        H.hdr(imax=10000000), [H.step(S.K_CC, iset=20000000, limits=[H.lim(S.Q_TIME, S.OP_GE, 1)])]
    )
    step("absurd_current", upload(big_i, 200))
    loop_fwd = H.build(
        H.hdr(),
        [H.step(S.K_REST, limits=[H.lim(S.Q_TIME, S.OP_GE, 1)]), H.step(S.K_LOOP, ltgt=1, lcnt=1)],
    )
    step("absurd_loop", upload(loop_fwd, 300))
    step("garbage_schedule", upload(b"NOTASCHEDULE" * 5, 400))
    good = H.build(
        H.hdr(tick=100, slow=500),
        [
            H.step(S.K_REST, rdt=500, limits=[H.lim(S.Q_TIME, S.OP_GE, 2000)]),
            H.step(S.K_CC, iset=-50000, rdt=500, limits=[H.lim(S.Q_TIME, S.OP_GE, 600000)]),
        ]
        + [H.step(S.K_REST, rdt=1000, limits=[H.lim(S.Q_TIME, S.OP_GE, 1000)])] * 8,
    )
    step("bad_crc_upload", upload(good, 500, crc=F.crc16(good) ^ 1))
    step("chunk_gap", upload(good, 600, skip=True))
    step("good_upload", upload(good, 700))
    step(
        "sched_read",
        frame(M.SCHED_READ, 800, M.pack(M.SCHED_READ, 0, 192))
        + frame(M.SCHED_READ, 801, M.pack(M.SCHED_READ, 192, 192))
        + frame(M.SCHED_READ, 802, M.pack(M.SCHED_READ, 0, 300)),
    )
    step("start", frame(M.START, 900, M.pack(M.START, 0x1234)), ticks_ms=5000)
    step("sched_begin_running", frame(M.SCHED_BEGIN, 901, M.pack(M.SCHED_BEGIN, 100, 0)))
    step("status_running", frame(M.STATUS_REQ, 902))
    step(
        "cal_running",
        frame(M.CAL_GET, 903, M.pack(M.CAL_GET, 1, M.CH_VOLTAGE))
        + frame(M.CAL_SET, 904, M.pack(M.CAL_SET, 1, M.CH_VOLTAGE, 5, 1000100))
        + frame(M.CAL_GET, 905, M.pack(M.CAL_GET, 9, M.CH_VOLTAGE)),
    )
    step("repl_running", frame(M.ENTER_REPL, 906))
    last = RG.last_seq()
    step("ack", frame(M.ACK, 907, M.pack(M.ACK, last - 3)), ticks_ms=2000)
    step("replay_gone", frame(M.REPLAY, 908, M.pack(M.REPLAY, 0)))
    step("replay", frame(M.REPLAY, 909, M.pack(M.REPLAY, last - 2)))
    step("pause", frame(M.PAUSE, 910) + frame(M.PAUSE, 911), ticks_ms=3000)
    step("resume", frame(M.RESUME, 912) + frame(M.RESUME, 913), ticks_ms=3000)
    step("hello_again", frame(M.HELLO, 914, M.pack(M.HELLO, 1, 3)))
    step("stop", frame(M.STOP, 915) + frame(M.STOP, 916), ticks_ms=1000)
    step(
        "cal_idle",
        frame(M.CAL_SET, 917, M.pack(M.CAL_SET, 1, M.CH_VOLTAGE, 5, 1000100))
        + frame(M.CAL_GET, 918, M.pack(M.CAL_GET, 1, M.CH_VOLTAGE))
        + frame(M.CAL_SAVE, 919),
    )
    seed = 99
    junk = bytearray(3000)
    for k in range(3000):
        seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
        junk[k] = (seed >> 16) & 0xFF
    gc.collect()
    step("storm", bytes(junk) + b"\x00" + frame(M.PING, 920, M.pack(M.PING, 0x03030303)))
    step("restart", frame(M.START, 921, M.pack(M.START, 0x5678)), ticks_ms=1000)
    step("stop2", frame(M.STOP, 922))
    step("enter_repl", frame(M.ENTER_REPL, 923) + frame(M.PING, 924, M.pack(M.PING, 1)))
    return out, {
        "want_repl": lk.want_repl,
        "saved": fe.saved,
        "errors": lk.errors,
        "blob_len": len(good),
        "blob": list(good),
        "nacks": lk.nacks,
        "rx_frames": lk.rx_frames,
    }


if __name__ == "__main__":
    try:
        import ujson as json
    except ImportError:
        import json

    def emit(label, res):
        print(json.dumps({"step": label, "replies": res}))

    res, info = scenario(emit)
    print(json.dumps({"info": info}))
    sys.exit(0)
