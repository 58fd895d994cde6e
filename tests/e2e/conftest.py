"""Fixtures of the browser tests: the chat server as a child process, and headless Chromium.

These tests are plain (synchronous) tests: Playwright's sync API runs its own
event loop, so the server runs in a subprocess (``python -m peregrine_rt
examples.chat.app:Chat``), started on a free port and stopped by PID.

Chromium is Debian's (``/usr/bin/chromium``; no browser is downloaded).
Without it, or without Playwright, the tests are skipped, unless the ``CI``
environment variable is set: there they fail.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from peregrine_rt.testing._redis import in_ci

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 10_000  # every wait of a page
CHAT_SECRET = "e2e-chat-secret-0123456789abcdef"  # every node's: one person on all of them


def _missing(what: str, install: str) -> None:
    if in_ci():
        pytest.fail(f"{what} is not installed, and CI must run the browser tests: {install}")
    pytest.skip(f"{what} is not installed (CI would fail here: {install})")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class AppServer:
    """``python -m peregrine_rt APP`` on a fixed free port, restartable, stopped by PID.

    Args:
        log: where the process writes (appended to across restarts).
        app: the ``module:attribute`` to serve.
        env: variables added to the environment at each start (``REDIS_URL``
            is never passed on: a hub reads it).
        redis_url: serve with ``--redis``.
        workers: above 1, a supervisor (``self.proc``) and worker processes.
    """

    def __init__(
        self,
        log: Path,
        app: str,
        *,
        env: dict[str, str] | None = None,
        redis_url: str | None = None,
        workers: int = 1,
    ) -> None:
        self.port = free_port()
        self.log_path = log
        self.app = app
        self.env = dict(env or {})
        self.redis_url = redis_url
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def start(self, timeout: float = 15.0) -> None:
        self.starts += 1
        command = [sys.executable, "-m", "peregrine_rt", self.app]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        if self.redis_url:
            command += ["--redis", self.redis_url]
        if self.workers > 1:
            command += ["--workers", str(self.workers)]
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
        env.update(self.env)
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                command,
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        # With workers, the supervisor's line: it says so once every worker serves.
        serving = rf"with {self.workers} workers on" if self.workers > 1 else "on"
        pattern = re.compile(rf"serving \S+ {serving} http://127\.0\.0\.1:{self.port}\b")
        while len(pattern.findall(self.log)) < self.starts:
            assert self.proc.poll() is None, f"{self.app} exited:\n{self.log}"
            assert time.monotonic() < deadline, f"{self.app} did not start:\n{self.log}"
            time.sleep(0.05)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """``sig`` by PID; SIGKILL if it has not exited within 10 s."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


class ChatServer(AppServer):
    """``examples.chat.app:Chat``; every server (and worker) signs sessions with
    :data:`CHAT_SECRET`, so a browser stays the same person across restarts and nodes,
    and keeps its SQLite history in a directory of the test's own."""

    def __init__(self, log: Path, *, redis_url: str | None = None, workers: int = 1) -> None:
        super().__init__(
            log,
            "examples.chat.app:Chat",
            # Its own history file, next to its log: never the repository's data/chat.
            env={"CHAT_SECRET": CHAT_SECRET, "CHAT_DATA": str(log.parent / "chat-data")},
            redis_url=redis_url,
            workers=workers,
        )


@pytest.fixture
def chat_server(tmp_path: Path) -> Iterator[ChatServer]:
    """The chat on one process with the in-memory hub."""
    server = ChatServer(tmp_path / "chat.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).is_file():
        _missing("chromium", "apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright (Python)", "pip install playwright")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def new_page(browser: Any) -> Iterator[Any]:
    """``new_page(url, nick)``: a page in its own browser context, logged in as ``nick``.

    ``new_page(url, nick, context=page.context)``: another tab of that page's
    browser (the same cookies: the same person).
    """
    contexts: list[Any] = []

    def open_page(url: str, nick: str, context: Any = None) -> Any:
        if context is None:
            context = browser.new_context(viewport={"width": 1200, "height": 720})
            contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url)
        page.fill("#nick-input", nick)
        page.click("#login button")
        page.wait_for_function("document.querySelector('#status').dataset.state === 'open'")
        page.wait_for_function(
            "(nick) => [...document.querySelectorAll('#online li')]"
            ".some((li) => li.textContent === nick)",
            arg=nick,
        )
        return page

    yield open_page
    for context in contexts:
        context.close()
