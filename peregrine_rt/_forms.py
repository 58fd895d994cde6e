"""Form bodies: ``Request.form()`` (work in progress: the forms task replaces this file)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._request import Request

__all__ = ["FormData", "read_form"]


class FormData(dict[str, Any]):
    """Placeholder for the form multi-dict."""


async def read_form(
    request: Request,
    *,
    max_fields: int | None = None,
    max_files: int | None = None,
    max_part_size: int | None = None,
) -> FormData:
    raise NotImplementedError
