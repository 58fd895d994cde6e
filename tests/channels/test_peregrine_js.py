"""peregrine.js's unit tests (``tests/js/``) under Node's test runner.

``node --test tests/js/`` runs them (Debian's ``nodejs``; ``.ci/run`` installs
it).  Without node they skip, saying so, unless ``CI`` is set: then they fail.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import trio

from peregrine_rt.testing._redis import in_ci

ROOT = Path(__file__).resolve().parent.parent.parent
CLIENT = ROOT / "peregrine_rt" / "static" / "peregrine.js"


@pytest.fixture
def node() -> str:
    found = shutil.which("node")
    if found is None:
        missing = "node is not installed (Debian: apt-get install nodejs)"
        if in_ci():
            pytest.fail(f"{missing}; CI must install it", pytrace=False)
        pytest.skip(f"{missing}; CI is not set, so this is a skip")
    return found


def test_the_client_is_package_data() -> None:
    """pyproject.toml ships static/*.js with the package."""
    assert CLIENT.is_file()
    pyproject = (ROOT / "pyproject.toml").read_text()
    section = pyproject.split("[tool.setuptools.package-data]", 1)[1].split("\n[", 1)[0]
    assert '"static/*.js"' in section


async def test_node_unit_tests_pass(node: str) -> None:
    with trio.fail_after(120):
        done = await trio.run_process(
            [node, "--test", "--test-reporter=tap", "tests/js/"],
            cwd=ROOT,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    output = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0, output
    tests = re.search(r"^# tests (\d+)$", output, re.M)
    failed = re.search(r"^# fail (\d+)$", output, re.M)
    assert tests and failed, output
    assert int(tests.group(1)) >= 30, output  # the runner found the test files
    assert int(failed.group(1)) == 0, output
