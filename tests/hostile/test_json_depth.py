"""A client's JSON: malformed or deeply nested input is refused, never a crash.

Python's ``json`` parser recurses once per level, so JSON nested 100,000 levels
deep raised an uncaught ``RecursionError`` in a JSONMixin handler (the client
got 1011 instead of 1007), and ``await request.json()`` on ``{bad`` answered
500 with a handler traceback in the log.  Now both are the client's fault:
400 over HTTP, 1007 on a WebSocket, a short reason and one warning line.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

import peregrine_rt as pr
from peregrine_rt._json import JSON_MAX_DEPTH, deeper_than, loads, nesting_depth
from peregrine_rt.exceptions import InvalidJSON, RemoteProtocolError
from peregrine_rt.mixins import JSONMixin
from peregrine_rt.testing import open_client

DEEP = "[" * 100_000 + "]" * 100_000


def nested(depth: int) -> str:
    """Valid JSON nesting ``depth`` levels: arrays and objects in turn."""
    text = "1"
    for level in range(depth):
        text = f"[{text}]" if level % 2 else f'{{"k": {text}}}'
    return text


def warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """What the server logged at WARNING or above."""
    return [
        r
        for r in caplog.records
        if r.name.startswith("peregrine_rt") and r.levelno >= logging.WARNING
    ]


# -- the depth check itself ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("1", 0),
        ("[]", 1),
        ('{"a": [1, {"b": []}]}', 4),
        ('["[[[[", "{{{{"]', 1),  # brackets in strings do not count
        ('["\\"[[[", "\\\\", [[]]]', 3),  # nor after an escaped quote; an escaped backslash ends
        ("[[], [], [[]]]", 3),
        (nested(64), 64),
        (nested(65), 65),
    ],
)
def test_nesting_depth_counts_brackets_outside_strings(text: str, depth: int) -> None:
    assert nesting_depth(text) == depth
    assert not deeper_than(text, depth)
    assert deeper_than(text, depth - 1) == (depth > 0)


@pytest.mark.parametrize("limit", [1, 7, 60, 61, 64])
def test_deeper_than_agrees_with_the_exact_depth_block_by_block(limit: int) -> None:
    # Teeth of 60 levels inside one more: many blocks of brackets come near the limit.
    saw = "[" + ("[" * 60 + '"]"' + "]" * 60 + ",") * 50 + "1]"
    assert nesting_depth(saw) == 61
    assert deeper_than(saw, limit) == (limit < 61)
    assert deeper_than(saw.encode(), limit) == (limit < 61)


def test_deeper_than_reads_no_further_than_the_first_level_past_the_limit() -> None:
    # The rest of the text is not even looked at: no closing brackets, no error.
    assert deeper_than("[" * 65 + "garbage", 64)
    assert not deeper_than("[" * 64 + "garbage", 64)
    assert nesting_depth(DEEP) == 100_000


def test_nesting_depth_reads_an_unterminated_string_to_the_end() -> None:
    # The string branch never fails once started: no backtracking, no brackets counted in it.
    assert nesting_depth('["' + '\\"[' * 10_000) == 1
    assert nesting_depth('"abc\\') == 0


def test_the_default_limit_is_64_levels() -> None:
    assert JSON_MAX_DEPTH == 64
    assert pr.Config().json_max_depth == 64
    assert loads(nested(64)) is not None
    with pytest.raises(InvalidJSON, match=r"^JSON nested deeper than 64 levels$"):
        loads(nested(65))


@pytest.mark.parametrize("text", [DEEP, DEEP.encode(), "{" * 100_000, '{"a":' * 100_000])
def test_deep_input_never_reaches_the_recursive_parser(text: str | bytes) -> None:
    with pytest.raises(InvalidJSON, match="nested deeper than 64 levels"):
        loads(text)


def test_a_limit_beyond_the_interpreter_stack_still_gives_invalid_json() -> None:
    # The depth check passes; json's RecursionError is caught and answered the same way.
    with pytest.raises(InvalidJSON, match="nested too deeply"):
        loads(DEEP, max_depth=10**6)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            "{bad",
            "invalid JSON: Expecting property name enclosed in double quotes: line 1 column 2",
        ),
        ("", "invalid JSON: Expecting value: line 1 column 1"),
        ('{"a": 1,\n "b": }', "invalid JSON: Expecting value: line 2 column 7"),
        (b"\xc3\x28", "invalid JSON: not UTF-8 text"),
    ],
)
def test_malformed_input_gets_a_short_reason(text: str | bytes, reason: str) -> None:
    with pytest.raises(InvalidJSON) as info:
        loads(text)
    assert str(info.value) == reason


def test_bytes_are_decoded_as_json_loads_decodes_them() -> None:
    assert loads('{"é": [1]}'.encode("utf-16")) == {"é": [1]}
    assert loads(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}  # a UTF-8 BOM


def test_invalid_json_is_a_400_and_a_value_error() -> None:
    exc = InvalidJSON("invalid JSON: x")
    assert isinstance(exc, RemoteProtocolError) and isinstance(exc, ValueError)
    assert exc.status_hint == 400
    assert not exc.close  # the request's framing was sound


def test_json_max_depth_must_be_positive() -> None:
    with pytest.raises(ValueError, match="json_max_depth"):
        pr.Config(json_max_depth=0)


# -- over HTTP: request.json() -------------------------------------------------------


class Api:
    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.path == "/lenient":  # a handler may still answer bad JSON its own way
            try:
                data = await request.json()
            except ValueError:
                response.text("send JSON\n", status=422)
                return
        else:
            data = await request.json()
        response.json({"got": data})


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (
            b"{bad",
            b"invalid JSON: Expecting property name enclosed in double quotes: line 1 column 2",
        ),
        (DEEP.encode(), b"JSON nested deeper than 64 levels"),
    ],
    ids=["malformed", "deep"],
)
async def test_bad_json_body_gets_400_with_the_reason_and_one_log_line(
    body: bytes, reason: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="peregrine_rt")
    async with open_client(Api) as client:
        response = await client.post("/", content=body)
        assert response.status == 400
        assert response.content == b"400 Bad Request\n" + reason + b"\n"
        # The request's framing was sound (InvalidJSON.close is False): kept alive.
        assert response.headers.get("connection") is None
        # The server is unharmed: the next request is served.
        assert (await client.post("/", json={"a": [1]})).json() == {"got": {"a": [1]}}
    (record,) = warnings(caplog)
    assert record.levelno == logging.WARNING
    assert record.exc_info is None  # no traceback
    assert record.getMessage() == "<Request POST />: " + reason.decode()


async def test_a_handler_catching_value_error_answers_its_own_way() -> None:
    async with open_client(Api) as client:
        response = await client.post("/lenient", content=DEEP.encode())
        assert (response.status, response.content) == (422, b"send JSON\n")


async def test_json_max_depth_is_configurable() -> None:
    async with open_client(Api, json_max_depth=3) as client:
        assert (await client.post("/", content=b"[[[1]]]")).json() == {"got": [[[1]]]}
        response = await client.post("/", content=b"[[[[1]]]]")
        assert response.content == b"400 Bad Request\nJSON nested deeper than 3 levels\n"


# -- on a WebSocket: JSONMixin ---------------------------------------------------------


class Chat(JSONMixin):
    def __init__(self) -> None:
        self.closed: list[tuple[int, str]] = []

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        await pr.upgrade(request, response)

    async def on_json(self, ws: pr.WebSocket, data: Any) -> None:
        await self.send_json(ws, {"echo": data})

    async def on_close(self, ws: pr.WebSocket, code: int, reason: str) -> None:
        self.closed.append((code, reason))


async def test_deep_json_message_closes_1007_and_the_handler_survives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="peregrine_rt")
    async with open_client(Chat) as client:
        async with client.websocket("/ws") as ws:
            await ws.send(DEEP)
            close = await ws.receive_close()
            assert (close.code, close.reason) == (1007, "JSON nested deeper than 64 levels")
        # Another socket, and the same handler instance, carry on.
        async with client.websocket("/ws") as ws:
            await ws.send_json({"a": [[1]]})
            assert await ws.receive_json() == {"echo": {"a": [[1]]}}
        assert client.app.closed[0] == (1007, "JSON nested deeper than 64 levels")
    (record,) = warnings(caplog)
    assert record.levelno == logging.WARNING
    assert record.exc_info is None
    assert record.getMessage().endswith(": closing with 1007: JSON nested deeper than 64 levels")


async def test_malformed_json_message_closes_1007_with_the_details_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="peregrine_rt")
    async with open_client(Chat) as client, client.websocket("/ws") as ws:
        await ws.send("{bad")
        close = await ws.receive_close()
        assert (close.code, close.reason) == (1007, "invalid JSON")
    (record,) = warnings(caplog)
    assert record.exc_info is None
    assert record.getMessage().endswith(
        "invalid JSON: Expecting property name enclosed in double quotes: line 1 column 2"
    )


async def test_the_websocket_limit_follows_the_config() -> None:
    async with open_client(Chat, json_max_depth=2) as client, client.websocket("/ws") as ws:
        await ws.send_json([[1]])
        assert await ws.receive_json() == {"echo": [[1]]}
        await ws.send_json([[[1]]])
        close = await ws.receive_close()
        assert (close.code, close.reason) == (1007, "JSON nested deeper than 2 levels")
