"""A socket's wsproto ``Connection``, made only while a frame needs it.

An open WebSocket without extensions has its common frames read and written
by the fast path (:mod:`peregrine_rt._frames`); wsproto reads only control
frames, close frames and unusual ones, and writes pings, pongs and closes.
Between those, wsproto holds nothing: its state is OPEN, its parser sits
between frames and messages, its event queue is empty, which is exactly what
a fresh ``Connection`` holds.  So :class:`LazyConnection` makes one when a
caller needs it and lets it go again when its owner says it is back in that
state (:meth:`LazyConnection.release`): about 1.8 KB less on every idle socket.

With an extension (permessage-deflate) the ``Connection`` carries compression
state from message to message: it is made at once and kept.
"""

from __future__ import annotations

from collections.abc import Sequence

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import CloseConnection, Event
from wsproto.extensions import Extension

__all__ = ["LazyConnection"]

_NO_EVENTS: list[Event] = []  # never appended to: events() hands out a new list otherwise
_OPEN, _CLOSED = ConnectionState.OPEN, ConnectionState.CLOSED


class LazyConnection:
    """The parts of wsproto's server ``Connection`` a socket uses, made on demand.

    Args:
        extensions: the extensions the handshake accepted (none: made lazily).
    """

    __slots__ = ("_conn", "_keep", "state")

    def __init__(self, extensions: Sequence[Extension] = ()) -> None:
        self._keep = bool(extensions)  # its state outlives a frame: never let it go
        self._conn: Connection | None = (
            Connection(ConnectionType.SERVER, extensions=list(extensions)) if extensions else None
        )
        self.state: ConnectionState = _OPEN
        """wsproto's connection state (OPEN while no ``Connection`` is held), kept in
        step after every call that can change it: a plain attribute, read per message."""

    @property
    def held(self) -> bool:
        """Whether a wsproto ``Connection`` exists now (what an idle socket should not keep)."""
        return self._conn is not None

    def send(self, event: Event) -> bytes:
        """The bytes of ``event``, as ``Connection.send`` writes them (a close sets the state)."""
        if self._conn is None and not isinstance(event, CloseConnection):
            # Sending a ping, pong or message leaves the receiving side as it
            # was: a throwaway Connection writes it.
            return Connection(ConnectionType.SERVER).send(event)
        conn = self._made()
        data = conn.send(event)
        self.state = conn.state
        return data

    def receive_data(self, data: bytes) -> None:
        """Hand received bytes to wsproto (making its ``Connection`` if needed).

        Once the close handshake is over (CLOSED), what still arrives in the
        same read is dropped: wsproto would refuse it with an error.
        """
        if self.state is _CLOSED:
            return
        conn = self._made()
        conn.receive_data(data)
        self.state = conn.state

    def events(self) -> list[Event]:
        """wsproto's events for the bytes received so far, all of them (a close among
        them changes :attr:`state`)."""
        conn = self._conn
        if conn is None:
            return _NO_EVENTS
        events = list(conn.events())
        self.state = conn.state
        if any(type(event) is CloseConnection for event in events):
            # A close received, or a frame wsproto refused (reported as a close:
            # its parser is finished): this Connection's history matters now.
            self._keep = True
        return events

    def release(self) -> None:
        """Let the ``Connection`` go, if it can be made again with nothing lost.

        The caller vouches that wsproto's parser is between frames and
        messages and that its events were all read.  The ``Connection`` is
        kept while it carries more than that: an extension's state, a state
        other than OPEN (a close sent or received), or a refused frame.
        """
        if not self._keep and self.state is _OPEN:
            self._conn = None

    def _made(self) -> Connection:
        """The ``Connection``, made now if none is held."""
        conn = self._conn
        if conn is None:
            conn = self._conn = Connection(ConnectionType.SERVER)
        return conn
