"""Helpers for tests that drive emulator launchers through their pty: the stand-in board and
byte-level port I/O.

``STANDIN`` is a stand-in MicroPython "board" run by the real launcher under the unix port: it
echoes stdin to stdout byte for byte and obeys the control FIFO (``noise on|off`` start/stop a
counter stream, ``brownout N`` writes N bytes of 0xA5, ``freeze N`` stalls, ``reset`` exits
with status 1, ``quit`` exits with 0). At start it writes what it saw (cwd, path, heap,
config) to ``standin_boot.json`` in its flash directory, atomically.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable
from typing import Any

from sicell.emulator.launcher import EmulatorHandle

Starter = Callable[..., EmulatorHandle]  # the ``emu`` fixture: start_emulator on the stand-in

STANDIN = r"""
import sys, os, select, gc, json
import micropython
micropython.kbd_intr(-1)
inp = sys.stdin.buffer
out = sys.stdout.buffer
info = {"cwd": os.getcwd(), "path": sys.path, "heap": gc.mem_free() + gc.mem_alloc(),
        "config": os.getenv("SICELL_EMU_CONFIG"), "ctrl": os.getenv("SICELL_EMU_CTRL")}
with open(info["config"]) as f:
    info["cfg"] = json.load(f)
with open("standin_boot.json.tmp", "w") as f:
    json.dump(info, f)
os.rename("standin_boot.json.tmp", "standin_boot.json")  # atomic: tests read it while we run
p = select.poll()
p.register(inp, select.POLLIN)
ctrl = open(info["ctrl"], "rb")
p.register(ctrl, select.POLLIN)
n = 0
streaming = False
while True:
    evs = p.poll(2 if streaming else 200)
    for obj, ev in evs:
        if obj is inp:
            b = inp.read(1)
            if not b:
                sys.exit(0)
            out.write(b)
            continue
        line = ctrl.readline().decode().strip().split()
        sys.stderr.write("emu: t=%d.5 ctrl %s\n" % (n, " ".join(line)))
        if not line:
            continue
        cmd = line[0]
        if cmd == "noise":
            streaming = line[1] == "on"
        elif cmd == "brownout":
            k = int(line[1])
            while k > 0:
                m = min(k, 4096)
                out.write(b"\xa5" * m)
                k -= m
        elif cmd == "freeze":
            select.poll().poll(int(line[1]))
        elif cmd == "reset":
            sys.exit(1)
        elif cmd == "quit":
            sys.exit(0)
    if streaming and not evs:
        n += 1
        out.write(b"%08d\n" % n)
"""


# ---- helpers --------------------------------------------------------------------------------
def open_port(path: str) -> int:
    return os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)


def read_some(fd: int, n: int, timeout: float) -> bytes:
    """Read until ``n`` bytes arrived or ``timeout`` passed."""
    buf = bytearray()
    end = time.monotonic() + timeout
    while len(buf) < n:
        left = end - time.monotonic()
        if left <= 0:
            break
        r, _, _ = select.select([fd], [], [], left)
        if r:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                break
            buf += chunk
    return bytes(buf)


def write_all(fd: int, data: bytes, timeout: float = 10.0) -> None:
    view = memoryview(data)
    end = time.monotonic() + timeout
    while view:
        _, w, _ = select.select([], [fd], [], max(0.0, end - time.monotonic()))
        assert w, "port did not accept data"
        n = os.write(fd, view[:4096])
        view = view[n:]


def wait_for(pred: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def echo(fd: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Write ``data`` while reading the echo back (the pty buffers are small)."""
    got = bytearray()
    view = memoryview(data)
    end = time.monotonic() + timeout
    while len(got) < len(data) and time.monotonic() < end:
        _, w, _ = select.select([], [fd] if view else [], [], 0)
        if w:
            n = os.write(fd, view[:1024])
            view = view[n:]
        r, _, _ = select.select([fd], [], [], 0.01)
        if r:
            got += os.read(fd, 65536)
    return bytes(got)
