"""The wire codec of Channels: Phoenix Channels' V2 JSON serializer, sans-IO.

Every message, either way, is one WebSocket *text* frame holding a JSON array
of five items::

    [join_ref, ref, topic, event, payload]

``join_ref`` and ``ref`` are strings or ``null``, ``topic`` and ``event`` are
non-empty strings, ``payload`` is any JSON value (phoenix.js always sends an
object).  That is all phoenix.js (and its Swift, Kotlin and Dart ports) speak
over JSON, so a frame this module encodes is one those clients read.

Nothing here does I/O or imports trio: :func:`decode` turns a text into a
:class:`Frame` or raises :class:`ProtocolViolation` carrying the WebSocket
close code the server answers with, and :func:`encode` turns a frame into
compact JSON, the same text for the same frame every time (so that one
encoded broadcast can be written to many sockets).

Close codes for what cannot be decoded:

* **1007** (invalid frame payload data): the text is not JSON, or nests
  deeper than the JSON depth limit;
* **1008** (policy violation): JSON, but not a 5-array of the right types.
  1002 is left to the WebSocket layer itself (a bad frame, not a bad
  message); a well-formed WebSocket message that breaks the Channels
  protocol is a policy matter.

History offsets ride in the ``ref`` slot of broadcasts as ``"p:<offset>"``
(:func:`publication_ref`): phoenix.js hands the ref to ``channel.on``'s
callback as its second argument and otherwise ignores it, and its own refs
are decimal numbers, so a ``"p:"`` ref can never be taken for a reply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from .._json import JSON_MAX_DEPTH, dumps, loads
from ..exceptions import InvalidJSON, PeregrineError

__all__ = [
    "CLOSE_BAD_FRAME",
    "CLOSE_BAD_JSON",
    "HEARTBEAT",
    "PHOENIX_TOPIC",
    "PHX_CLOSE",
    "PHX_ERROR",
    "PHX_JOIN",
    "PHX_LEAVE",
    "PHX_REPLY",
    "PRESENCE_DIFF",
    "PRESENCE_STATE",
    "RESERVED_EVENTS",
    "Frame",
    "ProtocolViolation",
    "close_frame",
    "decode",
    "encode",
    "error_frame",
    "parse_publication_ref",
    "publication_ref",
    "reply",
]

PHX_JOIN: Final = "phx_join"
PHX_LEAVE: Final = "phx_leave"
PHX_REPLY: Final = "phx_reply"
PHX_ERROR: Final = "phx_error"
PHX_CLOSE: Final = "phx_close"
HEARTBEAT: Final = "heartbeat"
PRESENCE_STATE: Final = "presence_state"
PRESENCE_DIFF: Final = "presence_diff"
PHOENIX_TOPIC: Final = "phoenix"
"""The topic heartbeats travel on."""

RESERVED_EVENTS: Final = frozenset(
    {PHX_JOIN, PHX_LEAVE, PHX_REPLY, PHX_ERROR, PHX_CLOSE, HEARTBEAT, PRESENCE_STATE, PRESENCE_DIFF}
)
"""Events with a meaning in the protocol: an app neither handles nor broadcasts them."""

CLOSE_BAD_JSON: Final = 1007
"""Close code for a text that is not JSON (or nests too deeply)."""
CLOSE_BAD_FRAME: Final = 1008
"""Close code for JSON that is not a ``[join_ref, ref, topic, event, payload]`` frame."""

_PUBLICATION_PREFIX: Final = "p:"


class ProtocolViolation(PeregrineError, ValueError):
    """A client's message is not a Phoenix V2 frame.

    Attributes:
        code: the WebSocket close code to answer with: 1007 (not JSON) or
            1008 (JSON, but not a frame).
        reason: a short close reason (it fits the 123 bytes a close frame allows).
    """

    def __init__(self, reason: str, code: int) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason[:120]


@dataclass(frozen=True, slots=True)
class Frame:
    """One Phoenix message: ``[join_ref, ref, topic, event, payload]``.

    Attributes:
        join_ref: the ref of the join this message belongs to (``None`` for
            broadcasts and heartbeats).
        ref: the message's own ref; a reply carries the ref of the message it
            answers; ``None`` for pushes, ``"p:<offset>"`` for publications
            of a topic with history.
        topic: the topic (``"room:lobby"``; ``"phoenix"`` for heartbeats).
        event: the event name (``"phx_join"``, ``"new_msg"``...).
        payload: any JSON value.
    """

    join_ref: str | None
    ref: str | None
    topic: str
    event: str
    payload: Any


def decode(text: str | bytes, *, max_depth: int = JSON_MAX_DEPTH) -> Frame:
    """Read one client message.

    Raises:
        ProtocolViolation: with ``code`` 1007 if ``text`` is not JSON (or
            nests deeper than ``max_depth``), 1008 if it is not a 5-array
            ``[string|null, string|null, string, string, any]`` with a
            non-empty topic and event.

    >>> decode('["1","1","room:lobby","phx_join",{}]')
    Frame(join_ref='1', ref='1', topic='room:lobby', event='phx_join', payload={})
    """
    try:
        data = loads(text, max_depth)
    except InvalidJSON as exc:
        raise ProtocolViolation(str(exc), CLOSE_BAD_JSON) from None
    if type(data) is not list or len(data) != 5:
        raise ProtocolViolation(
            "a message must be [join_ref, ref, topic, event, payload]", CLOSE_BAD_FRAME
        )
    join_ref, ref, topic, event, payload = data
    if join_ref is not None and type(join_ref) is not str:
        raise ProtocolViolation("join_ref must be a string or null", CLOSE_BAD_FRAME)
    if ref is not None and type(ref) is not str:
        raise ProtocolViolation("ref must be a string or null", CLOSE_BAD_FRAME)
    if type(topic) is not str or not topic:
        raise ProtocolViolation("topic must be a non-empty string", CLOSE_BAD_FRAME)
    if type(event) is not str or not event:
        raise ProtocolViolation("event must be a non-empty string", CLOSE_BAD_FRAME)
    return Frame(join_ref, ref, topic, event, payload)


def encode(frame: Frame) -> str:
    """The frame as compact JSON text, the same text for equal frames every time.

    >>> encode(Frame(None, "p:3", "room:lobby", "new_msg", {"body": "hé"}))
    '[null,"p:3","room:lobby","new_msg",{"body":"hé"}]'

    Raises:
        TypeError: the payload holds something JSON cannot carry.
        ValueError: the payload is circular or holds NaN/infinity... (as
            ``json.dumps`` raises for it).
    """
    return dumps([frame.join_ref, frame.ref, frame.topic, frame.event, frame.payload])


def reply(frame: Frame, status: str, response: Any = None) -> Frame:
    """The ``phx_reply`` answering ``frame``: same join_ref, ref and topic.

    ``status`` is ``"ok"`` or ``"error"``; ``response`` defaults to ``{}``.

    >>> reply(Frame("1", "2", "t", "ping", {}), "ok", {"n": 1}).payload
    {'status': 'ok', 'response': {'n': 1}}
    """
    body = {} if response is None else response
    return Frame(
        frame.join_ref, frame.ref, frame.topic, PHX_REPLY, {"status": status, "response": body}
    )


def close_frame(join_ref: str | None, topic: str) -> Frame:
    """``[join_ref, join_ref, topic, "phx_close", {}]``: the server ended this join."""
    return Frame(join_ref, join_ref, topic, PHX_CLOSE, {})


def error_frame(join_ref: str | None, topic: str) -> Frame:
    """``[join_ref, join_ref, topic, "phx_error", {}]``: this join crashed; the client rejoins."""
    return Frame(join_ref, join_ref, topic, PHX_ERROR, {})


def publication_frame(topic: str, offset: int, event: str, payload: Any) -> Frame:
    """A broadcast of a topic with history: its offset rides in the ref slot."""
    return Frame(None, publication_ref(offset), topic, event, payload)


def publication_ref(offset: int) -> str:
    """The ref of a publication with history ``offset``: ``"p:<offset>"``.

    >>> publication_ref(41)
    'p:41'
    """
    return f"{_PUBLICATION_PREFIX}{offset}"


def parse_publication_ref(ref: str | None) -> int | None:
    """The offset in a ``"p:<offset>"`` ref, or ``None`` for any other ref.

    >>> parse_publication_ref("p:41"), parse_publication_ref("7"), parse_publication_ref(None)
    (41, None, None)
    """
    if ref is None or not ref.startswith(_PUBLICATION_PREFIX):
        return None
    digits = ref[len(_PUBLICATION_PREFIX) :]
    if not digits.isascii() or not digits.isdigit() or (len(digits) > 1 and digits[0] == "0"):
        return None
    return int(digits)
