"""Parse the same realistic requests with peregrine_rt, h11 and httptools; print ns/request.

Run: ``.venv/bin/python bench/parser.py [--quick]``  (``make bench-parser``)

Each parser does what a server does with the bytes of one request:

* peregrine_rt: ``feed`` + ``next_event`` until the body ends, then ``start_next_cycle``
  (a request without a body ends with its head, as in the server's loop)
  on one ``RequestParser``: the default one (the fast path in C, where the
  ``_speedups`` extension is built), and in pure Python (``speedups=False``,
  "py" columns).  Headers stay unsplit until asked for (that is the
  design); the "+headers" column also builds the ``(name, value)`` list, to
  compare like with like.  "cold" turns the per-connection header-block cache
  off, so every request pays the full validation; "keep-alive" is the same
  request again on the same connection, which is what browsers and load
  generators send.
* h11: ``receive_data`` + ``next_event`` until ``EndOfMessage``.  h11 cannot
  take the next request before a response is sent, so it runs two ways — a new
  ``Connection`` per request, and one re-used ``Connection`` sending a minimal
  response — and the faster of the two is reported.
* httptools: ``feed_data`` on one re-used parser, with the callbacks uvicorn
  uses (url, each header into a list, body, message complete).

The last line is ``browser_get_ns=<n> vs_h11=<ratio>x vs_httptools=<ratio>x`` for
the cold browser GET (the conservative figure) with the default parser.
"""

from __future__ import annotations

import argparse
import gc
import platform
import sys
import time
from collections.abc import Callable

import h11
import httptools

from peregrine_rt._http import NEED_DATA, PAUSED, EndOfMessage, RequestHead, RequestParser
from peregrine_rt._http._parser import SPEEDUPS

BROWSER_GET = (
    b"GET /chat/room?id=42 HTTP/1.1\r\n"
    b"Host: localhost:8000\r\n"
    b"Connection: keep-alive\r\n"
    b'sec-ch-ua: "Chromium";v="124", "Not-A.Brand";v="99"\r\n'
    b"sec-ch-ua-mobile: ?0\r\n"
    b'sec-ch-ua-platform: "Linux"\r\n'
    b"Upgrade-Insecure-Requests: 1\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    b"Chrome/124.0.0.0 Safari/537.36\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,"
    b"image/webp,*/*;q=0.8\r\n"
    b"Sec-Fetch-Site: none\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Accept-Language: en-US,en;q=0.9\r\n"
    b"\r\n"
)
SMALL_POST = (
    b"POST /api/messages HTTP/1.1\r\n"
    b"Host: localhost:8000\r\n"
    b"User-Agent: curl/8.5.0\r\n"
    b"Accept: */*\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: 38\r\n"
    b"\r\n"
    b'{"room": "lobby", "text": "hello all"}'
)
WS_UPGRADE = (
    b"GET /ws HTTP/1.1\r\n"
    b"Host: localhost:8000\r\n"
    b"Connection: Upgrade\r\n"
    b"Pragma: no-cache\r\n"
    b"Cache-Control: no-cache\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    b"Chrome/124.0.0.0 Safari/537.36\r\n"
    b"Upgrade: websocket\r\n"
    b"Origin: http://localhost:8000\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Accept-Language: en-US,en;q=0.9\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    b"\r\n"
)
PIPELINE_N = 8
PIPELINED = b"".join(
    b"GET /static/app-%d.js HTTP/1.1\r\nHost: localhost:8000\r\nAccept: */*\r\n\r\n" % i
    for i in range(PIPELINE_N)
)

CASES = [
    ("browser GET", BROWSER_GET, 1),
    ("small POST", SMALL_POST, 1),
    ("WS upgrade", WS_UPGRADE, 1),
    (f"pipelined x{PIPELINE_N}", PIPELINED, PIPELINE_N),
]


def peregrine_runner(
    data: bytes, *, cache: bool, materialize: bool, speedups: bool = True
) -> Callable[[], None]:
    parser = RequestParser(cache_headers=cache, speedups=speedups)

    def run() -> None:
        parser.feed(data)
        while True:
            event = parser.next_event()
            if type(event) is RequestHead:
                if materialize:
                    event.headers.raw  # noqa: B018  (builds the list)
                if not event.has_body:
                    parser.start_next_cycle()  # as the server does, once it has responded
            elif type(event) is EndOfMessage:
                parser.start_next_cycle()
            elif event is NEED_DATA:
                return

    return run


def h11_fresh_runner(data: bytes) -> Callable[[], None]:
    def run() -> None:
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(data)
        while True:
            event = conn.next_event()
            if type(event) is h11.EndOfMessage:
                if conn.their_state is h11.DONE and conn.trailing_data[0]:
                    # Pipelined: h11 needs a response before the next request.
                    conn.send(h11.Response(status_code=204, headers=[]))
                    conn.send(h11.EndOfMessage())
                    conn.start_next_cycle()
                    continue
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return

    return run


def h11_reuse_runner(data: bytes) -> Callable[[], None]:
    conn = h11.Connection(h11.SERVER)
    response = h11.Response(status_code=204, headers=[])
    end = h11.EndOfMessage()

    def run() -> None:
        conn.receive_data(data)
        while True:
            event = conn.next_event()
            if type(event) is h11.EndOfMessage:
                conn.send(response)
                conn.send(end)
                conn.start_next_cycle()
            elif event is h11.NEED_DATA or event is h11.PAUSED:
                return

    return run


class _Protocol:
    __slots__ = ("body", "headers", "url")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.headers = []
        self.body = []


def httptools_runner(data: bytes) -> Callable[[], None]:
    protocol = _Protocol()
    parser = httptools.HttpRequestParser(protocol)

    def run() -> None:
        nonlocal parser
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # An upgrade ends the parser's life, as it ends the HTTP connection.
            parser = httptools.HttpRequestParser(protocol)

    return run


def best_ns(fn: Callable[[], None], per: int, seconds: float) -> float:
    """Best of several timed rounds, in ns per request."""
    fn()
    number = 1
    while True:  # calibrate a round to ~20 ms
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        if time.perf_counter() - t0 > 0.02:
            break
        number *= 2
    best = float("inf")
    deadline = time.perf_counter() + seconds
    gc.disable()
    try:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter_ns()
            for _ in range(number):
                fn()
            best = min(best, (time.perf_counter_ns() - t0) / number / per)
    finally:
        gc.enable()
    return best


def check_equivalence() -> None:
    """Before timing: all parsers must see the same requests in the same bytes."""
    for (_name, data, per), speedups in [(case, s) for case in CASES for s in (True, False)]:
        p = RequestParser(speedups=speedups)
        p.feed(data)
        heads = []
        while (ev := p.next_event()) is not NEED_DATA:
            if isinstance(ev, RequestHead):
                heads.append((ev.method, ev.target, [(n.lower(), v) for n, v in ev.headers.raw]))
            elif ev is PAUSED:
                p.start_next_cycle()
            else:
                assert isinstance(ev, EndOfMessage) or ev is not None
        c = h11.Connection(h11.SERVER)
        c.receive_data(data)
        theirs = []
        while True:
            ev = c.next_event()
            if isinstance(ev, h11.Request):
                theirs.append((ev.method.decode(), ev.target, list(ev.headers)))
            elif isinstance(ev, h11.EndOfMessage):
                c.send(h11.Response(status_code=204, headers=[]))
                c.send(h11.EndOfMessage())
                c.start_next_cycle()
            else:
                break
        assert heads == theirs and len(heads) == per, (heads, theirs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter rounds (noisier)")
    args = ap.parse_args()
    seconds = 0.3 if args.quick else 1.5
    check_equivalence()
    print(f"# {platform.python_implementation()} {platform.python_version()}, {platform.machine()}")
    print(f"# h11 {h11.__version__}, httptools {httptools.__version__}; ns per request, best round")
    print(f"# peregrine_rt C accelerator: {'built and in use' if SPEEDUPS else 'NOT in use'}")
    cols = ["cold", "+headers", "keep-alive", "py cold", "py keep-alive", "h11", "httptools"]
    print(
        f"{'request':<14}"
        + "".join(f"{c:>14}" for c in cols)
        + f"{'vs h11':>9}{'vs httptools':>14}"
    )
    results: dict[str, dict[str, float]] = {}
    for name, data, per in CASES:
        row = {
            "cold": best_ns(peregrine_runner(data, cache=False, materialize=False), per, seconds),
            "+headers": best_ns(
                peregrine_runner(data, cache=False, materialize=True), per, seconds
            ),
            "keep-alive": best_ns(
                peregrine_runner(data, cache=True, materialize=False), per, seconds
            ),
            "py cold": best_ns(
                peregrine_runner(data, cache=False, materialize=False, speedups=False),
                per,
                seconds,
            ),
            "py keep-alive": best_ns(
                peregrine_runner(data, cache=True, materialize=False, speedups=False),
                per,
                seconds,
            ),
            "h11": min(
                best_ns(h11_fresh_runner(data), per, seconds),
                best_ns(h11_reuse_runner(data), per, seconds),
            ),
            "httptools": best_ns(httptools_runner(data), per, seconds),
        }
        results[name] = row
        print(
            f"{name:<14}"
            + "".join(f"{row[c]:>14.0f}" for c in cols)
            + f"{row['h11'] / row['cold']:>8.1f}x"
            + f"{row['httptools'] / row['cold']:>13.2f}x"
        )
    get = results["browser GET"]
    for label, col in (("py_", "py cold"), ("py_keepalive_", "py keep-alive")):
        print(
            f"browser_get_{label}ns={get[col]:.0f} "
            f"vs_h11={get['h11'] / get[col]:.1f}x "
            f"vs_httptools={get['httptools'] / get[col]:.2f}x"
        )
    print(
        f"browser_get_keepalive_ns={get['keep-alive']:.0f} "
        f"vs_h11={get['h11'] / get['keep-alive']:.1f}x "
        f"vs_httptools={get['httptools'] / get['keep-alive']:.2f}x"
    )
    print(
        f"browser_get_ns={get['cold']:.0f} "
        f"vs_h11={get['h11'] / get['cold']:.1f}x "
        f"vs_httptools={get['httptools'] / get['cold']:.2f}x"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
