"""``python -m sicell.emulator CELL [options]``: run one emulated board in the foreground.

Prints the pty to open (``sicell run SCHEDULE --port /dev/pts/N``). Also ``--list`` (running
emulators) and ``--stop BOARD``. The options are those of
``sicell.emulator.options.EmulatorOptions``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sicell.emulator import cmdline
from sicell.emulator.cellmodels import cell_names
from sicell.emulator.control import EmulatorControl
from sicell.emulator.handle import run_emulator
from sicell.emulator.registry import find_emulator, list_emulators
from sicell.errors import ControlError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sicell.emulator",
        description="Run the sicell firmware on an emulated board behind a pseudo-terminal.",
    )
    cmdline.add_arguments(p)
    p.add_argument("--list", action="store_true", help="list running emulators and exit")
    p.add_argument("--stop", metavar="BOARD", help="shut down the emulator of BOARD and exit")
    p.add_argument("--detached", action="store_true", help=argparse.SUPPRESS)  # start_emulator
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
    return run_emulator(cmdline.from_namespace(args), print_fn=out, detached=args.detached)


if __name__ == "__main__":
    sys.exit(main())
