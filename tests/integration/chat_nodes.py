"""Chat nodes as real processes, and a chat client that behaves as the browser's does.

Shared by the tests that run the chat (``examples.chat.app:Chat``) on several
nodes through Redis: ``tests/hostile/test_redis_freeze.py``,
``tests/hostile/test_redis_restart_ack.py`` and
``tests/integration/test_redis_failover.py``.

* :class:`ChatNode`: ``python -m peregrine_rt examples.chat.app:Chat --redis
  URL`` on a free loopback port, its output in a log file, stopped by PID;
  the app served is ``fast_chat.FastChat``, the chat with its per-connection
  rate lifted (posts follow each other as fast as they are answered).
  Every node gets :data:`CHAT_SECRET`, so one person (a signed
  ``chat_session`` cookie) is the same person on every node.
* :func:`open_peer`: a :mod:`peregrine_rt.client` socket that joins ``chat``
  with a nick, then ``room:lobby``, and does what ``static/app.js`` does with
  peregrine.js: keeps every ``new_msg`` it is shown, and when a rejoin says
  ``recovered: false`` asks ``history`` again (the page refills the room).
  It remembers what it posted and how each post was answered.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from peregrine_rt import Sessions
from peregrine_rt.client import (
    Channel,
    ClientError,
    Disconnected,
    JoinReply,
    PushError,
    PushTimeout,
    Socket,
    open_socket,
)
from peregrine_rt.testing import wait_until

REPO = Path(__file__).resolve().parents[2]
APP = "tests.integration.fast_chat:FastChat"  # examples.chat.app:Chat, its rate limit lifted
CHAT_SECRET = "redis-tests-chat-secret-0123456789"
"""Every node's ``CHAT_SECRET``: a person's cookie is good on all of them."""
ROOM = "room:lobby"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cookie_of(person: str) -> dict[str, str]:
    """The handshake header of ``person``: a ``chat_session`` cookie signed as the nodes sign it."""
    sessions = Sessions([CHAT_SECRET], cookie="chat_session")
    return {"Cookie": f"chat_session={sessions.encode({'sid': person})}"}


class ChatNode:
    """``python -m peregrine_rt examples.chat.app:Chat --redis URL`` as a child process.

    Args:
        log: the file its output goes to (appended to).
        redis_url: ``--redis``.
        options: more command-line options (``--redis-timeout 0.5``...).
    """

    def __init__(self, log: Path, redis_url: str, *options: str) -> None:
        self.log_path = log
        self.port = free_port()
        self.argv = [sys.executable, "-m", "peregrine_rt", APP, "--host", "127.0.0.1"]
        self.argv += ["--port", str(self.port), "--redis", redis_url, *options]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The Channels endpoint, for ``open_socket``."""
        return f"ws://127.0.0.1:{self.port}/socket"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    async def start(self, timeout: float = 20.0) -> None:
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
        env.update(CHAT_SECRET=CHAT_SECRET, CHAT_DATA=str(self.log_path.parent / "chat-data"))
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        serving = re.compile(rf"serving \S+ on http://127\.0\.0\.1:{self.port}\b")

        def up() -> bool:
            assert self.proc is not None and self.proc.poll() is None, f"exited:\n{self.log}"
            return serving.search(self.log) is not None

        await wait_until(up, timeout=timeout, message=f"{APP} did not start:\n{self.log}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM by PID; SIGKILL if it has not exited within 10 s."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


@dataclass
class ChatPeer:
    """A chat client in ``room:lobby``: what it was shown, what it posted, how that was answered."""

    nick: str
    socket: Socket
    chat: Channel
    lobby: Channel
    shown: set[str] = field(default_factory=set)  # texts shown, live or from history
    live: Counter[str] = field(default_factory=Counter)  # text -> times delivered live
    offsets: dict[str, tuple[str | None, int | None]] = field(default_factory=dict)
    acked: dict[str, int] = field(default_factory=dict)  # text -> id of the ok reply
    refused: dict[str, str] = field(default_factory=dict)  # text -> reason
    unanswered: set[str] = field(default_factory=set)  # timed out, or the link dropped
    sent_at: dict[str, float] = field(default_factory=dict)  # text -> when posted (trio clock)
    answered_at: dict[str, float] = field(default_factory=dict)
    rejoins: list[JoinReply] = field(default_factory=list)
    history_asked: int = 0

    def answered(self, text: str) -> bool:
        return text in self.acked or text in self.refused or text in self.unanswered

    async def post(self, text: str, *, timeout: float = 10.0) -> str:
        """``new_msg`` with ``text`` (also its ``ref``); ``"ok"`` or the refusal's reason."""
        self.sent_at[text] = trio.current_time()
        try:
            reply = await self.lobby.push("new_msg", {"text": text, "ref": text}, timeout=timeout)
        except PushError as exc:
            self.refused[text] = exc.reason
            return exc.reason
        except (PushTimeout, Disconnected) as exc:
            self.unanswered.add(text)
            return type(exc).__name__
        finally:
            self.answered_at[text] = trio.current_time()
        self.acked[text] = reply["id"]
        return "ok"

    async def refill(self) -> None:
        """What the page does after ``recovered: false``: ask the room's history again."""
        reply = self.lobby.join_reply
        assert reply is not None
        before = int(reply.response["offset"]) + 1
        self.history_asked += 1
        try:
            answer = await self.lobby.push("history", {"before": before, "limit": 100})
        except ClientError:
            return  # the link dropped again: the next rejoin asks again
        for message in answer["messages"]:
            self.shown.add(message["text"])

    async def _read(self, *, task_status: trio.TaskStatus[None]) -> None:
        async with self.lobby.messages("new_msg") as messages:
            task_status.started()
            async for message in messages:
                text = message.payload["text"]
                self.shown.add(text)
                self.live[text] += 1
                self.offsets[text] = (self.lobby.position[1], message.offset)

    async def _follow_joins(self, *, task_status: trio.TaskStatus[None]) -> None:
        async with self.lobby.joins() as joins:
            task_status.started()
            async for reply in joins:
                if reply.rejoin:
                    self.rejoins.append(reply)
                    if reply.recovered is False:
                        await self.refill()


@asynccontextmanager
async def open_peer(url: str, nick: str, person: str | None = None) -> AsyncIterator[ChatPeer]:
    """A :class:`ChatPeer` named ``nick`` (the person ``person``, default the nick) on ``url``."""
    async with (
        open_socket(url, headers=cookie_of(person or nick)) as sock,
        trio.open_nursery() as nursery,
    ):
        chat = sock.channel("chat", {"nick": nick})
        await chat.join()
        peer = ChatPeer(nick, sock, chat, sock.channel(ROOM, {}))
        await nursery.start(peer._read)  # subscribed before the join
        await nursery.start(peer._follow_joins)
        await peer.lobby.join()
        yield peer
        nursery.cancel_scope.cancel()


def missing(peers: list[ChatPeer], acked: set[str]) -> dict[str, list[str]]:
    """Per peer, the acknowledged texts it was never shown."""
    return {p.nick: sorted(acked - p.shown) for p in peers if acked - p.shown}


def acknowledged(peers: list[ChatPeer]) -> set[str]:
    return {text for p in peers for text in p.acked}
