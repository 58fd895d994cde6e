"""``--metrics`` with ``--workers 2``: one scrape covers every worker, as real processes.

A supervisor (``peregrine-rt tests.integration.apps_workers:Pid --workers 2
--metrics``) is started with the ``spawn`` fixture; its app answers every
request with the PID of the worker that served it, so a test knows which
worker took which request.  Requests go over fresh connections
(``Connection: close``), which the kernel spreads over the two workers'
accept queues.  Scrapes are read with prometheus_client's parser (what a
scraper does).

The arithmetic of a scrape: a request is counted once it has been answered,
so the n-th scrape made on the app's port sees every app request plus the
n - 1 scrapes before it (each a GET 200), once the other worker's figures
(shared once a second) have caught up; it never sees more.  Scrapes made on
``--metrics-port`` are served by a small server of their own and are not
counted at all.

Only the PIDs of the supervisor's own workers are ever signalled, and any
still alive at the end are killed.  Every wait is bounded.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from peregrine_rt._metrics import merge, render
from peregrine_rt.testing import wait_until_blocking

from .conftest import get
from .test_metrics import Figures, parse, value
from .test_workers import APP, Supervised, alive, children, is_worker

REQUESTS = "peregrine_http_requests_total"
COUNT = "peregrine_http_request_duration_seconds_count"
CONNECTIONS = "peregrine_connections"
BUDGET = 200  # requests a test may make before both workers must have answered
TIMEOUT = 10.0  # seconds any one condition may take


# -- processes -----------------------------------------------------------------------


@pytest.fixture
def start(spawn: Any) -> Iterator[Callable[..., Supervised]]:
    """Start ``APP`` with 2 workers and ``extra`` options; every worker is killed at the end."""
    started: list[Supervised] = []

    def run(*extra: str) -> Supervised:
        one = Supervised(
            spawn(APP, "--port", "0", "--workers", "2", "--shutdown-grace", "1", *extra)
        )
        started.append(one)
        return one

    yield run
    for one in started:
        if one.server.proc.poll() is None:
            one.server.proc.send_signal(signal.SIGSTOP)  # no restarts from here on
            one.seen |= children(one.pid)
        for pid in one.seen:
            if alive(pid) and is_worker(pid):
                os.kill(pid, signal.SIGKILL)
        one.server.kill()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- clients -------------------------------------------------------------------------


def fetch(port: int, target: str, *headers: str) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection: status, headers (lower-case names), body."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(get(target, "Connection: close", *headers))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines:
        name, _, text = line.partition(":")
        fields[name.strip().lower()] = text.strip()
    return int(status_line.split()[1]), fields, body


def answering_pid(port: int) -> int:
    status, _, body = fetch(port, "/")
    assert status == 200, body
    return int(body)


def drive(port: int, workers: set[int]) -> dict[int, int]:
    """Requests until every worker of ``workers`` answered one: how many each answered."""
    answered: dict[int, int] = {}
    while set(answered) != workers:
        assert sum(answered.values()) < BUDGET, f"only {answered} answered"
        pid = answering_pid(port)
        assert pid in workers, (pid, workers)
        answered[pid] = answered.get(pid, 0) + 1
    return answered


class Scraper:
    """Scrapes ``/metrics`` over fresh connections, counting the scrapes it made."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.made = 0
        self.last: Figures = {}

    def __call__(self) -> Figures:
        status, headers, body = fetch(self.port, "/metrics")
        assert status == 200, body
        assert headers["content-type"].startswith("text/plain; version=0.0.4")
        self.made += 1
        self.last = parse(body.decode())
        return self.last


def get_200(figures: Figures) -> float:
    return value(figures, REQUESTS, method="GET", status="200")


def until(predicate: Callable[[], Any], what: str) -> None:
    wait_until_blocking(predicate, timeout=TIMEOUT, message=what)


def counted(scrape: Scraper, app_requests: Callable[[], int], *, scrapes_count: bool) -> None:
    """Scrape until the figures add up to ``app_requests()`` exactly; never more.

    ``scrapes_count``: the scrapes go to the app's port (each a GET 200 that
    later scrapes see) rather than to a metrics port of their own.
    """

    def exact() -> bool:
        figures = scrape()
        expected = app_requests() + (scrape.made - 1 if scrapes_count else 0)
        seen = get_200(figures)
        assert seen <= expected, f"counted {seen} GET 200s; only {expected} were answered"
        assert value(figures, COUNT) <= expected
        return seen == expected and value(figures, COUNT) == expected

    until(exact, "the GET 200s of both workers in one scrape")


def open_ws(port: int, stack: ExitStack) -> tuple[int, ClientConnection]:
    """A WebSocket (closed with ``stack``) and the PID of the worker holding it."""
    ws = stack.enter_context(connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5, close_timeout=5))
    ws.send("pid?")
    return int(ws.recv(timeout=5)), ws


def one_ws_per_worker(
    port: int, workers: set[int], stack: ExitStack
) -> tuple[dict[int, ClientConnection], list[ClientConnection]]:
    """A WebSocket held in each worker, and the extra ones opened meanwhile."""
    holders: dict[int, ClientConnection] = {}
    extra: list[ClientConnection] = []
    while set(holders) != workers:
        assert len(holders) + len(extra) < BUDGET, f"only {set(holders)} hold WebSockets"
        pid, ws = open_ws(port, stack)
        if pid in holders:
            extra.append(ws)
        else:
            holders[pid] = ws
    return holders, extra


# -- the tests -----------------------------------------------------------------------


def test_one_scrape_adds_up_both_workers(start: Callable[..., Supervised]) -> None:
    app = start("--metrics")
    port = app.port
    workers = app.workers()
    answered = drive(port, workers)
    total = sum(answered.values())
    assert all(n < total for n in answered.values())  # neither worker alone has them all
    scrape = Scraper(port)
    counted(scrape, lambda: total, scrapes_count=True)

    # A gauge: one WebSocket held in each worker; the sum is theirs.
    with ExitStack() as stack:
        holders, extra = one_ws_per_worker(port, workers, stack)
        for ws in extra:
            ws.close()
        opened = len(holders) + len(extra)

        def websockets(open_now: int, closed: int) -> Callable[[], bool]:
            """Open and closed sockets as given, with every message counted.

            The counters make sure that each worker's figures are the latest:
            a gauge alone may be read from a snapshot taken before a socket opened.
            """

            def check() -> bool:
                figures = scrape()
                assert get_200(figures) <= total + scrape.made - 1
                return (
                    value(figures, CONNECTIONS, kind="websocket") == open_now
                    and value(figures, "peregrine_ws_closes_total", code="1000") == closed
                    # Each socket sent one message and got one answer.
                    and value(figures, "peregrine_ws_messages_received_total") == opened
                    and value(figures, "peregrine_ws_messages_sent_total") == opened
                )

            return check

        until(websockets(2, len(extra)), "2 open WebSockets, one per worker")
        first, second = holders.values()
        first.close()
        until(websockets(1, len(extra) + 1), "1 open WebSocket")
        second.close()
        until(websockets(0, opened), "no open WebSocket")
    returncode, log = app.stop()
    assert returncode == 0, log
    assert "Traceback" not in log


def test_a_metrics_port_of_their_own_serves_both_workers(
    start: Callable[..., Supervised],
) -> None:
    metrics_port = free_port()
    app = start("--metrics", "--health", "--metrics-port", str(metrics_port))
    port = app.port
    workers = app.workers()
    # The app's port is the app's: /metrics and /readyz there are answered by it.
    app_answers: dict[int, int] = {}
    for target in ("/metrics", "/readyz", "/healthz"):
        status, _, body = fetch(port, target)
        assert status == 200
        pid = int(body)  # the app's answer, a worker's PID, not figures
        assert pid in workers
        app_answers[pid] = app_answers.get(pid, 0) + 1
    answered = drive(port, workers)
    total = sum(answered.values()) + sum(app_answers.values())
    # The metrics port: the figures of both workers, its own requests not counted.
    scrape = Scraper(metrics_port)
    counted(scrape, lambda: total, scrapes_count=False)
    for _ in range(6):  # fresh connections, whichever worker takes each
        status, headers, body = fetch(metrics_port, "/readyz")
        assert status == 200, body
        assert headers["content-type"] == "application/json"
        assert json.loads(body) == {
            "status": "ready",
            "listening": True,
            "hub": True,
            "not_shutting_down": True,
        }
        status, _, body = fetch(metrics_port, "/healthz")
        assert (status, json.loads(body)) == (200, {"status": "ok"})
        status, _, _ = fetch(metrics_port, "/")
        assert status == 404  # nothing of the app there
    counted(scrape, lambda: total, scrapes_count=False)  # still none of its own counted
    returncode, log = app.stop()
    assert returncode == 0, log


def shared_figures(directory: Path) -> Figures:
    """What a scrape made of the workers' shared files alone would show."""
    snapshots = [json.loads(path.read_text()) for path in directory.glob("*.json")]
    return parse(render(merge(snapshots)).decode())


def shared_get_200(directory: Path) -> int:
    """GET 200s in the workers' shared files (read directly: no request counted)."""
    total = 0
    for path in directory.glob("*.json"):
        rows = json.loads(path.read_text())["counters"]["requests"]
        total += sum(n for method, status, n in rows if (method, status) == ("GET", 200))
    return total


def test_a_killed_workers_counters_stay_and_its_gauges_go(
    start: Callable[..., Supervised], tmp_path: Path
) -> None:
    shared = tmp_path / "metrics"
    app = start("--metrics", "--metrics-dir", str(shared))
    port = app.port
    workers = app.workers()
    answered = drive(port, workers)
    scrape = Scraper(port)
    with ExitStack() as stack:
        holders, extra = one_ws_per_worker(port, workers, stack)
        for ws in extra:
            ws.close()
        sockets = len(holders) + len(extra)

        def settled() -> bool:
            figures = scrape()
            return (
                value(figures, CONNECTIONS, kind="websocket") == 2
                and value(figures, "peregrine_ws_closes_total", code="1000") == len(extra)
                and get_200(figures) == sum(answered.values()) + scrape.made - 1
            )

        until(settled, "both workers' figures in a scrape")
        # What a worker shares is up to a second old: wait until the victim's
        # file has every request it answered (the promise is about those).
        everything = sum(answered.values()) + scrape.made
        until(lambda: shared_get_200(shared) == everything, "the shared files up to date")
        before = shared_figures(shared)  # every worker's latest figures, the victim's too
        victim = min(workers)
        app.kill_worker(victim)  # SIGKILL: it writes nothing more
        app.wait_for_log(f"(pid {victim}) was killed by SIGKILL; restarting it in")

        def replaced() -> set[int] | None:
            pids = children(app.pid)
            return pids if len(pids) == 2 and victim not in pids else None

        wait_until_blocking(replaced, timeout=TIMEOUT, message="a new worker")
        after_kill = children(app.pid)
        app.seen |= after_kill
        (new,) = after_kill - workers
        app.wait_for_log(f"(pid {new}) is serving")
        served_after = drive(port, after_kill)

        def without_the_victims_gauges() -> bool:
            figures = scrape()
            for name, labels in before:
                if name.endswith(("_total", "_count", "_bucket")):
                    # Counters never go down: the dead worker's counts stay.
                    assert figures.get((name, labels), 0.0) >= before[(name, labels)], name
            expected = sum(answered.values()) + sum(served_after.values()) + scrape.made - 1
            # The victim's socket was lost, not closed: the survivor's is still open.
            return (
                value(figures, CONNECTIONS, kind="websocket") == 1
                and get_200(figures) == expected
                and value(figures, "peregrine_ws_messages_received_total") == sockets
                and value(figures, "peregrine_ws_closes_total", code="1000") == len(extra)
            )

        until(without_the_victims_gauges, "the victim's WebSocket out, its counts in")
    returncode, log = app.stop()
    assert returncode == 0, log


def test_consecutive_scrapes_never_go_down(start: Callable[..., Supervised]) -> None:
    """Whichever worker answers, a scrape shows at least what the one before it showed.

    A worker's own counts are live in a scrape it serves, and up to
    ``SHARE_INTERVAL`` old in a scrape the other worker serves; if the two
    alternate, a counter would seem to go down, which Prometheus's ``rate()``
    reads as a counter reset (the whole value counted again as an increase).
    """
    app = start("--metrics")
    port = app.port
    workers = app.workers()
    scrape = Scraper(port)
    seen: list[float] = []
    for _ in range(15):
        drive(port, workers)
        for _ in range(4):
            seen.append(get_200(scrape()))
    drops = [(a, b) for a, b in itertools.pairwise(seen) if b < a]
    assert not drops, f"{len(drops)} scrapes went down, e.g. {drops[:3]}"
    app.stop()


def test_the_status_page_token_is_logged_once_and_opens_every_worker(
    start: Callable[..., Supervised],
) -> None:
    app = start("--status-page", "--access-log", "--log-format", "json")
    app.wait_for_log("workers on http://")
    workers = app.workers()
    [line] = [line for line in app.log.splitlines() if "status page at" in line]
    message = json.loads(line)["message"]
    url, _, token = message.removeprefix("status page at ").partition("?token=")
    assert token and url.endswith("/status")
    port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
    page = f"/status?token={token}"

    def served_by_both() -> bool:
        status, headers, body = fetch(port, page)
        assert status == 200, body
        assert headers["content-type"] == "text/html; charset=utf-8"
        status, _, _ = fetch(port, "/status?token=not-" + token)
        assert status == 403
        app.read_log_for(0.05)
        pids = set()
        for entry in map(json.loads, app.log.splitlines()):
            if entry["logger"] == "peregrine_rt.access" and entry["status"] == 200:
                assert entry["path"] == "/status?token=REDACTED"
                pids.add(entry["pid"])
        return pids == workers

    until(served_by_both, "the page served with the token by both workers")
    returncode, log = app.stop()
    assert returncode == 0, log
    assert log.count("status page at") == 1
    assert log.count(token) == 1  # only there: the access lines redact it
