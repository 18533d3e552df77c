"""The lab service under load: one ``sicell serve`` owning 16 emulated boards at realtime=1.

Starts ``sicell serve`` as its own process (a private data and runtime directory), starts a run
on every board through the HTTP API, and while all of them run measures for ``--seconds``:

* ingest: samples committed to the run databases per second (all boards), and per board;
* API latency, p50 / p99, of a dashboard's reads (boards, one board, the newest records) made
  at ``--rate`` requests/s;
* record on the board → the client: for every live records event, the arrival time minus the
  moment the board took its newest sample (the run's START on the host clock plus the
  sample's test time; realtime=1 keeps the board's clock with the wall clock), in an SSE
  client and, with Chromium at /usr/bin/chromium, as a point drawn in the dashboard's plot;
* CPU of the service process (its own time over wall time, 100 % = one core) and of the
  whole machine.

Run: python bench/bench_service.py [--boards 16] [--seconds 60] [--record-dt 0.1]
Prints figures only; no pass/fail. Every emulator is shut down at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from bench_endtoend import SCHEDULE
from sicell import schema

API = "/api/v1"
CHROMIUM = "/usr/bin/chromium"
TICK_S = os.sysconf("SC_CLK_TCK")


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / TICK_S


def machine_busy() -> tuple[float, float]:
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    idle = vals[3] + vals[4]
    return sum(vals) - idle, sum(vals)


class Service:
    """``sicell serve`` in a subprocess; its URL and token once it listens."""

    def __init__(self, data: Path, runtime: Path, ports: list[str]) -> None:
        env = dict(os.environ, SICELL_RUNTIME_DIR=str(runtime), PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", "sicell.cli", "serve", "--data", str(data), "--http-port", "0"]
        for p in ports:
            cmd += ["--port", p]
        self.log = (data.parent / "serve.log").open("w")
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=self.log, text=True
        )
        self.url = ""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            m = re.match(r"dashboard: (http://\S+)/", line)
            if m:
                self.url = m.group(1)
                break
        if not self.url:
            raise SystemExit(f"sicell serve did not start; see {self.log.name}")
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()
        self.token = (data / "token").read_text().strip()
        self.http = httpx.Client(
            base_url=self.url, timeout=30, headers={"Authorization": f"Bearer {self.token}"}
        )

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.http.close()
        self.log.close()


def wait_for(what: str, cond: Any, timeout: float, every: float = 0.5) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(every)  # polling the service's state between reads
    raise SystemExit(f"timed out waiting for {what}")


def start_unix(db: Path) -> float:
    with contextlib.closing(schema.connect_readonly(db)) as con:
        return float(schema.read_meta(con)["start_unix_ms"]) / 1000.0


def samples_in(dbs: list[Path]) -> int:
    n = 0
    for db in dbs:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            n += con.execute("SELECT count(*) FROM samples").fetchone()[0]
    return n


def sse_client(
    url: str,
    starts: dict[str, float],
    delays: list[float],
    stop: threading.Event,
    counts: dict[str, int],
) -> None:
    with httpx.Client(timeout=None) as c, c.stream("GET", f"{url}{API}/events") as r:
        for line in r.iter_lines():
            if stop.is_set():
                return
            if not line.startswith("data: "):
                continue
            now = time.time()
            ev = json.loads(line[6:])
            counts[ev["type"]] = counts.get(ev["type"], 0) + 1
            if ev["type"] != "records" or not ev.get("records"):
                continue
            run = ev["run"] if isinstance(ev["run"], str) else ev["run"]["name"]
            if run in starts:
                delays.append(now - (starts[run] + ev["records"][-1]["t_s"]))


def api_client(
    svc: Service,
    boards: list[str],
    runs: list[str],
    rate: float,
    lat: dict[str, list[float]],
    stop: threading.Event,
) -> None:
    k = 0
    next_at = time.monotonic()
    with httpx.Client(base_url=svc.url, timeout=30) as c:
        while not stop.is_set():
            kind = ("boards", "board", "records")[k % 3]
            path = {
                "boards": f"{API}/boards",
                "board": f"{API}/boards/{boards[k % len(boards)]}",
                "records": f"{API}/runs/{runs[k % len(runs)]}/records?since=0&limit=100",
            }[kind]
            if kind == "records":  # the newest 100: ask from the run's seq 100 back
                last = c.get(f"{API}/boards/{boards[k % len(boards)]}").json()["last_seq"]
                path = path.replace("since=0", f"since={max(0, int(last) - 100)}")
            t0 = time.perf_counter()
            r = c.get(path)
            lat[kind].append(time.perf_counter() - t0)
            r.raise_for_status()
            k += 1
            next_at += 1.0 / rate
            time.sleep(max(0.0, next_at - time.monotonic()))  # the request rate, not a sync


class Dashboard:
    """The dashboard in Chromium with one run's plot open; every plot update is timed."""

    def __init__(self, url: str, run: str) -> None:
        from playwright.sync_api import sync_playwright

        self.pw = sync_playwright().start()
        self.browser = self.pw.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        self.page = self.browser.new_page(viewport={"width": 1280, "height": 1000})
        self.page.goto(f"{url}/#run={run}")
        self.page.wait_for_function("() => window.sicell.sel && !window.sicell.sel.loading")
        self.page.evaluate(
            """() => {
              const orig = Plotly.extendTraces;
              window.__drawn = [];
              Plotly.extendTraces = function (...a) {
                const sel = window.sicell.sel;
                const t = sel.t[sel.t.length - 1];
                return orig.apply(this, a).then((r) => {
                  window.__drawn.push([Date.now() / 1000, t]);
                  return r;
                });
              };
            }"""
        )

    def wait(self, seconds: float) -> None:
        self.page.wait_for_timeout(seconds * 1000)  # the measuring window

    def delays(self, start: float) -> list[float]:
        """Drawn time minus the moment the board took the newest sample drawn."""
        drawn = self.page.evaluate("() => window.__drawn")
        return [at - (start + t) for at, t in drawn]

    def close(self) -> None:
        self.browser.close()
        self.pw.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--boards", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60.0, help="measuring window")
    ap.add_argument("--record-dt", type=float, default=0.1, help="s between samples, per board")
    ap.add_argument("--rate", type=float, default=20.0, help="API reads per second")
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the data directory")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="sicell-bench-service-"))
    data, runtime = tmp / "data", tmp / "rt"
    runtime.mkdir(mode=0o700)
    boards = [f"bench{k:02d}" for k in range(1, args.boards + 1)]
    ports = [f"emu://rc?board={b}&realtime=1&fresh=1&linger=0" for b in boards]
    print(
        f"{args.boards} emulated boards (rc, realtime=1), a sample every {args.record_dt:g} s "
        f"each; data in {tmp}" + ("" if args.keep else " (removed at the end; --keep keeps it)")
    )
    t0 = time.monotonic()
    svc = Service(data, runtime, ports)
    try:
        wait_for(
            "every board online",
            lambda: (
                sum(1 for b in svc.http.get(f"{API}/boards").json() if b["online"]) == len(boards)
            ),
            300,
        )
        print(f"service up with {len(boards)} boards online after {time.monotonic() - t0:.0f} s")
        # bench_endtoend's schedule: CC both ways on the rc cell, a sample every record-dt
        toml = SCHEDULE.format(tick=50, dt=args.record_dt, half=30, loops=1000)
        runs = [f"bench-{b}" for b in boards]
        for b, name in zip(boards, runs, strict=True):
            r = svc.http.post(f"{API}/boards/{b}/runs", params={"name": name}, content=toml)
            if r.status_code != 201:
                raise SystemExit(f"{b}: start refused: {r.text}")
        wait_for(
            "every run streaming",
            lambda: all(
                b["mode"] == "CC" and b["samples"] > 0 for b in svc.http.get(f"{API}/boards").json()
            ),
            300,
        )
        dbs = [data / "runs" / f"{n}.db" for n in runs]
        starts = {n: start_unix(db) for n, db in zip(runs, dbs, strict=True)}
        print(
            f"{len(runs)} runs streaming after {time.monotonic() - t0:.0f} s; measuring "
            f"{args.seconds:g} s"
        )

        stop = threading.Event()
        sse_delays: list[float] = []
        counts: dict[str, int] = {}
        lat: dict[str, list[float]] = {"boards": [], "board": [], "records": []}
        threads = [
            threading.Thread(
                target=sse_client, args=(svc.url, starts, sse_delays, stop, counts), daemon=True
            ),
            threading.Thread(
                target=api_client, args=(svc, boards, runs, args.rate, lat, stop), daemon=True
            ),
        ]
        dash = None
        if not args.no_browser and os.path.exists(CHROMIUM):
            dash = Dashboard(svc.url, runs[0])
        for th in threads:
            th.start()
        n0, c0, m0, w0 = samples_in(dbs), cpu_s(svc.proc.pid), machine_busy(), time.monotonic()
        if dash is not None:
            dash.wait(args.seconds)
        else:
            time.sleep(args.seconds)  # the measuring window
        n1, c1, m1, w1 = samples_in(dbs), cpu_s(svc.proc.pid), machine_busy(), time.monotonic()
        stop.set()
        page_delays: list[float] = []
        if dash is not None:
            page_delays = dash.delays(starts[runs[0]])
            dash.close()
        modes = [b["mode"] for b in svc.http.get(f"{API}/boards").json()]
        for b in boards:
            svc.http.post(f"{API}/boards/{b}/stop")
    finally:
        svc.stop()
        from sicell.emulator import launcher

        for info in launcher.list_emulators(runtime):
            launcher.EmulatorHandle(info).shutdown(timeout=10)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    wall = w1 - w0
    ms = 1000.0
    running = sum(m in ("CC", "rest") for m in modes)
    print()
    print(
        f"window                       {wall:.1f} s; boards running at the end: {running}/"
        f"{len(modes)} ({', '.join(sorted(set(modes)))})"
    )
    print(
        f"ingest                       {(n1 - n0) / wall:.1f} samples/s committed "
        f"({(n1 - n0) / wall / len(boards):.2f} per board; the boards sample "
        f"{len(boards) / args.record_dt:.0f}/s)"
    )
    for kind, xs in lat.items():
        print(
            f"API GET {kind:<20} p50 {pct(xs, 0.5) * ms:6.1f} ms  "
            f"p99 {pct(xs, 0.99) * ms:6.1f} ms  ({len(xs)} requests)"
        )
    rows = [
        (
            "board → SSE client",
            sse_delays,
            f"{counts.get('records', 0)} records events, {counts.get('board', 0)} board events",
        )
    ]
    if page_delays:
        rows.append(
            (
                "board → point on dashboard",
                page_delays,
                f"{len(page_delays)} plot updates of {runs[0]}",
            )
        )
    for label, xs, note in rows:
        print(
            f"{label:<28} p50 {pct(xs, 0.5) * ms:6.0f} ms  p99 {pct(xs, 0.99) * ms:6.0f} ms  "
            f"max {max(xs, default=float('nan')) * ms:.0f} ms  ({note})"
        )
    print(f"CPU of the service process   {(c1 - c0) / wall * 100:.0f} % of one core")
    print(
        f"CPU of the machine           {(m1[0] - m0[0]) / (m1[1] - m0[1]) * 100:.0f} % busy "
        f"({os.cpu_count()} cores; the emulators included)"
    )


if __name__ == "__main__":
    main()
