"""Host ingest: SAMPLE frames decoded and committed to SQLite per second.

Frames are built in memory (the board's encoder), then go the way a session takes them: the
byte stream in 4 KB reads through the real deframer (``transport.FrameReader``), each payload
unpacked (``messages.unpack``) into a ``store.SampleRecord`` and committed with ``RunStore.add``
(one durable transaction per batch, WAL + synchronous=FULL) in batches of 1, 64 and 512 records.

Run: python bench/bench_ingest.py [n_frames] [--dir DIR]
(``--dir`` puts the databases on the disk you care about; default: a temporary directory.)
Prints figures only; no pass/fail.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from sicell.protocol import framing, messages
from sicell.store import RunStore, SampleRecord
from sicell.transport import FrameReader

READ_CHUNK = 4096
BATCHES = (1, 64, 512)


def build_stream(n: int) -> bytes:
    """``n`` SAMPLE frames of a plausible CC half-cycle, concatenated as on the wire."""
    enc = framing.Encoder()
    fmt = messages.LAYOUTS[messages.SAMPLE][0]
    out = bytearray()
    for k in range(n):
        t_ms = k * 250
        out += enc.encode_payload_struct(
            messages.SAMPLE,
            k + 1,
            fmt,
            t_ms // 1000,
            t_ms % 1000,
            -610_000 + (k * 37) % 500_000,
            56_700 + (k % 7),
            k * 4,
            k // 1000,
            0,
            2,
            messages.F_STEP_FIRST if k % 1000 == 0 else 0,
        )
    return bytes(out)


def decode_only(stream: bytes) -> tuple[int, float]:
    reader = FrameReader()
    t0 = time.perf_counter()
    n = 0
    for off in range(0, len(stream), READ_CHUNK):
        for fr in reader.feed(stream[off : off + READ_CHUNK]):
            SampleRecord.from_wire(fr.seq, messages.unpack(fr.type, fr.payload))
            n += 1
    return n, time.perf_counter() - t0


def ingest(stream: bytes, db: Path, batch: int) -> tuple[int, int, float]:
    """Decode and store every frame of ``stream``; return (frames, commits, seconds)."""
    store = RunStore.create(
        db, {"cell": "bench", "reference_offset_v": 0.62}, [(0, "cc", 1e-4, None, "")]
    )
    reader = FrameReader()
    pending: list[SampleRecord] = []
    n = commits = 0
    t0 = time.perf_counter()
    for off in range(0, len(stream), READ_CHUNK):
        for fr in reader.feed(stream[off : off + READ_CHUNK]):
            pending.append(SampleRecord.from_wire(fr.seq, messages.unpack(fr.type, fr.payload)))
            n += 1
            if len(pending) >= batch:
                store.add(pending, [])
                commits += 1
                pending = []
    if pending:
        store.add(pending, [])
        commits += 1
    dt = time.perf_counter() - t0
    stored = store.count()[0]
    store.close()
    if stored != n:
        raise SystemExit(f"stored {stored} of {n} frames")
    return n, commits, dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("n", nargs="?", type=int, default=20000, help="frames per batch size")
    ap.add_argument(
        "--n1",
        type=int,
        default=None,
        help="frames for batch size 1 (one fsync each; default n/10)",
    )
    ap.add_argument("--dir", default=None, help="directory for the databases")
    args = ap.parse_args()
    n = args.n
    n1 = args.n1 if args.n1 is not None else max(200, n // 10)
    stream = build_stream(n)
    frames, dt = decode_only(stream)
    print(f"SAMPLE frames: {n} ({len(stream) / n:.1f} wire bytes each)")
    print(f"  deframe + unpack only            {frames / dt:10.0f} frames/s")
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        print(f"  databases in {d} ({os.statvfs(d).f_bsize}-byte blocks)")
        print(f"  {'batch':>5} {'frames':>7} {'commits':>8} {'frames/s':>10} {'commits/s':>10}")
        for b in BATCHES:
            m = n1 if b == 1 else n
            nf, commits, dt = ingest(stream if m == n else build_stream(m), Path(d) / f"b{b}.db", b)
            print(f"  {b:>5} {nf:>7} {commits:>8} {nf / dt:>10.0f} {commits / dt:>10.1f}")


if __name__ == "__main__":
    main()
