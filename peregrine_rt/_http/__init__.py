"""The sans-IO HTTP/1.x core: request parser and response writer.  Never imports trio."""

from __future__ import annotations

from ._accel import load_accelerator
from ._events import NEED_DATA, PAUSED, Data, EndOfMessage, Event, RequestHead, Sentinel
from ._headers import Headers, parse_cookie_header
from ._parser import (
    CLOSED,
    MAX_BODY_SIZE,
    MAX_CHUNK_COUNT,
    MAX_CHUNK_EXTENSIONS,
    MAX_HEADER_COUNT,
    MAX_HEADER_LINE,
    MAX_HEADERS_SIZE,
    MAX_REQUEST_LINE,
    SPENT_PARSER,
    RequestParser,
)
from ._target import decode_path, parse_query, split_target
from ._writer import (
    LAST_CHUNK,
    check_headers,
    date_header_value,
    encode_chunk,
    encode_fixed_response,
    encode_response,
    encode_response_head,
    may_have_body,
)

__all__ = [
    "CLOSED",
    "LAST_CHUNK",
    "MAX_BODY_SIZE",
    "MAX_CHUNK_COUNT",
    "MAX_CHUNK_EXTENSIONS",
    "MAX_HEADERS_SIZE",
    "MAX_HEADER_COUNT",
    "MAX_HEADER_LINE",
    "MAX_REQUEST_LINE",
    "NEED_DATA",
    "PAUSED",
    "SPENT_PARSER",
    "Data",
    "EndOfMessage",
    "Event",
    "Headers",
    "RequestHead",
    "RequestParser",
    "Sentinel",
    "check_headers",
    "date_header_value",
    "decode_path",
    "encode_chunk",
    "encode_fixed_response",
    "encode_response",
    "encode_response_head",
    "load_accelerator",
    "may_have_body",
    "parse_cookie_header",
    "parse_query",
    "split_target",
]
