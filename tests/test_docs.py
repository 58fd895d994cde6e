"""The docs move with the code: generated pages are current, included files exist."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import peregrine_rt

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def test_configuration_page_is_generated_from_config() -> None:
    result = subprocess.run(
        [sys.executable, str(DOCS / "_tools" / "gen_config.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    page = (DOCS / "configuration.rst").read_text()
    for f in dataclasses.fields(peregrine_rt.Config):
        assert f"``{f.name}``" in page
        assert f.metadata["doc"] in page


def test_every_page_is_in_the_toctree_and_includes_resolve() -> None:
    index = (DOCS / "index.rst").read_text()
    pages = sorted(p.stem for p in DOCS.glob("*.rst") if p.stem != "index")
    assert pages, "no docs pages"
    for page in pages:
        assert re.search(rf"^\s+{re.escape(page)}$", index, re.M), f"{page} not in the toctree"
    for page in DOCS.glob("*.rst"):
        for include in re.findall(r"literalinclude:: (\S+)", page.read_text()):
            assert (DOCS / include).resolve().is_file(), f"{page.name} includes missing {include}"


def test_handler_error_messages_in_docs_are_current() -> None:
    """The messages quoted in handlers.rst are the ones the server prints."""

    class SyncHandle:
        def handle(self, request: object, response: object) -> None: ...

    try:
        peregrine_rt.Server(SyncHandle)
    except peregrine_rt.HandlerError as exc:
        message = str(exc)
    else:  # pragma: no cover
        raise AssertionError("a sync handle was accepted")
    quoted = message.replace("test_handler_error_messages_in_docs_are_current.<locals>.", "")
    assert quoted in (DOCS / "handlers.rst").read_text()
