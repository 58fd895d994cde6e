"""The keyword arguments ``Server(App, **options)`` accepts: every :class:`Config` field.

A ``TypedDict`` used with ``Unpack``, so that a type checker refuses a typo
(``Server(App, prot=8000)``) or a wrong type where a :class:`Config` field is
meant; at run time, ``Config.replace`` refuses unknown names.  A test keeps it
in step with :class:`Config`.
"""

from __future__ import annotations

import ssl
from typing import Literal, TypedDict

__all__ = ["ServerOptions"]


class ServerOptions(TypedDict, total=False):
    """Overrides of :class:`~peregrine_rt.Config` fields, by name (see :doc:`configuration`)."""

    host: str
    port: int
    uds: str | None
    backlog: int
    reuse_port: bool
    batch_writes: bool
    read_poller: bool
    ssl_context: ssl.SSLContext | None
    max_connections: int
    gc_freeze_above: int | None
    malloc_trim_interval: float | None
    max_connections_per_ip: int | None
    max_requests_per_connection: int | None
    header_timeout: float
    body_timeout: float
    send_timeout: float
    min_rate: int | None
    min_rate_grace: float
    keep_alive_timeout: float
    shutdown_grace: float
    max_request_line: int
    max_header_line: int
    max_headers_size: int
    max_header_count: int
    max_body_size: int | None
    max_drain: int
    json_max_depth: int
    form_max_fields: int
    form_max_files: int
    form_max_part_size: int | None
    form_spool_size: int
    channels_max_message_size: int
    channels_max_joins: int
    channels_publish_rate: float
    channels_publish_burst: int
    channels_join_rate: float
    channels_join_burst: int
    channels_topic_publish_rate: float
    channels_topic_publish_burst: int
    channels_max_violations: int
    thread_pool_size: int
    ws_max_message_size: int | None
    ws_ping_interval: float | None
    ws_ping_timeout: float
    ws_close_timeout: float
    ws_compression: bool
    ws_allowed_origins: tuple[str, ...] | None
    ws_outbox_size: int
    ws_slow_policy: Literal["close", "drop-oldest"]
    workers: int
    redis_url: str | None
    redis_timeout: float
    access_log: bool
    log_format: Literal["text", "json"]
    metrics: bool
    metrics_port: int | None
    health: bool
    ops_prefix: str
    status_page: bool
    status_token: str | None
    metrics_dir: str | None
    server_header: str | None
