"""First contact (issue 20, item 11): what a new user reads first does what it says.

The README's samples run what they define; the tutorial shows each step whole
or as a diff of the one before, so typing along gives the tested files; the
request attributes are all in the handlers guide; no page promises a guide
"when it lands" or hides markup inside bold.
"""

from __future__ import annotations

import importlib
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


def test_the_tutorial_shows_every_step_whole_or_as_a_diff_of_the_one_before() -> None:
    # Typed along, the reader ends with the very files the tests run: each
    # step is shown whole, or as its diff against the previous step's file.
    page = (DOCS / "tutorial.rst").read_text()
    shown = re.findall(r"\.\. literalinclude:: \.\./(examples/\S+\.py)\n((?:   :.*\n)*)", page)
    steps = [(path, options) for path, options in shown if re.search(r"step\d|chat/app", path)]
    assert [path for path, _ in steps] == [
        *(f"examples/tutorial/step{n}.py" for n in range(1, 7)),
        "examples/chat/app.py",
    ]
    assert ":diff:" not in steps[0][1]  # the first step is shown whole
    for (path, options), previous in zip(steps[1:], [p for p, _ in steps[:-1]], strict=True):
        assert not re.search(r":(start-after|end-before|lines|pyobject):", options), path
        diff = re.search(r":diff: \.\./(\S+)", options)
        assert diff is None or diff[1] == previous, f"{path}: a diff of {diff}, not {previous}"
    for n in range(1, 7):  # each step is a handler the server accepts as it is
        module = importlib.import_module(f"examples.tutorial.step{n}")
        pr.Server(module.Chat)
    assert "static/" in page.partition("Step 6")[2]  # it says to create the page's folder


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
