"""aiohttp's static route for ``bench/static.py``: ``python -m bench.servers.static_aiohttp``.

``web.static("/", root)``, the way aiohttp's documentation serves a directory
(``FileResponse`` underneath: ETag, ranges, ``sendfile`` via the event loop),
on aiohttp's default asyncio event loop, no access log.
"""

from __future__ import annotations

import argparse

from aiohttp import web


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_static("/", args.root)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
