"""Server configuration: every option, its default, and why.

:class:`Config` is the one place options live; the docs' configuration reference
is generated from the ``doc`` metadata of its fields, so the two cannot drift.
"""

from __future__ import annotations

import dataclasses
import ssl
from dataclasses import dataclass, field
from typing import Any, Literal

from ._http import (
    MAX_BODY_SIZE,
    MAX_HEADER_COUNT,
    MAX_HEADER_LINE,
    MAX_HEADERS_SIZE,
    MAX_REQUEST_LINE,
)
from ._json import JSON_MAX_DEPTH

__all__ = ["Config"]


def _opt(default: Any, doc: str, group: str = "") -> Any:
    """A field with its documentation and its group in ``--help`` (see ``_settings.GROUPS``)."""
    return field(default=default, metadata={"doc": doc, "group": group})


@dataclass(slots=True)
class Config:
    """How a :class:`~peregrine_rt.Server` listens, limits and times out.

    Every field has a default suited to production behind or without a proxy;
    pass only what you change: ``Config(port=3000, access_log=True)``.
    """

    host: str = _opt(
        "127.0.0.1",
        "Address to listen on. Use '0.0.0.0' or '::' to accept remote clients.",
        group="network",
    )
    port: int = _opt(
        8000, "TCP port; 0 picks a free one (the bound port is in Server.port).", group="network"
    )
    uds: str | None = _opt(
        None, "Listen on this Unix domain socket path instead of host/port.", group="network"
    )
    backlog: int = _opt(
        1024, "listen() backlog: connections the kernel queues before accept().", group="network"
    )
    reuse_port: bool = _opt(
        False, "Set SO_REUSEPORT so several worker processes share the port.", group="network"
    )
    batch_writes: bool = _opt(
        True,
        "Write the small responses (64 KiB at most) that connections finish in one pass of "
        "the event loop together, at the end of the pass, rather than each at once: a client "
        "waiting for its response is woken once for the batch, not once per response, which "
        "cut the server's CPU per request by a third under load (bench/asgi.py).  A response "
        "waits at most for the other ready tasks of its pass.  False: write each at once.",
        group="network",
    )
    read_poller: bool = _opt(
        True,
        "Plain TCP connections wait for bytes in an epoll of the server's own, each registered "
        "once, rather than in trio's, re-armed at every wait: one system call fewer per request "
        "or message under load (13 % less CPU per WebSocket echo at 50 connections), one more "
        "when a single connection is busy.  Linux only.  False: trio's wait_readable.",
        group="network",
    )
    ssl_context: ssl.SSLContext | None = _opt(
        None, "Serve TLS with this server-side context.", group="network"
    )
    max_connections: int = _opt(
        10_000,
        "Open connections at most; beyond it a new connection gets 503 and is closed "
        "(never an unbounded queue).",
        group="limits",
    )
    gc_freeze_above: int | None = _opt(
        500,
        "With this many connections open at once, long-lived objects are frozen out of "
        "Python's cyclic garbage collector (every 0.05 s, a collection of what is newer, "
        "then gc.freeze(); a full collection only once the heap grew by half), so that a "
        "collection never walks every open connection: a full one took 0.6-1.2 s with "
        "20,000 idle WebSockets.  None: leave the collector alone.",
        group="limits",
    )
    malloc_trim_interval: float | None = _opt(
        10.0,
        "Seconds between two calls of glibc's malloc_trim(0), which hands memory Python "
        "freed back to the system (without it a long-running server's RSS creeps up while "
        "glibc keeps freed pages: +280-470 KiB a minute per worker in bench/soak.py).  "
        "A short call in the event loop; nothing to do where the C library is not glibc.  "
        "None: never.",
        group="limits",
    )
    max_connections_per_ip: int | None = _opt(
        None,
        "Open connections at most from one client IP address; beyond it a new one gets "
        "503 before anything is parsed (None: no cap).",
        group="limits",
    )
    max_requests_per_connection: int | None = _opt(
        None,
        "Close a keep-alive connection after this many requests (None: no limit).",
        group="limits",
    )
    header_timeout: float = _opt(
        10.0,
        "Seconds a client has to send a complete request head, from its first byte "
        "(from connecting, for the first request); slowloris clients get 408 and are closed.",
        group="timeouts",
    )
    body_timeout: float = _opt(
        30.0,
        "Seconds the body of a request may stay silent while a handler reads it (408).",
        group="timeouts",
    )
    send_timeout: float = _opt(
        30.0,
        "Seconds a response may wait for a client that takes no bytes (a reader that "
        "stopped: files, streams, large bodies) before the connection is dropped.",
        group="timeouts",
    )
    min_rate: int | None = _opt(
        500,
        "Bytes per second a request body must keep arriving at, and an HTTP response "
        "be read at, once min_rate_grace has passed (as Apache's mod_reqtimeout "
        "MinRate): a client that trickles gets 408 (a body) or is dropped (a response). "
        "None: no minimum.",
        group="timeouts",
    )
    min_rate_grace: float = _opt(
        10.0,
        "Seconds of waiting on a request body (or on a client reading a response) "
        "before min_rate applies; each byte then buys 1/min_rate seconds more.",
        group="timeouts",
    )
    keep_alive_timeout: float = _opt(
        5.0,
        "Seconds an idle keep-alive connection is kept open waiting for the next request.",
        group="timeouts",
    )
    shutdown_grace: float = _opt(
        5.0,
        "On shutdown, seconds in-flight requests get to finish before everything is cancelled.",
        group="timeouts",
    )
    max_request_line: int = _opt(
        MAX_REQUEST_LINE, "Longest request line in bytes (414 beyond).", group="limits"
    )
    max_header_line: int = _opt(
        MAX_HEADER_LINE, "Longest header line in bytes (431 beyond).", group="limits"
    )
    max_headers_size: int = _opt(
        MAX_HEADERS_SIZE, "Largest request head in bytes (431 beyond).", group="limits"
    )
    max_header_count: int = _opt(
        MAX_HEADER_COUNT, "Most header lines in a request (431 beyond).", group="limits"
    )
    max_body_size: int | None = _opt(
        MAX_BODY_SIZE,
        "Largest request body in bytes (413 beyond, enforced while it streams); None: no limit.",
        group="limits",
    )
    max_drain: int = _opt(
        65_536,
        "A body the handler did not read is read and dropped up to this many bytes so the "
        "connection can serve the next request; a larger one closes the connection.",
        group="limits",
    )
    json_max_depth: int = _opt(
        JSON_MAX_DEPTH,
        "Deepest nesting of arrays and objects accepted in a client's JSON (request.json() "
        "and JSONMixin messages); deeper gets 400, or close 1007 on a WebSocket, before "
        "Python's recursive parser sees it.",
        group="limits",
    )
    form_max_fields: int = _opt(
        1000,
        "Most fields (files included) request.form() reads from one body; more gets 400.",
        group="limits",
    )
    form_max_files: int = _opt(
        100,
        "Most uploaded files request.form() reads from one multipart body; more gets 400.",
        group="limits",
    )
    form_max_part_size: int | None = _opt(
        None,
        "Largest single multipart part (an uploaded file) in bytes, 413 beyond; None: only "
        "max_body_size applies.",
        group="limits",
    )
    form_spool_size: int = _opt(
        1 << 20,
        "Bytes of an uploaded file request.form() keeps in memory before it spills to a "
        "temporary file.",
        group="limits",
    )
    channels_max_message_size: int = _opt(
        65_536,
        "Characters of one Channels message from a client; longer ones get a too_large error.",
        group="channels",
    )
    channels_max_joins: int = _opt(
        100,
        "Topics one Channels connection may have joined at once (too_many_joins beyond).",
        group="channels",
    )
    channels_publish_rate: float = _opt(
        50.0,
        "Events per second one Channels connection may send to its topics, on average "
        "(rate_limited beyond).",
        group="channels",
    )
    channels_publish_burst: int = _opt(
        100, "Events one Channels connection may send at once above its rate.", group="channels"
    )
    channels_join_rate: float = _opt(
        10.0,
        "Joins and leaves per second one Channels connection may send, on average "
        "(rate_limited beyond): each may reach every member's presence.",
        group="channels",
    )
    channels_join_burst: int = _opt(
        50,
        "Joins and leaves one Channels connection may send at once above its rate.",
        group="channels",
    )
    channels_topic_publish_rate: float = _opt(
        1000.0,
        "Events per second all of this node's connections together may send to one topic.",
        group="channels",
    )
    channels_topic_publish_burst: int = _opt(
        2000, "The burst above channels_topic_publish_rate, per topic.", group="channels"
    )
    channels_max_violations: int = _opt(
        100,
        "Error replies (unmatched topics, limits) a Channels connection may earn before it "
        "is closed with 1008.",
        group="channels",
    )
    thread_pool_size: int = _opt(
        40, "Threads run_sync() may use at once (blocking or CPU-heavy work).", group="workers"
    )
    ws_max_message_size: int | None = _opt(
        1 << 20,
        "Largest WebSocket message accepted, in bytes (None: no limit); a larger one closes "
        "the socket with 1009 before it is buffered whole.",
        group="websocket",
    )
    ws_ping_interval: float | None = _opt(
        20.0,
        "Seconds of silence after which the server pings a WebSocket (None: no heartbeat).",
        group="websocket",
    )
    ws_ping_timeout: float = _opt(
        20.0,
        "Seconds a ping may go unanswered before the socket is closed with 1011.",
        group="websocket",
    )
    ws_close_timeout: float = _opt(
        10.0,
        "Seconds to wait for the peer's close frame after sending ours, before dropping "
        "the connection.",
        group="websocket",
    )
    ws_compression: bool = _opt(
        False,
        "Negotiate permessage-deflate when a client offers it.  Off by default: each "
        "socket then keeps zlib state (measured: 117 KiB per socket, where an idle "
        "uncompressed one holds under 8 KiB) and pays CPU per message; turn it on for "
        "large, compressible messages over slow links.",
        group="websocket",
    )
    ws_allowed_origins: tuple[str, ...] | None = _opt(
        None,
        "Origins allowed to open WebSockets (e.g. ('https://app.example',)); others get "
        "403.  None (the default) allows the page's own origin: an Origin header whose "
        "host and port are the request's Host, or no Origin header at all (clients that "
        "are not browsers send none).  ('*',) allows any origin.  This is the defence "
        "against cross-site WebSocket hijacking.",
        group="websocket",
    )
    ws_outbox_size: int = _opt(
        1 << 20,
        "Bytes a WebSocket may have queued for sending (hub and broadcast deliveries to a "
        "client that reads slowly); beyond it ws_slow_policy applies, so one slow "
        "subscriber never delays the others.",
        group="websocket",
    )
    ws_slow_policy: Literal["close", "drop-oldest"] = _opt(
        "close",
        "What happens when a socket's outbox is full: 'close' (close it with 1008 and "
        "log it) or 'drop-oldest' (drop the oldest queued messages to make room).",
        group="websocket",
    )
    workers: int = _opt(
        1,
        "Worker processes accepting on the same port (SO_REUSEPORT), supervised by the "
        "parent; >1 needs redis_url for topics to cross processes.",
        group="workers",
    )
    redis_url: str | None = _opt(
        None,
        "redis://HOST:PORT (or redis+sentinel://H:P,H:P/service, redis+cluster://H:P,...): "
        "the app's hub is a RedisHub, so topics cross processes and machines; None keeps "
        "the in-memory hub.",
        group="realtime",
    )
    redis_timeout: float = _opt(
        1.0,
        "Seconds any one Redis call may take; past that it fails with HubUnavailable (a "
        "frozen or unreachable Redis never blocks a publish for longer).",
        group="realtime",
    )
    access_log: bool = _opt(
        False, "Log every request to the 'peregrine_rt.access' logger.", group="logging"
    )
    log_format: Literal["text", "json"] = _opt(
        "text",
        "How the command line's log lines look: 'text' (one readable line) or 'json' (one "
        "JSON object per line: time, level, logger, message, and the request's or "
        "connection's fields).  Query-string tokens and cookie values are redacted in both.",
        group="logging",
    )
    metrics: bool = _opt(
        False,
        "Serve GET /metrics (ops_prefix first) in the Prometheus text format: requests, "
        "connections, WebSocket messages and closes, slow consumers, the hub, Redis, "
        "Channels.  With workers > 1 one scrape covers every worker.",
        group="operations",
    )
    metrics_port: int | None = _opt(
        None,
        "Serve /metrics, /healthz, /readyz and the status page on this port (same host) "
        "instead of the app's; 0 picks a free one.  None: on the app's port.",
        group="operations",
    )
    health: bool = _opt(
        False,
        "Serve GET /healthz (200 while the process serves) and GET /readyz (200 when "
        "listening, the hub is linked and no shutdown is under way; 503 otherwise), "
        "ops_prefix first.",
        group="operations",
    )
    ops_prefix: str = _opt(
        "",
        "Path prefix of the operations endpoints (/metrics, /healthz, /readyz, /status), "
        "e.g. '/_ops'.  A Router app with a route on one of them is refused at start.",
        group="operations",
    )
    status_page: bool = _opt(
        False,
        "Serve a live status page at /status (ops_prefix first): connections, message "
        "rates, topics and drops as small live charts, over the server's own WebSocket.",
        group="operations",
    )
    status_token: str | None = _opt(
        None,
        "The token the status page asks for (?token=...).  None with status_page on: a "
        "random one, logged once at start.",
        group="operations",
    )
    metrics_dir: str | None = _opt(
        None,
        "Directory where worker processes share their figures for /metrics and the "
        "status page (one small file each, rewritten every second).  None: the "
        "supervisor makes a temporary one when workers > 1.",
        group="operations",
    )
    server_header: str | None = _opt(
        None,
        "Value of a Server response header; None sends none (no fingerprinting).",
        group="network",
    )

    def replace(self, **changes: Any) -> Config:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def __post_init__(self) -> None:
        for name in (
            "header_timeout",
            "body_timeout",
            "keep_alive_timeout",
            "send_timeout",
            "shutdown_grace",
            "ws_ping_timeout",
            "ws_close_timeout",
            "redis_timeout",
            "min_rate_grace",
            "channels_publish_rate",
            "channels_join_rate",
            "channels_topic_publish_rate",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"Config.{name} must be positive")
        if self.malloc_trim_interval is not None and not self.malloc_trim_interval > 0:
            raise ValueError("Config.malloc_trim_interval must be positive, or None")
        for name in ("min_rate", "max_connections_per_ip"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"Config.{name} must be at least 1, or None")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"Config.port must be 0-65535, not {self.port}")
        if self.log_format not in ("text", "json"):
            raise ValueError("Config.log_format must be 'text' or 'json'")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"Config.metrics_port must be 0-65535, not {self.metrics_port}")
        if self.ops_prefix and (
            not self.ops_prefix.startswith("/") or self.ops_prefix.endswith("/")
        ):
            raise ValueError(
                f"Config.ops_prefix must start with '/' and not end with one: {self.ops_prefix!r}"
            )
        if self.ws_slow_policy not in ("close", "drop-oldest"):
            raise ValueError("Config.ws_slow_policy must be 'close' or 'drop-oldest'")
        for name in (
            "max_connections",
            "backlog",
            "thread_pool_size",
            "workers",
            "ws_outbox_size",
            "json_max_depth",
            "form_max_fields",
            "form_spool_size",
            "channels_max_message_size",
            "channels_max_joins",
            "channels_publish_burst",
            "channels_join_burst",
            "channels_topic_publish_burst",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"Config.{name} must be at least 1")
