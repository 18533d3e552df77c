# Shared set-up for the engine scenario scripts (eng_t_*.py): each prints one JSON line of
# measured figures for tests/test_engine.py. Runs under MicroPython and CPython.
import sys

try:
    import ujson as json
except ImportError:
    import json

import ring

RG = ring.Ring(512)  # allocated first, before the big imports fragment the heap

import eng_sched as H  # noqa: E402
import engine  # noqa: E402
from eng_fakefe import Clock, Frontend  # noqa: E402

from protocol import schedule as S  # noqa: E402, F401  (re-exported to the eng_t_* scripts)

CFG = {"v_min_uV": -2000000, "v_max_uV": 2000000, "compliance_uV": 4500000}
MP = sys.implementation.name == "micropython"


def make(model="rc", ring_obj=None, clock_start=1000, **kw):
    clk = Clock(clock_start)
    fe = Frontend(clock=clk, model=model, **kw)
    rg = ring_obj if ring_obj is not None else RG
    rg.head = 0
    rg.count = 0
    rg.sent = 0
    eng = engine.Engine(fe, clock=clk, cfg=CFG, ring=rg)
    return clk, fe, eng


def go(eng, clk, blob, max_ms, run_id=1, samples=True, **kw):
    eng.load(blob)
    rc = eng.start(run_id)
    assert rc == 0, rc
    recs = []
    H.run(eng, clk, max_ms, drain_into=recs, samples=samples, **kw)
    return recs


def main(g):
    name = sys.argv[1]
    print(json.dumps(g["sc_" + name]()))


def sign_changes(xs):
    n = 0
    prev = 0
    for k in range(1, len(xs)):
        d = xs[k] - xs[k - 1]
        if d == 0:
            continue
        s = 1 if d > 0 else -1
        if prev and s != prev:
            n += 1
        prev = s
    return n


def crossing(model, kw, i_na, v_lim, t_max, below=True):
    # exact time (ms) and charge (nA*ms) at which CC i_na from rest crosses v_lim (bisection)
    def v_at(t):
        c = Clock(0)
        fe = Frontend(clock=c, model=model, **kw)
        fe.i_cmd = i_na  # exactly the (quantised) current the run used
        fe.connect()
        c.t = t
        fe._update()
        return fe.v_true(), fe.q

    lo, hi = 0, t_max
    while hi - lo > 1:
        mid = (lo + hi) // 2
        v, _ = v_at(mid)
        if (v <= v_lim) if below else (v >= v_lim):
            hi = mid
        else:
            lo = mid
    v, q = v_at(hi)
    return hi, q, v
