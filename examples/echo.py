"""Echo: the app the project's conformance and load tests run against.

Every HTTP request gets ``200`` with ``method=<METHOD> target=<TARGET> body_len=<N>``,
N the number of body bytes read.

Run: ``peregrine-rt examples.echo:Echo --port 8080`` (or ``python examples/echo.py``).
"""

from __future__ import annotations

import peregrine_rt as pr


class Echo:
    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        body = await request.body()
        target = request.target.decode("ascii")
        response.text(f"method={request.method} target={target} body_len={len(body)}")


if __name__ == "__main__":
    pr.run(Echo, port=8080)
