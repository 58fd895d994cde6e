"""LazyConnection: wsproto's Connection only while a frame needs it, same bytes and events."""

from __future__ import annotations

import pytest
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.extensions import PerMessageDeflate

from peregrine_rt._wsconn import LazyConnection

from ..integration.ws_helpers import OP_CLOSE, OP_PING, OP_TEXT, close_payload, frame


def test_nothing_is_made_until_a_frame_needs_it() -> None:
    lazy = LazyConnection()
    assert not lazy.held
    assert lazy.state is ConnectionState.OPEN
    assert list(lazy.events()) == []
    assert not lazy.held


@pytest.mark.parametrize(
    "event",
    [Ping(payload=b"hb"), Pong(payload=b"x"), TextMessage(data="héllo"), BytesMessage(data=b"\0")],
)
def test_sending_without_a_close_writes_wsproto_bytes_and_keeps_nothing(event: object) -> None:
    lazy = LazyConnection()
    expected = Connection(ConnectionType.SERVER).send(event)  # type: ignore[arg-type]
    assert lazy.send(event) == expected  # type: ignore[arg-type]
    assert not lazy.held
    assert lazy.state is ConnectionState.OPEN


def test_a_close_sent_is_kept_with_its_state() -> None:
    lazy = LazyConnection()
    data = lazy.send(CloseConnection(code=1000, reason="bye"))
    assert data == Connection(ConnectionType.SERVER).send(CloseConnection(code=1000, reason="bye"))
    assert lazy.held
    assert lazy.state is ConnectionState.LOCAL_CLOSING
    lazy.release()  # a close is under way: a fresh Connection would forget it
    assert lazy.held
    assert lazy.state is ConnectionState.LOCAL_CLOSING


def test_received_control_frame_then_release() -> None:
    lazy = LazyConnection()
    lazy.receive_data(frame(OP_PING, b"are you there"))
    assert lazy.held
    events = list(lazy.events())
    assert events == [Ping(payload=b"are you there")]
    lazy.release()
    assert not lazy.held
    # Made again on the next frame, as fresh as the first.
    lazy.receive_data(frame(OP_TEXT, b"hi"))
    assert list(lazy.events()) == [
        TextMessage(data="hi", frame_finished=True, message_finished=True)
    ]


def test_a_received_close_is_kept() -> None:
    lazy = LazyConnection()
    lazy.receive_data(frame(OP_CLOSE, close_payload(1001, "away")))
    assert [type(e) for e in lazy.events()] == [CloseConnection]
    assert lazy.state is ConnectionState.REMOTE_CLOSING
    lazy.release()
    assert lazy.held
    assert lazy.state is ConnectionState.REMOTE_CLOSING


def test_an_extension_keeps_its_connection_from_the_start() -> None:
    lazy = LazyConnection([PerMessageDeflate()])
    assert lazy.held
    lazy.receive_data(frame(OP_PING, b"p"))
    assert list(lazy.events()) == [Ping(payload=b"p")]
    lazy.release()  # the deflate state lives in it
    assert lazy.held


def test_a_refused_frame_keeps_its_connection() -> None:
    """wsproto reports a frame it refuses as a close and its parser is finished:
    a fresh Connection must not take over the bytes that follow."""
    lazy = LazyConnection()
    lazy.receive_data(frame(OP_TEXT, b"x", rsv=4))  # RSV1 without an extension
    events = list(lazy.events())
    assert [type(e) for e in events] == [CloseConnection]
    assert events[0].code == 1002
    assert lazy.state is ConnectionState.OPEN  # wsproto leaves it to the caller
    lazy.release()
    assert lazy.held


def test_bytes_after_the_close_handshake_are_dropped() -> None:
    lazy = LazyConnection()
    lazy.send(CloseConnection(code=1000, reason="bye"))
    lazy.receive_data(frame(OP_CLOSE, close_payload(1000)))
    assert [type(e) for e in lazy.events()] == [CloseConnection]
    assert lazy.state is ConnectionState.CLOSED
    lazy.receive_data(frame(OP_TEXT, b"late"))  # wsproto itself would raise here
    assert list(lazy.events()) == []
