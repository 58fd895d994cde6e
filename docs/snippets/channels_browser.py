"""docs/channels/browser.rst: the checker of ``channels_browser.js``.

The browser snippet runs under Node's test runner as written (its import of
``/_peregrine/peregrine.js`` resolved to the package's file) in
``tests/js/snippets.test.mjs``; this runs that file.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import trio

from peregrine_rt.testing._redis import in_ci

ROOT = Path(__file__).resolve().parent.parent.parent
SNIPPET = Path(__file__).with_name("channels_browser.js")


async def test_the_browser_snippet_runs() -> None:
    node = shutil.which("node")
    if node is None:
        if in_ci():
            pytest.fail("node is not installed (Debian: apt-get install nodejs)", pytrace=False)
        pytest.skip("node is not installed (Debian: apt-get install nodejs); CI is not set")
    assert "/_peregrine/peregrine.js" in SNIPPET.read_text()
    with trio.fail_after(60):
        done = await trio.run_process(
            [node, "--test", "--test-reporter=tap", "tests/js/snippets.test.mjs"],
            cwd=ROOT,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    output = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0, output
    assert re.search(r"^# pass [1-9]", output, re.M), output
    assert re.search(r"^# fail 0$", output, re.M), output
