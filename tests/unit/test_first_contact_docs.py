"""First contact (issue 20, item 11): what a new user reads first does what it says.

The README's samples run what they define; the tutorial's first two steps,
typed as shown, run; the request attributes are all in the handlers guide;
no page promises a guide "when it lands" or hides markup inside bold.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest

import peregrine_rt as pr

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def test_each_readme_sample_runs_the_handler_it_defines(monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks
    ran: list[Any] = []
    monkeypatch.setattr(pr, "run", lambda handler, **options: ran.append(handler))
    for block in blocks:
        ran.clear()
        namespace: dict[str, Any] = {"__name__": "readme"}
        exec(compile(block, "README.md", "exec"), namespace)
        defined = [v for v in namespace.values() if isinstance(v, type)]
        assert len(ran) == 1, block
        assert defined == ran, f"the sample defines {defined} and runs {ran}"
        pr.Server(ran[0])  # a valid handler


def _included(page: Path, stop: str) -> str:
    """The Python the page shows (its literalincludes) before the heading ``stop``."""
    text = page.read_text().partition(f"\n{stop}\n")[0]
    shown = []
    pattern = r"\.\. literalinclude:: (\S+)\n   :language: python\n((?:   :.*\n)*)"
    for path, options in re.findall(pattern, text):
        source = (page.parent / path).read_text()
        after = re.search(r":start-after: (.*)", options)
        before = re.search(r":end-before: (.*)", options)
        if after:
            source = source.partition(after[1])[2]
        if before:
            source = source.partition(before[1])[0]
        shown.append(source)
    return "\n".join(shown)


def test_the_tutorials_first_steps_run_as_shown(tmp_path: Path) -> None:
    code = _included(DOCS / "tutorial.rst", "The protocol")
    (tmp_path / "static").mkdir()  # as step 2 tells
    namespace: dict[str, Any] = {"__name__": "steps", "__file__": str(tmp_path / "steps.py")}
    exec(compile(code, "tutorial.rst", "exec"), namespace)  # no NameError: pr, STATIC, Any...
    for step in ("BareChat", "RoomChat"):
        pr.Server(namespace[step])
    assert "create it, with an ``index.html`` in it" in (DOCS / "tutorial.rst").read_text()


def test_every_request_attribute_is_in_the_handlers_guide() -> None:
    page = (DOCS / "handlers.rst").read_text()
    section = page.partition("\nThe request\n")[2].partition("\nThe response\n")[0]
    public = {name for name, _ in inspect.getmembers(pr.Request) if not name.startswith("_")}
    methods = {"body", "form", "json", "stream"}  # named as calls: await request.body()...
    missing = sorted(name for name in public - methods if f"``{name}``" not in section)
    assert missing == []
    assert all(f"request.{name}()" in section for name in methods)


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.rst")), ids=lambda p: p.name)
def test_no_page_promises_what_exists_or_nests_markup(page: Path) -> None:
    text = page.read_text()
    assert "when it lands" not in text
    # reST does not nest inline markup: **``x``** shows the backquotes.
    assert not re.search(r"\*\*``[^`]+``\*\*", text)
