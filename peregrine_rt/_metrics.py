"""The process's figures (:class:`Stats`) and their Prometheus form (``Config.metrics``).

Counting is plain Python on the hot paths: an ``int`` attribute or a dict
entry of one :class:`Stats` object per server, incremented where the event
happens (a WebSocket message read or queued, a socket closed, a slow consumer
dropped, a Channels join).  A response, the most frequent event, is cheaper
still: its ``(method, status, seconds)`` is appended to :attr:`Stats.done`
(:attr:`Stats.tally`, one call), and :meth:`Stats.fold` turns the list into
the counters and the duration histogram in bulk, with C-level iteration
(``map``, ``list.count``, a sort), at every snapshot and in the server's task (every
``FOLD_INTERVAL`` seconds, or every ``FOLD_BATCH`` responses or so under
load), so the list stays short and a scrape is exact.
Nothing else runs per event: ``prometheus-client``'s own metric objects take a
lock and, in its multiprocess mode, write an mmap'd file on every increment,
which costs more than a small request.  The library is used where it is good: a scrape turns
a snapshot of the figures into its metric families (:func:`render`), and the
tests read the text back with its parser.

Several worker processes (``--workers N``) share one scrape: each worker
writes its snapshot every ``SHARE_INTERVAL`` seconds to a file of its own in
``Config.metrics_dir`` (the supervisor makes one), and the worker a scrape
reaches adds the others' latest files to its own live figures
(:class:`SharedFigures`).  Counters of a worker that exited stay in the sum
(a restart is not a reset); its gauges do not.  A scrape is at most
``SHARE_INTERVAL`` seconds behind for the other workers, which is well under
any scrape interval.

:data:`METRICS` names every metric once: :func:`render` and the docs'
reference (``docs/_tools/gen_metrics.py``) both read it.
"""

from __future__ import annotations

import json
import os
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

__all__ = [
    "BUCKETS",
    "CONTENT_TYPE",
    "FOLD_BATCH",
    "FOLD_INTERVAL",
    "FOLD_MIN",
    "METRICS",
    "SHARE_INTERVAL",
    "MetricInfo",
    "SharedFigures",
    "Stats",
    "clear_shared_figures",
    "endpoint_for",
    "merge",
    "render",
]

# Folds of the responses counted (Stats.fold, the server's task): every
# FOLD_INTERVAL seconds at most, and under load as often as FOLD_BATCH
# responses arrive (not under FOLD_MIN seconds).  A short list stays in the
# CPU's cache: at 50,000 requests a second, folding every 0.5 s kept 25,000
# tuples alive and cost 0.88x of metrics off at c=50 against 0.96x this way.
FOLD_INTERVAL = 0.5
FOLD_BATCH = 1000
FOLD_MIN = 0.01

# Request durations, seconds: small requests are tens of microseconds here.
BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
# Methods counted under their own label; any other is "other" (a client
# choosing methods must not create series).
KNOWN_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE")
)
SHARE_INTERVAL = 1.0  # seconds between a worker's snapshots for the others
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # what every scraper reads


@dataclass(frozen=True)
class MetricInfo:
    """One metric: its name, type, labels and help (the docs' reference is made from these)."""

    name: str
    kind: str  # "counter", "gauge" or "histogram"
    help: str
    labels: tuple[str, ...] = ()


METRICS: tuple[MetricInfo, ...] = (
    MetricInfo(
        "peregrine_http_requests_total",
        "counter",
        "HTTP responses sent, by request method (other for unusual ones) and status; "
        "the server's own answers (400, 408, 413, 503...) included.",
        ("method", "status"),
    ),
    MetricInfo(
        "peregrine_http_request_duration_seconds",
        "histogram",
        "Time from a request's head being read to its response being handed to the "
        "socket (for a streamed response: to the stream's end).",
    ),
    MetricInfo(
        "peregrine_connections",
        "gauge",
        "Open connections by what they are now: http (between or in requests), "
        "websocket, sse (an event stream being served).",
        ("kind",),
    ),
    MetricInfo(
        "peregrine_ws_messages_received_total",
        "counter",
        "WebSocket messages received (whole messages, after reassembly).",
    ),
    MetricInfo(
        "peregrine_ws_messages_sent_total",
        "counter",
        "WebSocket messages sent or queued for sending (send(), hub and broadcast deliveries).",
    ),
    MetricInfo(
        "peregrine_ws_closes_total",
        "counter",
        "WebSockets ended, by close code (1006: the connection was lost without a close).",
        ("code",),
    ),
    MetricInfo(
        "peregrine_slow_consumer_drops_total",
        "counter",
        "Slow consumers (Config.ws_slow_policy): action=closed counts sockets and event "
        "streams ended, action=dropped counts queued messages dropped (drop-oldest).",
        ("action",),
    ),
    MetricInfo(
        "peregrine_hub_publishes_total",
        "counter",
        "Messages published on this process's hub.",
    ),
    MetricInfo(
        "peregrine_hub_deliveries_total",
        "counter",
        "Deliveries to local subscribers (one per subscriber that took a message, "
        "including messages published on other nodes).",
    ),
    MetricInfo(
        "peregrine_hub_lost_total",
        "counter",
        "Messages published while Redis was unreachable, which other nodes did not get.",
    ),
    MetricInfo(
        "peregrine_redis_up",
        "gauge",
        "1 while the hub is linked to Redis, 0 while not; absent with the in-memory hub.",
    ),
    MetricInfo(
        "peregrine_channels_joins_total",
        "counter",
        "Channels joins, by result: ok, or error (refused by the app, an unknown "
        "topic, a limit, a crash).",
        ("result",),
    ),
    MetricInfo(
        "peregrine_channels_topics",
        "gauge",
        "Channels topics with at least one member on this process.",
    ),
    MetricInfo(
        "peregrine_channels_recoveries_total",
        "counter",
        "Joins that asked to recover missed messages (since), by outcome: recovered, "
        "or the reason it was not (offset_lost, epoch_changed, no_history...).",
        ("outcome",),
    ),
)
_INFO = {info.name: info for info in METRICS}


class Stats:
    """A server's counters, incremented where things happen (see the module docstring).

    Attributes are plain numbers and dicts; read them, or take
    :meth:`snapshot`.  The gauges that are a matter of looking (connections
    open, Redis linked, topics) are filled in by the server's
    :attr:`sample` callable at snapshot time.
    """

    __slots__ = (
        "channel_joins",
        "channel_recoveries",
        "channel_topics",
        "done",
        "duration_buckets",
        "duration_sum",
        "hub_deliveries",
        "hub_lost",
        "hub_publishes",
        "requests",
        "sample",
        "slow_closed",
        "slow_dropped",
        "sse_streams",
        "tally",
        "ws_closes",
        "ws_received",
        "ws_sent",
    )

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.duration_buckets = [0] * (len(BUCKETS) + 1)  # the last one: over BUCKETS[-1]
        self.duration_sum = 0.0
        # Responses not yet folded into the three above: (method, status, seconds).
        self.done: list[tuple[str, int, float]] = []
        self.tally = self.done.append
        """Count one response, ``tally((method, status, seconds))``: the hot path's call."""
        self.ws_received = 0
        self.ws_sent = 0
        self.ws_closes: Counter[int] = Counter()  # by close code
        self.slow_closed = 0
        self.slow_dropped = 0
        self.sse_streams = 0  # open now (a gauge kept by counting)
        self.hub_publishes = 0
        self.hub_deliveries = 0
        self.hub_lost = 0
        self.channel_joins: Counter[str] = Counter()  # by result: ok, error
        self.channel_recoveries: Counter[str] = Counter()  # by outcome
        self.channel_topics = 0  # topics with local members now
        # () -> {"connections": {...}, "redis_up": 0/1/None, ...}: looked up at snapshot time.
        self.sample: Any = None

    def request_done(self, method: str, status: int, seconds: float) -> None:
        """Count one response (``method`` as the client sent it): :attr:`tally`.

        Off the hot path (the 503s of a full server, the access log's path), and
        possibly where no task folds (metrics off): it folds a long list itself.
        """
        done = self.done
        done.append((method, status, seconds))
        if len(done) >= FOLD_BATCH:
            self.fold()

    def fold(self) -> int:
        """Add the responses tallied since the last fold to the counters and the histogram.

        Returns how many there were.

        In bulk, at C speed: a batch is mostly one method and a few statuses,
        counted with ``list.count``; the durations are sorted once and each
        bucket's cumulative count is a bisection of them (no per-response
        bisection of the bounds).  About 90 ns per response (240 with a
        Counter of pairs and a bisection each).
        """
        done = self.done
        if not done:
            return 0
        methods = list(map(itemgetter(0), done))
        statuses = list(map(itemgetter(1), done))
        seconds = list(map(itemgetter(2), done))
        done.clear()  # the same list: tally is its append
        method = methods[0]
        distinct = set(statuses)
        if len(distinct) <= 8 and methods.count(method) == len(methods):
            pairs: Mapping[tuple[str, int], int] = {
                (method, status): statuses.count(status) for status in distinct
            }
        else:
            pairs = Counter(zip(methods, statuses, strict=True))
        requests = self.requests
        for (method, status), n in pairs.items():
            # A client choosing methods creates no series.
            key = (method if method in KNOWN_METHODS else "other", status)
            requests[key] = requests.get(key, 0) + n
        seconds.sort()
        buckets = self.duration_buckets
        below = 0
        for i, bound in enumerate(BUCKETS):  # le: a duration equal to a bound is in its bucket
            upto = bisect_right(seconds, bound)
            buckets[i] += upto - below
            below = upto
        buckets[-1] += len(seconds) - below
        self.duration_sum += sum(seconds)
        return len(seconds)

    def snapshot(self) -> dict[str, Any]:
        """Every figure, as JSON-able data: counters, then the sampled gauges."""
        self.fold()
        sampled = self.sample() if self.sample is not None else {}
        return {
            "time": time.time(),
            "counters": {
                "requests": [[m, s, n] for (m, s), n in self.requests.items()],
                "duration_buckets": list(self.duration_buckets),
                "duration_sum": self.duration_sum,
                "ws_received": self.ws_received,
                "ws_sent": self.ws_sent,
                "ws_closes": {str(code): n for code, n in self.ws_closes.items()},
                "slow_closed": self.slow_closed,
                "slow_dropped": self.slow_dropped,
                "hub_publishes": self.hub_publishes,
                "hub_deliveries": self.hub_deliveries,
                "hub_lost": self.hub_lost,
                "channel_joins": dict(self.channel_joins),
                "channel_recoveries": dict(self.channel_recoveries),
            },
            "gauges": {
                "connections": dict(sampled.get("connections", {})),
                "redis_up": sampled.get("redis_up"),
                "channel_topics": self.channel_topics,
                "topics": dict(sampled.get("topics", {})),
            },
        }


def endpoint_for(endpoints: Mapping[bytes, Any], target: bytes, default: Any) -> Any:
    """The endpoint of a raw request target (its query aside) in ``endpoints``, or ``default``.

    How a connection finds the server's own endpoints (``/metrics``...) before
    the app: by the target's bytes, with no path decoding on every request.
    """
    found = endpoints.get(target)
    if found is None and target.find(b"?") >= 0:
        found = endpoints.get(target.partition(b"?")[0])
    return default if found is None else found


def _add(into: dict[str, Any], key: str, value: Any) -> None:
    if isinstance(value, dict):
        inner = into.setdefault(key, {})
        for k, v in value.items():
            _add(inner, k, v)
    elif isinstance(value, list) and key == "duration_buckets":
        have = into.setdefault(key, [0] * len(value))
        for i, v in enumerate(value):
            have[i] += v
    elif isinstance(value, list):  # requests: [method, status, n] rows
        rows = into.setdefault(key, {})
        for method, status, n in value:
            rows[(method, status)] = rows.get((method, status), 0) + n
    elif value is not None:
        into[key] = into.get(key, 0) + value


def merge(
    snapshots: Iterable[Mapping[str, Any]], live: Iterable[bool] | None = None
) -> dict[str, Any]:
    """Sum snapshots (one per process): counters always, gauges of live processes only.

    ``live`` says, per snapshot, whether its process still runs (default: all do).
    ``redis_up`` is the minimum over live processes (one node cut off is down).
    """
    counters: dict[str, Any] = {}
    gauges: dict[str, Any] = {}
    redis: list[int] = []
    snapshots = list(snapshots)
    flags = list(live) if live is not None else [True] * len(snapshots)
    for snap, alive in zip(snapshots, flags, strict=True):
        for key, value in snap["counters"].items():
            _add(counters, key, value)
        if alive:
            for key, value in snap["gauges"].items():
                if key == "redis_up":
                    if value is not None:
                        redis.append(int(value))
                else:
                    _add(gauges, key, value)
    gauges["redis_up"] = min(redis) if redis else None
    requests = counters.get("requests", {})
    counters["requests"] = [[m, s, n] for (m, s), n in sorted(requests.items())]
    return {"counters": counters, "gauges": gauges, "processes": sum(flags)}


def _families(figures: Mapping[str, Any]) -> Iterator[Any]:
    from prometheus_client.core import (  # noqa: PLC0415 - loaded on the first scrape
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    c, g = figures["counters"], figures["gauges"]

    def family(
        kind: Any, name: str, value: Any = None, rows: Iterable[tuple[Any, ...]] = ()
    ) -> Any:
        """A counter's or gauge's family: one sample, or a row per label set."""
        info = _INFO[name]
        # A counter family is named without _total (the library adds it to the sample).
        base = name.removesuffix("_total") if kind is CounterMetricFamily else name
        made = kind(base, info.help, labels=info.labels or None)
        if info.labels:
            for *labels, n in rows:
                made.add_metric([str(label) for label in labels], n)
        else:
            made.add_metric([], value or 0)
        return made

    def counter(name: str, value: Any = None, rows: Iterable[tuple[Any, ...]] = ()) -> Any:
        return family(CounterMetricFamily, name, value, rows)

    def gauge(name: str, value: Any = None, rows: Iterable[tuple[Any, ...]] = ()) -> Any:
        return family(GaugeMetricFamily, name, value, rows)

    yield counter("peregrine_http_requests_total", rows=[tuple(r) for r in c.get("requests", [])])
    info = _INFO["peregrine_http_request_duration_seconds"]
    counts = c.get("duration_buckets") or [0] * (len(BUCKETS) + 1)
    cumulative, buckets = 0, []
    for bound, n in zip((*BUCKETS, float("inf")), counts, strict=True):
        cumulative += n
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
    yield HistogramMetricFamily(
        info.name, info.help, buckets=buckets, sum_value=c.get("duration_sum", 0.0)
    )
    conns = g.get("connections", {})
    yield gauge(
        "peregrine_connections",
        rows=[(kind, conns.get(kind, 0)) for kind in ("http", "websocket", "sse")],
    )
    yield counter("peregrine_ws_messages_received_total", c.get("ws_received"))
    yield counter("peregrine_ws_messages_sent_total", c.get("ws_sent"))
    closes = c.get("ws_closes", {})
    yield counter(
        "peregrine_ws_closes_total", rows=[(code, closes[code]) for code in sorted(closes)]
    )
    yield counter(
        "peregrine_slow_consumer_drops_total",
        rows=[("closed", c.get("slow_closed", 0)), ("dropped", c.get("slow_dropped", 0))],
    )
    yield counter("peregrine_hub_publishes_total", c.get("hub_publishes"))
    yield counter("peregrine_hub_deliveries_total", c.get("hub_deliveries"))
    yield counter("peregrine_hub_lost_total", c.get("hub_lost"))
    if g.get("redis_up") is not None:
        yield gauge("peregrine_redis_up", g["redis_up"])
    joins = c.get("channel_joins", {})
    yield counter(
        "peregrine_channels_joins_total",
        rows=[(result, joins.get(result, 0)) for result in sorted({"ok", "error", *joins})],
    )
    yield gauge("peregrine_channels_topics", g.get("channel_topics", 0))
    recoveries = c.get("channel_recoveries", {})
    yield counter(
        "peregrine_channels_recoveries_total",
        rows=[(outcome, recoveries[outcome]) for outcome in sorted(recoveries)],
    )


class _Collector:
    def __init__(self, figures: Mapping[str, Any]) -> None:
        self._figures = figures

    def collect(self) -> Iterator[Any]:
        return _families(self._figures)


def render(figures: Mapping[str, Any]) -> bytes:
    """The Prometheus text exposition of ``figures`` (a :func:`merge` result)."""
    from prometheus_client import CollectorRegistry  # noqa: PLC0415 - on the first scrape
    from prometheus_client.exposition import generate_latest  # noqa: PLC0415

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(figures))
    return generate_latest(registry)


class SharedFigures:
    """The workers' snapshots in one directory: each writes its own, any reads all.

    A file is ``<pid>.json``, replaced atomically (write, then rename).  A
    process whose pid no longer runs counts for its counters, not its gauges.
    """

    def __init__(self, directory: str | os.PathLike[str], pid: int | None = None) -> None:
        self.directory = Path(directory)
        self.pid = os.getpid() if pid is None else pid
        self.directory.mkdir(parents=True, exist_ok=True)

    @property
    def path(self) -> Path:
        return self.directory / f"{self.pid}.json"

    def write(self, snapshot: Mapping[str, Any]) -> None:
        """Publish this process's snapshot for the others."""
        temporary = self.directory / f".{self.pid}.tmp"
        temporary.write_text(json.dumps(snapshot))
        os.replace(temporary, self.path)

    def others(self) -> Iterator[tuple[dict[str, Any], bool]]:
        """The other processes' latest snapshots, with whether each process still runs."""
        for path in self.directory.glob("*.json"):
            try:
                pid = int(path.stem)
            except ValueError:
                continue
            if pid == self.pid:
                continue
            try:
                snapshot = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # gone meanwhile, or not ours
            yield snapshot, _alive(pid)

    def figures(self, own: Mapping[str, Any]) -> dict[str, Any]:
        """``own`` (live) plus every other process's latest snapshot, merged."""
        snapshots: list[Mapping[str, Any]] = [own]
        live = [True]
        for snapshot, alive in self.others():
            snapshots.append(snapshot)
            live.append(alive)
        return merge(snapshots, live)


def clear_shared_figures(directory: str | os.PathLike[str]) -> None:
    """Remove the snapshots a past run left in ``directory`` (its counters are not ours)."""
    for path in Path(directory).glob("*.json"):
        try:
            int(path.stem)
        except ValueError:
            continue  # not one of ours
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
