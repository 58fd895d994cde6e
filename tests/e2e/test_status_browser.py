"""The status page in Chromium: it goes live, follows the traffic, survives a restart.

The server is ``tests.e2e.status_app:Rooms`` in a child process (as in
``conftest.py``) with the status page on (``PEREGRINE_STATUS_PAGE``,
``PEREGRINE_STATUS_TOKEN``).  Traffic comes from a second page of the same
browser: WebSockets in rooms, and ``fetch()`` calls.  What is asserted is
what the status page shows (its tiles, tables and charts), not the server's
figures, which tests/integration/test_status_page.py checks.

``UPDATE_SCREENSHOTS=1`` also runs half a minute of mixed traffic and writes
``docs/img/status.png``; otherwise nothing in the repository is written.

Plain synchronous tests (Playwright's sync API); skipped without Chromium or
Playwright unless ``CI`` is set (the ``browser`` fixture).
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import REPO, TIMEOUT_MS, AppServer

TOKEN = "e2e-status-token-0123456789"
SCREENSHOT = REPO / "docs" / "img" / "status.png"

# Opens `sockets` WebSockets to /ws/ROOM for each [room, sockets] pair; kept on window.
OPEN_SOCKETS = """async (rooms) => {
  window.sockets = window.sockets || [];
  const opened = [];
  for (const [room, count] of rooms) {
    for (let i = 0; i < count; i++) {
      const ws = new WebSocket(`ws://${location.host}/ws/${room}`);
      window.sockets.push(ws);
      opened.push(new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; }));
    }
  }
  await Promise.all(opened);
  return window.sockets.length;
}"""
# Closes the first `count` of them (all with null), with 1000.
CLOSE_SOCKETS = """async (count) => {
  const closing = window.sockets.splice(0, count ?? window.sockets.length);
  await Promise.all(closing.map((ws) => new Promise((resolve) => {
    ws.onclose = resolve;
    ws.close(1000, "done");
  })));
}"""
FETCH = """async (n) => {
  for (let i = 0; i < n; i++) await fetch(`/item/${i}`);
}"""
# Half a minute of traffic whose rate swells and ebbs, for the screenshot.
TRAFFIC = """async (seconds) => {
  const end = Date.now() + seconds * 1000;
  let step = 0;
  while (Date.now() < end) {
    const load = 1 + Math.round(4 * (1 + Math.sin(step / 30)) + 2 * Math.random());
    for (let i = 0; i < load; i++) {
      const ws = window.sockets[(step * 7 + i) % window.sockets.length];
      ws.send(`message ${step}.${i}`);
    }
    await Promise.all(Array.from({ length: load * 2 }, (_, i) => fetch(`/item/${step}/${i}`)));
    step += 1;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}"""


@pytest.fixture
def status_server(tmp_path: Path) -> Iterator[AppServer]:
    server = AppServer(
        tmp_path / "status.log",
        "tests.e2e.status_app:Rooms",
        env={"PEREGRINE_STATUS_PAGE": "1", "PEREGRINE_STATUS_TOKEN": TOKEN},
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1200, "height": 820})
    try:
        yield context
    finally:
        context.close()


def open_status(context: Any, server: AppServer) -> tuple[Any, list[str]]:
    """The status page, live; and the errors its script reports (kept up to date)."""
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    def console(message: Any) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", console)
    response = page.goto(f"{server.url}status?token={TOKEN}")
    assert response.status == 200
    wait_live(page)
    return page, errors


def wait_live(page: Any, timeout: float = TIMEOUT_MS) -> None:
    page.wait_for_function("() => document.body.dataset.state === 'open'", timeout=timeout)
    page.wait_for_function("() => document.querySelector('#updated').textContent !== '\\u2013'")


def wait_text(page: Any, selector: str, text: str) -> None:
    page.wait_for_function(
        "([selector, text]) => document.querySelector(selector)?.textContent === text",
        arg=[selector, text],
    )


def topic_rows(page: Any) -> list[list[str]]:
    rows: list[list[str]] = page.eval_on_selector_all(
        "#topics tbody tr", "(trs) => trs.map((tr) => [...tr.cells].map((td) => td.textContent))"
    )
    return rows


def test_the_page_needs_its_token(status_server: AppServer) -> None:
    for query in ("", "?token=wrong"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{status_server.url}status{query}", timeout=5)
        with refused.value as answer:
            assert answer.code == 403


def test_the_page_follows_the_traffic(context: Any, status_server: AppServer) -> None:
    page, errors = open_status(context, status_server)
    assert page.url == f"{status_server.url}status"  # the token left the address bar
    wait_text(page, "#conn-websocket", "1")  # the page's own socket
    assert page.text_content("#processes") == "1"
    assert page.text_content("#redis") == "in memory"
    assert page.is_visible("#topics-empty")

    traffic = context.new_page()
    traffic.set_default_timeout(TIMEOUT_MS)
    traffic.goto(status_server.url)
    assert traffic.evaluate(OPEN_SOCKETS, [["lobby", 3], ["dev", 1]]) == 4
    traffic.evaluate(FETCH, 25)

    wait_text(page, "#conn-websocket", "5")
    page.wait_for_function("() => [...document.querySelectorAll('#topics tbody tr')].length === 2")
    assert topic_rows(page) == [["room.lobby", "3"], ["room.dev", "1"]]  # busiest first
    page.wait_for_function(
        "() => { const row = [...document.querySelectorAll('#totals tr')]"
        ".find((tr) => tr.cells[0].textContent === 'HTTP responses');"
        " return row && Number(row.cells[1].textContent.replace(/,/g, '')) >= 25; }"
    )
    # The requests chart has drawn the burst: some point above the baseline.
    page.wait_for_function(
        "() => document.querySelector('[data-series=requests] .line')"
        ".getAttribute('points').split(' ').some((p) => Number(p.split(',')[1]) < 100)"
    )

    traffic.evaluate(CLOSE_SOCKETS, None)
    wait_text(page, "#conn-websocket", "1")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#closes tbody tr')]"
        ".some((tr) => tr.cells[0].textContent === '1000' && tr.cells[2].textContent === '4')"
    )
    page.wait_for_selector("#topics-empty", state="visible")

    page.reload()  # no token in the URL now: the cookie carries it
    wait_live(page)
    assert errors == []


def test_the_page_reconnects_after_a_restart(context: Any, status_server: AppServer) -> None:
    page, _ = open_status(context, status_server)
    status_server.stop()
    page.wait_for_function("() => document.body.dataset.state === 'closed'")
    assert "retry" in page.text_content("#state")
    status_server.start()
    wait_live(page, timeout=30_000)  # backoff: 0.5, 1, 2, 4, 8 s... jittered
    wait_text(page, "#conn-websocket", "1")


def test_screenshot(context: Any, status_server: AppServer, tmp_path: Path) -> None:
    """Under mixed traffic the charts fill; UPDATE_SCREENSHOTS=1 saves docs/img/status.png.

    Without it the run is short (a few points per chart) and the picture goes to
    a temporary file, so that a test run does not rewrite a tracked file.
    """
    update = bool(os.environ.get("UPDATE_SCREENSHOTS"))
    points = 58 if update else 4
    target = SCREENSHOT if update else tmp_path / "status.png"
    page, errors = open_status(context, status_server)
    traffic = context.new_page()
    traffic.set_default_timeout(60_000)
    traffic.goto(status_server.url)
    rooms = [["lobby", 9], ["support", 5], ["dev", 4], ["ops", 2], ["random", 1]]
    traffic.evaluate(OPEN_SOCKETS, rooms)
    traffic.evaluate(CLOSE_SOCKETS, 3)  # a few sockets come and go: a row of closes
    # The traffic runs on while the charts fill up (one point a second).
    seconds = 90 if update else 8
    traffic.evaluate(f"(seconds) => {{ window.traffic = ({TRAFFIC})(seconds); }}", seconds)
    page.wait_for_function(
        "(points) => document.querySelector('[data-series=requests] .line')"
        ".getAttribute('points').split(' ').length >= points",
        arg=points,
        timeout=80_000,
    )
    target.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 10_000  # a picture, not an empty page
    assert errors == []
