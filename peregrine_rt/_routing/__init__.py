"""Routing: :class:`Router` (``_router.py``) over its route table (``_table.py``)."""

from __future__ import annotations

from ._router import Router, delete, get, patch, post, put, route

__all__ = ["Router", "delete", "get", "patch", "post", "put", "route"]
