# What survives a board reset, on flash (the working directory = flash root, relative paths).
#
#   runstate.json  {"seq": next seq block start, "t": run-time reserve (s), "active": bool,
#                   "run", "step", "loops", "cycle", "hc", "qhc", "qcp", "qcn", "r", "h", "sign"}
#   sched.bin      the schedule blob last accepted at SCHED_END (the one a run executes)
#
# Writes are atomic: write "<name>.tmp", then os.rename over the old file (littlefs and POSIX
# replace atomically; where rename cannot replace, the old file is removed first and boot
# falls back to the .tmp copy).
#
# Sequence numbers never repeat within a run across a reset: records only use seqs below the
# persisted block start "seq"; housekeeping() moves it SEQ_BLOCK ahead whenever fewer than half
# a block remain, and after a reset the ring continues at the persisted value, above anything
# the board could have sent. The run clock does the same with a TIME_BLOCK_S reserve, so test
# time never runs backwards across a reset (it jumps forward by at most a block).
# Nothing here runs inside the control tick: main.py calls housekeeping() between ticks.

import json
import os

SEQ_BLOCK = 4096
TIME_BLOCK_S = 600
STATE_FILE = "runstate.json"
SCHED_FILE = "sched.bin"


def _write(name, data, binary):
    tmp = name + ".tmp"
    with open(tmp, "wb" if binary else "w") as f:
        f.write(data)
    try:
        os.rename(tmp, name)
    except OSError:
        try:
            os.remove(name)
        except OSError:
            pass
        os.rename(tmp, name)


def _read(name, binary):
    for n in (name, name + ".tmp"):
        try:
            with open(n, "rb" if binary else "r") as f:
                return f.read()
        except OSError:
            pass
    return None


def _remove(name):
    for n in (name, name + ".tmp"):
        try:
            os.remove(n)
        except OSError:
            pass


class RunState:
    def __init__(self):
        self.snap = {}
        self.seq_limit = 0
        self.t_limit = 0
        self.writes = 0
        self.failures = 0
        self.skip = 0

    def load(self):
        # the persisted snapshot ({} when there is none or it is unreadable)
        txt = _read(STATE_FILE, False)
        snap = {}
        if txt:
            try:
                snap = json.loads(txt)
                if not isinstance(snap, dict):
                    snap = {}
            except ValueError:
                snap = {}
        self.snap = snap
        self.seq_limit = int(snap.get("seq", 0))
        self.t_limit = int(snap.get("t", 0))
        return snap

    def load_blob(self):
        return _read(SCHED_FILE, True)

    def save_blob(self, blob):
        _write(SCHED_FILE, blob, True)

    def clear(self):
        _remove(STATE_FILE)
        _remove(SCHED_FILE)
        self.snap = {}
        self.seq_limit = 0
        self.t_limit = 0

    def save(self, eng, next_seq):
        snap = eng.snapshot()
        if next_seq + SEQ_BLOCK // 2 >= self.seq_limit:
            self.seq_limit = next_seq + SEQ_BLOCK
        if eng.active and eng.rt_s + TIME_BLOCK_S // 2 >= self.t_limit:
            self.t_limit = eng.rt_s + TIME_BLOCK_S
        snap["seq"] = self.seq_limit
        snap["t"] = self.t_limit
        _write(STATE_FILE, json.dumps(snap), False)
        self.snap = snap
        self.writes += 1
        eng.persist_dirty = False

    def due(self, eng, next_seq):
        # True when a write is needed now (step start, run start/end, seq or time reserve low)
        if eng.persist_dirty:
            return True
        if next_seq + SEQ_BLOCK // 2 >= self.seq_limit:
            return True
        return eng.active and eng.rt_s + TIME_BLOCK_S // 2 >= self.t_limit

    def housekeeping(self, eng, next_seq):
        # 1 = written, 0 = nothing to do, -1 = the write failed (retried with back-off)
        if self.skip:
            self.skip -= 1
            return 0
        if not self.due(eng, next_seq):
            return 0
        try:
            self.save(eng, next_seq)
        except Exception:
            self.failures += 1
            self.skip = 1 << (self.failures if self.failures < 12 else 12)
            return -1
        self.failures = 0
        return 1
