"""Protocol throughput: SAMPLE frames encoded + decoded per second, CPython beside MicroPython.

Run: python bench/bench_protocol.py [n_frames]. Prints one line per interpreter and the ratio,
measured in the same run on the same machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import frames_core  # noqa: E402

from tests.mputil import micropython_cmd  # noqa: E402


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    cp = frames_core.bench(n)
    env = dict(os.environ, MICROPYPATH=str(ROOT))
    out = subprocess.run(
        [*micropython_cmd(), "-X", "heapsize=192K", str(ROOT / "bench/frames_core.py"), str(n)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    mp = (float(out[1]), float(out[3]), float(out[5]))
    print(f"SAMPLE frames ({n} each), frames/s    encode    decode  enc+dec")
    print(f"  CPython {sys.version.split()[0]:<22} {cp[0]:9.0f} {cp[1]:9.0f} {cp[2]:8.0f}")
    print(f"  MicroPython unix (192K heap)   {mp[0]:9.0f} {mp[1]:9.0f} {mp[2]:8.0f}")
    print(
        f"  ratio CPython/MicroPython      {cp[0] / mp[0]:9.2f} {cp[1] / mp[1]:9.2f} "
        f"{cp[2] / mp[2]:8.2f}"
    )


if __name__ == "__main__":
    main()
