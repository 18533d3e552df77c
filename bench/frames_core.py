# SAMPLE frame encode+decode throughput; runs unchanged under CPython and MicroPython.
# Usage: (micropython|python) bench/frames_core.py [n]
# prints "encode <frames/s> decode <frames/s> both <frames/s>".
import sys
import time

try:
    from protocol import framing, messages
except ImportError:  # CPython with the installed package
    from sicell.protocol import framing, messages


def _now_us():
    if hasattr(time, "ticks_us"):
        return time.ticks_us()
    return time.perf_counter_ns() // 1000


def _diff(a, b):
    if hasattr(time, "ticks_diff"):
        return time.ticks_diff(a, b)
    return a - b


def bench(n):
    enc = framing.Encoder()
    dec = framing.Deframer()
    fmt = messages.LAYOUTS[messages.SAMPLE][0]
    # encode only
    t0 = _now_us()
    for k in range(n):
        enc.encode_payload_struct(
            messages.SAMPLE, k, fmt, k, 250, -610000 + k, 56700, k, 3, 1, 2, 1
        )
    t_enc = _diff(_now_us(), t0)
    wire = bytes(
        enc.encode_payload_struct(messages.SAMPLE, 7, fmt, 1, 2, -610000, 56700, 9, 3, 1, 2, 1)
    )
    # decode only (streaming decoder + field unpack)
    t0 = _now_us()
    for _ in range(n):
        dec.push(wire, 0)
        messages.unpack(messages.SAMPLE, dec.payload)
    t_dec = _diff(_now_us(), t0)
    assert dec.frames == n and dec.errors == 0
    return n * 1e6 / t_enc, n * 1e6 / t_dec, n * 1e6 / (t_enc + t_dec)


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    e, d, b = bench(n)
    print("encode %.0f decode %.0f both %.0f" % (e, d, b))
