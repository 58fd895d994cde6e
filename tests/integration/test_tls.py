"""HTTPS: ``Config(ssl_context=...)`` over real loopback sockets, with trustme certificates."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator

import pytest
import trio
import trustme

import peregrine_rt as pr

from .conftest import H11Client, Reader, exchange, get, h11_header, open_server


class Info:
    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        body = await request.body()
        response.json(
            {
                "scheme": request.scheme,
                "path": request.path,
                "body_len": len(body),
                "client_is_tuple": isinstance(request.client, tuple),
            }
        )


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    return ctx


@pytest.fixture(scope="module")
def client_context(ca: trustme.CA) -> Iterator[ssl.SSLContext]:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(ctx)
    yield ctx


async def open_tls(port: int, ctx: ssl.SSLContext) -> trio.SSLStream[trio.SocketStream]:
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    stream = trio.SSLStream(tcp, ctx, server_hostname="127.0.0.1", https_compatible=True)
    try:
        await stream.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream


async def test_https_request_gets_200_with_scheme_https(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    async with open_server(Info, transport="tcp", ssl_context=server_context) as h:
        assert h.server.url.startswith("https://127.0.0.1:")
        stream = await open_tls(h.server.port, client_context)
        try:
            client = H11Client(stream)
            for i in range(3):  # keep-alive over TLS
                resp, body = await client.request("POST", f"/tls{i}", body=b"x" * 10_000)
                assert resp.status_code == 200
                assert h11_header(resp, "content-type") == "application/json"
                assert json.loads(body) == {
                    "scheme": "https",
                    "path": f"/tls{i}",
                    "body_len": 10_000,
                    "client_is_tuple": True,
                }
        finally:
            await trio.aclose_forcefully(stream)


async def test_plain_http_on_the_tls_port_is_closed_and_others_are_served(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    async with open_server(Info, transport="tcp", ssl_context=server_context) as h:
        plain = await h.connect()
        await plain.send_all(get("/plain"))
        with trio.fail_after(3):
            data = await Reader(plain).read_to_eof()
        assert b"HTTP/1.1 200" not in data
        stream = await open_tls(h.server.port, client_context)
        try:
            resp = await exchange(stream, get("/after", "Connection: close"))
            assert resp.status == 200
            assert json.loads(resp.body)["scheme"] == "https"
        finally:
            await trio.aclose_forcefully(stream)


async def test_untrusted_client_handshake_fails_without_harming_the_server(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    async with open_server(Info, transport="tcp", ssl_context=server_context) as h:
        stranger = ssl.create_default_context()  # does not trust our CA
        with pytest.raises(trio.BrokenResourceError):
            bad = await open_tls(h.server.port, stranger)
            await bad.aclose()
        stream = await open_tls(h.server.port, client_context)
        try:
            assert (await exchange(stream, get("/ok"))).status == 200
        finally:
            await trio.aclose_forcefully(stream)


async def test_silent_client_on_the_tls_port_times_out(server_context: ssl.SSLContext) -> None:
    # The handshake counts as part of the request head: header_timeout applies.
    async with open_server(
        Info, transport="tcp", ssl_context=server_context, header_timeout=0.3
    ) as h:
        silent = await h.connect()
        start = trio.current_time()
        with trio.fail_after(3):
            data = await Reader(silent).read_to_eof()
        assert data == b""
        assert 0.3 <= trio.current_time() - start <= 1.5
