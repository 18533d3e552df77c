"""Link: a scripted byte stream (good frames, garbage, truncated frames, bit flips, an oversized
frame, unknown types, wrong lengths, absurd schedules, a run with ACK / REPLAY / PAUSE / STOP)
gets the right OK / NACK answers and nothing crashes - under MicroPython and CPython alike.
Then the real firmware main.py end to end over pipes (stdin/stdout), including a board reset in
the middle of a run (seq numbers continue above everything sent, EV_INTERRUPTED, RESUME)."""

from __future__ import annotations

import json
import os
import select
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT / "firmware", ROOT, ROOT / "tests" / "mp"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from protocol import framing as F  # noqa: E402
from protocol import messages as M  # noqa: E402
from protocol import schedule as S  # noqa: E402
from tests.mputil import ENGINE_PATH, MICROPYTHON_OK, MP_DIR, needs_mp, popen_mp, run_mp  # noqa: E402


def _mp_scenario() -> tuple[dict, dict]:
    p = run_mp(MP_DIR / "eng_t_link.py", path=ENGINE_PATH)
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0, out[-2000:] + p.stderr.decode(errors="replace")
    steps = {}
    info = {}
    for line in out.splitlines():
        d = json.loads(line)
        if "info" in d:
            info = d["info"]
        else:
            steps[d["step"]] = [tuple(r) for r in d["replies"]]
    return steps, info


def _cp_scenario() -> tuple[dict, dict]:
    import eng_t_link

    res, info = eng_t_link.scenario()
    return {k: [tuple(list(r)) for r in v] for k, v in res}, info


@pytest.fixture(scope="module", params=["micropython", "cpython"])
def scen(request) -> tuple[dict, dict]:
    if request.param == "micropython":
        if not MICROPYTHON_OK:
            pytest.skip("micropython unix port not installed")
        return _mp_scenario()
    return _cp_scenario()


def ctl(replies):
    return [r for r in replies if r[0] not in ("S", "E")]


def recs(replies):
    return [r for r in replies if r[0] in ("S", "E")]


def nack(replies):
    return [(r[2], r[3], r[4]) for r in replies if r[0] == "NACK"]


def test_frame_errors_are_nacked(scen) -> None:
    st, _ = scen
    assert ctl(st["ping_before_hello"])[0][:3] == ("PONG", 1, 7)
    assert ctl(st["status_before_hello"])[0][:3] == ("STATUS", 2, M.ST_IDLE)
    assert nack(st["garbage"]) == [(M.REQ_NONE, M.E_FRAME, F.E_COBS)]
    assert nack(st["truncated"])[0][:2] == (M.REQ_NONE, M.E_FRAME)
    bit = ctl(st["bitflip"])
    assert [r[0] for r in bit] == ["NACK"] and bit[0][3] == M.E_FRAME  # never executed
    assert nack(st["oversized"]) == [(M.REQ_NONE, M.E_FRAME, F.E_LONG)]
    assert nack(st["unknown_type"]) == [
        (0x3E, M.E_UNKNOWN_TYPE, 0x3E),
        (M.SAMPLE, M.E_UNKNOWN_TYPE, M.SAMPLE),
    ]
    assert nack(st["wrong_length"]) == [(M.PING, M.E_LENGTH, 4), (M.STATUS_REQ, M.E_LENGTH, 0)]
    assert nack(st["bad_version"]) == [(M.PING, M.E_VERSION, F.VERSION_BYTE)]
    # request ids are echoed as the frame seq
    assert [r[1] for r in ctl(st["unknown_type"])] == [3, 4]


def test_hello_info(scen) -> None:
    st, _ = scen
    assert nack(st["hello_bad_major"]) == [(M.HELLO, M.E_VERSION, F.VERSION_BYTE)]
    info = ctl(st["hello"])[0]
    assert info[0] == "INFO" and info[1] == 9
    _fw_major, _fw_minor, _fw_patch, pmaj, pmin, n_ranges, caps = info[2:9]
    assert (pmaj, pmin) == (F.PROTO_MAJOR, F.PROTO_MINOR) and n_ranges == 4
    assert caps & M.CAP_WDT and caps & M.CAP_REPL and caps & M.CAP_CAL
    assert info[9] == [1, 2, 3, 4, 5, 6, 7, 8]  # board id
    assert info[10:14] == (-2000000, 2000000, 4500000, 256)  # window, compliance, ring slots
    assert info[14] == 100 and info[15] == M.ST_IDLE
    assert info[-1] == [10000, 100000, 1000000, 10000000]


def test_schedule_upload_checks(scen) -> None:
    st, info = scen
    assert nack(st["start_no_sched"]) == [(M.START, M.E_NO_SCHEDULE, 0)]
    assert nack(st["sched_too_large"]) == [(M.SCHED_BEGIN, M.E_TOO_LARGE, S.MAX_BYTES)]
    assert nack(st["chunk_without_begin"]) == [(M.SCHED_CHUNK, M.E_STATE, M.ST_IDLE)]
    hdr = 0xFFFF << 8
    assert nack(st["absurd_tick"]) == [(M.SCHED_END, M.E_SCHEDULE, hdr | S.ERR_TICK)]
    assert nack(st["absurd_current"]) == [(M.SCHED_END, M.E_SCHEDULE, (0 << 8) | S.ERR_CURRENT)]
    assert nack(st["absurd_loop"]) == [(M.SCHED_END, M.E_SCHEDULE, (1 << 8) | S.ERR_LOOP)]
    assert nack(st["garbage_schedule"]) == [(M.SCHED_END, M.E_SCHEDULE, hdr | S.ERR_MAGIC)]
    bad_crc = nack(st["bad_crc_upload"])
    assert len(bad_crc) == 1 and bad_crc[0][:2] == (M.SCHED_END, M.E_CHECKSUM)
    assert nack(st["chunk_gap"]) == [
        (M.SCHED_CHUNK, M.E_RANGE, 192),
        (M.SCHED_END, M.E_CHECKSUM, 192),
    ]
    good = ctl(st["good_upload"])
    assert all(r[0] == "OK" for r in good) and good[-1][1:] == (750, M.SCHED_END)
    # SCHED_READ returns the stored bytes
    data = ctl(st["sched_read"])
    blob = bytes(data[0][3] + data[1][3])
    assert blob == bytes(info["blob"])[:384] and info["blob_len"] == 450
    assert nack(st["sched_read"]) == [(M.SCHED_READ, M.E_LENGTH, M.MAX_CHUNK)]


def test_run_stream_ack_replay(scen) -> None:
    st, _ = scen
    assert ctl(st["start"]) == [("OK", 900, M.START)]
    r = recs(st["start"])
    seqs = [x[1] for x in r]
    assert seqs == list(range(len(seqs))) and len(seqs) >= 10
    assert r[0][0] == "E" and r[0][4] == M.EV_RUN_START and r[0][8] == 0x1234
    assert any(x[0] == "S" and x[-1] & M.F_STEP_FIRST for x in r)
    assert nack(st["sched_begin_running"]) == [(M.SCHED_BEGIN, M.E_STATE, M.ST_RUNNING)]
    status = ctl(st["status_running"])[0]
    assert status[2] == M.ST_RUNNING and status[12] == 0x1234 and status[14] == seqs[-1]
    cal = ctl(st["cal_running"])
    assert cal[0][0] == "CAL"
    assert nack(st["cal_running"]) == [
        (M.CAL_SET, M.E_STATE, M.ST_RUNNING),
        (M.CAL_GET, M.E_RANGE, 9),
    ]
    assert nack(st["repl_running"]) == [(M.ENTER_REPL, M.E_STATE, M.ST_RUNNING)]
    # ACK frees; a REPLAY from below the oldest held is refused with the oldest held seq
    assert ctl(st["ack"]) == [("OK", 907, M.ACK)]
    oldest = seqs[-1] - 3 + 1
    assert nack(st["replay_gone"]) == [(M.REPLAY, M.E_SEQ_GONE, oldest)]
    assert recs(st["replay_gone"])[0][1] == oldest  # ... and streams what it holds
    assert ctl(st["replay"]) == [("OK", 909, M.REPLAY)]
    rep = [x[1] for x in recs(st["replay"])]
    assert rep[0] == seqs[-1] - 2 and rep == sorted(rep)
    assert nack(st["pause"]) == [(M.PAUSE, M.E_STATE, M.ST_PAUSED)]
    assert [x[4] for x in recs(st["pause"]) if x[0] == "E"] == [M.EV_PAUSED]
    # one sample at the pause, the boundary (relay open, 0 A); nothing while paused
    paused = [x for x in recs(st["pause"]) if x[0] == "S"]
    assert len(paused) == 1 and paused[0][-1] & M.F_OPEN and paused[0][5] == 0
    assert nack(st["resume"]) == [(M.RESUME, M.E_STATE, M.ST_RUNNING)]
    # the resume's first sample is the other boundary (relay still open, 0 A), then it runs
    resumed = [x for x in recs(st["resume"]) if x[0] == "S"]
    assert resumed[0][-1] & M.F_OPEN and resumed[0][5] == 0
    assert resumed[0][6] == paused[0][6]  # the step's charge did not move while paused
    assert not resumed[-1][-1] & M.F_OPEN
    # HELLO again (a reconnecting host): everything unacked is sent again
    again = recs(st["hello_again"])
    assert again[0][1] == oldest and ctl(st["hello_again"])[0][15] == M.ST_RUNNING
    assert nack(st["stop"]) == [(M.STOP, M.E_STATE, M.ST_STOPPED)]
    ev = [x[4] for x in recs(st["stop"]) if x[0] == "E"]
    assert ev[-2:] == [M.EV_STOPPED, M.EV_RUN_END]


def test_cal_garbage_storm_and_repl(scen) -> None:
    st, info = scen
    assert ctl(st["cal_idle"]) == [
        ("OK", 917, M.CAL_SET),
        ("CAL", 918, 1, M.CH_VOLTAGE, 5, 1000100),
        ("OK", 919, M.CAL_SAVE),
    ]
    assert info["saved"] == 1
    storm = ctl(st["storm"])
    assert storm[-1][:3] == ("PONG", 920, 0x03030303)  # 0x03 is data
    assert all(r[0] in ("NACK", "PONG") for r in storm)
    assert ctl(st["restart"]) == [("OK", 921, M.START)]
    assert ctl(st["enter_repl"])[0] == ("OK", 923, M.ENTER_REPL)
    assert info["want_repl"] and info["errors"] == 0


def test_same_answers_on_both_interpreters() -> None:
    if not MICROPYTHON_OK:
        pytest.skip("micropython unix port not installed")
    mp, _ = _mp_scenario()
    cp, _ = _cp_scenario()
    assert mp.keys() == cp.keys()
    for k in mp:
        assert [list(r) for r in mp[k]] == [list(r) for r in cp[k]], k


# ---- end to end: firmware/main.py over pipes ----------------------------------------------------
ENV_DIR = MP_DIR / "eng_env"


class Proc:
    def __init__(self, cwd: Path, cause: str = "PWRON"):
        self.p = popen_mp(
            ENV_DIR / "eng_boot.py",
            path=[ENV_DIR, *ENGINE_PATH],
            cwd=cwd,
            env={"ENG_RESET_CAUSE": cause},
        )
        self.d = F.Deframer()
        self.frames: list[tuple[int, int, bytes]] = []
        self.rid = 1000

    def send(self, typ: int, payload: bytes = b"", rid: int | None = None) -> int:
        if rid is None:
            self.rid += 1
            rid = self.rid
        self.p.stdin.write(F.encode_frame(typ, rid, payload))
        self.p.stdin.flush()
        return rid

    def pump(self, t: float) -> None:
        end = time.monotonic() + t
        fd = self.p.stdout.fileno()
        while time.monotonic() < end:
            r, _, _ = select.select([fd], [], [], 0.05)
            if not r:
                if self.p.poll() is not None:
                    return
                continue
            data = os.read(fd, 4096)
            if not data:
                return
            i = 0
            while i < len(data):
                i = self.d.push(data, i)
                if self.d.ready:
                    self.frames.append((self.d.type, self.d.seq, bytes(self.d.payload)))

    def reply(self, rid: int, t: float = 5.0) -> tuple[int, int, bytes]:
        end = time.monotonic() + t
        while time.monotonic() < end:
            for f in self.frames:
                if f[1] == rid and f[0] not in (M.SAMPLE, M.EVENT):
                    return f
            self.pump(0.1)
        raise AssertionError(f"no reply to request {rid}; stderr: {self.stderr()}")

    def request(self, typ: int, payload: bytes = b"") -> tuple[int, int, bytes]:
        return self.reply(self.send(typ, payload))

    def records(self) -> list[tuple[int, int, bytes]]:
        return [f for f in self.frames if f[0] in (M.SAMPLE, M.EVENT)]

    def stderr(self) -> str:
        if self.p.poll() is None:
            return ""
        return self.p.stderr.read().decode(errors="replace")

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(10)


def _upload(pr: Proc, blob: bytes) -> None:
    assert pr.request(M.SCHED_BEGIN, M.pack(M.SCHED_BEGIN, len(blob), F.crc16(blob)))[0] == M.OK
    for off in range(0, len(blob), M.MAX_CHUNK):
        r = pr.request(M.SCHED_CHUNK, M.pack(M.SCHED_CHUNK, off) + blob[off : off + M.MAX_CHUNK])
        assert r[0] == M.OK, M.unpack(M.NACK, r[2])
    r = pr.request(M.SCHED_END)
    assert r[0] == M.OK, M.unpack(M.NACK, r[2])


@needs_mp
def test_main_end_to_end_with_reset(tmp_path: Path) -> None:
    import eng_sched as H

    blob = H.build(
        H.hdr(tick=20, slow=100),
        [H.step(S.K_CC, iset=100000, rdt=50, limits=[H.lim(S.Q_TIME, S.OP_GE, 3600000)])],
    )
    pr = Proc(tmp_path)
    try:
        pr.pump(1.0)
        assert pr.frames == [], "the board spoke before HELLO"
        r = pr.request(M.HELLO, M.pack(M.HELLO, 1, 0))
        assert r[0] == M.INFO
        info = M.unpack(M.INFO, r[2])
        assert info[13] == M.ST_IDLE and info[14] == M.RC_POWER_ON
        _upload(pr, blob)
        r = pr.request(M.SCHED_READ, M.pack(M.SCHED_READ, 0, len(blob)))
        assert r[0] == M.SCHED_DATA and r[2][4:] == blob
        assert pr.request(M.START, M.pack(M.START, 0xABCD))[0] == M.OK
        pr.pump(2.0)
        got = pr.records()
        assert len(got) > 10
        seqs = [f[1] for f in got]
        assert seqs == list(range(len(seqs)))
        # ACK half; REPLAY from an acked seq is refused, from a held one resends
        pr.send(M.ACK, M.pack(M.ACK, seqs[len(seqs) // 2]))
        pr.pump(0.3)
        n0 = len(pr.records())
        rid = pr.send(M.REPLAY, M.pack(M.REPLAY, seqs[len(seqs) // 2] + 1))
        pr.pump(0.5)
        assert pr.reply(rid)[0] == M.OK
        again = [f[1] for f in pr.records()[n0:]]
        assert seqs[len(seqs) // 2] + 1 in again
        st = M.unpack(M.STATUS, pr.request(M.STATUS_REQ)[2])
        assert st[0] == M.ST_RUNNING and st[10] == 0xABCD
        last_sent = max(f[1] for f in pr.records())
    finally:
        pr.kill()  # power cut in the middle of the run
    assert (tmp_path / "runstate.json").exists() and (tmp_path / "sched.bin").exists()
    pr = Proc(tmp_path, cause="WDT")
    try:
        pr.pump(0.8)
        assert pr.frames == [], "the board spoke before HELLO after the reset"
        info = M.unpack(M.INFO, pr.request(M.HELLO, M.pack(M.HELLO, 1, 0))[2])
        assert info[13] == M.ST_INTERRUPTED and info[14] == M.RC_WATCHDOG
        assert info[15] == 0xABCD
        pr.pump(0.5)
        recs2 = pr.records()
        assert recs2 and min(f[1] for f in recs2) > last_sent  # seqs never repeat
        ev = [M.unpack(M.EVENT, f[2]) for f in recs2 if f[0] == M.EVENT]
        intr = [e for e in ev if e[2] == M.EV_INTERRUPTED]
        assert intr and intr[0][3] == M.RC_WATCHDOG and intr[0][6] == 0xABCD
        st = M.unpack(M.STATUS, pr.request(M.STATUS_REQ)[2])
        assert st[0] == M.ST_INTERRUPTED and st[4] & M.F_OPEN
        assert pr.request(M.RESUME)[0] == M.OK
        pr.pump(1.0)
        st = M.unpack(M.STATUS, pr.request(M.STATUS_REQ)[2])
        assert st[0] == M.ST_RUNNING and not (st[4] & M.F_OPEN)
        assert pr.request(M.STOP)[0] == M.OK
        r = pr.request(M.ENTER_REPL)
        assert r[0] == M.OK
        pr.p.stdin.close()
        assert pr.p.wait(10) == 0, pr.stderr()  # main() returned to the REPL (here: exit)
    finally:
        pr.kill()


# ---- run state on flash (CPython: same code as on the board) ------------------------------------
def test_runstate_seq_blocks_and_atomic_files(tmp_path: Path, monkeypatch) -> None:
    import runstate as R

    monkeypatch.chdir(tmp_path)

    class Eng:
        active = True
        rt_s = 1000
        persist_dirty = True

        def snapshot(self):
            return {"run": 7, "active": self.active, "step": 3}

    rs = R.RunState()
    assert rs.load() == {} and rs.seq_limit == 0
    e = Eng()
    assert rs.housekeeping(e, 0) == 1 and not e.persist_dirty
    assert rs.seq_limit == R.SEQ_BLOCK and rs.t_limit == 1000 + R.TIME_BLOCK_S
    assert rs.housekeeping(e, 100) == 0  # nothing due
    assert rs.housekeeping(e, R.SEQ_BLOCK // 2) == 1  # half a block left: reserve the next
    assert rs.seq_limit == R.SEQ_BLOCK // 2 + R.SEQ_BLOCK
    e.rt_s = rs.t_limit - R.TIME_BLOCK_S // 2
    assert rs.housekeeping(e, 2100) == 1 and rs.t_limit == e.rt_s + R.TIME_BLOCK_S
    rs2 = R.RunState()
    snap = rs2.load()
    assert snap["run"] == 7 and snap["active"] and rs2.seq_limit == rs.seq_limit
    # a reset between writing the .tmp and the rename: the .tmp is still found
    (tmp_path / R.STATE_FILE).rename(tmp_path / (R.STATE_FILE + ".tmp"))
    assert R.RunState().load()["step"] == 3
    rs.save_blob(b"SICS-blob")
    assert rs.load_blob() == b"SICS-blob" and not (tmp_path / "sched.bin.tmp").exists()
    # a failing flash: housekeeping reports it and backs off instead of raising
    monkeypatch.setattr(R, "_write", lambda *a: (_ for _ in ()).throw(OSError(28)))
    e.persist_dirty = True
    assert rs.housekeeping(e, 0) == -1 and rs.failures == 1 and rs.skip == 2
    assert rs.housekeeping(e, 0) == 0  # backing off
