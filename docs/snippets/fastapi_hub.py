"""The FastAPI guide (docs/fastapi.rst): a FastAPI endpoint publishing on a plain hub topic.

No Channels here: a peregrine_rt WebSocket route subscribes its sockets to the
hub topic ``prices``, and FastAPI publishes there with
:func:`peregrine_rt.asgi.hub`.  The page shows the parts between the
``# [name]`` markers; the tests below run them through peregrine_rt.testing.
"""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from pydantic import BaseModel

import peregrine_rt as pr
from peregrine_rt.asgi import ASGI, hub
from peregrine_rt.testing import open_client, wait_until


# [hub]
class Price(BaseModel):
    symbol: str
    price: float


api = FastAPI()  # the existing app


@api.put("/prices/{symbol}")
async def set_price(symbol: str, body: Price, request: Request) -> dict[str, int]:
    # ... store it as before, then tell the live pages:
    delivered = await hub(request.scope).publish("prices", body.model_dump_json())
    return {"delivered": delivered}  # sockets reached in this process


class Ticker:
    """The live part: a WebSocket at /live that gets every message of the topic."""

    async def on_open(self, ws: pr.WebSocket) -> None:
        ws.hub.subscribe(ws, "prices")  # unsubscribed by itself when the socket closes

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        pass  # the page only listens


router = pr.Router()
router.websocket("/live", Ticker)
router.mount("/api", ASGI(api))
# pr.run(router, port=8000)
# [/hub]


async def test_a_fastapi_endpoint_publishes_to_the_websockets() -> None:
    async with open_client(router) as client, client.websocket("/live") as ws:
        assert client.server is not None
        hub_ = client.server.hub
        await wait_until(lambda: hub_.subscribers("prices"))  # Ticker.on_open ran
        answer = await client.put("/api/prices/ACME", json={"symbol": "ACME", "price": 12.5})
        assert answer.status == 200 and answer.json() == {"delivered": 1}
        assert json.loads(await ws.receive()) == {"symbol": "ACME", "price": 12.5}


async def test_the_accessor_needs_a_peregrine_server() -> None:
    # called on a scope another server made (no peregrine_rt extension): LookupError
    try:
        hub({"type": "http", "extensions": {}})
    except LookupError as exc:
        assert "not served by peregrine_rt" in str(exc)
    else:
        raise AssertionError("hub() found a hub in a foreign scope")
