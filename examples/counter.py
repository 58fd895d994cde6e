"""The seed server's counter: every request increments a count and gets it back.

Run: ``peregrine-rt examples.counter:Counter --port 8080`` (or ``python examples/counter.py``).
"""

from __future__ import annotations

import peregrine_rt as pr


class Counter:
    def __init__(self) -> None:
        self.count = 0  # one instance per server process: no lock needed in one trio run

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        self.count += 1
        response.text(f"{self.count}\n")


if __name__ == "__main__":
    pr.run(Counter, port=8080)
