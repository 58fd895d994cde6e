"""peregrine.js in headless Chromium through a restart of a real server (issue 14, item 5).

The server is a child process (``python -m peregrine_rt
tests.e2e.channels_app:Site``, as in ``conftest.py``) whose ``room:lobby``
keeps its history in SQLite in a data directory of the test.  The page
(``channels_app.PAGE``) joins it with peregrine.js, shows every ``new_msg``
and every join reply.  Then the server is stopped (SIGTERM, or SIGKILL) and
started again on the same port, and, while the page is still failing to
reconnect (its connection attempts are held on a closed port: see the page),
a Python client (:mod:`peregrine_rt.client`) publishes more.  Released, the
page reconnects by itself and rejoins:

* same data directory: the join reply says ``recovered: true`` and the page
  shows every message once, in order, the ones published while it was away
  included, and the socket never received one twice;
* fresh data directory: a new epoch, so ``recovered: false`` with reason
  ``epoch_changed``; the page drops what it showed and loads the new history.

Plain synchronous tests (Playwright's sync API); skipped without Chromium or
Playwright unless ``CI`` is set (the ``browser`` fixture).  Every wait is on
what the page shows, bounded by ``TIMEOUT_MS``.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from peregrine_rt.client import open_socket

from .channels_app import DATA_VARIABLE, TOPIC
from .conftest import TIMEOUT_MS, AppServer, free_port

BEFORE = ["one", "two", "three"]  # said by the page before the restart
AWAY = [f"away {i}" for i in range(5)]  # published by a Python client while it is away
AFTER = "back"  # said by the page after it rejoined


def app_server(log: Path, data: Path) -> AppServer:
    """``tests.e2e.channels_app:Site`` keeping its history in ``data``."""
    return AppServer(log, "tests.e2e.channels_app:Site", env={DATA_VARIABLE: str(data)})


@pytest.fixture
def server(tmp_path: Path) -> Iterator[AppServer]:
    server = app_server(tmp_path / "server.log", tmp_path / "data")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def page(browser: Any, server: AppServer) -> Iterator[Any]:
    """The page, joined to the lobby (its first join seen)."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(server.url)
        wait_joins(page, 1)
        yield page
    finally:
        context.close()


def wait_joins(page: Any, count: int) -> None:
    page.wait_for_function("(n) => document.querySelectorAll('#joins li').length >= n", arg=count)


def joins(page: Any) -> list[dict[str, str]]:
    result: list[dict[str, str]] = page.eval_on_selector_all(
        "#joins li", "l => l.map(e => ({...e.dataset}))"
    )
    return result


def wait_shown(page: Any, texts: list[str]) -> None:
    """Until the page shows ``texts`` (at least as many messages; the assertion checks which)."""
    page.wait_for_function(
        "(n) => document.querySelectorAll('#messages li').length >= n", arg=len(texts)
    )
    assert shown(page) == texts


def shown(page: Any) -> list[str]:
    return [str(t) for t in page.locator("#messages li").all_text_contents()]


def offsets(page: Any) -> list[int]:
    return [
        int(o)
        for o in page.eval_on_selector_all("#messages li", "l => l.map(e => e.dataset.offset)")
    ]


def say(page: Any, text: str) -> None:
    """The page pushes ``new_msg`` and awaits the server's reply."""
    assert page.evaluate("(text) => window.say(text)", text) == {"sent": True}


def publish(port: int, texts: list[str]) -> dict[str, Any]:
    """Join the lobby with the Python client, publish ``texts``; the join reply's response."""

    async def run() -> dict[str, Any]:
        with trio.fail_after(TIMEOUT_MS / 1000):
            async with open_socket(f"ws://127.0.0.1:{port}/socket") as socket:
                lobby = socket.channel(TOPIC)
                response: dict[str, Any] = await lobby.join()
                for text in texts:
                    assert await lobby.push("new_msg", {"text": text}) == {"sent": True}
                return response

    return trio.run(run)


def stop_while_held(page: Any, server: AppServer, sig: signal.Signals) -> None:
    """Hold the page's connection attempts, stop the server, see the page retry and fail."""
    page.evaluate("(port) => { window.heldUrl = `ws://127.0.0.1:${port}/`; }", free_port())
    page.evaluate("window.held = true")
    server.stop(sig)
    page.wait_for_function("document.body.dataset.state !== 'open' && window.heldAttempts >= 1")


def release(page: Any) -> None:
    """Let the page's next attempt reach the server (it was still trying: it connects)."""
    attempts = page.evaluate("window.heldAttempts")
    page.wait_for_function("(n) => window.heldAttempts > n", arg=attempts)  # still retrying
    assert page.evaluate("document.body.dataset.state") != "open"
    page.evaluate("window.held = false")
    page.wait_for_function("document.body.dataset.state === 'open'")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_the_page_recovers_exactly_what_it_missed_through_a_restart(
    server: AppServer, page: Any, sig: signal.Signals
) -> None:
    for text in BEFORE:
        say(page, text)
    wait_shown(page, BEFORE)
    (first,) = joins(page)
    assert (first["rejoin"], first["offset"]) == ("false", "0")

    stop_while_held(page, server, sig)
    server.start()  # same port, same data directory
    reply = publish(server.port, AWAY)  # the page is not back yet
    assert (reply["epoch"], reply["offset"]) == (first["epoch"], len(BEFORE))  # kept on disk
    assert shown(page) == BEFORE

    release(page)
    wait_joins(page, 2)
    second = joins(page)[1]
    assert second["rejoin"] == "true"
    assert (second["recovered"], second["reason"]) == ("true", "null")
    assert second["epoch"] == first["epoch"]
    wait_shown(page, BEFORE + AWAY)
    say(page, AFTER)  # live again
    wait_shown(page, [*BEFORE, *AWAY, AFTER])

    expected = list(range(1, len(BEFORE) + len(AWAY) + 2))
    assert offsets(page) == expected  # in order, none lost, none twice
    assert page.evaluate("window.frames") == expected  # nor sent twice by the server
    assert len(joins(page)) == 2  # one rejoin, no reload


def test_a_fresh_data_dir_is_a_new_epoch_and_the_page_reloads(
    server: AppServer, page: Any, tmp_path: Path
) -> None:
    for text in BEFORE:
        say(page, text)
    wait_shown(page, BEFORE)
    (first,) = joins(page)

    stop_while_held(page, server, signal.SIGTERM)
    server.env[DATA_VARIABLE] = str(tmp_path / "fresh")  # the history is gone: a new epoch
    server.start()
    reply = publish(server.port, AWAY)
    assert reply["offset"] == 0 and reply["epoch"] != first["epoch"]
    assert shown(page) == BEFORE

    release(page)
    wait_joins(page, 2)
    second = joins(page)[1]
    assert second["rejoin"] == "true"
    assert (second["recovered"], second["reason"]) == ("false", "epoch_changed")
    assert second["epoch"] == reply["epoch"] and second["offset"] == str(len(AWAY))
    # The page dropped what it showed and loaded the new epoch's history.
    wait_shown(page, AWAY)
    say(page, AFTER)
    wait_shown(page, [*AWAY, AFTER])
    assert offsets(page) == list(range(1, len(AWAY) + 2))
    # Frames: the old epoch's, then only the live one of the new (the reload was a fetch).
    assert page.evaluate("window.frames") == [1, 2, 3, len(AWAY) + 1]
