"""The chat example in headless Chromium: pages talk, through restarts and across nodes.

The page is ``examples/chat/static/`` on peregrine.js; the servers are child
processes (``conftest.py``), each single-node one keeping its history in
SQLite in a data directory of the test (``CHAT_DATA``).  Plain synchronous
tests (Playwright's sync API).  Every wait is on what the page shows, bounded
by ``TIMEOUT_MS``.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .chat_pages import (
    RECORD_STATES,
    OpenChat,
    failed,
    hold,
    ids,
    log_in,
    open_chat_pages,
    recovered,
    release,
    release_now,
    say,
    texts,
    wait_connected,
    wait_for_text,
    wait_for_texts,
    wait_online,
    wait_typing,
    waiting,
)
from .conftest import REPO, TIMEOUT_MS, ChatServer


def chat_server_in(log: Path, data: Path, **kwargs: Any) -> ChatServer:
    """A chat server logging to ``log``, its history (single node: SQLite) in ``data``."""
    server = ChatServer(log, **kwargs)
    server.env["CHAT_DATA"] = str(data)
    return server


@pytest.fixture
def open_chat(browser: Any) -> Iterator[OpenChat]:
    yield from open_chat_pages(browser)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ChatServer]:
    """The chat on one process, its history in SQLite in ``tmp_path / "data"``."""
    server = chat_server_in(tmp_path / "chat.log", tmp_path / "data")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_two_pages_talk_see_each_other_and_typing(server: ChatServer, open_chat: OpenChat) -> None:
    ada = open_chat(server.url, "ada")
    bob = open_chat(server.url, "bob")
    wait_online(ada, "ada", "bob")
    wait_online(bob, "ada", "bob")
    assert ada.text_content("#me") == "ada"
    assert ada.text_content("#status") == "online"

    say(ada, "hello bob")
    wait_for_text(bob, "hello bob")
    say(bob, "hi ada!")
    wait_for_text(ada, "hi ada!")
    wait_for_text(bob, "hi ada!")
    assert texts(ada) == texts(bob) == ["hello bob", "hi ada!"]
    assert ids(ada) == ids(bob) and ids(ada)[1] == ids(ada)[0] + 1
    assert waiting(ada) == waiting(bob) == []  # both acknowledged

    bob.type("#text", "typing away")  # key by key: input events
    wait_typing(ada, "bob is typing…")
    assert bob.text_content("#typing") == ""  # not told about himself
    bob.press("#text", "Enter")  # the message clears the indicator
    wait_for_text(ada, "typing away")
    wait_typing(ada, "")

    bob.close()
    wait_online(ada, "ada")


def test_html_in_a_message_is_text_and_runs_nothing(
    server: ChatServer, open_chat: OpenChat
) -> None:
    ada = open_chat(server.url, "ada")
    bob = open_chat(server.url, "bob")
    attack = '<img src=x onerror="window.pwned = 1"><b>bold</b><script>window.pwned = 2</script>'
    say(ada, attack)
    for page in (ada, bob):
        wait_for_text(page, attack)
        assert page.locator("#messages img, #messages b, #messages script").count() == 0
        assert page.evaluate("window.pwned") is None
    # And in a room's name: the room list shows it as text (the server refuses it).
    ada.evaluate("document.querySelector('#new-room-input').removeAttribute('pattern')")
    ada.fill("#new-room-input", "<b>x</b>")
    ada.press("#new-room-input", "Enter")
    ada.wait_for_selector("#notice:visible")
    assert ada.locator("#rooms b, #notice b").count() == 0
    assert ada.evaluate("window.pwned") is None


def test_unread_counts_rooms_and_leaving(server: ChatServer, open_chat: OpenChat) -> None:
    ada = open_chat(server.url, "ada")
    bob = open_chat(server.url, "bob")
    ada.fill("#new-room-input", "dev")
    ada.press("#new-room-input", "Enter")  # joining creates it
    ada.wait_for_selector("#rooms li[data-room='dev'].joined.active")
    assert ada.text_content("#room-title") == "dev"
    bob.fill("#new-room-input", "dev")
    bob.press("#new-room-input", "Enter")
    bob.wait_for_selector("#rooms li[data-room='dev'].joined.active")
    wait_online(bob, "ada", "bob")
    bob.click("#rooms li[data-room='lobby']")
    wait_online(bob, "ada", "bob")  # the lobby's presence: ada is in both
    say(ada, "in dev 1")
    say(ada, "in dev 2")
    bob.wait_for_selector("#rooms li[data-room='dev'] .unread >> text='2'")
    assert texts(bob) == []  # the lobby shows none of it
    assert ada.locator("#rooms .unread").count() == 0  # her own are not unread
    bob.click("#rooms li[data-room='dev']")
    wait_for_text(bob, "in dev 2")
    assert bob.locator("#rooms li[data-room='dev'] .unread").count() == 0
    assert texts(bob) == ["in dev 1", "in dev 2"]

    bob.click("#leave")  # leaves dev: back in the lobby, and out of dev's presence
    bob.wait_for_selector("#rooms li[data-room='dev'].joined", state="detached")
    assert bob.text_content("#room-title") == "lobby"
    wait_online(ada, "ada")
    bob.click("#leave")  # his last room: stays
    bob.wait_for_selector("#notice:visible")
    assert "last room" in (bob.text_content("#notice") or "")
    assert bob.locator("#rooms li.joined").count() == 1


def test_a_new_room_is_listed_on_every_page(server: ChatServer, open_chat: OpenChat) -> None:
    ada = open_chat(server.url, "ada")
    bob = open_chat(server.url, "bob")
    ada.fill("#new-room-input", "dev")
    ada.press("#new-room-input", "Enter")  # joining creates it...
    ada.wait_for_selector("#rooms li[data-room='dev'].joined.active")
    bob.wait_for_selector("#rooms li[data-room='dev']:not(.joined)")  # ...and lists it
    bob.click("#rooms li[data-room='dev']")
    bob.wait_for_selector("#rooms li[data-room='dev'].joined.active")
    wait_online(bob, "ada", "bob")
    bob.click("#leave")
    bob.wait_for_selector("#rooms li[data-room='dev']:not(.joined)")  # still listed


def test_history_on_join_and_load_older(server: ChatServer, open_chat: OpenChat) -> None:
    ada = open_chat(server.url, "ada")
    sent = [f"note {i}" for i in range(7)]
    for text in sent:
        say(ada, text)
        wait_for_text(ada, text)  # one at a time: well under the rate limit

    # A page of 3 (the page size is ``?page=``): the newest 3, then older ones on demand.
    bob = open_chat(server.url + "?page=3", "bob")
    wait_for_texts(bob, sent[4:])
    bob.click("#older")
    wait_for_texts(bob, sent[1:])
    bob.click("#older")
    wait_for_texts(bob, sent)
    bob.wait_for_selector("#older", state="hidden")  # less than a page came: no more
    assert ids(bob) == ids(ada) == list(range(ids(ada)[0], ids(ada)[0] + 7))


def test_a_refused_message_is_marked_and_can_be_retried_or_discarded(
    server: ChatServer, open_chat: OpenChat
) -> None:
    ada = open_chat(server.url, "ada")
    ada.evaluate("document.querySelector('#text').removeAttribute('maxlength')")
    long = "x" * 2001
    say(ada, long)
    ada.wait_for_selector("#messages li.failed")
    assert failed(ada) == [long] and texts(ada) == []
    assert "2000" in (ada.text_content("#messages li.failed .failure") or "")
    ada.click("#messages li.failed .discard")
    ada.wait_for_selector("#messages li.failed", state="detached")

    # Sent while offline: it waits ("sending…"), then goes once the page is back.
    # The server is up again before, so that the message's 8 s to be acknowledged
    # do not include its start (seconds on a busy machine) or the backoff's delay.
    say(ada, "first")
    wait_for_text(ada, "first")
    hold(ada)
    server.stop()
    ada.wait_for_function("document.querySelector('#status').dataset.state === 'offline'")
    assert ada.text_content("#status") == "offline, reconnecting…"
    server.start()
    say(ada, "while offline")
    assert waiting(ada) == ["while offline"]
    release_now(ada)
    wait_for_texts(ada, ["first", "while offline"])
    assert waiting(ada) == failed(ada) == []

    # Unanswered: the server is gone, for longer than the page waits for an answer.
    hold(ada)
    server.stop()
    say(ada, "never answered")
    ada.wait_for_selector("#messages li.failed", timeout=TIMEOUT_MS + 5000)
    assert failed(ada) == ["never answered"]
    server.start()
    release(ada)
    ada.click("#messages li.failed .retry")
    wait_for_texts(ada, ["first", "while offline", "never answered"])
    assert waiting(ada) == failed(ada) == []


def test_restart_both_pages_reconnect_and_catch_up(server: ChatServer, open_chat: OpenChat) -> None:
    ada = open_chat(server.url, "ada")
    bob = open_chat(server.url, "bob")
    say(ada, "before the restart")
    wait_for_text(bob, "before the restart")

    hold(bob)  # bob will not find the server for a while
    server.stop()
    for page in (ada, bob):
        page.wait_for_function("document.querySelector('#status').dataset.state !== 'open'")
    server.start()

    wait_connected(ada)  # ada reconnects by herself, with backoff
    wait_online(ada, "ada")
    for i in range(3):
        say(ada, f"meanwhile {i}")
    wait_for_text(ada, "meanwhile 2")

    release(bob)
    wait_for_text(bob, "meanwhile 2")  # caught up: sent while he was away
    assert recovered(bob) is True  # replayed, not reloaded
    wait_online(ada, "ada", "bob")
    say(bob, "back")
    wait_for_text(ada, "back")
    wait_for_text(bob, "back")
    expected = ["before the restart", "meanwhile 0", "meanwhile 1", "meanwhile 2", "back"]
    assert texts(ada) == texts(bob) == expected  # nothing twice, nothing lost
    assert ids(ada) == ids(bob) == sorted(set(ids(ada)))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_after_a_restart_a_new_tab_sees_the_history_and_an_open_one_recovers(
    server: ChatServer, open_chat: OpenChat, sig: signal.Signals
) -> None:
    """Issue 14, item 8: on one node the history is in SQLite, so it survives a restart."""
    ada = open_chat(server.url, "ada")
    bob = open_chat(server.url, "bob")
    before = ["one", "two", "three"]
    for text in before:
        say(ada, text)
    wait_for_texts(bob, before)
    bob.evaluate(RECORD_STATES)
    first_ids = ids(bob)

    hold(bob)
    server.stop(sig)  # same port, same data directory
    bob.wait_for_function("document.querySelector('#status').dataset.state === 'offline'")
    server.start()
    wait_connected(ada)
    say(ada, "four")  # while bob is away
    wait_for_text(ada, "four")
    everything = [*before, "four"]

    # A new tab of a new person: the earlier messages are there again.
    carol = open_chat(server.url, "carol")
    wait_for_texts(carol, everything)
    assert ids(carol)[:3] == first_ids  # the same messages, the same ids

    # Bob's open tab: back, it recovers what it missed, once each.
    release(bob)
    wait_for_texts(bob, everything)
    assert recovered(bob) is True
    say(bob, "five")
    for page in (ada, bob, carol):
        wait_for_texts(page, [*everything, "five"])
        assert ids(page) == list(range(first_ids[0], first_ids[0] + 5))
    assert bob.evaluate("window.closes")  # the connection was lost, then came back
    assert bob.evaluate("window.states")[-1] == "open"


def test_a_new_history_reloads_the_open_page(
    server: ChatServer, open_chat: OpenChat, tmp_path: Path
) -> None:
    """The data directory is gone after the restart: a new epoch, so the page starts afresh."""
    ada = open_chat(server.url, "ada")
    say(ada, "old world")
    wait_for_text(ada, "old world")
    hold(ada)
    server.stop()
    server.env["CHAT_DATA"] = str(tmp_path / "fresh")
    server.start()
    bob = open_chat(server.url, "bob")
    say(bob, "new world")
    wait_for_text(bob, "new world")

    release(ada)
    wait_for_texts(ada, ["new world"])  # the old one is gone, as on the server
    assert recovered(ada) is False
    say(ada, "hello again")
    for page in (ada, bob):
        wait_for_texts(page, ["new world", "hello again"])


def test_multi_node_with_redis(redis_url: str, tmp_path: Path, open_chat: OpenChat) -> None:
    nodes = [
        chat_server_in(tmp_path / f"node{i}.log", tmp_path / "data", redis_url=redis_url)
        for i in (1, 2)
    ]
    try:
        for node in nodes:
            node.start()
        ada = open_chat(nodes[0].url, "ada")
        bob = open_chat(nodes[1].url, "bob")
        wait_online(ada, "ada", "bob")  # presence crosses nodes
        wait_online(bob, "ada", "bob")
        say(ada, "from node 1")
        wait_for_text(bob, "from node 1")
        say(bob, "from node 2")
        wait_for_text(ada, "from node 2")
        wait_for_text(bob, "from node 2")
        bob.type("#text", "x")
        wait_typing(ada, "bob is typing…")

        # A room made on one node is listed on the other.
        ada.fill("#new-room-input", "ops")
        ada.press("#new-room-input", "Enter")
        bob.wait_for_selector("#rooms li[data-room='ops']")
        ada.click("#rooms li[data-room='lobby']")

        # The history is the same from either node.
        carol = open_chat(nodes[0].url, "carol")
        dave = open_chat(nodes[1].url, "dave")
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


def test_screenshot_for_the_docs(server: ChatServer, open_chat: OpenChat) -> None:
    """Saves docs/img/chat.png: the page the tutorial shows."""
    ada = open_chat(server.url, "ada")
    bob = open_chat(server.url, "bob")
    grace = open_chat(server.url, "grace")
    ada.fill("#new-room-input", "design")
    ada.press("#new-room-input", "Enter")
    ada.wait_for_selector("#rooms li[data-room='design'].active")
    ada.click("#rooms li[data-room='lobby']")
    conversation = [
        (ada, "Morning! Has anyone tried the chat example on two processes?"),
        (bob, "Yes: peregrine-rt examples.chat.app:Chat --redis redis://127.0.0.1:6379, twice."),
        (grace, "On one node the history is in SQLite: restart it and nothing is lost."),
        (ada, "And <b>this</b> stays plain text, as it should."),
    ]
    for page, text in conversation:
        say(page, text)
        wait_for_text(ada, text)
    grace.fill("#new-room-input", "design")
    grace.press("#new-room-input", "Enter")
    grace.wait_for_selector("#rooms li[data-room='design'].joined")
    for i in range(3):
        say(grace, f"design note {i}")
    ada.wait_for_selector("#rooms li[data-room='design'] .unread >> text='3'")
    bob.type("#text", "Let me try it")
    wait_typing(ada, "bob is typing…")
    target = REPO / "docs" / "img" / "chat.png"
    target.parent.mkdir(exist_ok=True)
    ada.screenshot(path=str(target))
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_nick_is_one_person_s_in_any_number_of_tabs(
    server: ChatServer, browser: Any, open_chat: OpenChat
) -> None:
    ada = open_chat(server.url, "ada")
    tab2 = open_chat(server.url, "ada", context=ada.context)  # her second tab
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
        other.goto(server.url)
        log_in(other, "ada")
        other.wait_for_selector("#login-error:visible")
        assert other.get_attribute("#login-error", "data-reason") == "nick_taken"
        assert "ada" in (other.text_content("#login-error") or "")  # the server's words
        assert other.locator("#chat").is_hidden()
        log_in(other, "bob")
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
def test_the_login_form_refuses_bad_nicks(server: ChatServer, browser: Any, nick: str) -> None:
    page = browser.new_page()
    try:
        page.goto(server.url)
        log_in(page, nick)  # the form's own check: nothing is sent
        assert page.locator("#chat").is_hidden()
        assert re.search("nickname", page.text_content("#login") or "", re.I)
        assert page.locator("#login-error").is_hidden()
    finally:
        page.close()


def test_a_nick_the_server_refuses_is_shown_and_another_can_be_picked(
    server: ChatServer, browser: Any
) -> None:
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    try:
        page.goto(server.url)
        log_in(page, "two  spaces")  # the form lets it through; the server does not
        page.wait_for_selector("#login-error:visible")
        assert page.get_attribute("#login-error", "data-reason") == "bad_nick"
        assert page.locator("#chat").is_hidden()
        log_in(page, "one space")
        wait_connected(page)
        assert page.text_content("#me") == "one space"
    finally:
        page.close()
