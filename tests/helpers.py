"""Drive a :class:`RequestParser` the three ways h11's ``tr()`` drives h11.

Every unit case is fed

* ``"whole"``: all bytes in one ``feed()``;
* ``"bytewise"``: one byte per ``feed()``, asking for events after each, so
  every possible split point of the input is exercised;
* ``"trailing"``: all bytes at once followed by :data:`TRAILING`, bytes that
  belong to whatever comes after the request (the next request, WebSocket
  frames) and must be left unconsumed in ``parser.trailing_data``.

A correct sans-IO parser gives the same answer whichever way the bytes arrive;
the tests compare the three results with each other, not only with the
expected values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import pytest

from peregrine_rt._http import (
    CLOSED,
    NEED_DATA,
    PAUSED,
    Data,
    EndOfMessage,
    Event,
    RequestHead,
    RequestParser,
)
from peregrine_rt.exceptions import RemoteProtocolError

__all__ = [
    "MODES",
    "PARSER_FACTORIES",
    "TRAILING",
    "Feeder",
    "Mode",
    "ParsedRequest",
    "StreamResult",
    "get_all_events",
    "head_summary",
    "parse_error",
    "parse_request",
    "parse_stream",
]

Mode = Literal["whole", "bytewise", "trailing"]
MODES: tuple[Mode, ...] = ("whole", "bytewise", "trailing")

# Bytes that cannot be the start of anything the parser would take for the
# request it is reading (a TLS record header, then non-ASCII), with no CR or LF
# so that they never complete a line of an unfinished head.
TRAILING = b"\x16\x03\x01 trailing \xff\x00"

ParsedRequest = tuple[RequestHead, bytes, tuple[tuple[bytes, bytes], ...]]
"""``(head, body, trailers)`` of one complete request."""

ParserFactory = Callable[..., RequestParser]


def _general_path_parser(**limits: Any) -> RequestParser:
    return RequestParser(fast_path=False, **limits)


PARSER_FACTORIES: tuple[Any, ...] = (
    pytest.param(RequestParser, id="default"),
    pytest.param(_general_path_parser, id="general-path"),
)
"""The default parser and one forced through the general path; they must agree."""


def get_all_events(parser: RequestParser) -> list[Event]:
    """Every event the parser can produce now, until NEED_DATA, PAUSED or CLOSED."""
    events: list[Event] = []
    while True:
        event = parser.next_event()
        if event is NEED_DATA or event is PAUSED or event is CLOSED:
            return events
        assert isinstance(event, RequestHead | Data | EndOfMessage), event
        events.append(event)


class Feeder:
    """Hands ``data`` to ``parser`` whole, byte by byte, or with trailing bytes.

    With ``eof=True`` the end of input is signalled (``feed_eof()``) once all
    bytes are in; never in ``"trailing"`` mode, where more bytes follow by
    definition.
    """

    def __init__(self, parser: RequestParser, data: bytes, mode: Mode, *, eof: bool = False):
        self.parser = parser
        if mode == "trailing":
            data += TRAILING
        if mode == "bytewise":
            self._pieces = [data[i : i + 1] for i in range(len(data))]
        else:
            self._pieces = [data] if data else []
        self._eof = eof and mode != "trailing"
        self._next = 0
        self.fed = 0
        """How many bytes have been fed so far."""

    def feed_more(self) -> bool:
        """Feed the next piece (or the EOF); ``False`` when there is nothing left."""
        if self._next < len(self._pieces):
            piece = self._pieces[self._next]
            self._next += 1
            self.parser.feed(piece)
            self.fed += len(piece)
            return True
        if self._eof and not self.parser.their_eof:
            self.parser.feed_eof()
            return True
        return False

    def next_event(self) -> object:
        """The parser's next event, feeding more input for as long as it says NEED_DATA."""
        while True:
            event = self.parser.next_event()
            if event is not NEED_DATA or not self.feed_more():
                return event


def parse_request(feeder: Feeder, head: RequestHead | None = None) -> ParsedRequest:
    """Read one complete request: its head (unless given), body and trailers.

    Checks the event grammar on the way: one head, non-empty ``Data`` pieces,
    one ``EndOfMessage``, then ``PAUSED`` until ``start_next_cycle()``.
    """
    if head is None:
        event = feeder.next_event()
        assert isinstance(event, RequestHead), f"expected a RequestHead, got {event!r}"
        head = event
    assert feeder.parser.head is head
    body = bytearray()
    while True:
        event = feeder.next_event()
        if isinstance(event, Data):
            assert event.data, "Data events are never empty"
            body += event.data
        elif isinstance(event, EndOfMessage):
            break
        else:
            raise AssertionError(f"unexpected {event!r} inside a request")
    assert feeder.parser.next_event() is PAUSED
    assert feeder.parser.next_event() is PAUSED
    return head, bytes(body), event.trailers


@dataclass
class StreamResult:
    """What :func:`parse_stream` read from one connection's bytes."""

    requests: list[ParsedRequest]
    end: object
    """How reading ended: NEED_DATA, CLOSED, or PAUSED (trailing bytes left alone)."""
    leftover: bytes
    """``parser.trailing_data`` at the end."""

    def summary(self) -> list[tuple[dict[str, object], bytes, tuple[tuple[bytes, bytes], ...]]]:
        """Everything observable about the requests, as comparable plain data."""
        return [(head_summary(head), body, trailers) for head, body, trailers in self.requests]


def parse_stream(
    parser: RequestParser, data: bytes, mode: Mode, *, eof: bool = False
) -> StreamResult:
    """Read every request in ``data`` (pipelined ones too), fed the ``mode`` way.

    In ``"trailing"`` mode reading stops, without ``start_next_cycle()``, once
    what is left over is exactly :data:`TRAILING`.
    """
    feeder = Feeder(parser, data, mode, eof=eof)
    requests: list[ParsedRequest] = []
    while True:
        if mode == "trailing" and requests and parser.trailing_data == TRAILING:
            end: object = PAUSED
            break
        if requests:
            parser.start_next_cycle()
        event = feeder.next_event()
        if event is NEED_DATA or event is CLOSED:
            end = event
            break
        assert isinstance(event, RequestHead), f"expected a RequestHead, got {event!r}"
        requests.append(parse_request(feeder, event))
    return StreamResult(requests, end, parser.trailing_data)


def parse_error(
    parser: RequestParser, data: bytes, mode: Mode, *, eof: bool = False
) -> tuple[RemoteProtocolError, int]:
    """Feed ``data`` until the parser refuses it; return the error and the bytes fed by then.

    Fails the test if the parser never raises.  Checks that a failed parser
    stays failed: ``next_event()`` raises again, whatever comes next.
    """
    feeder = Feeder(parser, data, mode, eof=eof)
    with pytest.raises(RemoteProtocolError) as info:
        while True:
            event = feeder.next_event()
            if event is NEED_DATA or event is CLOSED:
                break
            if event is PAUSED:
                parser.start_next_cycle()
    for _ in range(2):
        with pytest.raises(RemoteProtocolError):
            parser.next_event()
    return info.value, feeder.fed


_HEAD_FIELDS = (
    "method",
    "target",
    "http_version",
    "host",
    "keep_alive",
    "content_length",
    "chunked",
    "upgrade",
    "expect_continue",
    "has_body",
    "path",
    "raw_path",
    "raw_query",
    "query",
    "authority",
)


def head_summary(head: RequestHead) -> dict[str, object]:
    """Every attribute and derived property of ``head``, with ``headers`` as raw pairs."""
    summary: dict[str, object] = {name: getattr(head, name) for name in _HEAD_FIELDS}
    summary["headers"] = list(head.headers.raw)
    return summary
