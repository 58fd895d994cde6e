"""The permessage-deflate cap: a compression bomb is refused before it is inflated."""

from __future__ import annotations

import zlib

from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Message
from wsproto.extensions import PerMessageDeflate

from peregrine_rt._deflate import BoundedDeflate

LIMIT = 1000


def client_frame(payload: bytes) -> bytes:
    """A masked, compressed binary frame as a deflate-negotiating client sends it."""
    deflate = PerMessageDeflate()
    deflate.finalize("permessage-deflate")  # as after the handshake
    client = Connection(ConnectionType.CLIENT, extensions=[deflate])
    event: Message[bytes] = BytesMessage(data=payload)
    return client.send(event)


def server_events(wire: bytes, limit: int | None) -> list[object]:
    deflate = BoundedDeflate(limit)
    deflate.accept("permessage-deflate")  # as after the handshake
    server = Connection(ConnectionType.SERVER, extensions=[deflate])
    server.receive_data(wire)
    return list(server.events())


def test_a_bomb_is_refused_with_1009_and_never_inflated_past_the_limit() -> None:
    bomb = b"\x00" * 10_000_000  # 10 MB of zeros deflates to ~10 KB
    wire = client_frame(bomb)
    assert len(wire) < 20_000
    events = server_events(wire, LIMIT)
    delivered = sum(len(e.data) for e in events if isinstance(e, BytesMessage))
    assert delivered <= LIMIT + 1
    closes = [e for e in events if isinstance(e, CloseConnection)]
    assert [c.code for c in closes] == [1009]


def test_messages_within_the_limit_inflate_as_usual() -> None:
    payload = bytes(range(256)) * 3  # 768 bytes
    events = server_events(client_frame(payload) + client_frame(payload), LIMIT)
    messages = [bytes(e.data) for e in events if isinstance(e, BytesMessage)]
    assert b"".join(messages) == payload * 2
    assert not [e for e in events if isinstance(e, CloseConnection)]


def test_no_limit_behaves_like_wsproto() -> None:
    payload = zlib.compress(b"x") * 1000
    events = server_events(client_frame(payload), None)
    assert b"".join(bytes(e.data) for e in events if isinstance(e, BytesMessage)) == payload
