"""The chat example in headless Chromium: two pages talk, through restarts and across nodes.

Plain synchronous tests (Playwright's sync API); the servers are child
processes (``conftest.py``).  Every wait is on what the page shows, bounded by
``TIMEOUT_MS``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from .conftest import REPO, TIMEOUT_MS, ChatServer

MESSAGES = "#messages li .text"


def say(page: Any, text: str) -> None:
    page.fill("#text", text)
    page.press("#text", "Enter")


def wait_for_text(page: Any, text: str) -> None:
    page.wait_for_function(
        "(text) => [...document.querySelectorAll('#messages li .text')]"
        ".some((el) => el.textContent === text)",
        arg=text,
    )


def texts(page: Any) -> list[str]:
    return [str(t) for t in page.locator(MESSAGES).all_text_contents()]


def ids(page: Any) -> list[int]:
    return [
        int(i) for i in page.eval_on_selector_all("#messages li", "l => l.map(e => e.dataset.id)")
    ]


def online(page: Any) -> list[str]:
    return [str(t) for t in page.locator("#online li").all_text_contents()]


def wait_online(page: Any, *nicks: str) -> None:
    page.wait_for_function(
        "(nicks) => JSON.stringify([...document.querySelectorAll('#online li')]"
        ".map((li) => li.textContent)) === JSON.stringify(nicks)",
        arg=sorted(nicks),
    )


def wait_connected(page: Any) -> None:
    page.wait_for_function("document.querySelector('#status').dataset.state === 'open'")


def test_two_pages_talk_see_each_other_and_typing(chat_server: ChatServer, new_page: Any) -> None:
    ada = new_page(chat_server.url, "ada")
    bob = new_page(chat_server.url, "bob")
    wait_online(ada, "ada", "bob")
    wait_online(bob, "ada", "bob")

    say(ada, "hello bob")
    wait_for_text(bob, "hello bob")
    say(bob, "hi ada!")
    wait_for_text(ada, "hi ada!")
    wait_for_text(bob, "hi ada!")
    assert texts(ada) == texts(bob) == ["hello bob", "hi ada!"]
    assert ids(ada) == ids(bob) and ids(ada)[1] == ids(ada)[0] + 1

    bob.type("#text", "typing away")  # key by key: input events
    ada.wait_for_function("document.querySelector('#typing').textContent === 'bob is typing…'")
    bob.press("#text", "Enter")  # the message clears the indicator
    wait_for_text(ada, "typing away")
    ada.wait_for_function("document.querySelector('#typing').textContent === ''")

    bob.close()
    wait_online(ada, "ada")


def test_html_in_a_message_is_text_and_runs_nothing(chat_server: ChatServer, new_page: Any) -> None:
    ada = new_page(chat_server.url, "ada")
    bob = new_page(chat_server.url, "bob")
    attack = '<img src=x onerror="window.pwned = 1"><b>bold</b><script>window.pwned = 2</script>'
    say(ada, attack)
    for page in (ada, bob):
        wait_for_text(page, attack)
        assert page.locator("#messages img, #messages b, #messages script").count() == 0
        assert page.evaluate("window.pwned") is None


def test_unread_counts_and_rooms(chat_server: ChatServer, new_page: Any) -> None:
    ada = new_page(chat_server.url, "ada")
    bob = new_page(chat_server.url, "bob")
    ada.fill("#new-room-input", "dev")
    ada.press("#new-room-input", "Enter")
    bob.wait_for_selector("#rooms li[data-room='dev']")
    bob.click("#rooms li[data-room='dev']")
    bob.wait_for_selector("#rooms li[data-room='dev'].joined.active")
    wait_online(bob, "ada", "bob")
    bob.click("#rooms li[data-room='lobby']")
    say(ada, "in dev 1")
    say(ada, "in dev 2")
    bob.wait_for_selector("#rooms li[data-room='dev'] .unread >> text='2'")
    bob.click("#rooms li[data-room='dev']")
    wait_for_text(bob, "in dev 2")
    assert bob.locator("#rooms li[data-room='dev'] .unread").count() == 0
    assert texts(bob) == ["in dev 1", "in dev 2"]


def test_restart_both_pages_reconnect_and_catch_up(chat_server: ChatServer, new_page: Any) -> None:
    ada = new_page(chat_server.url, "ada")
    bob = new_page(chat_server.url, "bob")
    say(ada, "before the restart")
    wait_for_text(bob, "before the restart")

    # Bob will not find the server for a while: his reconnections go nowhere.
    real_url = bob.evaluate("chat.conn.url")
    bob.evaluate("chat.conn.url = 'ws://127.0.0.1:9/ws'")
    chat_server.stop()
    for page in (ada, bob):
        page.wait_for_function("document.querySelector('#status').dataset.state !== 'open'")
    chat_server.start()

    wait_connected(ada)  # ada reconnects by herself, with backoff
    wait_online(ada, "ada")
    for i in range(3):
        say(ada, f"meanwhile {i}")
    wait_for_text(ada, "meanwhile 2")

    bob.evaluate("url => { chat.conn.url = url; chat.conn.connect(); }", real_url)
    wait_connected(bob)
    wait_for_text(bob, "meanwhile 2")  # caught up: sent while he was away
    wait_online(ada, "ada", "bob")
    say(bob, "back")
    wait_for_text(ada, "back")
    wait_for_text(bob, "back")
    expected = ["before the restart", "meanwhile 0", "meanwhile 1", "meanwhile 2", "back"]
    assert texts(ada) == texts(bob) == expected  # nothing twice, nothing lost
    assert ids(ada) == ids(bob) == sorted(set(ids(ada)))


def test_multi_node_with_redis(redis_url: str, tmp_path: Path, new_page: Any) -> None:
    nodes = [ChatServer(tmp_path / f"node{i}.log", redis_url=redis_url) for i in (1, 2)]
    try:
        for node in nodes:
            node.start()
        ada = new_page(nodes[0].url, "ada")
        bob = new_page(nodes[1].url, "bob")
        wait_online(ada, "ada", "bob")  # presence crosses nodes
        wait_online(bob, "ada", "bob")
        say(ada, "from node 1")
        wait_for_text(bob, "from node 1")
        say(bob, "from node 2")
        wait_for_text(ada, "from node 2")
        wait_for_text(bob, "from node 2")
        bob.type("#text", "x")
        ada.wait_for_function("document.querySelector('#typing').textContent === 'bob is typing…'")

        # The history is the same from either node.
        carol = new_page(nodes[0].url, "carol")
        dave = new_page(nodes[1].url, "dave")
        for page in (carol, dave):
            wait_for_text(page, "from node 2")
        assert texts(carol) == texts(dave) == ["from node 1", "from node 2"]
        assert ids(carol) == ids(dave) == ids(ada) == ids(bob)
        wait_online(ada, "ada", "bob", "carol", "dave")

        dave.close()
        wait_online(ada, "ada", "bob", "carol")
    finally:
        for node in nodes:
            node.stop()


def test_screenshot_for_the_docs(chat_server: ChatServer, new_page: Any) -> None:
    """Saves docs/img/chat.png: the page the tutorial shows."""
    ada = new_page(chat_server.url, "ada")
    bob = new_page(chat_server.url, "bob")
    grace = new_page(chat_server.url, "grace")
    ada.fill("#new-room-input", "design")
    ada.press("#new-room-input", "Enter")
    ada.wait_for_selector("#rooms li[data-room='design'].active")
    ada.click("#rooms li[data-room='lobby']")
    conversation = [
        (ada, "Morning! Has anyone tried the chat example on two processes?"),
        (bob, "Yes: peregrine-rt examples.chat.app:Chat --redis redis://127.0.0.1:6379, twice."),
        (grace, "History comes from a Redis stream, so both nodes agree on ids and order."),
        (ada, "And <b>this</b> stays plain text, as it should."),
    ]
    for page, text in conversation:
        say(page, text)
        wait_for_text(ada, text)
    grace.click("#rooms li[data-room='design']")
    grace.wait_for_selector("#rooms li[data-room='design'].joined")
    for i in range(3):
        say(grace, f"design note {i}")
    ada.wait_for_selector("#rooms li[data-room='design'] .unread >> text='3'")
    bob.type("#text", "Let me try it")
    ada.wait_for_function("document.querySelector('#typing').textContent === 'bob is typing…'")
    target = REPO / "docs" / "img" / "chat.png"
    target.parent.mkdir(exist_ok=True)
    ada.screenshot(path=str(target))
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_nick_is_one_person_s_in_any_number_of_tabs(
    chat_server: ChatServer, browser: Any, new_page: Any
) -> None:
    ada = new_page(chat_server.url, "ada")
    tab2 = new_page(chat_server.url, "ada", context=ada.context)  # her second tab
    (cookie,) = ada.context.cookies()
    assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"]) == ("chat_session", True, "Lax")
    say(tab2, "from the second tab")
    for page in (ada, tab2):
        wait_for_text(page, "from the second tab")
        wait_online(page, "ada")  # one entry for two tabs

    # Another person (another browser) asks for "ada": told so, and picks another nick.
    context = browser.new_context()
    try:
        other = context.new_page()
        other.set_default_timeout(TIMEOUT_MS)
        other.goto(chat_server.url)
        other.fill("#nick-input", "ada")
        other.click("#login button")
        other.wait_for_selector("#login-error:visible")
        assert "someone else's nick" in (other.text_content("#login-error") or "")
        assert other.locator("#chat").is_hidden()
        other.fill("#nick-input", "bob")
        other.click("#login button")
        wait_connected(other)
        assert other.locator("#login").is_hidden()
        for page in (ada, tab2, other):
            wait_online(page, "ada", "bob")
        say(other, "I am bob")
        wait_for_text(ada, "I am bob")
        assert texts(other) == ["from the second tab", "I am bob"]
    finally:
        context.close()
    wait_online(ada, "ada")  # bob left
    tab2.close()
    say(ada, "still here")  # her first tab goes on
    wait_for_text(ada, "still here")


@pytest.mark.parametrize("nick", ["", " ada", "no!way"])
def test_the_login_form_refuses_bad_nicks(chat_server: ChatServer, browser: Any, nick: str) -> None:
    page = browser.new_page()
    try:
        page.goto(chat_server.url)
        page.fill("#nick-input", nick)
        page.click("#login button")
        assert page.locator("#chat").is_hidden()
        assert re.search("nickname", page.text_content("#login") or "", re.I)
    finally:
        page.close()
