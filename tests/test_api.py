"""The HTTP API over a fake service: every route, auth on every POST, errors as one JSON line,
the OpenAPI document, run names that try to leave the data directory, server-sent events."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from sicell import errors
from sicell.errors import BoardBusyError, BoardTimeoutError, ScheduleError, UsageError
from sicell.service import api
from sicell.service.api import API, BackgroundServer, make_app

from tests.apihelp import AUTH, TOKEN, FakeService, FakeSub, board_dict


@pytest.fixture
def svc(tmp_path: Path) -> FakeService:
    return FakeService(tmp_path / "reports" / "run-b1")


@pytest.fixture
def client(svc: FakeService) -> TestClient:
    return TestClient(make_app(svc, TOKEN, allow_view=True), raise_server_exceptions=False)


def is_one_line_error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"], str) and body["error"]
    assert "\n" not in body["error"]
    return str(body["error"])


# ---- reads ------------------------------------------------------------------------------------
def test_reads_return_the_service_answers(client: TestClient, svc: FakeService) -> None:
    r = client.get(f"{API}/boards")
    assert r.status_code == 200
    assert [b["board_id"] for b in r.json()] == ["b1", "b2"]
    assert r.json()[1]["mode"] == "paused"
    assert client.get(f"{API}/boards/b2").json()["board_id"] == "b2"
    assert client.get(f"{API}/runs").json()[0]["name"] == "run-b1"
    assert client.get(f"{API}/runs/run-b1").json() == {"name": "run-b1"}
    recs = client.get(f"{API}/runs/run-b1/records", params={"since": 7, "limit": 2}).json()
    assert [r["seq"] for r in recs["records"]] == [8, 9] and recs["next"] == 9
    assert client.get(f"{API}/runs/run-b1/cycles").json()[0]["ce"] == 0.9
    assert client.get(f"{API}/runs/run-b1/dqdv", params={"cycle": 3}).json()["dqdv"] == [1, 2]
    assert ("records", "run-b1", 7, 2) in svc.calls
    assert ("dqdv", "run-b1", 3) in svc.calls
    # defaults
    client.get(f"{API}/runs/run-b1/records")
    assert svc.calls[-1] == ("records", "run-b1", 0, 5000)


def test_report_is_served_from_the_service_folder(client: TestClient, svc: FakeService) -> None:
    r = client.get(f"{API}/runs/run-b1/report")
    assert r.status_code == 200 and "fig.png" in r.text
    assert str(r.url).endswith(f"{API}/runs/run-b1/report/report.html")
    png = client.get(f"{API}/runs/run-b1/report/fig.png")
    assert png.status_code == 200 and png.content == b"\x89PNG fake"
    is_one_line_error(client.get(f"{API}/runs/run-b1/report/missing.png"), 404)
    is_one_line_error(client.get(f"{API}/runs/run-b1/report/.hidden"), 404)
    is_one_line_error(client.get(f"{API}/runs/run-b1/report/..%2F..%2Fsecret"), 404)


def test_unknown_board_is_404(client: TestClient) -> None:
    text = is_one_line_error(client.get(f"{API}/boards/nope"), 404)
    assert "nope" in text


def test_view_needs_the_token_when_not_open(svc: FakeService) -> None:
    c = TestClient(make_app(svc, TOKEN, allow_view=False))
    is_one_line_error(c.get(f"{API}/boards"), 401)
    is_one_line_error(c.get(f"{API}/boards", headers={"Authorization": "Bearer nope"}), 403)
    assert c.get(f"{API}/boards", headers=AUTH).status_code == 200
    # the page and the API description carry no data: always served
    assert c.get("/").status_code == 200
    assert c.get(f"{API}/openapi.json").status_code == 200
    assert svc.calls == [("boards",)]


# ---- control and auth -------------------------------------------------------------------------
TOML = 'name = "x"\n[[step]]\nkind = "rest"\nduration_s = 1\n'
POSTS: list[tuple[str, dict[str, Any]]] = [
    ("boards/b1/pause", {}),
    ("boards/b1/continue", {}),
    ("boards/b1/stop", {}),
    ("boards/b1/calibrate", {"json": {"range": 1}}),
    ("boards/b1/plan", {"content": TOML}),
    ("boards/b1/runs?name=r1", {"content": TOML}),
]


@pytest.mark.parametrize(("path", "body"), POSTS, ids=[p for p, _ in POSTS])
def test_every_post_needs_the_token(
    client: TestClient, svc: FakeService, path: str, body: dict[str, Any]
) -> None:
    r = client.post(f"{API}/{path}", **body)
    assert "Bearer" in is_one_line_error(r, 401)
    assert r.headers["www-authenticate"] == "Bearer"
    for bad in ("Bearer wrong", f"Bearer {TOKEN}x", f"Basic {TOKEN}", "Bearer "):
        r = client.post(f"{API}/{path}", headers={"Authorization": bad}, **body)
        assert r.status_code in (401, 403), (bad, r.status_code)
        is_one_line_error(r, r.status_code)
    assert svc.calls == []  # nothing reached the service
    r = client.post(f"{API}/{path}", headers=AUTH, **body)
    assert r.status_code in (200, 201), r.text
    assert len(svc.calls) == 1


def test_control_ops_reach_the_service(client: TestClient, svc: FakeService) -> None:
    for path, op in (("pause", "pause"), ("continue", "resume"), ("stop", "stop")):
        r = client.post(f"{API}/boards/b2/{path}", headers=AUTH)
        assert r.status_code == 200
        assert svc.calls[-1] == ("control", "b2", op, {}, "http testclient")
    assert client.post(f"{API}/boards/b1/pause", headers=AUTH).json()["status"] == {
        "state": "paused"
    }
    client.post(f"{API}/boards/b1/calibrate", headers=AUTH, json={"range": 2, "save": True})
    assert svc.calls[-1] == (
        "control",
        "b1",
        "calibrate",
        {"range": 2, "save": True},
        "http testclient",
    )


def test_control_is_off_without_a_token(svc: FakeService) -> None:
    c = TestClient(make_app(svc, None, allow_view=True))
    assert "without a token" in is_one_line_error(
        c.post(f"{API}/boards/b1/pause", headers=AUTH), 403
    )
    assert c.get(f"{API}/boards").status_code == 200


def test_plan_and_start_pass_the_toml(client: TestClient, svc: FakeService) -> None:
    r = client.post(f"{API}/boards/b1/plan", headers=AUTH, content=TOML.encode())
    assert r.status_code == 200 and r.json()["schedule"] == "x"
    assert svc.calls[-1] == ("plan", "b1", TOML)
    r = client.post(
        f"{API}/boards/b1/runs", params={"name": "cell-7.a"}, headers=AUTH, content=TOML
    )
    assert r.status_code == 201 and r.json()["name"] == "cell-7.a"
    assert svc.calls[-1] == ("start", "b1", TOML, "cell-7.a", "http testclient")


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "empty"),
        (b"  \n", "empty"),
        (b"\xff\xfename", "UTF-8"),
        (b"#" * (api.MAX_UPLOAD + 1), "at most"),
    ],
)
def test_bad_uploads_get_one_line(
    client: TestClient, svc: FakeService, content: bytes, words: str
) -> None:
    for path in ("plan", "runs?name=ok"):
        r = client.post(f"{API}/boards/b1/{path}", headers=AUTH, content=content)
        assert words in is_one_line_error(r, 400)
    assert svc.calls == []


def test_service_errors_become_statuses(client: TestClient, svc: FakeService) -> None:
    cases: list[tuple[BaseException, int]] = [
        (ScheduleError("step 2 (cc+): current_ua = -5: expected > 0", step=2), 400),
        (UsageError("bad\nthing"), 400),
        (BoardBusyError("b1 already runs an experiment"), 409),
        (BoardTimeoutError("no reply to PAUSE within 1 s"), 504),
        (errors.LinkLostError("gone"), 503),
        (errors.StoreFullError("/x.db", "disk full"), 500),
        (RuntimeError("oops"), 500),
    ]
    for err, status in cases:
        svc.fail = err
        r = client.post(f"{API}/boards/b1/plan", headers=AUTH, content=TOML)
        text = is_one_line_error(r, status)
        if isinstance(err, RuntimeError):
            assert text.startswith("bug in sicell: RuntimeError")
    svc.fail = UsageError("one\ntwo")
    assert is_one_line_error(client.get(f"{API}/boards"), 400) == "one; two"


def test_bad_requests_are_json(client: TestClient) -> None:
    assert "since" in is_one_line_error(
        client.get(f"{API}/runs/run-b1/records", params={"since": -1}), 400
    )
    assert "limit" in is_one_line_error(
        client.get(f"{API}/runs/run-b1/records", params={"limit": "many"}), 400
    )
    assert "cycle" in is_one_line_error(client.get(f"{API}/runs/run-b1/dqdv"), 400)
    assert "name" in is_one_line_error(
        client.post(f"{API}/boards/b1/runs", headers=AUTH, content=TOML), 400
    )
    assert "JSON" in is_one_line_error(
        client.post(f"{API}/boards/b1/calibrate", headers=AUTH, content=b"{nope"), 400
    )
    assert "object" in is_one_line_error(
        client.post(f"{API}/boards/b1/calibrate", headers=AUTH, json=[1, 2]), 400
    )
    assert "/api/v1/nothing" in is_one_line_error(client.get(f"{API}/nothing"), 404)
    assert "not allowed" in is_one_line_error(client.delete(f"{API}/boards/b1"), 405)
    assert "not allowed" in is_one_line_error(client.get(f"{API}/boards/b1/pause"), 405)


# ---- run names ---------------------------------------------------------------------------------
ESCAPES = [
    "%2E",  # "." and "..", encoded so that the client sends them as they are
    "%2E%2E",
    ".hidden",
    "a%2Fb",
    "..%2F..%2Fetc%2Fpasswd",
    "%2E%2E%2F%2E%2E%2Fx",
    "a%5Cb",
    "x" * 81,
    "%2Fabs",
    "a%00b",
    "run%20one",
    "%C3%A9t%C3%A9",
]


@pytest.mark.parametrize("name", ESCAPES)
def test_run_names_that_escape_are_refused(client: TestClient, svc: FakeService, name: str) -> None:
    for path in ("", "/records", "/cycles", "/dqdv?cycle=1", "/report"):
        r = client.get(f"{API}/runs/{name}{path}")
        assert r.status_code in (400, 404), (name, path, r.status_code)
        is_one_line_error(r, r.status_code)
    r = client.post(f"{API}/boards/b1/runs?name={name}", headers=AUTH, content=TOML)
    is_one_line_error(r, 400)
    assert svc.calls == []


@given(st.text(max_size=90))
def test_check_run_name_admits_only_plain_names(name: str) -> None:
    try:
        ok = api.check_run_name(name)
    except UsageError as e:
        assert "\n" not in str(e)
        return
    assert ok == name and 1 <= len(name) <= 80
    assert not name.startswith(".")
    assert set(name) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    assert Path("/data/runs", name).resolve().parent == Path("/data/runs").resolve()


# ---- the description, the page, the host check ------------------------------------------------
def test_openapi_lists_the_routes(client: TestClient) -> None:
    doc = client.get(f"{API}/openapi.json").json()
    paths = doc["paths"]
    gets = [
        "/boards",
        "/boards/{board_id}",
        "/runs",
        "/runs/{name}",
        "/runs/{name}/records",
        "/runs/{name}/cycles",
        "/runs/{name}/dqdv",
        "/runs/{name}/report",
        "/events",
    ]
    posts = [
        "/boards/{board_id}/pause",
        "/boards/{board_id}/continue",
        "/boards/{board_id}/stop",
        "/boards/{board_id}/calibrate",
        "/boards/{board_id}/plan",
        "/boards/{board_id}/runs",
    ]
    for p in gets:
        assert "get" in paths[API + p], p
    for p in posts:
        assert "post" in paths[API + p], p
    schemes = doc["components"]["securitySchemes"]
    assert [v["scheme"] for v in schemes.values()] == ["bearer"]
    for p in posts:
        assert paths[API + p]["post"]["security"] == [{name: []} for name in schemes], p
    assert "security" not in paths[API + "/boards"]["get"]  # reads are open here
    body = paths[API + "/boards/{board_id}/runs"]["post"]["requestBody"]
    assert "application/toml" in body["content"]
    assert all(p.startswith(API) for p in paths)
    assert client.get("/docs").status_code == 404  # no CDN-backed docs page


def test_page_and_plotly_are_served(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and "<html" in r.text.lower()
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert "http://" not in r.text and "https://" not in r.text  # nothing from elsewhere
    js = client.get("/static/plotly.min.js")
    assert js.status_code == 200 and len(js.content) > 1_000_000
    assert js.headers["content-type"].startswith("text/javascript")
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200, name


def test_host_header_check(svc: FakeService) -> None:
    c = TestClient(
        make_app(svc, TOKEN, allow_view=True, allowed_hosts=["localhost"]),
        base_url="http://localhost:8642",
    )
    assert c.get(f"{API}/boards").status_code == 200
    r = c.get(f"{API}/boards", headers={"Host": "evil.example:8642"})
    assert "evil.example" in is_one_line_error(r, 400)


# ---- events ------------------------------------------------------------------------------------
def read_events(lines: Any, n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for line in lines:
        if line.startswith("data: "):
            out.append(json.loads(line[6:]))
            if len(out) == n:
                break
    return out


def test_events_stream_delivers_what_the_service_publishes(svc: FakeService) -> None:
    app = make_app(svc, TOKEN, allow_view=True)
    with BackgroundServer(app) as srv, httpx.Client(base_url=srv.url, timeout=10) as c:
        with c.stream("GET", f"{API}/events") as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            lines = r.iter_lines()
            assert read_events(lines, 1)[0]["type"] == "hello"
            evs: list[dict[str, Any]] = [
                {"type": "board", "board": board_dict("b1", "paused")},
                {
                    "type": "records",
                    "board_id": "b1",
                    "run": "run-b1",
                    "records": [
                        {
                            "seq": 51,
                            "t_s": 1.0,
                            "v": 0.1,
                            "e": None,
                            "i": 0.0,
                            "q": 0.0,
                            "step": 1,
                            "cycle": 1,
                        }
                    ],
                },
                {
                    "type": "alert",
                    "board_id": "b2",
                    "kind": "trip",
                    "text": "v_max",
                    "at": "2026-01-01T00:00:00Z",
                },
            ]
            for ev in evs:
                svc.publish(ev)
            assert read_events(lines, 3) == evs
        sub = svc.subs[0]
        assert sub.closed.wait(10), "the subscription outlived its client"


def test_events_need_the_token_when_view_is_closed(svc: FakeService) -> None:
    c = TestClient(make_app(svc, TOKEN, allow_view=False))
    is_one_line_error(c.get(f"{API}/events"), 401)
    assert svc.subs == []


def test_a_slow_client_is_told_to_catch_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "SSE_QUEUE", 3)
    sub = FakeSub()
    for n in range(10):
        sub.q.put({"type": "records", "n": n})

    async def consume() -> list[dict[str, Any]]:
        closing = threading.Event()
        gen = api.event_stream(sub, closing)
        got = [await gen.__anext__()]  # hello; the pump thread is running now
        deadline = time.monotonic() + 10
        while sub.gets <= 10 and time.monotonic() < deadline:  # the pump handed over all 10
            await asyncio.sleep(0.01)
        for _ in range(3):
            await asyncio.sleep(0)  # the loop runs the hand-overs already queued to it
        got.append(await gen.__anext__())
        sub.q.put({"type": "records", "n": 99})
        got.append(await gen.__anext__())
        closing.set()
        await gen.aclose()
        return [json.loads(b.split(b"data: ", 1)[1]) for b in got]

    events = asyncio.run(consume())
    assert events[0]["type"] == "hello"
    assert events[1] == {"type": "overflow"}
    assert events[2] == {"type": "records", "n": 99}
    assert sub.closed.wait(10)
