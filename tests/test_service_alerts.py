"""Alerts run once per event (also across a restart and a replayed batch), a stalled board is
told once per stall, the hub never blocks a publisher, the audit log holds whole lines."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from sicell.client import Record
from sicell.progress import Progress
from sicell.protocol import messages as M
from sicell.schedule import parse_schedule
from sicell.service.alerts import Alerts
from sicell.service.audit import AuditLog
from sicell.service.datadir import DataDir
from sicell.service.events import MIN_STALL_S, EventWatch
from sicell.service.hub import Hub

from tests.servicehelp import SHORT_TOML


def _event(seq: int, code: int, reason: int = 0, value: int = 0, aux: int = 0) -> Record:
    names = M.LAYOUTS[M.EVENT][1]
    return Record(
        M.EVENT, seq, dict(zip(names, (7, 0, code, reason, 1, 0, value, aux), strict=True))
    )


def _sample(seq: int, flags: int = 0) -> Record:
    names = M.LAYOUTS[M.SAMPLE][1]
    return Record(
        M.SAMPLE, seq, dict(zip(names, (7, 0, -125000, 100000, 5, 1, 0, 1, flags), strict=True))
    )


def _alerts(tmp_path: Path, hub: Hub) -> Alerts:
    data = DataDir(tmp_path / "data")
    data.create()
    out = tmp_path / "sent.txt"
    cmd = f'echo "$SICELL_ALERT_KIND|$SICELL_ALERT_BOARD|$SICELL_ALERT_KEY" >> {out}'
    return Alerts(data, hub, AuditLog(data.audit_path), command=cmd)


def test_alert_once_per_event_also_after_a_restart(tmp_path: Path) -> None:
    hub = Hub()
    sub = hub.subscribe()
    batch = [_sample(10), _event(11, M.EV_SAFETY, M.SF_VMIN, -130000, 200), _sample(12)]
    watch = EventWatch()
    alerts = _alerts(tmp_path, hub)
    for _ in range(2):  # the same batch seen twice (a replay after a reconnect)
        for kind, text, key in watch.committed(batch, "r1", 0.0):
            alerts.alert("b1", kind, text, key, "r1")
    alerts.wait()
    again = _alerts(tmp_path, hub)  # a restarted service: the keys were kept
    for kind, text, key in EventWatch().committed(batch, "r1", 0.0):
        assert not again.alert("b1", kind, text, key, "r1")
    interrupted = [_event(20, M.EV_INTERRUPTED, M.RC_WATCHDOG, 1, 3)]
    for kind, text, key in EventWatch().committed(interrupted, "r1", 0.0):
        assert again.alert("b1", kind, text, key, "r1")
    again.wait()
    lines = (tmp_path / "sent.txt").read_text().splitlines()
    assert lines == ["trip|b1|r1:11:trip", "interrupted|b1|r1:20:interrupted"]
    events = []
    while (ev := sub.get(0)) is not None:
        events.append(ev)
    assert [e["kind"] for e in events] == ["trip", "interrupted"]
    assert "V min" in events[0]["text"] and "watchdog" in events[1]["text"]
    audit = AuditLog(tmp_path / "data/audit.log").lines()
    assert [a["op"] for a in audit] == ["alert-command", "alert-command"]
    assert all(a["outcome"] == "exit 0" and a["who"] == "service" for a in audit)


def test_webhook_gets_each_alert_once(tmp_path: Path) -> None:
    got: list[dict[str, object]] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            n = int(self.headers["Content-Length"])
            got.append(json.loads(self.rfile.read(n)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        data = DataDir(tmp_path / "data")
        data.create()
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        alerts = Alerts(data, Hub(), AuditLog(data.audit_path), webhook=url)
        assert alerts.alert("b1", "stalled", "no record for 9 s", "r:stalled:4", "r")
        assert not alerts.alert("b1", "stalled", "no record for 12 s", "r:stalled:4", "r")
        alerts.wait()
    finally:
        server.shutdown()
        server.server_close()
    assert [(g["kind"], g["key"], g["board_id"]) for g in got] == [("stalled", "r:stalled:4", "b1")]
    (entry,) = AuditLog(data.audit_path).lines()
    assert entry["op"] == "alert-webhook" and entry["outcome"] == "HTTP 204"


def test_badges_from_events() -> None:
    watch = EventWatch()
    batch = [
        _event(1, M.EV_HOST_LOSS, 0, 40),
        _event(2, M.EV_DECIMATED, 0, 40),
        _sample(3, M.F_CV),
    ]
    alerts = watch.committed(batch, "r", 0.0)
    assert [a[0] for a in alerts] == ["host_loss"]  # decimation is a badge, not an alert
    assert {k for k, _ in watch.badges("running")} == {"host_loss", "decimated"}
    assert watch.cv_phase
    assert ("trip", "safety trip") in EventWatch().badges("tripped")


class _Session:
    schedule = parse_schedule(SHORT_TOML)  # records every second
    info = None


def test_stalled_once_per_stall() -> None:
    watch = EventWatch()
    watch.begin(_Session(), 0.0)
    p = Progress("b", state="running", step=1)
    assert watch.stalled(MIN_STALL_S - 0.1, p, "r", 3.0) is None
    hit = watch.stalled(MIN_STALL_S + 1, p, "r", 3.0)
    assert hit is not None and hit[0] == "stalled" and hit[2] == "r:stalled:0"
    assert watch.stalled(MIN_STALL_S + 50, p, "r", 3.0) is None  # told once
    watch.committed([_sample(5)], "r", 100.0)  # records again: the badge goes
    assert "stalled" not in dict(watch.badges("running"))
    paused = Progress("b", state="paused", step=1)
    assert watch.stalled(200.0, paused, "r", 3.0) is None  # a pause is no stall ...
    assert watch.stalled(201.0, p, "r", 3.0) is None  # ... and restarts the clock
    hit = watch.stalled(201.0 + MIN_STALL_S + 1, p, "r", 3.0)
    assert hit is not None and hit[2] == "r:stalled:5"


def test_slow_listener_never_blocks_and_is_told() -> None:
    hub = Hub(maxsize=5)
    slow = hub.subscribe()
    for k in range(50):
        hub.publish({"type": "x", "k": k})
    assert slow.get(0) == {"type": "resync"}
    got = [slow.get(0) for _ in range(5)]
    assert [e["k"] for e in got if e] == [45, 46, 47, 48, 49]
    slow.close()
    assert hub.listeners == 0


@settings(max_examples=20, deadline=None)
@given(st.lists(st.text(max_size=40), min_size=1, max_size=20))
def test_audit_lines_stay_whole(tmp_path_factory: object, texts: list[str]) -> None:
    path = tmp_path_factory.mktemp("audit") / "audit.log"  # type: ignore[attr-defined]
    log = AuditLog(path)
    threads = [
        threading.Thread(target=log.write, args=(t, "pause", "b", {"why": t}, "ok")) for t in texts
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = log.lines()
    assert sorted(a["who"] for a in lines) == sorted(texts)
    assert all(a["args"] == {"why": a["who"]} for a in lines)
