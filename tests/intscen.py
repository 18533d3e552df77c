"""Scenarios for tests/intcheck.py beyond the tests/mp scripts: seqs at the small-int edges
(2**30, 2**31) and the u32 wrap through the ring, the encoder and the link; a CC-CV step at a
steep slope; a step with a time limit of days; the real front end and drivers over full-scale
codes (the bus a stand-in answering with the codes given). Each
``sc_*`` raises AssertionError when the firmware does the wrong thing; the checker records the
arithmetic. They use the tests/mp helpers and run under CPython only."""

import os
import struct
import tempfile

EDGES = (2**30 - 3, 2**31 - 3, 2**32 - 3)  # first seqs: across 2**30, 2**31 and the wrap
U32 = 2**32


def _i32(x):
    return struct.unpack("<i", struct.pack("<I", x % U32))[0]


def sc_ring_seqs():
    import ring

    from protocol import framing as F

    for first in EDGES:
        rg = ring.Ring(128, reserve=4, first_seq=first)
        enc = F.Encoder()
        dfr = F.Deframer()
        for k in range(6):
            assert rg.push_sample(k, 0, k, -k, k, 1, 1, 2, 0)
        assert rg.push_event(6, 0, 3, 0, 1, 1, 7, 0)
        want = [(first + k) % U32 for k in range(7)]
        got = []
        while True:
            off = rg.peek_send()
            if off < 0:
                break
            assert rg.record(off)[1] == want[len(got)]
            frame = bytes(rg.encode(enc, off))
            dfr.push(frame, 0)
            assert dfr.ready, dfr.error
            got.append(dfr.seq)
            rg.mark_sent()
        assert got == want, (got, want)
        assert rg.first_seq() == first and rg.last_seq() == want[-1]
        assert rg.acked == -1 and rg.acked_seq() == 0xFFFFFFFF
        assert rg.ack_from(struct.pack("<I", want[2]), 0) == 3
        assert rg.acked == want[2] and rg.acked_seq() == want[2]
        assert rg.replay_from(struct.pack("<I", first), 0) == want[3]  # gone
        assert rg.replay_from(struct.pack("<I", want[4]), 0) == -1 and rg.pending() == 3
        assert rg.ack_from(struct.pack("<I", (first + 1000) % U32), 0) == 4  # all there is
        assert rg.count == 0 and rg.first_seq() == (first + 7) % U32
        assert rg.next_seq == (first + 7) % U32
    return "ok"


def _link(first):
    import engine
    import link
    import ring
    from eng_fakefe import Clock, Frontend
    from eng_t_link import FakeIO

    clk = Clock(1000)
    fe = Frontend(clock=clk, model="rc", r_ohm=250, c_uf=1000000, v0_uv=0)
    rg = ring.Ring(128, reserve=8, first_seq=first)
    cfg = {"v_min_uV": -2000000, "v_max_uV": 2000000, "compliance_uV": 4500000}
    eng = engine.Engine(fe, clock=clk, cfg=cfg, ring=rg)
    io = FakeIO()
    lk = link.Link(eng, fe, io=io, board_id=b"intcheck")
    return clk, eng, rg, io, lk


def _talk(clk, eng, io, lk, data, ms=0):
    from eng_t_link import decode_out

    io.inp = bytearray(data)
    io.pos = 0
    io.out = []
    t_end = clk.t + ms
    while True:
        lk.poll()
        if io.pos >= len(io.inp) and clk.t >= t_end:
            break
        if clk.t < t_end:
            d = clk.ticks_diff(eng.due, clk.ticks_ms())
            if d > 0:
                clk.advance(min(d, t_end - clk.t))
            if clk.ticks_diff(clk.ticks_ms(), eng.due) >= 0:
                eng.tick()
    while lk.poll():
        pass
    return decode_out(io.out)


def sc_link_seqs():
    import eng_sched as H
    from eng_t_link import frame

    from protocol import messages as M
    from protocol import schedule as S

    blob = H.build(
        H.hdr(tick=100, slow=1000),
        [H.step(S.K_CC, iset=100000, rdt=100, limits=[H.lim(S.Q_TIME, S.OP_GE, 2000)])],
    )
    for first in EDGES:
        clk, eng, rg, io, lk = _link(first)
        eng.load(blob)
        assert eng.start(7) == 0
        r = _talk(clk, eng, io, lk, frame(M.HELLO, 1, struct.pack("<BB", 1, 0)), 1500)
        assert r[0][0] == "INFO", r[0]
        seqs = [x[1] for x in r if x[0] in ("S", "E")]
        assert len(seqs) >= 10 and seqs == [(first + k) % U32 for k in range(len(seqs))], seqs
        top = seqs[5]
        r = _talk(clk, eng, io, lk, frame(M.ACK, 2, struct.pack("<I", top)))
        assert r == [("OK", 2, M.ACK)], r
        r = _talk(clk, eng, io, lk, frame(M.STATUS_REQ, 3))
        assert r[0][0] == "STATUS", r
        fields = dict(zip(M.LAYOUTS[M.STATUS][1], r[0][2:], strict=True))
        assert fields["first_seq"] == (top + 1) % U32 and fields["acked_seq"] == top, fields
        assert fields["last_seq"] == rg.last_seq(), fields
        r = _talk(clk, eng, io, lk, frame(M.REPLAY, 4, struct.pack("<I", first)))
        nack = [x for x in r if x[0] == "NACK"]
        assert nack and nack[0][3:] == (M.E_SEQ_GONE, _i32(top + 1)), r
        r = _talk(clk, eng, io, lk, frame(M.REPLAY, 5, struct.pack("<I", (top + 3) % U32)))
        assert r[0] == ("OK", 5, M.REPLAY), r
        again = [x[1] for x in r if x[0] in ("S", "E")]
        assert again[:2] == [(top + 3) % U32, (top + 4) % U32], again
    return "ok"


def sc_cccv_step():
    # a CC-CV step on a 1 mF capacitor at 2 mA: V climbs 2 V/s towards v_set, 1.5 V and more
    # below the safety window's top (the slope the RP2040 met in a CC-CV step)
    import eng_sched as H
    from eng_common import go, make

    from protocol import schedule as S

    clk, _fe, eng = make("rc", r_ohm=100, c_uf=1000, v0_uv=0)
    blob = H.build(
        H.hdr(tick=10, slow=1000),
        [
            H.step(S.K_REST, rdt=1000, limits=[H.lim(S.Q_TIME, S.OP_GE, 1000)]),
            H.step(
                S.K_CCCV,
                iset=-2000000,
                vset=500000,
                rdt=100,
                limits=[H.lim(S.Q_ABS_I, S.OP_LE, 20000), H.lim(S.Q_TIME, S.OP_GE, 30000)],
            ),
        ],
    )
    recs = go(eng, clk, blob, 60000)
    assert eng.state == H.ST_DONE, eng.state
    vs = [r[3] for r in recs if r[0] == "S" and r[6] == 1]
    assert len(vs) > 5 and abs(vs[-1] - 500000) <= 5000, vs  # CV settled on v_set
    return "ok"


def sc_long_time_limit():
    # a 20-day rest (a calendar-ageing step): the time left in ms is past 2**30
    import eng_sched as H
    from eng_common import go, make

    from protocol import schedule as S

    clk, _fe, eng = make("rc", r_ohm=100, c_uf=100000, v0_uv=300000)
    day = 24 * 3600 * 1000
    blob = H.build(
        H.hdr(tick=100, slow=10000),
        [H.step(S.K_REST, rdt=60000, limits=[H.lim(S.Q_TIME, S.OP_GE, 20 * day)])],
    )
    recs = go(eng, clk, blob, 600000)
    assert eng.state == H.ST_RUNNING and len(recs) >= 10, (eng.state, len(recs))
    return "ok"


class Bus:
    """I2C stand-in for the parts the drivers know: every conversion returns the next code of
    ``codes`` (big-endian, 16 or 24 bits by the read's length); status and config reads say
    ready."""

    def __init__(self, codes):
        self.codes = codes
        self.k = 0
        self.writes = 0

    def _code(self):
        c = self.codes[self.k % len(self.codes)]
        self.k += 1
        return c

    def writeto(self, addr, buf):
        self.writes += 1

    def readfrom(self, addr, n):
        return bytes(n)

    def readfrom_mem_into(self, addr, reg, buf):
        n = len(buf)
        if n == 1:  # ADS1219 status: DRDY
            buf[0] = 0x80
        elif n == 2 and reg == 1:  # ADS1115 config: OS = 1, conversion done
            buf[0] = 0x80
            buf[1] = 0
        elif n == 2:
            struct.pack_into(">h", buf, 0, self._code())
        else:
            c = self._code() & 0xFFFFFF
            buf[0] = c >> 16
            buf[1] = (c >> 8) & 0xFF
            buf[2] = c & 0xFF


def _frontend_case(cfg, top, gains, out):
    import frontend

    lo = -top - 1
    codes = [top, lo, 0, top - 1, lo + 1, 1, -1, top // 2, lo // 2]
    bus = Bus(codes)
    fe = frontend.Frontend(cfg=cfg, i2c=bus)
    fe.connect()
    for gain in gains:
        for r in range(fe.n_ranges):
            fs = fe.full_scale_nA[r]
            for ch in range(3):
                fe.set_cal(r, ch, fs // 100 if ch else 10000, gain)
            fe.autorange = False
            fe.set_range(r)
            for i in (fs, -fs, fs * 9 // 10, 0, -1, 1):
                fe.set_current(i)
            for _ in range(len(codes)):
                fe.measure()
                out.append((fe.v_uV, fe.i_nA))
            fe.autorange = True
            for _ in range(2 * len(codes)):
                fe.measure()
    fe.safe()
    assert not fe.connected and bus.writes > 0


def _frontend(parts, gains):
    import board

    here = os.getcwd()
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # calibration.json lives in the working directory
        try:
            for adc, dac, top in parts:
                cfg = board.load()
                cfg["adc"]["part"] = adc
                cfg["dac"]["part"] = dac
                _frontend_case(cfg, top, gains, out)
        finally:
            os.chdir(here)
    assert len(out) > 100
    return "ok"


def sc_frontend():
    # the fitted parts (board.json), calibration gains within 5 % of unity
    return _frontend([("ads1115", "mcp4725", 32767)], (950000, 1000000, 1050000))


def sc_frontend_edges():
    # both part sets at the calibration's limits (gains 0.9 and 1.1, calibration.MAX_DEV)
    return _frontend(
        [("ads1115", "mcp4725", 32767), ("ads1219", "dac8571", 0x7FFFFF)], (900000, 1100000)
    )
