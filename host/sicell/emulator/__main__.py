"""``python -m sicell.emulator CELL [options]``: run one emulated board in the foreground.

Prints the pty to open (``sicell run SCHEDULE --port /dev/pts/N``). Also ``--list`` (running
emulators) and ``--stop BOARD``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sicell.emulator.control import EmulatorControl
from sicell.emulator.launcher import (
    DEFAULT_LINGER_S,
    DIRECTIONS,
    HEAPSIZE,
    cell_names,
    find_emulator,
    list_emulators,
    run_emulator,
)
from sicell.errors import ControlError


def _json_dict(text: str) -> dict[str, Any]:
    try:
        v = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from None
    if not isinstance(v, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sicell.emulator",
        description="Run the sicell firmware on an emulated board behind a pseudo-terminal.",
    )
    p.add_argument("cell", nargs="?", help=f"cell model: {', '.join(cell_names())}")
    p.add_argument("--seed", type=int, default=0, help="seed of the board and the link faults")
    p.add_argument("--board", help="board id (default CELL-SEED); names the registry entry")
    p.add_argument("--realtime", action="store_true", help="pace virtual time to the wall clock")
    p.add_argument("--no-noise", action="store_true", help="no ADC noise")
    p.add_argument("--max-dt", type=float, default=None, help="largest cell integration step, s")
    p.add_argument("--cell-overrides", type=_json_dict, default=None, metavar="JSON")
    p.add_argument(
        "--linger",
        type=float,
        default=DEFAULT_LINGER_S,
        help="exit after this many seconds without a host (0 = never)",
    )
    p.add_argument("--flash-dir", help="the board's flash directory (calibration, run state)")
    p.add_argument("--drop", type=float, help="probability a relayed byte is dropped")
    p.add_argument("--corrupt", type=float, help="probability a relayed byte is corrupted")
    p.add_argument("--duplicate", type=float, help="probability a relayed byte is doubled")
    p.add_argument("--delay-ms", type=float, help="latency added to relayed bytes, ms")
    p.add_argument("--fault-direction", choices=DIRECTIONS, help="which way faults apply")
    p.add_argument("--faults", type=_json_dict, default=None, metavar="JSON")
    p.add_argument("--entry", help="MicroPython entry script instead of emuboot.py (tests)")
    p.add_argument("--firmware", help="firmware source directory instead of the package's")
    p.add_argument(
        "--heapsize", default=HEAPSIZE, help="firmware heap budget (default %(default)s)"
    )
    p.add_argument(
        "--no-mpy", action="store_true", help="run the firmware sources, not mpy-cross output"
    )
    p.add_argument("--runtime-dir", help="registry/socket directory ($SICELL_RUNTIME_DIR)")
    p.add_argument("--list", action="store_true", help="list running emulators and exit")
    p.add_argument("--stop", metavar="BOARD", help="shut down the emulator of BOARD and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def out(*a: Any) -> None:
        print(*a, flush=True)

    if args.list:
        for info in list_emulators():
            out(f"{info['board']}\t{info['cell']}\tpid {info['pid']}\t{info['pty']}")
        return 0
    if args.stop:
        found = find_emulator(args.stop)
        if found is None:
            out(f"no emulator running for board {args.stop!r}")
            return 1
        try:
            EmulatorControl(str(found["control"])).shutdown()
        except ControlError as e:
            out(str(e))
            return 1
        return 0
    if not args.cell:
        out(f"a cell model is required: {', '.join(cell_names())}")
        return 2
    faults: dict[str, Any] = dict(args.faults or {})
    val: Any
    for key, val in (
        ("drop", args.drop),
        ("corrupt", args.corrupt),
        ("duplicate", args.duplicate),
        ("delay_ms", args.delay_ms),
        ("direction", args.fault_direction),
    ):
        if val is not None:
            faults[key] = val
    return run_emulator(
        args.cell,
        seed=args.seed,
        board=args.board,
        realtime=args.realtime,
        linger=args.linger,
        flash_dir=args.flash_dir,
        faults=faults,
        print_fn=out,
        noise=not args.no_noise,
        max_dt_s=args.max_dt,
        cell_overrides=args.cell_overrides,
        entry=args.entry,
        firmware=args.firmware,
        heapsize=args.heapsize,
        runtime=args.runtime_dir,
        mpy=not args.no_mpy,
    )


if __name__ == "__main__":
    sys.exit(main())
