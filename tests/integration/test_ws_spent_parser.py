"""A connection that became a WebSocket keeps no HTTP parser of its own.

Once the 101 is out, the connection's ``parser`` is the shared
``SPENT_PARSER`` (the bytes that followed the handshake went to the
WebSocket first), so that an idle WebSocket does not hold a parser it never
uses again; what reads ``parser`` afterwards (``idle``, ``check_timeout``)
still works.
"""

from __future__ import annotations

import gc

import pytest
import trio
from wsproto.connection import Connection, ConnectionType
from wsproto.events import TextMessage

from peregrine_rt._connection import HTTPConnection, Waiting
from peregrine_rt._http import NEED_DATA, PAUSED, SPENT_PARSER, RequestParser
from peregrine_rt.exceptions import LocalProtocolError

from .conftest import Reader, open_server
from .ws_helpers import Recorder, WSClient, connect_ws, handshake, new_key


def parsers_kept(conn: HTTPConnection) -> list[RequestParser]:
    """The parsers the connection object refers to, the shared spent one aside."""
    return [
        o for o in gc.get_referents(conn) if isinstance(o, RequestParser) and o is not SPENT_PARSER
    ]


async def test_an_open_websocket_keeps_no_parser(transport: str) -> None:
    async with open_server(Recorder(), transport=transport) as h:
        ws = await connect_ws(h)
        await ws.send("hello")
        assert await ws.receive_message() == "hello"
        (conn,) = h.server.connections
        assert conn.waiting is Waiting.WEBSOCKET
        assert conn.parser is SPENT_PARSER
        assert parsers_kept(conn) == []
        # What reads the parser later still answers as for any open WebSocket.
        assert not conn.idle
        assert not conn.check_timeout(trio.current_time() + 3600)
        await ws.send("still there")
        assert await ws.receive_message() == "still there"
        await ws.close()


async def test_bytes_after_the_handshake_reach_the_websocket() -> None:
    # The first frame arrives in the same read as the handshake: the parser holds
    # it when the connection upgrades, and it must not be lost with the parser.
    early = Connection(ConnectionType.CLIENT).send(TextMessage(data="early"))
    async with open_server(Recorder()) as h:
        stream = await h.connect()
        ws = await WSClient.open(stream, handshake(key=new_key()) + early)
        assert await ws.receive_message() == "early"
        (conn,) = h.server.connections
        assert conn.parser is SPENT_PARSER
        await ws.close()


async def test_an_http_keep_alive_connection_keeps_its_parser() -> None:
    # The other side of the first test: the check above can fail.
    async with open_server(Recorder()) as h:
        stream = await h.connect()
        await stream.send_all(b"GET /page HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await Reader(stream).response()).status == 404
        (conn,) = h.server.connections
        assert conn.parser is not SPENT_PARSER
        assert len(parsers_kept(conn)) == 1


def test_the_spent_parser_reads_as_ended_and_refuses_input() -> None:
    assert not SPENT_PARSER.has_pending_data
    assert SPENT_PARSER.body_remaining == 0
    assert SPENT_PARSER.next_event() is PAUSED  # read_body_chunk: no more body
    assert SPENT_PARSER.next_event() is not NEED_DATA  # never waits for the socket
    for misuse in (
        lambda: SPENT_PARSER.feed(b"GET / HTTP/1.1\r\n\r\n"),
        SPENT_PARSER.feed_eof,
        SPENT_PARSER.start_next_cycle,
    ):
        with pytest.raises(LocalProtocolError):
            misuse()
    assert not SPENT_PARSER.has_pending_data and not SPENT_PARSER.their_eof
