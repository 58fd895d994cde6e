"""One line per response in the access log, and the facts a log line about a request carries.

What :class:`~peregrine_rt._connection.HTTPConnection` calls once a response
(or the server's own answer) is on its way (it counts it for ``/metrics``
itself).  Targets are written through
:func:`~peregrine_rt._logfmt.redact_target`, so a query-string credential
never reaches a log; request headers are never logged but for ``Referer``
(redacted the same way) and ``User-Agent``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ._logfmt import redact_target

if TYPE_CHECKING:
    from ._request import Request

__all__ = ["access_log", "log_response", "request_fields"]

access_log = logging.getLogger("peregrine_rt.access")


def _where(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "-"


def request_fields(client: tuple[str, int] | None, request: Request) -> tuple[str, dict[str, Any]]:
    """For a log line about ``request``: its redacted target, and the ``extra=``
    that carries it with the client and method (the fields of a JSON line)."""
    target = redact_target(request.target[:4096].decode("ascii", "replace"))
    fields = {"client": _where(client), "method": request.method, "path": target}
    return target, {"fields": fields}


def log_response(
    client: tuple[str, int] | None,
    request: Request | None,
    status: int,
    size: int,
    seconds: float,
) -> None:
    """One access-log line, with its fields (JSON logs).

    ``request`` None: the server answered before a request head was read
    (400, 408, 413, 431...).  ``size`` is the body's, -1 for a stream.
    """
    where = _where(client)
    fields: dict[str, Any] = {
        "client": where,
        "status": status,
        "size": size,
        "duration_ms": round(seconds * 1000, 3),
    }
    if request is None:
        access_log.info('%s - "-" %d %d', where, status, size, extra={"fields": fields})
        return
    target = redact_target(request.target.decode("ascii", "replace"))
    fields.update(method=request.method, path=target, http_version=request.http_version)
    headers = request.headers
    referer = headers.get("referer")
    if referer:
        fields["referer"] = redact_target(referer)
    agent = headers.get("user-agent")
    if agent:
        fields["user_agent"] = agent
    access_log.info(
        '%s - "%s %s HTTP/%s" %d %d',
        where,
        request.method,
        target,
        request.http_version,
        status,
        size,
        extra={"fields": fields},
    )
