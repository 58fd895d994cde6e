"""The mistakes a Router refuses when a route is added (docs/web/routing.rst).

Each test makes one mistake and requires the message the page quotes.
"""

from __future__ import annotations

import pytest

from peregrine_rt import HandlerError, Router


async def item(request, response): ...


def sync_item(request, response): ...


class Chat:
    async def on_open(self, ws): ...


# [errors]
MISTAKES = [
    (
        lambda r: r.route("/items/{id:integer}", item),
        "route GET /items/{id:integer} (name 'item'): unknown parameter type 'integer' in "
        "{id:integer}; the types are float, int, path, str, uuid",
    ),
    (
        lambda r: r.route("/items/{id", item),
        "route GET /items/{id (name 'item'): unbalanced '{' or '}' in the segment '{id'",
    ),
    (
        lambda r: r.route("/items/{n:int}", item, name="other"),
        "route GET /items/{n:int} (name 'other') clashes with route GET /items/{id:int} "
        "(name 'item'): both take GET on paths of the same shape; remove one, or give "
        "them different methods",
    ),
    (
        lambda r: r.route("/sync", sync_item),
        "route GET /sync (sync_item): sync_item must be async def (request, response); "
        "it is not a coroutine function",
    ),
    (
        lambda r: r.websocket("/ws", Chat),
        "websocket /ws (Chat): Chat has no 'on_message' method; a WebSocket-only handler "
        "needs async def on_message(self, ws, message)",
    ),
]
# [/errors]


@pytest.mark.parametrize(("mistake", "message"), MISTAKES)
def test_mistake(mistake, message: str) -> None:
    router = Router()
    router.route("/items/{id:int}", item)
    with pytest.raises(HandlerError) as refused:
        mistake(router)
    assert str(refused.value) == message
