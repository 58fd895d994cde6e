"""A rolling restart under a live conversation: the chat's pages lose no message (issue 17, item 5).

The chat runs as ``--workers 2 --redis URL``; alice and bob sit in the lobby,
each in a headless Chromium page (the client on peregrine.js).  Alice types
numbered messages at a steady pace while another thread sends SIGHUP to the
supervisor twice (each waiting for ``restart done``), so every worker is
replaced twice and each page's WebSocket is closed with 1012 at least twice.
A message alice types shows "sending…" until the server acknowledges it; one
typed while her page reconnects waits for the rejoin and goes then; one the
server never answered is marked "not sent", with a Retry button.  Then, once
both pages are connected and nothing waits any more:

* every message alice typed shows on her page exactly once: stored, or marked
  "not sent" (never silently lost); retried, the marked ones are stored too;
* bob shows exactly what alice shows, once each, in id order: alice's
  messages in the order she typed them (the retried ones last);
* each page was closed with 1012, and only 1012, and reconnected by itself.

A message sent just as its worker closes is rare at a human pace (a few
milliseconds per close), so a second test plays both sides of that race in
the page: a message stored whose answer never came (it comes back in the
recovered messages, with its ref, and stops waiting), and one the old worker
dropped (it is marked "not sent"; retried, it is stored once).

Playwright's sync API is used by the main thread only; the restarting thread
touches nothing but the supervisor's PID and log.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from peregrine_rt.testing import wait_until_blocking

from .chat_pages import (
    RECORD_STATES,
    OpenChat,
    failed,
    ids,
    open_chat_pages,
    recovered,
    texts,
    wait_for_texts,
    waiting,
)
from .conftest import TIMEOUT_MS, ChatServer

PACE = 0.5  # seconds between alice's messages
"""Each message is at most two events (a ``typing`` from the input event, at
most one a second, then the ``new_msg``); the chat allows 5 a second per
connection on average."""
BEFORE = 4  # messages sent before the first SIGHUP...
AFTER = 4  # ...and after the second restart is done
MAX_MESSAGES = 70  # the restarts must be done well before this many (35 s)
RESTART_TIMEOUT = 25.0  # seconds for one rolling restart of both workers
RESTARTS = 2
ACK_WAIT_MS = 8000 + TIMEOUT_MS  # the page's wait for an answer (app.js), and some


@pytest.fixture
def open_chat(browser: Any) -> Iterator[OpenChat]:
    yield from open_chat_pages(browser)


def chat_nodes(redis_url: str, tmp_path: Path) -> ChatServer:
    server = ChatServer(tmp_path / "chat.log", redis_url=redis_url, workers=2)
    server.env["CHAT_DATA"] = str(tmp_path / "data")  # unused with Redis; never the repo's
    return server


def worker_pids(pid: int) -> set[int]:
    """The supervisor's child processes (its workers), from /proc."""
    children: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children.update(int(c) for c in (task / "children").read_text().split())
        except FileNotFoundError:
            pass  # the thread ended meanwhile
    return children


def wait_until(check: Any, timeout: float, what: str) -> None:
    wait_until_blocking(check, timeout=timeout, message=what)


@dataclass
class Restarter:
    """A thread: SIGHUP to the supervisor, wait for ``restart done``; ``RESTARTS`` times.

    Restart ``n`` starts when the main thread sets ``go[n]``: once both pages
    are connected again after the previous one, so that each is on a worker
    this restart replaces.
    """

    server: ChatServer
    go: list[threading.Event] = field(
        default_factory=lambda: [threading.Event() for _ in range(RESTARTS)]
    )
    restarted: int = 0  # restarts done
    done: threading.Event = field(default_factory=threading.Event)
    cancelled: bool = False  # set before ``go``: the test ended early, send nothing
    started_at: float = 0.0
    error: BaseException | None = None
    pids: list[set[int]] = field(default_factory=list)  # the workers before each SIGHUP

    def run(self) -> None:
        try:
            assert self.server.proc is not None
            supervisor = self.server.proc.pid
            for n in range(1, RESTARTS + 1):
                assert self.go[n - 1].wait(RESTART_TIMEOUT), f"restart {n} was never due"
                if self.cancelled:
                    return
                self.started_at = self.started_at or time.monotonic()
                self.pids.append(worker_pids(supervisor))
                os.kill(supervisor, signal.SIGHUP)
                wait_until(
                    lambda n=n: self.server.log.count("restart done: 2 workers replaced") >= n,
                    RESTART_TIMEOUT,
                    f"rolling restart {n}",
                )
                self.restarted = n
            self.pids.append(worker_pids(supervisor))
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()


@dataclass
class Sent:
    text: str
    at: float


def type_message(page: Any, text: str) -> Sent:
    page.fill("#text", text)
    page.press("#text", "Enter")  # the submit handler runs before press() returns
    assert page.input_value("#text") == "", text  # taken: it shows, waiting or stored
    return Sent(text, time.monotonic())


def back(page: Any, closes: int) -> bool:
    """Whether the page's connection closed at least ``closes`` times and is online now."""
    online = page.evaluate("document.querySelector('#status').dataset.state") == "open"
    return bool(len(page.evaluate("window.closes")) >= closes and online)


def settle(page: Any) -> None:
    """Until nothing of the page waits for an answer (each stored, or marked "not sent")."""
    page.wait_for_function(
        "() => document.querySelectorAll('#messages li.pending').length === 0",
        timeout=ACK_WAIT_MS,
    )


def retry_failed(page: Any) -> list[str]:
    """Clicks Retry on each message marked "not sent", oldest first; their texts."""
    marked = failed(page)
    for _ in marked:
        page.click("#messages li.failed .retry")  # the first one left: it moves to the end
    return marked


def test_rolling_restart_loses_no_message(
    redis_url: str, tmp_path: Path, open_chat: OpenChat
) -> None:
    server = chat_nodes(redis_url, tmp_path)
    server.start()
    restarter = Restarter(server)
    thread = threading.Thread(target=restarter.run, daemon=True)
    try:
        thread.start()
        alice = open_chat(server.url, "alice")
        bob = open_chat(server.url, "bob")
        for page in (alice, bob):
            page.wait_for_function(
                "() => [...document.querySelectorAll('#online li')].length === 2"
            )
            page.evaluate(RECORD_STATES)

        sent: list[Sent] = []
        start = time.monotonic()
        after_restarts = 0
        while after_restarts < AFTER:
            assert len(sent) < MAX_MESSAGES, f"the restarts took too long:\n{server.log}"
            time.sleep(max(0.0, start + len(sent) * PACE - time.monotonic()))  # the pacing
            sent.append(type_message(alice, f"message {len(sent):03d}"))
            n = restarter.restarted  # the next restart is due once both pages are back
            due = n < RESTARTS and not restarter.go[n].is_set() and len(sent) >= BEFORE
            if due and all(back(page, n) for page in (alice, bob)):
                restarter.go[n].set()
            if restarter.done.is_set():
                after_restarts += 1
        thread.join(RESTART_TIMEOUT)
        if restarter.error is not None:
            raise restarter.error

        # Quiet: both pages online, nothing of alice's waits any more.
        typed = [s.text for s in sent]
        for page in (alice, bob):
            wait_until(lambda page=page: back(page, RESTARTS), TIMEOUT_MS / 1000, "back online")
        settle(alice)
        not_sent = failed(alice)
        stored = [t for t in typed if t not in not_sent]
        assert sorted(texts(alice) + not_sent) == typed, "a message lost, or shown twice"
        assert texts(alice) == stored, "stored out of the order typed"
        retried = retry_failed(alice)
        assert retried == not_sent
        wait_for_texts(alice, stored + retried, ACK_WAIT_MS)
        wait_for_texts(bob, stored + retried)

        assert waiting(alice) == failed(alice) == []
        assert ids(bob) == ids(alice) == sorted(set(ids(alice))), "twice, or out of order"
        during = [s for s in sent if s.at > restarter.started_at]
        assert len(during) > AFTER, "no message was sent while the workers were replaced"

        # Every worker was replaced, each time; every close was a 1012, then back.
        assert len(restarter.pids) == RESTARTS + 1
        for before, after in zip(restarter.pids, restarter.pids[1:], strict=False):
            assert len(before) == len(after) == 2 and not before & after, restarter.pids
        assert len(re.findall(r"closes its WebSockets with 1012", server.log)) == 2 * RESTARTS
        for name, page in (("alice", alice), ("bob", bob)):
            closes = page.evaluate("window.closes")
            assert len(closes) >= RESTARTS and set(closes) == {1012}, (name, closes)
            assert page.evaluate("window.states")[-1] == "open", name
    finally:
        if not restarter.done.is_set():
            restarter.cancelled = True
            for go in restarter.go:
                go.set()
        thread.join(RESTART_TIMEOUT)
        server.stop()


# The old worker's side of the race, played in the page on its current socket:
# "stored, answer lost" reaches the server, but its reply and its broadcast
# never reach the page, as when the worker closes while storing it; "dropped
# on the way" never leaves, as when the worker has sent its close frame and
# drops what comes.
LOSE_ON_THIS_SOCKET = """() => {
  const ws = chat.socket.conn;
  const send = ws.send.bind(ws);
  const lost = new Set();
  ws.send = (data) => {
    const [, ref, , event, payload] = JSON.parse(data);
    if (event === "new_msg" && payload.text === "stored, answer lost") lost.add(ref);
    if (!(event === "new_msg" && payload.text === "dropped on the way")) send(data);
  };
  const onmessage = ws.onmessage;
  ws.onmessage = (message) => {
    const [, ref, , event, payload] = JSON.parse(message.data);
    if (event === "phx_reply" && lost.has(ref)) return;
    if (event === "new_msg" && payload.text === "stored, answer lost") return;
    onmessage(message);
  };
}"""


def test_messages_cut_off_by_the_restart_are_stored_once(
    redis_url: str, tmp_path: Path, open_chat: OpenChat
) -> None:
    server = chat_nodes(redis_url, tmp_path)
    server.start()
    try:
        alice = open_chat(server.url, "alice")
        bob = open_chat(server.url, "bob")
        for page in (alice, bob):
            page.evaluate(RECORD_STATES)
        alice.evaluate(LOSE_ON_THIS_SOCKET)
        both = ["stored, answer lost", "dropped on the way"]
        for text in both:
            type_message(alice, text)
        wait_for_texts(bob, both[:1])
        assert texts(alice) == [] and waiting(alice) == both

        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGHUP)
        wait_until(
            lambda: "restart done: 2 workers replaced" in server.log, RESTART_TIMEOUT, "restart"
        )
        for page in (alice, bob):
            wait_until(lambda page=page: back(page, 1), TIMEOUT_MS / 1000, "a reconnection")
        # Stored: it comes back in what alice's rejoin recovered, its ref says it is hers.
        wait_for_texts(alice, both[:1])
        assert recovered(alice) is True
        # Never stored: marked, never silently gone; retried, stored once.
        settle(alice)
        assert failed(alice) == both[1:]
        assert retry_failed(alice) == both[1:]
        for page in (alice, bob):
            wait_for_texts(page, both, ACK_WAIT_MS)
            assert set(page.evaluate("window.closes")) == {1012}
        assert ids(alice) == ids(bob) and ids(alice)[1] == ids(alice)[0] + 1
        assert waiting(alice) == failed(alice) == []
    finally:
        server.stop()
