"""Sphinx configuration for the peregrine_rt documentation (``make docs``).

Why Sphinx rather than MkDocs Material + mkdocstrings:

* The trio ecosystem documents itself with Sphinx, and ``sphinxcontrib-trio``
  is the one tool that renders trio's kinds of callables faithfully
  (``async def``, async context managers, ``nursery.start`` targets); users of
  trio libraries read docs that look like this.
* ``sphinx.ext.doctest`` runs the ``>>>`` examples of the pages in CI, which
  together with ``literalinclude`` of tested files keeps every snippet honest.
* Cross-references (``:class:``, ``:func:``, ``:doc:``) are checked by Sphinx
  itself: with ``-W -n`` (warnings as errors, nitpicky) a broken reference
  fails the build, which is the link check we can run offline.
* napoleon reads the Google-style docstrings the code already has (STYLE.md),
  and furo is a clean, readable, dependency-light theme with a dark mode.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # examples/ and docs/snippets import from the checkout

import peregrine_rt  # noqa: E402

project = "peregrine_rt"
author = "the peregrine_rt authors"
copyright = "2026, the peregrine_rt authors"
version = release = peregrine_rt.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.doctest",
    "sphinxcontrib_trio",
]

exclude_patterns = ["_build", "snippets", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]
html_static_path = ["_static"]
html_theme = "furo"
html_title = f"peregrine_rt {release}"
pygments_style = "friendly"
pygments_dark_style = "monokai"

# Every cross-reference must resolve (-n in the Makefile).  There is no
# network here, so no intersphinx: references to other projects' objects
# (trio, the standard library beyond builtins) are allowed to stay plain text,
# and only those; a broken reference to peregrine_rt itself fails the build.
nitpicky = True
nitpick_ignore_regex = [
    # private names (a leading underscore anywhere in the path) are not
    # documented, and neither are the connection classes type hints mention
    (r"py:.*", r"(.*\.)?_[A-Za-z]\w*(\..*)?"),
    (r"py:.*", r"(HTTPConnection|WSConnection|LazyConnection|Connection|Transport)"),
    # the internal collaborators public signatures mention: the send path's
    # scheduler, a response's file body, the test client's h11 connection
    (r"py:.*", r"(SendScheduler|FileBody|H11Connection)"),
    # the server's figures (Server.stats): what /metrics shows, documented there
    (r"py:.*", r"(Stats|Operations)"),
    (r"py:.*", r"(trio|wsproto|h11|ssl|socket|logging|collections|typing|types)\..*"),
    (r"py:.*", r"(subprocess|json|http|email|datetime)\..*"),
    (r"py:.*", r"(Awaitable|AsyncIterator|AsyncGenerator|Callable|Iterator|Mapping)"),
    (r"py:.*", r"(Sequence|Iterable|MutableMapping|TracebackType|SSLContext|Path)"),
    (r"py:.*", r"(pathlib|os|argparse|asyncio|anyio|coredis|pytest|_pytest|abc)\..*"),
    (r"py:.*", r"(contextlib)\..*"),
    (r"py:.*", r"(AbstractAsyncContextManager)"),
    # type aliases of DirServer's options, spelt out in the static files guide
    (r"py:.*", r"(CacheControl)"),
    # the authenticate hooks' type: a callable, spelt out in web/identity
    (r"py:.*", r"(Authenticate)"),
    # the Channels layer's internal collaborators and the client's type aliases
    (r"py:.*", r"(TopicSpec|PresenceTracker|Params|Connect|Waiter|peregrine_rt\.client\.Waiter)"),
    (r"py:.*", r"(random|enum)\..*"),
]

# autodoc: the documented surface is what __all__ exports (tests/test_docs.py
# checks every exported name appears in reference.rst).
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_inherit_docstrings = False  # not Mapping.get's "D[k] if k in D"

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_custom_sections = ["Resource handling", "Error handling"]  # trio's sections

# doctest: `sphinx-build -b doctest` (part of `make docs`) runs every `>>>`
# block of every page.
doctest_global_setup = """
import peregrine_rt
import peregrine_rt as pr
from peregrine_rt.client import Backoff, sync_diff, sync_state
"""
doctest_test_doctest_blocks = "default"
