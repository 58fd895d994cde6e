"""``examples.echo.Echo`` served with permessage-deflate on, for Autobahn's 12.* and 13.*.

The CLI has no compression flag, so this serves the echo app through
``peregrine_rt.run`` (a ``Server(EchoDeflate, ws_compression=True, ...)``)::

    .venv/bin/python tests/autobahn/echo_deflate.py --port 9001
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: make ``examples`` importable
    sys.path.insert(0, str(REPO))

import peregrine_rt as pr  # noqa: E402
from examples.echo import Echo  # noqa: E402


class EchoDeflate(Echo):
    """The echo app unchanged: its ``upgrade()`` follows ``Config.ws_compression``."""


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9001)
    p.add_argument(
        "--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"]
    )
    args = p.parse_args(argv)
    pr.run(
        EchoDeflate,
        host=args.host,
        port=args.port,
        ws_compression=True,
        log_level=args.log_level.upper(),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
