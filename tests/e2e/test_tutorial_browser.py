"""The tutorial's page (step 6, ``examples/tutorial/static/``) in headless Chromium.

Two browsers, two people: one says something, with markup in it, and the
other sees it as text, with who is online and who is typing.  The server is
``peregrine-rt examples.tutorial.step6:Chat`` in a child process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import CHAT_SECRET, AppServer

MARKUP = "<img src=x onerror=document.title='owned'>"


@pytest.fixture
def tutorial_server(tmp_path: Path) -> Iterator[AppServer]:
    server = AppServer(
        tmp_path / "step6.log",
        "examples.tutorial.step6:Chat",
        env={"CHAT_SECRET": CHAT_SECRET, "CHAT_DATA": str(tmp_path / "data")},
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_two_people_chat_on_the_tutorials_page(tutorial_server: AppServer, new_page: Any) -> None:
    ada = new_page(tutorial_server.url, "ada")
    bob = new_page(tutorial_server.url, "bob")
    for page in (ada, bob):
        page.wait_for_function("() => [...document.querySelectorAll('#online li')].length === 2")
    ada.fill("#text", "hello")  # typing
    bob.wait_for_function(
        "() => document.querySelector('#typing').textContent === 'ada is typing…'"
    )
    ada.fill("#text", MARKUP)
    ada.click("#say button")
    bob.wait_for_function(
        "(text) => [...document.querySelectorAll('#messages li')]"
        ".some((li) => li.textContent === text)",
        arg=f"ada: {MARKUP}",
    )
    assert bob.locator("#messages img").count() == 0 and bob.title() != "owned"
    assert ada.input_value("#text") == ""  # acknowledged
    carol = new_page(tutorial_server.url, "carol")  # a new page loads the history
    carol.wait_for_function("() => document.querySelector('#messages li[data-id=\"1\"]') !== null")
