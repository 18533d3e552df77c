"""The dashboard in a real browser: the operating system's Chromium driven by Playwright (never
Playwright's own browser download; `.ci/run` installs Debian's chromium when it is missing).

The page over a fake service (auth, confirmation, live events) and over a real service with
two emulated boards (numbers shown = the run database; pause stops the plot). With the
environment variable SICELL_SCREENSHOT set, the second test also saves a screenshot there.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sicell.errors import SicellError
from sicell.service.api import API, BackgroundServer, make_app

from tests.apihelp import AUTH, TOKEN, FakeService, board_dict
from tests.emuhelp import wait_for
from tests.servicehelp import BOARD_IDS, LONG_TOML, TRIP_TOML, board_url, running_service

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason=f"no {CHROMIUM} (.ci/run installs Debian's chromium)"
)

EXAMPLES = Path(__file__).resolve().parents[1] / "host" / "sicell" / "examples"
Page = Any  # playwright.sync_api.Page (imported only when a browser exists)


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


def open_page(browser: Any, url: str) -> tuple[Page, list[str]]:
    """A page at ``url`` and the list its console errors and page errors go to."""
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.set_default_timeout(30_000)
    page.goto(url)
    return page, problems


def field(page: Page, board: str, name: str) -> tuple[str, str]:
    """(text shown, raw value) of one figure on a board's card."""
    loc = page.locator(f'article[data-board="{board}"] [data-field="{name}"]')
    return loc.inner_text(), loc.get_attribute("data-value") or ""


# ---- the page over a fake service -------------------------------------------------------------
def test_page_over_a_fake_service(browser: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    svc = FakeService(tmp_path / "report")
    with BackgroundServer(make_app(svc, TOKEN, allow_view=True)) as srv:
        page, problems = open_page(browser, srv.url + "/")
        b1 = page.locator('article[data-board="b1"]')
        expect(b1).to_have_attribute("data-mode", "CC")
        expect(page.locator('article[data-board="b2"]')).to_have_attribute("data-mode", "paused")
        assert field(page, "b1", "voltage_v") == ("−0.1250 V", "-0.125")
        assert field(page, "b1", "current_a") == ("+100.00 µA", "0.0001")
        assert field(page, "b1", "half_cycle_ah")[0] == "0.250 µAh"
        assert field(page, "b1", "step")[0] == "2 cc"
        assert field(page, "b1", "eta_s")[0].startswith("03:")
        expect(b1.locator('[data-op="pause"]')).to_be_enabled()
        expect(b1.locator('[data-op="continue"]')).to_be_disabled()

        # a cancelled confirmation sends nothing
        b1.locator('[data-op="stop"]').click()
        expect(page.locator("#confirm")).to_have_attribute("open", "")
        expect(page.locator("#confirm-text")).to_contain_text("Stop the run on board b1")
        page.get_by_role("button", name="Cancel").click()
        expect(page.locator("#confirm")).not_to_have_attribute("open", "")
        # confirmed without a token: the page asks for it; a wrong one is refused and asked again
        b1.locator('[data-op="pause"]').click()
        page.locator("#confirm-ok").click()
        page.locator("#token-input").fill("wrong-token-wrong-token")
        page.locator("#token-save").click()
        expect(page.locator("#token-input")).to_have_attribute("placeholder", "wrong token")
        page.locator("#token-input").fill(TOKEN)
        page.locator("#token-save").click()
        expect(page.locator("#toast")).to_contain_text("b1: pause done")
        controls = [c for c in svc.calls if c[0] == "control"]
        assert controls == [("control", "b1", "pause", {}, "http 127.0.0.1")]
        assert len(problems) == 1 and "403" in problems[0]  # the wrong token's answer
        problems.clear()

        # live events: a board change and an alert show at once
        svc.publish({"type": "board", "board": board_dict("b1", "tripped")})
        expect(b1).to_have_attribute("data-mode", "tripped")
        svc.publish(
            {
                "type": "alert",
                "board_id": "b1",
                "kind": "trip",
                "text": "v_max exceeded",
                "at": "2026-01-01T00:00:00Z",
            }
        )
        expect(page.locator('.alert[data-board="b1"]')).to_contain_text("v_max exceeded")

        # a run's plots: records from the API, then live ones appended
        b1.click()
        plot = page.locator("#plot-vt")
        expect(plot).to_have_attribute("data-points", "3")
        svc.publish(
            {
                "type": "records",
                "board_id": "b1",
                "run": "run-b1",
                "records": [
                    {
                        "seq": 9,
                        "t_s": 4.5,
                        "v": 0.2,
                        "e": None,
                        "i": 0.0,
                        "q": 0.0,
                        "step": 1,
                        "cycle": 1,
                    }
                ],
            }
        )
        expect(plot).to_have_attribute("data-points", "4")
        expect(page.locator("#run-report")).to_have_attribute("href", f"{API}/runs/run-b1/report")
        assert problems == []
        page.close()


def test_page_asks_for_the_token_when_viewing_needs_it(browser: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    svc = FakeService(tmp_path / "report")
    with BackgroundServer(make_app(svc, TOKEN, allow_view=False)) as srv:
        page, problems = open_page(browser, srv.url + "/")
        expect(page.locator("#token-dialog")).to_have_attribute("open", "")
        assert page.locator("article").count() == 0 and svc.calls == []
        page.locator("#token-input").fill(TOKEN)
        page.locator("#token-save").click()
        expect(page.locator('article[data-board="b2"]')).to_have_attribute("data-mode", "paused")
        expect(page.locator("#conn")).to_have_attribute("data-state", "live")
        svc.publish({"type": "board", "board": board_dict("b2", "CC")})
        expect(page.locator('article[data-board="b2"]')).to_have_attribute("data-mode", "CC")
        assert all("401" in p for p in problems), problems  # the reads before the token
        page.close()


# ---- the page over a real service with two emulated boards ------------------------------------
def last_sample(db: Path) -> tuple[int, int, float, float, int]:
    """(number of samples, seq, voltage, current, step) of the run's newest sample."""
    con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        n = con.execute("SELECT count(*) FROM samples").fetchone()[0]
        row = con.execute(
            "SELECT seq, voltage_v, current_a, step FROM samples ORDER BY seq DESC LIMIT 1"
        ).fetchone()
    finally:
        con.close()
    return (n, *row) if row else (0, 0, 0.0, 0.0, -1)


def last_event(db: Path) -> str | None:
    con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        row = con.execute("SELECT name FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    finally:
        con.close()
    return row[0] if row else None


def shown(page: Page, board: str, name: str) -> str:
    """The raw number behind a figure on a board's card (JavaScript's String(x))."""
    return field(page, board, name)[1]


def plot_attr(page: Page, name: str) -> int:
    return int(page.locator("#plot-vt").get_attribute(name) or 0)


def test_dashboard_over_two_emulated_boards(browser: Any, tmp_path: Path, rt: Path) -> None:
    from playwright.sync_api import expect

    a, b = BOARD_IDS[0], BOARD_IDS[1]
    with (
        running_service(tmp_path, 2) as svc,
        BackgroundServer(make_app(svc, TOKEN, allow_view=True)) as srv,
    ):
        page, problems = open_page(browser, srv.url + "/")
        card_a = page.locator(f'article[data-board="{a}"]')
        card_b = page.locator(f'article[data-board="{b}"]')
        expect(card_a).to_have_attribute("data-mode", "idle")
        expect(card_b).to_have_attribute("data-mode", "idle")
        page.locator("#token-btn").click()
        page.locator("#token-input").fill(TOKEN)
        page.locator("#token-save").click()

        # board A: a run started from the page, its computed current shown before START
        card_a.locator('[data-op="start"]').click()
        page.locator("#start-name").fill("long-a")
        page.locator("#start-toml").fill(LONG_TOML)
        page.locator("#start-check").click()
        expect(page.locator("#start-plan table")).to_contain_text("0.0001")  # current_a
        page.locator("#start-go").click()
        expect(page.locator("#start-dialog")).not_to_have_attribute("open", "")
        # board B: through the API
        with httpx.Client(base_url=srv.url, headers=AUTH, timeout=60) as http:
            r = http.post(f"{API}/boards/{b}/runs", params={"name": "long-b"}, content=LONG_TOML)
            assert r.status_code == 201, r.text
        db_a = tmp_path / "data" / "runs" / "long-a.db"

        # the run's plot (selected when started from the page) grows while it runs
        expect(page.locator("#run-title")).to_have_text("long-a")
        expect(page.locator('tr[data-run="long-b"]')).to_contain_text(b)  # the runs table
        expect(card_a).to_have_attribute("data-mode", re.compile("^(rest|CC)$"))
        expect(card_b).to_have_attribute("data-mode", re.compile("^(rest|CC)$"))
        first = plot_attr(page, "data-points")
        page.wait_for_function(
            "n => +document.getElementById('plot-vt').dataset.points > n + 5", arg=first
        )

        # pause, confirmed: the board shows paused
        card_a.locator('[data-op="pause"]').click()
        expect(page.locator("#confirm-text")).to_contain_text(f"Pause the run on board {a}")
        page.locator("#confirm-ok").click()
        expect(card_a).to_have_attribute("data-mode", "paused")
        expect(card_a.locator('[data-op="continue"]')).to_be_enabled()

        # the board's last words on pausing (a sample at the pause, the PAUSED event) are
        # committed; once the newest sample is on the page, the numbers are the database's
        wait_for(lambda: last_event(db_a) == "paused", 60, "the PAUSED event in the database")

        def number(name: str) -> float | None:
            text = shown(page, a, name)
            return float(text) if text else None

        def settled() -> bool:
            _, seq, v, i, step = last_sample(db_a)
            return (
                plot_attr(page, "data-last-seq") == seq
                and number("voltage_v") == v
                and number("current_a") == i
                and number("step") == step
            )

        wait_for(settled, 60, "the page to show the database's newest sample")
        n_db, seq, v, _, _ = last_sample(db_a)
        assert field(page, a, "voltage_v")[0] == f"{'+' if v >= 0 else '−'}{abs(v):.4f} V"
        points = plot_attr(page, "data-points")

        # and the plot stops: board B keeps recording meanwhile, A's plot and database do not
        b_before = svc.board(b)["samples"]
        wait_for(lambda: svc.board(b)["samples"] >= b_before + 20, 120, "board B to go on")
        page.wait_for_function(
            "id => +document.querySelector(`article[data-board='${id}'] [data-field='age']`)"
            ".dataset.value >= 3",
            arg=a,
        )
        assert plot_attr(page, "data-points") == points
        assert last_sample(db_a)[:2] == (n_db, seq)
        expect(card_a).to_have_attribute("data-mode", "paused")
        assert card_b.get_attribute("data-mode") in ("rest", "CC")

        # a fresh page plots exactly the database's samples
        page.reload()
        expect(page.locator("#run-title")).to_have_text("long-a")
        expect(page.locator("#plot-vt")).to_have_attribute("data-last-seq", str(seq))
        xy = page.evaluate(
            "() => { const d = document.getElementById('plot-vt').data[0];"
            " return [d.x, d.y, window.sicell.sel.scale]; }"
        )
        con = sqlite3.connect(f"{db_a.resolve().as_uri()}?mode=ro", uri=True)
        rows = con.execute("SELECT t_s, voltage_v FROM samples ORDER BY seq").fetchall()
        con.close()
        assert len(xy[0]) == len(rows) == n_db
        assert xy[1] == [r[1] for r in rows]
        assert xy[0] == pytest.approx([r[0] / xy[2] for r in rows], rel=1e-12)
        assert problems == []
        page.close()
        for k in (a, b):
            svc.control(k, "stop", {}, "test")


@pytest.mark.skipif(not os.environ.get("SICELL_SCREENSHOT"), reason="SICELL_SCREENSHOT not set")
def test_dashboard_screenshot(browser: Any, tmp_path: Path, rt: Path) -> None:
    """The README's picture: four boards (two films cycling, one paused, one tripped), the
    plots of a film's run after two cycles. Saved to $SICELL_SCREENSHOT."""
    from playwright.sync_api import expect

    out = Path(os.environ["SICELL_SCREENSHOT"]).resolve()
    film = (EXAMPLES / "film-quick.toml").read_text()
    ports = [
        f"emu://thin-porous?board={BOARD_IDS[0]}&linger=60",
        f"emu://thick-porous?board={BOARD_IDS[1]}&linger=60",
        board_url(2),
        board_url(3),
    ]
    with (
        running_service(tmp_path, ports=ports) as svc,
        BackgroundServer(make_app(svc, TOKEN, allow_view=True)) as srv,
    ):
        svc.start(BOARD_IDS[0], film, "si-thin-porous-1", "test")
        svc.start(BOARD_IDS[1], film, "si-thick-porous-1", "test")
        svc.start(BOARD_IDS[2], LONG_TOML, "rc-long", "test")
        wait_for(lambda: svc.board(BOARD_IDS[2])["samples"] > 0, 60, "rc-long to record")
        svc.control(BOARD_IDS[2], "pause", {}, "test")
        page, _ = open_page(browser, srv.url + "/#run=si-thin-porous-1")
        svc.start(BOARD_IDS[3], TRIP_TOML, "rc-trip", "test")
        expect(page.locator(".alert")).to_contain_text("trip")
        page.wait_for_function(
            "() => window.sicell.sel && window.sicell.sel.cycles.length >= 2", timeout=300_000
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=True)
        page.close()
        for k in BOARD_IDS[:4]:
            with contextlib.suppress(SicellError):  # a run that ended already: nothing to stop
                svc.control(k, "stop", {}, "test")
    assert out.stat().st_size > 10_000
