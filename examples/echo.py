"""Echo: the app the project's conformance and load tests run against.

* Every HTTP request gets ``200`` with ``method=<METHOD> target=<TARGET> body_len=<N>``,
  N the number of body bytes read.
* Any request that asks to upgrade becomes a WebSocket that echoes every
  message, text or binary, up to 16 MiB.

Run: ``peregrine-rt examples.echo:Echo --port 8080`` (or ``python examples/echo.py``).
"""

from __future__ import annotations

import peregrine_rt as pr

MAX_MESSAGE = 16 * 1024 * 1024


class Echo:
    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.upgrade is not None:
            await pr.upgrade(request, response, max_message_size=MAX_MESSAGE)
            return
        body = await request.body()
        target = request.target.decode("ascii")
        response.text(f"method={request.method} target={target} body_len={len(body)}")

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        await ws.send(message)


if __name__ == "__main__":
    pr.run(Echo, port=8080)
