"""Cross-Origin Resource Sharing: :class:`CORS`, a middleware.

A browser lets a page read a response from another origin only when the
response says so (``Access-Control-Allow-Origin``), and before a request a
plain form could not have sent (another method, a custom header, a JSON
``Content-Type``) it asks first with a *preflight*: ``OPTIONS`` with
``Access-Control-Request-Method`` (and ``-Headers``).  :class:`CORS` answers
preflights itself and adds the headers to the app's responses; the app is
never asked about CORS.

Where the headers go:

* before the app runs, so that streamed responses, Server-Sent Events and
  files carry them too (their head is sent while the app runs);
* into an :class:`~peregrine_rt.HTTPError` the app raises: the server builds
  that answer afresh, keeping only the error's headers, and a browser app
  must be able to read a 401 or a 404 from another origin;
* not on the ``500`` of an exception the app did not handle: the server
  answers it without the app's headers, so the page sees a network error
  (``TypeError``) instead of the 500 — the log has the traceback.

Starlette's ``CORSMiddleware`` was the model; the differences are named in
docs/web/middleware.rst.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ._middleware import Middleware, add_vary
from .exceptions import HTTPError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._request import Request
    from ._response import Response

__all__ = ["CORS", "SAFELISTED_HEADERS"]

SAFELISTED_HEADERS = frozenset({"accept", "accept-language", "content-language", "content-type"})
"""Request headers always allowed in a preflight (the Fetch standard's CORS-safelisted names).

A ``Content-Type`` other than a form's still needs a preflight; it is allowed
here without being listed in ``allow_headers``.
"""

_ORIGIN = re.compile(r"(?:[a-z][a-z0-9+.-]*://[^/?#\s]+|null)")


def _names(values: Iterable[str], what: str) -> tuple[str, ...]:
    if isinstance(values, str):
        raise TypeError(f"{what} must be a list of strings, not the string {values!r}")
    return tuple(values)


class CORS(Middleware):
    """Answer CORS preflights and let the listed origins read the app's responses.

    ::

        app = pr.CORS(Api, allow_origins=["https://app.example"], allow_credentials=True)

    Args:
        app: the handler to wrap (a class or an instance, see :class:`Middleware`).
        allow_origins: the origins allowed, exactly as browsers send them
            (``"https://app.example"``, ``"http://localhost:5173"``: scheme,
            host and port, no path, no trailing slash); ``["*"]`` allows any.
        allow_origin_regex: a pattern an allowed origin matches in full
            (``r"https://.*\\.app\\.example"``), besides ``allow_origins``.
        allow_methods: the methods a preflight may ask for; ``["*"]`` for any.
            GET, HEAD and POST need no preflight and are never refused by
            browsers on that account.
        allow_headers: request headers a preflight may ask for (any case),
            besides the CORS-safelisted ``Accept``, ``Accept-Language``,
            ``Content-Language`` and ``Content-Type``; ``["*"]`` for any.
        allow_credentials: let pages send cookies and ``Authorization``
            (``fetch(url, {credentials: "include"})``) and read the answer.
        expose_headers: response headers the page may read besides the
            safelisted ones (``Content-Type``, ``Content-Length``...).
        max_age: seconds a browser may cache a preflight's answer.

    Requests without ``Origin`` (not from a browser page, or same-origin
    GETs) reach the app untouched; the response gets ``Vary: Origin`` when the
    answer depends on the origin (any configuration but ``["*"]``), so that a
    shared cache never gives one origin's answer to another.

    A preflight is answered here, without the app: ``204`` with
    ``Access-Control-Allow-Origin`` (the origin), ``-Methods``, ``-Headers``
    (those asked for), ``-Max-Age`` and ``-Credentials``; or ``400`` with a
    line naming what is not allowed (origin, method, headers) and no CORS
    header, which the browser reports as a failed ``fetch()``.  A request
    from an origin not allowed runs as usual, without CORS headers: the
    browser withholds the answer from the page (CORS protects what a page can
    read, not the server; refuse writes from strangers with sessions and
    CSRF checks, see :doc:`/web/security`).

    Error handling:
        ``ValueError`` for ``allow_origins=["*"]`` with
        ``allow_credentials=True`` (browsers refuse ``*`` with credentials:
        list the origins, or use ``allow_origin_regex``) and for an origin
        that cannot match (a path, a trailing slash); ``TypeError`` for a
        string where a list is expected.
    """

    def __init__(
        self,
        app: type | object,
        *,
        allow_origins: Iterable[str] = (),
        allow_origin_regex: str | None = None,
        allow_methods: Iterable[str] = ("GET", "HEAD", "POST"),
        allow_headers: Iterable[str] = (),
        allow_credentials: bool = False,
        expose_headers: Iterable[str] = (),
        max_age: int = 600,
    ) -> None:
        origins = _names(allow_origins, "allow_origins")
        methods = _names(allow_methods, "allow_methods")
        headers = _names(allow_headers, "allow_headers")
        exposed = _names(expose_headers, "expose_headers")
        self.any_origin = "*" in origins
        if self.any_origin and allow_credentials:
            raise ValueError(
                "CORS(allow_origins=['*'], allow_credentials=True) cannot work: browsers "
                "refuse 'Access-Control-Allow-Origin: *' on a request with credentials; "
                "list the origins (or use allow_origin_regex)"
            )
        for origin in origins:
            if origin != "*" and not _ORIGIN.fullmatch(origin.lower()):
                raise ValueError(
                    f"allow_origins: {origin!r} is not an origin as browsers send it "
                    "(scheme://host[:port], no path, no trailing slash)"
                )
        if max_age < 0:
            raise ValueError(f"max_age must be 0 or more seconds, not {max_age}")
        super().__init__(app)
        self.allow_origins = frozenset(o.lower() for o in origins if o != "*")
        self.allow_origin_regex = re.compile(allow_origin_regex) if allow_origin_regex else None
        self.any_method = "*" in methods
        self.allow_methods = tuple(dict.fromkeys(m.upper() for m in methods if m != "*"))
        self.any_header = "*" in headers
        self.allow_headers = frozenset(h.lower() for h in headers if h != "*")
        self.allow_credentials = allow_credentials
        self.expose_headers = ", ".join(exposed)
        self.max_age = max_age
        # The answer depends on the origin unless it is '*' for everyone.
        self.varies = not self.any_origin

    def origin_allowed(self, origin: str) -> bool:
        """Whether ``origin`` (an ``Origin`` header's value) may read the app's responses."""
        if self.any_origin:
            return True
        lowered = origin.lower()
        if lowered in self.allow_origins:
            return True
        pattern = self.allow_origin_regex
        return pattern is not None and pattern.fullmatch(origin) is not None

    def _allow(self, origin: str) -> list[tuple[str, str]]:
        """The headers that let ``origin`` (allowed) read a response."""
        if self.any_origin:
            return [("access-control-allow-origin", "*")]
        fields = [("access-control-allow-origin", origin)]
        if self.allow_credentials:
            fields.append(("access-control-allow-credentials", "true"))
        return fields

    async def handle(self, request: Request, response: Response) -> None:
        """Answer a preflight, or run the app and let an allowed origin read its answer."""
        origin = request.headers.get("origin")
        response.hold()  # what the app answers gets our headers after handle
        if origin is None or request.upgrade is not None:
            # Not a CORS request (or a WebSocket handshake: browsers do not apply
            # CORS to those; upgrade() checks the Origin itself).
            await self.app.handle(request, response)
            if self.varies and origin is None and not response.started:
                add_vary(response.headers, "Origin")
            return
        if request.method == "OPTIONS" and "access-control-request-method" in request.headers:
            self.preflight(request, response, origin)
            return
        fields: list[tuple[str, str]] = []
        if self.origin_allowed(origin):
            fields = self._allow(origin)
            if self.expose_headers:
                fields.append(("access-control-expose-headers", self.expose_headers))
        headers = response.headers
        for name, value in fields:
            headers[name] = value
        if self.varies:
            add_vary(headers, "Origin")
        try:
            await self.app.handle(request, response)
        except HTTPError as exc:
            # The server answers with the error's headers only: add ours to them.
            for name, value in fields:
                exc.headers.setdefault(name, value)
            if self.varies:
                vary = next((v for k, v in exc.headers.items() if k.lower() == "vary"), "")
                if "origin" not in vary.lower():
                    exc.headers = {k: v for k, v in exc.headers.items() if k.lower() != "vary"}
                    exc.headers["vary"] = f"{vary}, Origin" if vary else "Origin"
            raise
        if not response.started:
            # The app may have replaced a header we set (a whole new Vary, say).
            for name, value in fields:
                if name not in headers:
                    headers[name] = value
            if self.varies:
                add_vary(headers, "Origin")

    def preflight(self, request: Request, response: Response, origin: str) -> None:
        """Answer the preflight ``request`` from ``origin`` (204, or 400 naming what is refused)."""
        method = (request.headers.get("access-control-request-method") or "").strip()
        requested = [
            h.strip().lower()
            for h in (request.headers.get("access-control-request-headers") or "").split(",")
            if h.strip()
        ]
        refused: list[str] = []
        if not self.origin_allowed(origin):
            refused.append("origin")
        if not method or not (self.any_method or method in self.allow_methods):
            refused.append("method")
        if not self.any_header and any(
            h not in self.allow_headers and h not in SAFELISTED_HEADERS for h in requested
        ):
            refused.append("headers")
        headers = response.headers
        if self.varies:
            add_vary(headers, "Origin")
        if refused:
            response.text(f"Disallowed CORS {', '.join(refused)}\n", status=400)
            return
        response.status = 204
        for name, value in self._allow(origin):
            headers[name] = value
        methods = self.allow_methods if not self.any_method else (method,)
        headers["access-control-allow-methods"] = ", ".join(methods)
        if requested:
            headers["access-control-allow-headers"] = ", ".join(requested)
        headers["access-control-max-age"] = str(self.max_age)
