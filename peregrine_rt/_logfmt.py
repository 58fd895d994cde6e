"""Log lines: the JSON form (``Config.log_format``) and what never reaches a log.

:class:`JSONFormatter` writes one JSON object per line: ``time`` (UTC, ISO
8601 with milliseconds), ``level``, ``logger``, ``message``, then the
record's structured fields (an access line's ``client``, ``method``,
``path``, ``status``, ``size``, ``duration_ms``...; a connection's
``client``), then ``exc_info`` as text when there is one.  A field comes
from ``extra={"fields": {...}}`` on the logging call, so the text form keeps
its usual line and the JSON form gets the same facts as data.

Secrets never reach a log line, in either form: :func:`redact_target`
replaces the values of query parameters that carry credentials (``token``,
``access_token``, ``api_key``, ``password``, ``signature``... and any name
containing ``token``, ``secret``, ``password``, ``auth``, ``session``,
``sessid`` or ``signature`` (``X-Amz-Signature``), or ending in ``_key``) with
``REDACTED``; the access log and the handler-error lines write targets
through it.  Request headers are never logged, so ``Cookie`` and
``Authorization`` values cannot be; a ``Referer`` (JSON access lines) goes
through the same redaction.
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any
from urllib.parse import unquote_plus

__all__ = ["REDACTED", "JSONFormatter", "is_secret_name", "redact_target"]

REDACTED = "REDACTED"
_SECRET_WORDS = (
    "token", "secret", "password", "passwd", "auth", "jwt", "session", "sessid", "signature",
)  # fmt: skip
_SECRET_NAMES = frozenset(
    ("key", "apikey", "sig", "signature", "code", "pwd", "credential", "credentials")
)


def is_secret_name(name: str) -> bool:
    """Whether a query parameter (or cookie) named ``name`` carries a credential."""
    lowered = name.lower()
    return (
        lowered in _SECRET_NAMES
        or lowered.endswith(("_key", "-key"))
        or any(word in lowered for word in _SECRET_WORDS)
    )


def redact_target(target: str) -> str:
    """``target`` (path and query) with the values of secret-carrying parameters redacted.

    The rest of the target is kept byte for byte (no re-encoding), so a log
    line still shows what the client asked for.
    """
    path, sep, query = target.partition("?")
    if not sep or not query:
        return target
    parts = []
    changed = False
    for pair in query.split("&"):
        name, eq, value = pair.partition("=")
        if eq and value and is_secret_name(_unquote(name)):
            parts.append(f"{name}={REDACTED}")
            changed = True
        else:
            parts.append(pair)
    if not changed:
        return target
    return f"{path}?{'&'.join(parts)}"


def _unquote(name: str) -> str:
    return unquote_plus(name) if "%" in name or "+" in name else name


# Attributes every LogRecord has: not fields of ours.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "fields"}


class JSONFormatter(logging.Formatter):
    """One JSON object per line (see the module docstring).

    Args:
        process: add ``pid`` to each line (worker processes share one stream).
    """

    def __init__(self, *, process: bool = False) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.process:
            entry["pid"] = record.process
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for name, value in fields.items():
                entry.setdefault(name, value)
        for name, value in record.__dict__.items():  # extra={...} given flat
            if name not in _STANDARD and not name.startswith("_"):
                entry.setdefault(name, value)
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)
