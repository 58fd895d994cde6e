"""``_logfmt``: which query parameters are secrets, their redaction, and the JSON log lines."""

from __future__ import annotations

import json
import logging
import sys
from types import TracebackType

import pytest

from peregrine_rt._logfmt import REDACTED, JSONFormatter, is_secret_name, redact_target

ExcInfo = (
    tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None] | None
)

# -- redact_target -------------------------------------------------------------------

CASES = [
    # (target, as logged)
    ("/ws?token=SECRET123", "/ws?token=REDACTED"),
    ("/a?access_token=abc", "/a?access_token=REDACTED"),
    ("/a?api_key=k1", "/a?api_key=REDACTED"),
    ("/a?password=hunter2", "/a?password=REDACTED"),
    ("/a?signature=s1g", "/a?signature=REDACTED"),
    ("/cb?code=one-time&state=xyz", "/cb?code=REDACTED&state=xyz"),
    ("/a?session=s3ss", "/a?session=REDACTED"),
    ("/a?key=k&sig=s&pwd=p", "/a?key=REDACTED&sig=REDACTED&pwd=REDACTED"),
    ("/a?client_secret=c&refresh_token=r", "/a?client_secret=REDACTED&refresh_token=REDACTED"),
    ("/a?oauth_signature=s&lang=fr", "/a?oauth_signature=REDACTED&lang=fr"),
    ("/a?TOKEN=up", "/a?TOKEN=REDACTED"),
    ("/a?aws_secret_key=1&stripe-key=2", "/a?aws_secret_key=REDACTED&stripe-key=REDACTED"),
    # The name as sent (percent- or plus-encoded) is kept; its decoded form decides.
    ("/a?%74oken=t0k", "/a?%74oken=REDACTED"),
    ("/a?access%5Ftoken=t0k", "/a?access%5Ftoken=REDACTED"),
    ("/a?pass%77ord=pw", "/a?pass%77ord=REDACTED"),
    ("/a?auth+token=t0k", "/a?auth+token=REDACTED"),
    # Other parameters, the path and the order are kept byte for byte.
    (
        "/x/%7Euser/a%20b?page=2&token=t&q=a+b%2Fc&lang=fr",
        "/x/%7Euser/a%20b?page=2&token=REDACTED&q=a+b%2Fc&lang=fr",
    ),
    ("/x?password=hunter2&page=2", "/x?password=REDACTED&page=2"),
    ("/x?page=2&password=hunter2&page=3", "/x?page=2&password=REDACTED&page=3"),
    ("/x?token=a&token=b", "/x?token=REDACTED&token=REDACTED"),
    ("/x?token=a=b=c", "/x?token=REDACTED"),  # the whole value, '=' and all
    ("/x?token=%41%42", "/x?token=REDACTED"),
    # An absolute URL (a Referer) is redacted the same way.
    ("http://a/?token=REF", "http://a/?token=REDACTED"),
    ("https://h.example:8443/p?q=1&api_key=z", "https://h.example:8443/p?q=1&api_key=REDACTED"),
]

UNCHANGED = [
    "/",
    "/plain/path",
    "/x?",  # an empty query
    "/x?page=2&sort=asc",
    "/x?token=",  # an empty value: nothing to hide
    "/x?token",  # a name alone
    "/x?password=&page=2",
    "/x?&&page=2&",  # empty pairs
    "/x?zipcode=75001&monkey=banana&keyboard=us&pagekey",  # names that only look alike
    "/token/password?page=1",  # secret words in the path are not parameters
    "/x?q=token%3Dabc",  # a value that mentions a secret name
    "/x?%ZZ=1&%E2%82=2",  # undecodable names
]


@pytest.mark.parametrize(("target", "logged"), CASES)
def test_secret_values_are_redacted(target: str, logged: str) -> None:
    assert redact_target(target) == logged
    assert redact_target(logged) == logged  # idempotent


@pytest.mark.parametrize("target", UNCHANGED)
def test_other_targets_are_kept_as_they_are(target: str) -> None:
    assert redact_target(target) == target


def test_only_the_values_go() -> None:
    target = "/cb?state=s1&code=C0DE&scope=read%20write"
    logged = redact_target(target)
    assert "C0DE" not in logged
    assert logged.replace(REDACTED, "C0DE") == target


# -- is_secret_name ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "token",
        "access_token",
        "id_token",
        "csrftoken",
        "api_key",
        "apikey",
        "APIKEY",
        "x-api-key",
        "key",
        "password",
        "new_password",
        "passwd",
        "pwd",
        "secret",
        "client_secret",
        "signature",
        "sig",
        "code",
        "credential",
        "credentials",
        "session",
        "sessionid",
        "JSESSIONID",
        "auth",
        "Authorization",
        "jwt",
    ],
)
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name",
    ["page", "q", "lang", "state", "zipcode", "keyboard", "monkey", "sort", "id", "", "user"],
)
def test_ordinary_names(name: str) -> None:
    assert not is_secret_name(name)


def test_presigned_url_signatures_and_php_session_ids_are_secret() -> None:
    target = "/f?X-Amz-Signature=a1&X-Goog-Signature=b2&PHPSESSID=c3&X-Amz-Date=20240101"
    assert redact_target(target) == (
        "/f?X-Amz-Signature=REDACTED&X-Goog-Signature=REDACTED&PHPSESSID=REDACTED"
        "&X-Amz-Date=20240101"
    )


# -- JSONFormatter -------------------------------------------------------------------


def record(
    message: str = "hello %s",
    args: tuple[object, ...] = ("world",),
    *,
    level: int = logging.INFO,
    extra: dict[str, object] | None = None,
    exc_info: ExcInfo = None,
) -> logging.LogRecord:
    logger = logging.getLogger("peregrine_rt.test")
    return logger.makeRecord(
        logger.name,
        level,
        __file__,
        1,
        message,
        args,
        exc_info,
        extra=extra,
    )


def line(rec: logging.LogRecord, **options: bool) -> dict[str, object]:
    text = JSONFormatter(**options).format(rec)
    assert "\n" not in text and "\r" not in text  # one line, whatever the message held
    entry = json.loads(text)
    assert isinstance(entry, dict)
    return entry


def test_the_four_keys_come_first() -> None:
    rec = record(level=logging.WARNING)
    entry = line(rec)
    assert list(entry)[:4] == ["time", "level", "logger", "message"]
    assert entry["level"] == "warning"
    assert entry["logger"] == "peregrine_rt.test"
    assert entry["message"] == "hello world"
    assert "pid" not in entry
    # UTC, ISO 8601 with milliseconds: the record's own time.
    import datetime

    stamp = datetime.datetime.fromisoformat(str(entry["time"]))
    assert stamp.utcoffset() == datetime.timedelta(0)
    assert str(entry["time"]).endswith("+00:00")
    assert len(str(entry["time"]).split(".")[1]) == len("123+00:00")
    assert abs(stamp.timestamp() - rec.created) < 0.001


def test_fields_and_flat_extras_become_keys() -> None:
    fields = {"client": "127.0.0.1:5000", "status": 200, "duration_ms": 1.25}
    rec = record(extra={"fields": fields, "request_id": "r-1", "_private": 1})
    entry = line(rec)
    assert entry["client"] == "127.0.0.1:5000"
    assert entry["status"] == 200
    assert entry["duration_ms"] == 1.25
    assert entry["request_id"] == "r-1"
    assert "fields" not in entry and "_private" not in entry
    for standard in ("args", "msg", "levelno", "pathname", "lineno", "thread", "process"):
        assert standard not in entry


def test_a_field_never_replaces_the_four_keys() -> None:
    rec = record(extra={"fields": {"message": "forged", "level": "debug", "time": 0}})
    entry = line(rec)
    assert (entry["message"], entry["level"]) == ("hello world", "info")
    assert entry["time"] != 0


def test_values_json_cannot_encode_are_written_as_text() -> None:
    entry = line(record(extra={"fields": {"where": ("h", 1), "what": {1, 2} and object}}))
    assert entry["where"] == ["h", 1]
    assert entry["what"] == str(object)


def test_exc_info_is_the_traceback_as_text() -> None:
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        rec = record("failed", (), level=logging.ERROR, exc_info=sys.exc_info())
    entry = line(rec)
    text = str(entry["exc_info"])
    assert text.startswith("Traceback (most recent call last):")
    assert text.rstrip().endswith("ValueError: bad\nthing")
    assert entry["message"] == "failed"


def test_the_pid_with_process() -> None:
    entry = line(record(), process=True)
    assert entry["pid"] == record().process
    assert isinstance(entry["pid"], int)


def test_newlines_and_quotes_in_the_message_stay_on_one_line() -> None:
    message = 'two\nlines\r\nand "quotes" \\ and \u2028 and é'
    entry = line(record("%s", (message,)))
    assert entry["message"] == message


def test_through_a_handler() -> None:
    import io

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter())
    logger = logging.getLogger("peregrine_rt.test.handler")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("x=%d\ny", 3, extra={"fields": {"path": "/a"}})
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    [text] = stream.getvalue().splitlines()
    assert json.loads(text)["message"] == "x=3\ny"
    assert json.loads(text)["path"] == "/a"
