"""Protocol throughput: SAMPLE frames encoded + decoded per second, CPython beside MicroPython.

Run: python bench/bench_protocol.py [n_frames]. Prints one line per interpreter and the ratio,
measured in the same run on the same machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import frames_core  # noqa: E402

from tests.mputil import HEAP, run_mp  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("n", nargs="?", type=int, default=20000, help="frames each way")
    n = ap.parse_args().n
    cp = frames_core.bench(n)
    p = run_mp(ROOT / "bench" / "frames_core.py", str(n), path=[ROOT], heap=HEAP, text=True)
    if p.returncode:
        raise SystemExit(f"frames_core.py under MicroPython failed:\n{p.stderr}")
    out = p.stdout.split()
    mp = (float(out[1]), float(out[3]), float(out[5]))
    print(f"SAMPLE frames ({n} each), frames/s    encode    decode  enc+dec")
    print(f"  CPython {sys.version.split()[0]:<22} {cp[0]:9.0f} {cp[1]:9.0f} {cp[2]:8.0f}")
    print(f"  {f'MicroPython unix ({HEAP} heap)':<31}{mp[0]:9.0f} {mp[1]:9.0f} {mp[2]:8.0f}")
    print(
        f"  ratio CPython/MicroPython      {cp[0] / mp[0]:9.2f} {cp[1] / mp[1]:9.2f} "
        f"{cp[2] / mp[2]:8.2f}"
    )


if __name__ == "__main__":
    main()
