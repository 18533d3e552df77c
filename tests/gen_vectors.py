"""Regenerate protocol/vectors.json (run by hand when the protocol changes on purpose).

The vectors freeze the wire format: both interpreters must encode these fields to exactly these
bytes and decode these bytes to exactly these fields. Regenerating them is a protocol change
and needs a version bump.
"""

import json
from pathlib import Path

from sicell.protocol import framing
from sicell.protocol import messages as m
from sicell.protocol import schedule as s

ROOT = Path(__file__).resolve().parents[1]


def enc(v: object) -> object:
    return "hex:" + v.hex() if isinstance(v, bytes) else v


CASES: list[tuple[int, int, tuple[object, ...], bytes]] = [
    (m.HELLO, 1, (1, 0), b""),
    (m.PING, 2, (0xDEADBEEF,), b""),
    (m.STATUS_REQ, 3, (), b""),
    (m.ACK, 0, (123456,), b""),
    (m.REPLAY, 4, (4000000000,), b""),
    (m.SCHED_BEGIN, 5, (304, 0xBEEF), b""),
    (m.SCHED_CHUNK, 6, (192,), bytes(range(0, 40))),
    (m.SCHED_END, 7, (), b""),
    (m.SCHED_READ, 8, (0, 192), b""),
    (m.START, 9, (42,), b""),
    (m.PAUSE, 10, (), b""),
    (m.RESUME, 11, (), b""),
    (m.STOP, 12, (), b""),
    (m.CAL_GET, 13, (2, 1), b""),
    (m.CAL_SET, 14, (3, 0, -1500, 1000250), b""),
    (m.CAL_SAVE, 15, (), b""),
    (m.ENTER_REPL, 16, (), b""),
    (m.RESET, 17, (), b""),
    (
        m.INFO,
        1,
        (
            0,
            1,
            0,
            1,
            0,
            4,
            0x5F,
            bytes.fromhex("e660583883652a2c"),
            -2000000,
            2000000,
            4500000,
            2048,
            100,
            2,
            1,
            42,
        ),
        b"".join(x.to_bytes(4, "little") for x in (10000, 100000, 1000000, 10000000)),
    ),
    (  # with INFO_EXT after the ranges: tick cost 4.4 ms (max 5.1 ms), idle 3.0 ms
        m.INFO,
        2,
        (0, 1, 0, 1, 0, 2, 0xDF, b"sicell01", -2000000, 2000000, 4500000, 3584, 10, 0, 0, 0),
        b"".join(x.to_bytes(4, "little") for x in (1000000, 10000000, 4400, 5100, 3000)),
    ),
    (m.PONG, 2, (0xDEADBEEF, 86400), b""),
    (
        m.STATUS,
        3,
        (2, 1, 3, 17, 0x04, 3600 * 1000, 999, -610000, 56700, 340000, 42, 1000, 1999, 1500, 12),
        b"",
    ),
    (m.SAMPLE, 1000, (5184000, 250, -610000, 56700, 340123, 3, 99, 1, m.F_STEP_FIRST), b""),
    (m.SAMPLE, 1001, (0, 0, 580000, -5670000, -12, 65535, 0, 3, 0xFF), b""),
    (m.SAMPLE, 0xFFFFFFFF, (4294967295, 65535, -2147483648, 2147483647, 0, 0, 0, 0, 0), b""),
    (m.EVENT, 1002, (5184001, 0, m.EV_CUTOFF, m.SE_CUTOFF, 3, 99, -610000, -850), b""),
    (m.EVENT, 1003, (10, 5, m.EV_SAFETY, m.SF_VMAX, 0, 0, 2100000, 0), b""),
    (m.OK, 9, (m.START,), b""),
    (m.NACK, 7, (m.SCHED_END, m.E_SCHEDULE, (3 << 8) | s.ERR_CURRENT), b""),
    (m.CAL, 13, (2, 1, 12, 999800), b""),
    (m.SCHED_DATA, 8, (0,), bytes(range(0, 0x20)) + b"\x00\x00\x00"),
]


def main() -> None:
    vectors = []
    for t, seq, fields, tail in CASES:
        payload = m.pack(t, *fields) + tail
        frame = framing.encode_frame(t, seq, payload)
        vectors.append(
            {
                "name": m.NAMES[t],
                "type": t,
                "seq": seq,
                "fields": [enc(f) for f in fields],
                "tail": tail.hex(),
                "frame": frame.hex(),
            }
        )
    sched = s.encode(
        (s.P_DECIMATE, 100, 1000, 500, -1500000, 1500000, 11000000, s.TEMP_OFF),
        [
            (
                (s.K_REST, s.RANGE_AUTO, 0, 0, 0, 0, 0, 60000, 5000, 0, 0),
                [(s.Q_TIME, s.OP_GE, s.A_NEXT, 3600000, 0)],
            ),
            (
                (s.K_CC, 2, s.SF_NEW_CYCLE, 56700, 0, 0, 0, 60000, 5000, 1000, 0),
                [(s.Q_V, s.OP_LE, s.A_NEXT, -610000, 0)],
            ),
            (
                (s.K_CCCV, 2, 0, -56700, 580000, 0, 0, 60000, 5000, 1000, 0),
                [
                    (s.Q_ABS_I, s.OP_LE, s.A_NEXT, 567, 0),
                    (s.Q_TIME, s.OP_GE, s.A_GOTO, 36000000, 0),
                ],
            ),
            ((s.K_LOOP, 0, 0, 0, 0, 0, 99, 0, 0, 0, 0), []),
        ],
    )
    out = {
        "crc16": [
            {"data": b"123456789".hex(), "crc": 0x29B1},
            {"data": "", "crc": 0xFFFF},
            {"data": "00", "crc": 0xE1F0},
        ],
        "cobs": [
            {"raw": "", "enc": "01"},
            {"raw": "00", "enc": "0101"},
            {"raw": "0000", "enc": "010101"},
            {"raw": "11220033", "enc": "03112202" + "33"},
            {"raw": "11223344", "enc": "0511223344"},
            {"raw": "01" * 254, "enc": "ff" + "01" * 254 + "01"},
        ],
        "frames": vectors,
        "schedule": {"blob": sched.hex(), "n_steps": 4},
    }
    path = ROOT / "protocol" / "vectors.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print("wrote", path, len(vectors), "frame vectors")


if __name__ == "__main__":
    main()
