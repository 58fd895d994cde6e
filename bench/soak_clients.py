"""The soak test's clients (``bench/soak.py``): every kind of load, counting what happens.

One :class:`Workload` holds them all, in one asyncio loop: each client kind
is a coroutine that loops (reconnecting after an error, which it counts)
until ``stop`` is set; the chat clients stay until ``close_all``, so the
script can wait for them to catch up.  :meth:`Workload.soak_info` asks the
workers for their state.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from _procs import HOST

ROOMS = ("lobby", "soak")
CHAT_PATH = "/socket/websocket?vsn=2.0.0"  # the chat's Channels endpoint
WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="


@dataclass
class Load:
    """How much of each kind, scaled by ``--load``."""

    http_conns: int = 8
    http_rate: float = 50.0  # requests/s per connection
    echo_conns: int = 10
    echo_rate: float = 20.0
    fan_subs: int = 50
    sse_clients: int = 5
    bcast_rate: float = 5.0  # publishes/s, each to every subscriber
    bcast_size: int = 256
    chat_clients: int = 10
    chat_rate: float = 1.0  # new_msg/s per chat client (the chat allows 5)
    slow_every: float = 5.0  # a new slow reader this often (WebSocket and HTTP in turn)
    slow_pause: float = 20.0  # seconds it reads nothing
    vanish_rate: float = 4.0  # vanishing clients per second

    def scaled(self, k: float) -> Load:
        return Load(
            max(1, round(self.http_conns * k)), self.http_rate, max(1, round(self.echo_conns * k)),
            self.echo_rate, max(1, round(self.fan_subs * k)), max(1, round(self.sse_clients * k)),
            self.bcast_rate, self.bcast_size, max(2, round(self.chat_clients * k)),
            self.chat_rate, self.slow_every / k, self.slow_pause, self.vanish_rate * k,
        )  # fmt: skip


@dataclass
class Counts:
    """Running totals; a report row is the difference of two snapshots."""

    http: int = 0
    echo: int = 0
    fan: int = 0
    sse: int = 0
    bcast: int = 0
    chat_said: int = 0
    chat_acked: int = 0
    chat_recv: int = 0
    errors: int = 0


@dataclass
class ChatState:
    """One chat client, across its reconnects: what it was shown, where it is in each room."""

    nick: str
    position: dict[str, tuple[str, int]] = field(default_factory=dict)  # room -> epoch, offset
    received: dict[str, tuple[str, str, int]] = field(
        default_factory=dict
    )  # text -> room, epoch, id
    live_repeats: int = 0  # a text delivered live twice (at two offsets)
    catch_up_repeats: int = 0  # a text repeated by history (after recovered: false)
    dropped_as_seen: int = 0  # a publication at or below the offset already seen: dropped
    pending: dict[str, tuple[str, str]] = field(default_factory=dict)  # ref -> (room, text)
    reconnects: int = 0
    not_recovered: int = 0  # rejoins answered recovered: false (then history is asked)
    cookie: str | None = None  # the chat's session cookie: its nick stays this client's


class Workload:
    def __init__(self, port: int, load: Load) -> None:
        self.port = port
        self.load = load
        self.t0 = time.monotonic()
        self.stop = asyncio.Event()  # the load stops
        self.close_all = asyncio.Event()  # the chat clients close too
        self.counts = Counts()
        self.errors: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()  # slow readers and vanishing clients
        self.acked: dict[str, tuple[str, int]] = {}  # text -> room, id (the ok reply's)
        self.chats = [ChatState(f"soak{i}") for i in range(load.chat_clients)]
        self.events: list[tuple[float, str]] = []
        self.tasks: set[asyncio.Task[None]] = set()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def event(self, text: str) -> None:
        self.events.append((self.now(), text))
        print(f"  [{self.now():6.1f} s] {text}", flush=True)

    def error(self, kind: str) -> None:
        self.errors[kind] += 1
        self.counts.errors += 1

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- HTTP over raw streams ---------------------------------------------------------

    async def open(
        self, rcvbuf: int | None = None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if rcvbuf is None:
            return await asyncio.open_connection(HOST, self.port)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (HOST, self.port))
        return await asyncio.open_connection(sock=sock, limit=rcvbuf)

    async def request(
        self, r: asyncio.StreamReader, w: asyncio.StreamWriter, method: str, path: str,
        body: bytes = b"", close: bool = False,
    ) -> tuple[int, bytes]:  # fmt: skip
        head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {len(body)}\r\n"
        w.write((head + ("Connection: close\r\n" if close else "") + "\r\n").encode() + body)
        lines = (await r.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        length = next(int(h[15:]) for h in lines if h.lower().startswith("content-length:"))
        return int(lines[0].split()[1]), await r.readexactly(length)

    async def paced(self, rate: float) -> float:
        """A random phase, then the next send time."""
        await asyncio.sleep(random.random() / rate)
        return time.monotonic()

    async def http_client(self) -> None:
        while not self.stop.is_set():
            try:
                r, w = await self.open()
                try:
                    at = await self.paced(self.load.http_rate)
                    while not self.stop.is_set():
                        status, _ = await self.request(r, w, "GET", "/hello")
                        if status != 200:
                            self.error(f"http {status}")
                        self.counts.http += 1
                        at += 1.0 / self.load.http_rate
                        await asyncio.sleep(max(0.0, at - time.monotonic()))
                finally:
                    w.close()
            except (OSError, asyncio.IncompleteReadError, ValueError, StopIteration):
                self.error("http conn")
                await asyncio.sleep(0.2)

    async def publisher(self) -> None:
        seq = 0
        while not self.stop.is_set():
            try:
                r, w = await self.open()
                try:
                    at = time.monotonic()
                    while not self.stop.is_set():
                        seq += 1
                        body = f"f{seq}:".ljust(self.load.bcast_size, "x").encode()
                        status, _ = await self.request(r, w, "POST", "/bcast", body)
                        self.counts.bcast += 1
                        if status != 200:
                            self.error(f"bcast {status}")
                        at += 1.0 / self.load.bcast_rate
                        await asyncio.sleep(max(0.0, at - time.monotonic()))
                finally:
                    w.close()
            except (OSError, asyncio.IncompleteReadError, ValueError, StopIteration):
                self.error("bcast conn")
                await asyncio.sleep(0.2)

    async def sse_client(self) -> None:
        while not self.stop.is_set():
            try:
                r, w = await self.open()
                try:
                    w.write(f"GET /events HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
                    while not self.stop.is_set():
                        line = await asyncio.wait_for(r.readline(), 1.0)
                        if not line:
                            raise ConnectionResetError("the event stream ended")
                        if line.startswith(b"event: fan"):
                            self.counts.sse += 1
                except TimeoutError:
                    continue  # look at stop again (a fresh stream: events are not replayed)
                finally:
                    w.close()
            except (OSError, asyncio.IncompleteReadError):
                self.error("sse conn")
                await asyncio.sleep(0.2)

    # -- WebSockets --------------------------------------------------------------------

    def ws_url(self, path: str) -> str:
        return f"ws://{HOST}:{self.port}{path}"

    async def echo_client(self) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import WebSocketException

        payload = "e" * 32
        while not self.stop.is_set():
            try:
                async with connect(self.ws_url("/echo"), compression=None) as ws:
                    at = await self.paced(self.load.echo_rate)
                    while not self.stop.is_set():
                        await ws.send(payload)
                        if await ws.recv() != payload:
                            self.error("echo mismatch")
                        self.counts.echo += 1
                        at += 1.0 / self.load.echo_rate
                        await asyncio.sleep(max(0.0, at - time.monotonic()))
            except (OSError, WebSocketException, TimeoutError):
                self.error("echo conn")
                await asyncio.sleep(0.2)

    async def fan_client(self) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import WebSocketException

        while not self.stop.is_set():
            try:
                async with connect(self.ws_url("/fan"), compression=None, max_queue=None) as ws:
                    while not self.stop.is_set():
                        try:
                            await asyncio.wait_for(ws.recv(), 1.0)
                            self.counts.fan += 1
                        except TimeoutError:
                            pass
            except (OSError, WebSocketException):
                self.error("fan conn")
                await asyncio.sleep(0.2)

    async def slow_ws(self) -> None:
        """A subscriber that reads nothing for ``slow_pause`` s, then drains 2 s and leaves."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, WebSocketException

        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (HOST, self.port))
            async with connect(self.ws_url("/fan"), sock=sock, compression=None, max_queue=1) as ws:
                await asyncio.sleep(self.load.slow_pause)
                end = time.monotonic() + 2
                try:
                    while time.monotonic() < end:
                        await asyncio.wait_for(ws.recv(), end - time.monotonic())
                    self.outcomes["slow ws: kept up after the pause"] += 1
                except TimeoutError:
                    self.outcomes["slow ws: kept up after the pause"] += 1
                except ConnectionClosed as exc:
                    how = f"code {exc.rcvd.code}" if exc.rcvd else "no close frame"
                    self.outcomes[f"slow ws: closed by the server ({how})"] += 1
                    self.event(f"a slow WebSocket reader was closed by the server ({how})")
        except (OSError, WebSocketException) as exc:
            self.outcomes[f"slow ws: {type(exc).__name__}"] += 1
        finally:
            sock.close()

    async def slow_http(self) -> None:
        """``GET /big`` with a 4 KiB receive buffer, nothing read for ``slow_pause`` s."""
        try:
            r, w = await self.open(rcvbuf=4096)
            try:
                w.write(f"GET /big HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
                await asyncio.sleep(self.load.slow_pause)
                got = 0
                while chunk := await asyncio.wait_for(r.read(65536), 5):
                    got += len(chunk)
                    if got >= 1 << 20:
                        break
                kind = "read it all" if got >= 1 << 20 else "cut by the server"
                self.outcomes[f"slow http: {kind}"] += 1
            finally:
                w.close()
        except (OSError, TimeoutError) as exc:
            self.outcomes[f"slow http: {type(exc).__name__}"] += 1

    async def slow_readers(self) -> None:
        n = 0
        while not self.stop.is_set():
            self.spawn(self.slow_ws() if n % 2 == 0 else self.slow_http())
            n += 1
            await asyncio.sleep(self.load.slow_every)

    async def vanish(self, kind: int) -> None:
        """Half of something, then a close (even kinds) or a reset (odd)."""
        reset = kind % 2 == 1
        name = ("half a WebSocket frame", "half a request head", "half a body", "mid-receive")[
            kind // 2 % 4
        ]
        try:
            r, w = await self.open()
            upgrade = (
                f"GET /fan HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade"
                f"\r\nSec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
            if name in ("half a WebSocket frame", "mid-receive"):
                w.write(upgrade)
                await r.readuntil(b"\r\n\r\n")
                if name == "half a WebSocket frame":
                    w.write(b"\x81\xfd\x01\x02\x03\x04" + b"h" * 40)  # 125 bytes announced
                else:
                    await asyncio.wait_for(r.read(100), 2)  # a fan-out message is arriving
            elif name == "half a request head":
                w.write(f"GET /hello HTTP/1.1\r\nHost: {HOST}\r\nX-Half: ye".encode())
            else:
                w.write(
                    f"POST /bcast HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 1000\r\n\r\nf0".encode()
                )
            await w.drain()
            if reset:
                sock = w.get_extra_info("socket")
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
                w.transport.abort()
            else:
                w.close()
            self.outcomes[f"vanished: {name}, {'reset' if reset else 'closed'}"] += 1
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            self.outcomes[f"vanish ({name}): {type(exc).__name__}"] += 1

    async def vanishers(self) -> None:
        n = 0
        while not self.stop.is_set():
            self.spawn(self.vanish(n % 8))
            n += 1
            await asyncio.sleep(1.0 / self.load.vanish_rate)

    # -- chat (Phoenix V2 frames over the websockets client, as peregrine.js speaks them) ------

    def record(self, st: ChatState, room: str, epoch: str, mid: int, text: str, live: bool) -> None:
        if text in st.received:
            if live:
                st.live_repeats += 1
            else:
                st.catch_up_repeats += 1
            return
        st.received[text] = (room, epoch, mid)
        self.counts.chat_recv += 1

    def deliver(self, st: ChatState, room: str, ref: str, text: str) -> None:
        """A live ``new_msg`` with ``"p:<offset>"``: dropped at or below the offset seen (peregrine.js)."""
        offset = int(ref[2:])
        epoch, seen = st.position.get(room, ("", 0))
        if offset <= seen:
            st.dropped_as_seen += 1
            return
        st.position[room] = (epoch, offset)
        self.record(st, room, epoch, offset, text, live=True)

    async def chat_session(self, st: ChatState, ws: Any, ready: asyncio.Event) -> None:
        """One connection: join ``chat`` and the rooms (with ``since``), then talk until told."""
        refs = iter(range(1, 1 << 62))
        replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        join_refs: dict[str, str] = {}  # topic -> join ref

        async def call(
            join_ref: str | None, topic: str, event: str, payload: Any
        ) -> dict[str, Any]:
            ref = str(next(refs))
            replies[ref] = asyncio.get_running_loop().create_future()
            await ws.send(json.dumps([join_ref, ref, topic, event, payload]))
            return await asyncio.wait_for(replies[ref], 10)

        async def read() -> None:
            async for raw in ws:
                join_ref, ref, topic, event, payload = json.loads(raw)
                if event == "phx_reply":
                    future = replies.pop(ref, None)
                    if future is not None and not future.done():
                        future.set_result(payload)
                elif event == "new_msg" and topic.startswith("room:") and ref:
                    self.deliver(st, topic[5:], ref, payload["text"])
                elif event == "phx_error" and join_ref == join_refs.get(topic):
                    raise ConnectionResetError(f"{topic} crashed on the server")

        reader = asyncio.ensure_future(read())

        async def joined(topic: str, params: dict[str, Any]) -> dict[str, Any]:
            ref = str(next(refs))
            join_refs[topic] = ref
            replies[ref] = asyncio.get_running_loop().create_future()
            await ws.send(json.dumps([ref, ref, topic, "phx_join", params]))
            answer = await asyncio.wait_for(replies[ref], 10)
            if answer["status"] != "ok":
                raise ConnectionResetError(f"joining {topic} was refused: {answer['response']}")
            return dict(answer["response"])

        async def refill(room: str, offset: int) -> None:
            """After recovered: false, the newest page of history, as the page asks it."""
            answer = await call(
                join_refs[f"room:{room}"], f"room:{room}", "history", {"before": offset + 1}
            )
            if answer["status"] == "ok":
                epoch = st.position[room][0]
                for m in answer["response"]["messages"]:
                    self.record(st, room, epoch, m["id"], m["text"], live=False)

        try:
            await joined("chat", {"nick": st.nick})
            for room in ROOMS:
                params: dict[str, Any] = {}
                if room in st.position:
                    epoch, offset = st.position[room]
                    params["since"] = {"offset": offset, "epoch": epoch}
                response = await joined(f"room:{room}", params)
                recovered = response.get("recovered") is True
                if not recovered:  # a first join, or the missed ones are gone: from here on
                    st.position[room] = (response["epoch"], response["offset"])
                else:
                    st.position[room] = (response["epoch"], st.position[room][1])
                if params and not recovered:
                    st.not_recovered += 1
                    await refill(room, response["offset"])
            await ready.wait()
            seq = 0  # the text names the connection too: unique across reconnects
            at = await self.paced(self.load.chat_rate)
            beat = time.monotonic() + 30
            while not self.stop.is_set() and not reader.done():
                seq += 1
                room = ROOMS[seq % 2]
                text = f"{st.nick} says {seq} ({st.reconnects})"
                st.pending[str(seq)] = (room, text)
                self.counts.chat_said += 1
                topic = f"room:{room}"
                answer = await call(join_refs[topic], topic, "new_msg", {"text": text, "ref": seq})
                st.pending.pop(str(seq), None)
                if answer["status"] == "ok":
                    self.acked[text] = (room, answer["response"]["id"])
                    self.counts.chat_acked += 1
                else:
                    self.error(f"chat {answer['response'].get('reason')}")
                if time.monotonic() > beat:
                    beat += 30
                    await call(None, "phoenix", "heartbeat", {})
                at += 1.0 / self.load.chat_rate
                await asyncio.sleep(max(0.0, at - time.monotonic()))
            await asyncio.wait(
                [reader, asyncio.ensure_future(self.close_all.wait())],
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            reader.cancel()
        if reader.done() and not reader.cancelled() and reader.exception():
            raise reader.exception()  # type: ignore[misc]

    async def chat_client(self, st: ChatState, ready: asyncio.Event) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import WebSocketException

        while not self.close_all.is_set():
            try:
                headers = {"Cookie": st.cookie} if st.cookie else None
                async with connect(
                    self.ws_url(CHAT_PATH), compression=None, max_queue=None,
                    additional_headers=headers,
                ) as ws:  # fmt: skip
                    assert ws.response is not None
                    set_cookie = ws.response.headers.get("set-cookie")
                    if set_cookie:  # a reconnect is the same person: the nick is still ours
                        st.cookie = set_cookie.partition(";")[0]
                    await self.chat_session(st, ws, ready)
            except (OSError, WebSocketException, TimeoutError):
                pass
            if not self.close_all.is_set():
                st.pending.clear()  # says without an answer: not acknowledged
                st.reconnects += 1
                self.error("chat reconnect")
                await asyncio.sleep(0.3)

    def chat_caught_up(self) -> bool:
        return all(text in st.received for st in self.chats for text in self.acked)

    async def history_check(self) -> dict[str, tuple[str, int]]:
        """What a fresh chat client gets from history: every page of each room's current epoch."""
        from websockets.asyncio.client import connect

        got: dict[str, tuple[str, int]] = {}
        async with connect(self.ws_url(CHAT_PATH), compression=None, max_queue=None) as ws:
            ref = 0

            async def call(topic: str, event: str, payload: Any, join_ref: str | None) -> Any:
                nonlocal ref
                ref += 1
                await ws.send(json.dumps([join_ref, str(ref), topic, event, payload]))
                while True:
                    frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    if frame[3] == "phx_reply" and frame[1] == str(ref):
                        return frame[4]

            await call("chat", "phx_join", {"nick": "checker"}, "0")
            for room in ROOMS:
                topic = f"room:{room}"
                answer = await call(topic, "phx_join", {}, f"j{room}")
                before = answer["response"]["offset"] + 1
                while before > 1:
                    await asyncio.sleep(0.25)  # the chat's rate: 5 events a second
                    page = await call(topic, "history", {"before": before}, f"j{room}")
                    messages = page["response"]["messages"]
                    if not messages:
                        break
                    got.update({m["text"]: (room, m["id"]) for m in messages})
                    before = messages[0]["id"]
        return got

    # -- server state ------------------------------------------------------------------

    async def soak_info(self, want: set[int], tries: int = 40) -> dict[int, dict[str, int]]:
        """``GET /_soak`` on fresh connections until each pid in ``want`` answered."""
        got: dict[int, dict[str, int]] = {}
        for _ in range(tries):
            if want <= set(got):
                break
            try:
                r, w = await self.open()
                try:
                    _, body = await asyncio.wait_for(
                        self.request(r, w, "GET", "/_soak", close=True), 2
                    )
                finally:
                    w.close()
                info = json.loads(body)
                got[info["pid"]] = info
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
                await asyncio.sleep(0.05)
        return got
