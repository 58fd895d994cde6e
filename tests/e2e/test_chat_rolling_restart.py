"""A rolling restart under a live conversation: the chat's pages lose no message (issue 17, item 5).

The chat runs as ``--workers 2 --redis URL``; alice and bob sit in the lobby,
each in a headless Chromium page.  Alice types numbered messages at a steady
pace while another thread sends SIGHUP to the supervisor twice (each waiting
for ``restart done``), so every worker is replaced twice and each page's
WebSocket is closed with 1012 at least twice.  Then, once both pages are
connected and agree:

* bob shows exactly what alice shows, once each, in id order, and that is
  alice's messages in the order she typed them;
* every message the page took (it cleared the input) is there: nothing
  accepted is lost; every message it refused (it kept the input and said
  "not sent") is nowhere;
* each page was closed with 1012, and only 1012, and reconnected by itself.

A say the page sends just as its worker closes is rare at a human pace (a
few milliseconds per close), so a second test plays both sides of that race
in the page: a say stored whose answer never came, and one the old worker
dropped.  Each must show once, in order, after the reconnection.

Playwright's sync API is used by the main thread only; the restarting thread
touches nothing but the supervisor's PID and log.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peregrine_rt.testing import wait_until_blocking

from .conftest import TIMEOUT_MS, ChatServer

PACE = 0.5  # seconds between alice's messages
"""Each message is two frames (a ``typing`` from the input event, then the
``say``); the chat allows 5 frames a second per connection on average."""
BEFORE = 4  # messages sent before the first SIGHUP...
AFTER = 4  # ...and after the second restart is done
MAX_MESSAGES = 70  # the restarts must be done well before this many (35 s)
RESTART_TIMEOUT = 25.0  # seconds for one rolling restart of both workers
RESTARTS = 2

# Records every change of the page's connection state (chat.conn.onState),
# with the close code: ``window.states`` is a list of [state, code].
RECORD_STATES = """() => {
  window.states = [];
  const original = chat.conn.onState;
  chat.conn.onState = (state, detail) => {
    window.states.push([state, detail ? detail.code : null]);
    original(state, detail);
  };
}"""


def texts(page: Any) -> list[str]:
    return [str(t) for t in page.locator("#messages li .text").all_text_contents()]


def ids(page: Any) -> list[int]:
    return [
        int(i) for i in page.eval_on_selector_all("#messages li", "l => l.map(e => e.dataset.id)")
    ]


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
    taken: bool  # the page cleared the input (else it said "not sent" and kept it)
    at: float


def type_message(page: Any, text: str) -> Sent:
    page.fill("#text", text)
    page.press("#text", "Enter")  # the submit handler runs before press() returns
    taken = page.input_value("#text") == ""
    if not taken:
        assert "not sent" in (page.text_content("#notice") or ""), text
    return Sent(text, taken, time.monotonic())


def back(page: Any, closes: int) -> bool:
    """Whether the page's connection closed at least ``closes`` times and is open now."""
    states = page.evaluate("window.states")  # none yet: still on its first connection
    return sum(s == "closed" for s, _ in states) >= closes and states[-1:] in ([], [["open", None]])


def wait_for(page: Any, expression: str, arg: Any, timeout_ms: float) -> bool:
    """Whether ``expression`` came true within ``timeout_ms`` (the caller asserts what it needs)."""
    try:
        page.wait_for_function(expression, arg=arg, timeout=timeout_ms)
    except Exception as exc:
        if type(exc).__name__ != "TimeoutError":
            raise
        return False
    return True


def test_rolling_restart_loses_no_message(redis_url: str, tmp_path: Path, new_page: Any) -> None:
    server = ChatServer(tmp_path / "chat.log", redis_url=redis_url, workers=2)
    server.start()
    restarter = Restarter(server)
    thread = threading.Thread(target=restarter.run, daemon=True)
    try:
        thread.start()
        alice = new_page(server.url, "alice")
        bob = new_page(server.url, "bob")
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

        # Quiet: both pages connected, and alice shows every message she sent.
        taken = [s.text for s in sent if s.taken]
        refused = [s.text for s in sent if not s.taken]
        connected = "() => document.querySelector('#status').dataset.state === 'open'"
        for page in (alice, bob):
            page.wait_for_function(connected)
        shown = (
            "(want) => want.every((t) => [...document.querySelectorAll('#messages li .text')]"
            ".some((el) => el.textContent === t))"
        )
        wait_for(alice, shown, taken, TIMEOUT_MS)
        same = (
            "(want) => JSON.stringify([...document.querySelectorAll('#messages li .text')]"
            ".map((el) => el.textContent)) === JSON.stringify(want)"
        )
        wait_for(bob, same, texts(alice), TIMEOUT_MS)

        at_alice, at_bob = texts(alice), texts(bob)
        assert at_bob == at_alice, "bob and alice disagree"
        assert ids(bob) == ids(alice)
        assert ids(alice) == sorted(set(ids(alice))), "a message shown twice or out of order"
        assert at_alice == taken, (
            f"taken by alice's page but not shown: {sorted(set(taken) - set(at_alice))}; "
            f"shown but refused: {sorted(set(at_alice) & set(refused))}"
        )
        during = [s for s in sent if s.taken and s.at > restarter.started_at]
        assert len(during) > AFTER, "no message was sent while the workers were replaced"

        # Every worker was replaced, each time; every close was a 1012, then back.
        assert len(restarter.pids) == RESTARTS + 1
        for before, after in zip(restarter.pids, restarter.pids[1:], strict=False):
            assert len(before) == len(after) == 2 and not before & after, restarter.pids
        assert len(re.findall(r"closes its WebSockets with 1012", server.log)) == 2 * RESTARTS
        for name, page in (("alice", alice), ("bob", bob)):
            states = page.evaluate("window.states")
            codes = [code for state, code in states if state == "closed"]
            assert len(codes) >= RESTARTS and set(codes) == {1012}, (name, states)
            assert states[-1] == ["open", None], (name, states)
    finally:
        if not restarter.done.is_set():
            restarter.cancelled = True
            for go in restarter.go:
                go.set()
        thread.join(RESTART_TIMEOUT)
        server.stop()


# The old worker's side of the race, played in the page on its current socket:
# the answer to "stored, answer lost" (its "sent" and its echo) never arrives,
# as when the worker closes while storing it; "dropped on the way" never
# leaves, as when the worker has sent its close frame and drops what comes.
LOSE_ON_THIS_SOCKET = """() => {
  const ws = chat.conn.ws;
  const send = ws.send.bind(ws);
  ws.send = (data) => {
    if (JSON.parse(data).text !== "dropped on the way") send(data);
  };
  const onMessage = chat.conn.onMessage;
  chat.conn.onMessage = (msg) => {
    const lost = msg.type === "sent" || msg.text === "stored, answer lost";
    if (!(lost && chat.conn.ws === ws)) onMessage(msg);
  };
}"""


def test_says_cut_off_by_the_restart_are_sent_once(
    redis_url: str, tmp_path: Path, new_page: Any
) -> None:
    server = ChatServer(tmp_path / "chat.log", redis_url=redis_url, workers=2)
    server.start()
    try:
        alice = new_page(server.url, "alice")
        bob = new_page(server.url, "bob")
        for page in (alice, bob):
            page.evaluate(RECORD_STATES)
        alice.evaluate(LOSE_ON_THIS_SOCKET)
        for text in ("stored, answer lost", "dropped on the way"):
            assert type_message(alice, text).taken
        bob.wait_for_function(
            "() => [...document.querySelectorAll('#messages li .text')]"
            ".some((el) => el.textContent === 'stored, answer lost')"
        )
        assert texts(alice) == []

        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGHUP)
        wait_until(
            lambda: "restart done: 2 workers replaced" in server.log, RESTART_TIMEOUT, "restart"
        )
        both = ["stored, answer lost", "dropped on the way"]
        same = (
            "(want) => JSON.stringify([...document.querySelectorAll('#messages li .text')]"
            ".map((el) => el.textContent)) === JSON.stringify(want)"
        )
        for page in (alice, bob):
            wait_for(page, same, both, TIMEOUT_MS)
            assert texts(page) == both
            wait_until(lambda page=page: back(page, 1), TIMEOUT_MS / 1000, "a reconnection")
        assert ids(alice) == ids(bob) and ids(alice)[1] == ids(alice)[0] + 1
        assert alice.evaluate("chat.state.outbox.size") == 0  # every say answered
    finally:
        server.stop()
