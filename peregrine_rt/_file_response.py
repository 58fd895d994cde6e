"""A response whose body is (ranges of) a file, sent after the handler returns.

:func:`send_file_response` writes the head, then the file's parts with
``transport.send_file`` (``os.sendfile`` on a socket, else ``os.pread``), the
bytes between ranges (a multipart body) as they come.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ._access import request_fields
from ._files import FILE_STATS
from ._http import may_have_body

if TYPE_CHECKING:
    from ._connection import HTTPConnection
    from ._files import FileBody
    from ._request import Request
    from ._response import Response

__all__ = ["send_file_response"]

error_log = logging.getLogger("peregrine_rt.error")


async def send_file_response(
    conn: HTTPConnection, request: Request, response: Response, body: FileBody, keep_alive: bool
) -> bool:
    """Send a response whose body is (ranges of) a file; False if the connection must close."""
    head = conn.heads.head(
        response.status,
        response.headers.raw,
        version=request.http_version,
        keep_alive=keep_alive,
        content_length=body.length,
    )
    response.started = True
    transport = conn.transport
    complete = True
    try:
        if body.fd < 0 or not may_have_body(response.status, request.method):
            await transport.send_all(head)
        else:
            fd = body.fd
            for part in body.parts:
                if isinstance(part, bytes):
                    head += part
                    continue
                offset, count = part
                if await transport.send_file(fd, offset, count, head) < count:
                    complete = False
                    break
                head = b""
            if head and complete:
                await transport.send_all(head)
    except OSError:  # EIO and the like: the body cannot be completed
        target, extra = request_fields(conn.transport.client, request)
        error_log.exception("reading a file for %s failed", target, extra=extra)
        return False
    finally:
        response.release_file()
    if not complete:
        FILE_STATS.shortfalls += 1
        target, extra = request_fields(conn.transport.client, request)
        error_log.warning("a file shrank while %s was sent: connection closed", target, extra=extra)
        return False
    if conn.server.observed:
        conn.log_access(request, response.status, body.length)
    return True
