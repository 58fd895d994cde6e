"""The router's table without a server: patterns, converters, precedence, url_for, build errors."""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peregrine_rt._handler import check_handler
from peregrine_rt._http import decode_path
from peregrine_rt._routing import Router, delete, get, post, route
from peregrine_rt._routing._table import Route, RouteTable, parse_pattern
from peregrine_rt.exceptions import HandlerError

U = uuid.UUID("12345678-1234-5678-1234-567812345678")


async def endpoint(request: Any, response: Any) -> None:
    response.text("ok")


def table_of(*patterns: str | tuple[str, str]) -> RouteTable:
    """A table of GET routes (or ``(pattern, method)`` ones), without names."""
    table = RouteTable()
    for item in patterns:
        pattern, method = item if isinstance(item, tuple) else (item, "GET")
        table.add(Route(pattern, frozenset({method}), None, endpoint))
    return table


def match(table: RouteTable, path: str, method: str = "GET") -> tuple[str | None, dict[str, Any]]:
    """``("GET /items/{id:int}", {"id": 3})``: the route taken (its method, pattern), its params."""
    hit = table.lookup(path, method)
    if hit is None:
        return None, {}
    return f"{'|'.join(sorted(hit[0].methods))} {hit[0].pattern}", hit[1]


# -- matching -----------------------------------------------------------------------

MATCHES = [
    # (routes, path, route expected (pattern) or None, its params)
    (["/"], "/", "/", {}),
    (["/items"], "/items", "/items", {}),
    (["/items"], "/items/", None, {}),
    (["/items/"], "/items/", "/items/", {}),
    (["/items/{id:int}"], "/items/42", "/items/{id:int}", {"id": 42}),
    (["/items/{id:int}"], "/items/-1", None, {}),
    (["/items/{id:int}"], "/items/4x", None, {}),
    (["/items/{id:int}"], "/items/٣", None, {}),  # a digit, but not an ASCII one
    (["/items/{id:int}"], "/items/", None, {}),
    (["/items/{id:int}"], "/items/3/more", None, {}),
    (["/p/{x:float}"], "/p/1.5", "/p/{x:float}", {"x": 1.5}),
    (["/p/{x:float}"], "/p/2", "/p/{x:float}", {"x": 2.0}),
    (["/p/{x:float}"], "/p/1e5", None, {}),
    (["/p/{x:float}"], "/p/nan", None, {}),
    (["/u/{u:uuid}"], f"/u/{U}", "/u/{u:uuid}", {"u": U}),
    (["/u/{u:uuid}"], f"/u/{str(U).upper()}", "/u/{u:uuid}", {"u": U}),
    (["/u/{u:uuid}"], "/u/12345678123456781234567812345678", None, {}),
    (["/users/{name}"], "/users/ada lovelace", "/users/{name}", {"name": "ada lovelace"}),
    (["/users/{name}"], "/users/", None, {}),
    (["/f/{rest:path}"], "/f/a/b/c.txt", "/f/{rest:path}", {"rest": "a/b/c.txt"}),
    (["/f/{rest:path}"], "/f/", "/f/{rest:path}", {"rest": ""}),
    (["/f/{rest:path}"], "/f", None, {}),
    (["/{name}.{ext}"], "/a.b.txt", "/{name}.{ext}", {"name": "a.b", "ext": "txt"}),
    (["/v{n:int}/x"], "/v2/x", "/v{n:int}/x", {"n": 2}),
    (["/v{n:int}/x"], "/vx/x", None, {}),
    # precedence: literal, then mixed, then typed, then {name}, then path; any order added
    (["/items/{name}", "/items/new"], "/items/new", "/items/new", {}),
    (["/items/{name}", "/items/{id:int}"], "/items/7", "/items/{id:int}", {"id": 7}),
    (["/items/{name}", "/items/{id:int}"], "/items/x", "/items/{name}", {"name": "x"}),
    (["/items/{x:float}", "/items/{id:int}"], "/items/7", "/items/{id:int}", {"id": 7}),
    (["/{rest:path}", "/{name}"], "/a", "/{name}", {"name": "a"}),
    (["/{name}", "/{n}.json"], "/a.json", "/{n}.json", {"n": "a"}),
    # a dead end backtracks to the next candidate
    (["/a/{x:int}/edit", "/a/{s}/{t}"], "/a/1/view", "/a/{s}/{t}", {"s": "1", "t": "view"}),
    (["/a/b/c", "/a/{s}/d"], "/a/b/d", "/a/{s}/d", {"s": "b"}),
    (["/a/b/c", "/{rest:path}"], "/a/b/x", "/{rest:path}", {"rest": "a/b/x"}),
]


@pytest.mark.parametrize(("patterns", "path", "expected", "params"), MATCHES)
def test_match(
    patterns: list[str], path: str, expected: str | None, params: dict[str, Any]
) -> None:
    for order in (patterns, list(reversed(patterns))):  # the order added never matters
        name, found = match(table_of(*order), path)
        assert name == (None if expected is None else f"GET {expected}")
        assert found == params
        assert all(type(found[k]) is type(v) for k, v in params.items())


def test_methods_share_a_shape_and_head_follows_get() -> None:
    table = table_of(("/items/{id:int}", "GET"), ("/items/{item:int}", "DELETE"))
    assert match(table, "/items/3", "DELETE") == ("DELETE /items/{item:int}", {"item": 3})
    assert match(table, "/items/3", "HEAD") == ("GET /items/{id:int}", {"id": 3})
    assert match(table, "/items/3", "POST") == (None, {})
    assert table.allowed("/items/3") == {"GET", "HEAD", "DELETE"}
    assert table.allowed("/items/x") == set()


def test_a_method_missing_on_the_literal_falls_through_to_a_pattern() -> None:
    table = table_of(("/items/new", "GET"), ("/items/{name}", "POST"))
    assert match(table, "/items/new", "POST") == ("POST /items/{name}", {"name": "new"})
    assert table.allowed("/items/new") == {"GET", "HEAD", "POST"}


def test_an_explicit_head_route_wins_over_get() -> None:
    table = table_of(("/x", "GET"), ("/x", "HEAD"))
    assert match(table, "/x", "HEAD")[0] == "HEAD /x"


def test_parse_pattern() -> None:
    segments, names = parse_pattern("/a/{id:int}/{n}.{e}/{r:path}", "test")
    assert names == ("id", "n", "e", "r")
    assert segments[0] == "a"
    assert [type(s) for s in segments] == [str, tuple, tuple, tuple]


# -- build-time errors ---------------------------------------------------------------

BAD_PATTERNS = [
    ("items", "starts with '/'"),
    ("/items/{id", "unbalanced"),
    ("/items/id}", "unbalanced"),
    ("/items/{}", "needs a name"),
    ("/items/{:int}", "needs a name"),
    ("/items/{1x}", "needs a name"),
    ("/items/{id:integer}", "unknown parameter type 'integer'"),
    ("/items/{id}/{id:int}", "appears twice"),
    ("/f/{rest:path}/x", "whole last segment"),
    ("/f/x{rest:path}", "whole last segment"),
    ("/a/../b", "never reaches"),
]


@pytest.mark.parametrize(("pattern", "message"), BAD_PATTERNS)
def test_malformed_patterns_are_refused_naming_the_route(pattern: str, message: str) -> None:
    router = Router()
    with pytest.raises(HandlerError, match=message) as info:
        router.route(pattern, endpoint)
    assert pattern in str(info.value) and "endpoint" in str(info.value)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("/items/{id:int}", ["GET"]), ("/items/{n:int}", ["GET", "POST"])),
        (("/f/{a:path}", ["PUT"]), ("/f/{b:path}", ["PUT"])),
        (("/x", ["GET"]), ("/x", ["get"])),
        (("/{a}.{b}", ["GET"]), ("/{c}.{d}", ["GET"])),
    ],
)
def test_routes_of_one_shape_with_a_method_in_common_clash(
    first: tuple[str, list[str]], second: tuple[str, list[str]]
) -> None:
    router = Router()
    router.route(first[0], endpoint, methods=first[1], name="one")
    with pytest.raises(HandlerError, match="clashes with route") as info:
        router.route(second[0], endpoint, methods=second[1], name="two")
    assert first[0] in str(info.value) and second[0] in str(info.value)


def test_other_shapes_or_methods_do_not_clash() -> None:
    router = Router()
    router.route("/items/{id:int}", endpoint, name="a")
    router.route("/items/{name}", endpoint, name="b")
    router.route("/items/{id:int}", endpoint, methods=["POST"], name="c")
    router.route("/items/new", endpoint, name="d")
    assert router.url_for("c", id=1) == "/items/1"


def test_names_are_unique_and_default_to_the_function_name() -> None:
    router = Router()
    router.route("/a", endpoint)
    assert router.url_for("endpoint") == "/a"
    with pytest.raises(HandlerError, match="has the name of route GET /a"):
        router.route("/b", endpoint)
    router.route("/b", endpoint, name="b")
    with pytest.raises(HandlerError, match="no ':'"):
        router.route("/c", endpoint, name="x:y")


def sync_endpoint(request: Any, response: Any) -> None:
    pass


async def one_param(request: Any) -> None:
    pass


async def keyword_needed(request: Any, response: Any, *, user: str) -> None:
    pass


class NeedsArgs:
    def __init__(self, config: str) -> None:
        self.config = config

    async def handle(self, request: Any, response: Any) -> None:
        pass


class NoMessage:
    async def on_open(self, ws: Any) -> None:
        pass


class Typo:
    async def handle(self, request: Any, response: Any) -> None:
        pass

    async def on_mesage(self, ws: Any, message: Any) -> None:
        pass


@pytest.mark.parametrize(
    ("add", "message"),
    [
        (lambda r: r.route("/s", sync_endpoint), "sync_endpoint must be async def"),
        (lambda r: r.route("/s", one_param), r"one_param\(request\)"),
        (lambda r: r.route("/s", keyword_needed), "keyword_needed must be async def"),
        (lambda r: r.route("/s", endpoint, methods=[]), "methods must be"),
        (lambda r: r.route("/s", endpoint, methods=["GE T"]), "methods must be"),
        (lambda r: r.route("/s", NeedsArgs), r"route GET /s .*NeedsArgs\(\) must be callable"),
        (lambda r: r.mount("/api", NeedsArgs), r"mount /api .*must be callable"),
        (lambda r: r.mount("/api/{v}", Router()), "literal path"),
        (lambda r: r.mount("api", Router()), "literal path"),
        (lambda r: r.websocket("/ws", NoMessage), "websocket /ws .*needs async def on_message"),
        (
            lambda r: r.websocket("/ws", object()),
            "websocket /ws .*no 'on_message' method; a WebSocket-only handler needs",
        ),
        (lambda r: r.websocket("/ws", Typo), "on_mesage .*is not a hook"),
        (lambda r: r.websocket("/ws/{x:bad}", Typo()), "on_mesage .*is not a hook"),
        (lambda r: r.route("/s", 42), "not a coroutine function"),
    ],
)
def test_contract_errors_name_the_route(add: Any, message: str) -> None:
    with pytest.raises(HandlerError, match=message):
        add(Router())


def test_a_websocket_handler_needs_no_handle_and_an_instance_may_need_arguments() -> None:
    class Chat:
        def __init__(self, room: str) -> None:
            self.room = room

        async def on_message(self, ws: Any, message: Any) -> None:
            pass

    router = Router()
    router.websocket("/ws", Chat("lobby"))
    with pytest.raises(HandlerError, match="must be callable without arguments"):
        router.websocket("/ws2", Chat)


def test_a_websocket_route_clashes_with_a_get_route() -> None:
    class Chat:
        async def on_message(self, ws: Any, message: Any) -> None:
            pass

    router = Router()
    router.route("/ws", endpoint)
    with pytest.raises(HandlerError, match="clashes"):
        router.websocket("/ws", Chat)


def test_mount_prefixes_and_names_are_unique() -> None:
    router = Router()
    router.mount("/api/", Router(), name="api")
    with pytest.raises(HandlerError, match="mounted already"):
        router.mount("/api", Router())
    with pytest.raises(HandlerError, match="mounted already"):
        router.mount("/v2", Router(), name="api")


# -- routes declared on a subclass ---------------------------------------------------


class Board(Router):
    @get("/items/{id:int}")
    async def item(self, request: Any, response: Any) -> None:
        response.json({"id": request.path_params["id"]})

    @delete("/items/{id:int}")
    @post("/items/{id:int}/remove", name="remove")
    async def drop(self, request: Any, response: Any) -> None:
        pass


class Bigger(Board):
    async def drop(self, request: Any, response: Any) -> None:  # overridden: no route
        pass

    @route("/about", methods=["GET", "POST"])
    async def about(self, request: Any, response: Any) -> None:
        pass


def test_subclass_routes_are_collected_from_the_class_and_its_bases() -> None:
    board = Board()
    assert board.url_for("item", id=5) == "/items/5"
    assert board.url_for("drop", id=5) == "/items/5"
    assert board.url_for("remove", id=5) == "/items/5/remove"
    bigger = Bigger()
    assert bigger.url_for("about") == "/about"
    with pytest.raises(KeyError):
        bigger.url_for("drop", id=1)
    check_handler(Board)  # the Router's own methods are no near misses of hooks
    check_handler(bigger)


def test_subclass_mistakes_fail_when_the_class_is_defined() -> None:
    with pytest.raises(HandlerError, match=r"Bad.item .*async def \(self, request, response\)"):

        class Bad(Router):
            @get("/x")  # type: ignore[type-var]  # the mistake under test: mypy sees it too
            def item(self, request: Any, response: Any) -> None:
                pass

    with pytest.raises(HandlerError, match="clashes"):

        class Clash(Router):
            @get("/x/{a}")
            async def one(self, request: Any, response: Any) -> None:
                pass

            @get("/x/{b}")
            async def two(self, request: Any, response: Any) -> None:
                pass

    with pytest.raises(HandlerError, match="unknown parameter type"):

        class Unknown(Router):
            @get("/x/{a:date}")
            async def one(self, request: Any, response: Any) -> None:
                pass


# -- url_for --------------------------------------------------------------------------


def test_url_for_encodes_and_checks() -> None:
    router = Router()
    router.route("/users/{name}", endpoint, name="user")
    router.route("/f/{rest:path}", endpoint, name="file")
    router.route("/n/{i:int}/{x:float}/{u:uuid}", endpoint, name="nums")
    router.route("/café/{name}", endpoint, name="cafe")
    assert router.url_for("user", name="ada lovelace?#") == "/users/ada%20lovelace%3F%23"
    assert router.url_for("user", name="a:b@c") == "/users/a:b@c"
    assert router.url_for("file", rest="a b/c.txt") == "/f/a%20b/c.txt"
    assert router.url_for("nums", i=3, x=1e20, u=U) == f"/n/3/100000000000000000000/{U}"
    assert router.url_for("nums", i=0, x=0.5, u=str(U).upper()) == f"/n/0/0.5/{U}"
    assert router.url_for("cafe", name="x") == "/caf%C3%A9/x"
    with pytest.raises(KeyError, match="no route named 'nope'"):
        router.url_for("nope")
    with pytest.raises(ValueError, match="missing name"):
        router.url_for("user")
    with pytest.raises(ValueError, match="unexpected extra"):
        router.url_for("user", name="a", extra=1)
    bad: list[tuple[str, dict[str, Any]]] = [
        ("user", {"name": ""}),
        ("user", {"name": "a/b"}),
        ("user", {"name": ".."}),
        ("user", {"name": 3}),
        ("file", {"rest": "a/../b"}),
        ("file", {"rest": "a\x00"}),
        ("nums", {"i": -1, "x": 1.0, "u": U}),
        ("nums", {"i": True, "x": 1.0, "u": U}),
        ("nums", {"i": "3", "x": 1.0, "u": U}),
        ("nums", {"i": 1, "x": math.inf, "u": U}),
        ("nums", {"i": 1, "x": -0.5, "u": U}),
        ("nums", {"i": 1, "x": 1.0, "u": "not-a-uuid"}),
        ("nums", {"i": 1, "x": 1.0, "u": 5}),
    ]
    for name, params in bad:
        with pytest.raises(ValueError, match="does not fit"):
            router.url_for(name, **params)


def test_url_for_reaches_into_mounted_routers() -> None:
    api = Router()
    api.route("/items/{id:int}", endpoint, name="item")
    deep = Router()
    deep.route("/leaf", endpoint, name="leaf")
    api.mount("/deep", deep)  # no name: its names are api's
    top = Router()
    top.mount("/api", api, name="api")
    top.route("/item", endpoint, name="item")
    assert top.url_for("api:item", id=3) == "/api/items/3"
    assert top.url_for("item") == "/item"
    assert top.url_for("api:leaf") == "/api/deep/leaf"
    with pytest.raises(KeyError):
        top.url_for("leaf")  # api has a name: its routes are reached as api:...
    with pytest.raises(KeyError):
        top.url_for("nope:item")
    with pytest.raises(KeyError):
        top.url_for("api:nope")


# -- the round trip: url_for, then the server's path decoding, then the table ----------

ROUND_TRIP = Router()
ROUND_TRIP.route("/s/{a}/{b:int}", endpoint, name="s")
ROUND_TRIP.route("/f/{x:float}/{u:uuid}", endpoint, name="f")
ROUND_TRIP.route("/p/{name}.json/{rest:path}", endpoint, name="p")

segment_text = st.text(min_size=1).filter(lambda s: "/" not in s and "\x00" not in s)
segment_text = segment_text.filter(lambda s: s not in (".", ".."))
path_text = st.lists(segment_text | st.just(""), max_size=4).map("/".join)


@given(a=segment_text, b=st.integers(min_value=0, max_value=10**30))
def test_url_for_round_trips_str_and_int(a: str, b: int) -> None:
    check_round_trip("s", {"a": a, "b": b})


@given(x=st.floats(min_value=0, allow_nan=False, allow_infinity=False), u=st.uuids())
def test_url_for_round_trips_float_and_uuid(x: float, u: uuid.UUID) -> None:
    check_round_trip("f", {"x": x, "u": u})


@given(name=segment_text.filter(lambda s: "." not in s), rest=path_text)
def test_url_for_round_trips_mixed_segments_and_paths(name: str, rest: str) -> None:
    check_round_trip("p", {"name": name, "rest": rest})


def check_round_trip(name: str, params: dict[str, Any]) -> None:
    url = ROUND_TRIP.url_for(name, **params)
    assert url.isascii()
    hit = ROUND_TRIP._table.lookup(decode_path(url.encode("ascii")), "GET")
    assert hit is not None, url
    assert hit[0].name == name
    assert hit[1] == params
