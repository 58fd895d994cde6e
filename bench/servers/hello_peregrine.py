"""peregrine_rt's hello world: ``peregrine-rt bench.servers.hello_peregrine:Hello``."""

from __future__ import annotations

import peregrine_rt as pr


class Hello:
    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        response.text("Hello, World!")
