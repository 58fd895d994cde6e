"""What the chat's browser tests share: opening a logged-in page, reading and waiting on it.

The chat client (``examples/chat/static/app.js``) is on peregrine.js.  What
these helpers read from the page:

* ``#messages li[data-id] .text``: the messages shown as stored (acknowledged
  or received), in id order; ``li.pending`` / ``li.failed`` (``data-ref``) are
  this page's own messages still waiting for an answer, or refused / unanswered;
* ``#status[data-state]``: ``open`` (online: connected and the nick is ours),
  ``connecting``, ``offline``;
* ``#online li``: who is in the active room; ``#typing``;
* ``window.chat``: ``{state, socket}`` (the page's state and its peregrine.js Socket).

Every page gets :data:`HOLD_SCRIPT` before its own scripts: while
``window.held`` is true, every WebSocket the page opens goes to
``window.heldUrl`` (where nothing listens), so the page keeps retrying, with
its backoff, and failing: a client cut off while the others are back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from .conftest import TIMEOUT_MS, free_port

MESSAGES = "#messages li[data-id] .text"

HOLD_SCRIPT = """
window.held = false;
window.heldUrl = null;
window.heldAttempts = 0;
window.WebSocket = class HeldWebSocket extends window.WebSocket {
  constructor(url, protocols) {
    if (window.held) window.heldAttempts += 1;
    super(window.held ? window.heldUrl : url, protocols);
  }
};
"""

# Records the socket's state changes and close codes: window.states, window.closes.
RECORD_STATES = """() => {
  window.states = [];
  window.closes = [];
  chat.socket.onStateChange((state) => window.states.push(state));
  chat.socket.onClose((event) => window.closes.push(event.code));
}"""

OpenChat = Callable[..., Any]


def log_in(page: Any, nick: str) -> None:
    page.fill("#nick-input", nick)
    page.click("#login button")


def open_chat_pages(browser: Any) -> Iterator[OpenChat]:
    """The ``open_chat`` fixture of the chat's test modules (``yield from`` this).

    ``open_chat(url, nick)``: a page in its own browser context, logged in as ``nick``.

    ``open_chat(url, nick, context=page.context)``: another tab of that page's
    browser (the same cookies: the same person).
    """
    contexts: list[Any] = []

    def open_page(url: str, nick: str, context: Any = None) -> Any:
        if context is None:
            context = browser.new_context(viewport={"width": 1200, "height": 720})
            context.add_init_script(HOLD_SCRIPT)
            contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url)
        log_in(page, nick)
        wait_connected(page)
        page.wait_for_function(
            "(nick) => [...document.querySelectorAll('#online li')]"
            ".some((li) => li.textContent === nick)",
            arg=nick,
        )
        return page

    yield open_page
    for context in contexts:
        context.close()


def say(page: Any, text: str) -> None:
    page.fill("#text", text)
    page.press("#text", "Enter")


def wait_for_text(page: Any, text: str) -> None:
    """Until ``text`` shows as a stored message."""
    page.wait_for_function(
        "(text) => [...document.querySelectorAll('#messages li[data-id] .text')]"
        ".some((el) => el.textContent === text)",
        arg=text,
    )


def wait_for_texts(page: Any, texts: list[str], timeout_ms: float = TIMEOUT_MS) -> None:
    """Until the stored messages shown are exactly ``texts``."""
    page.wait_for_function(
        "(want) => JSON.stringify([...document.querySelectorAll('#messages li[data-id] .text')]"
        ".map((el) => el.textContent)) === JSON.stringify(want)",
        arg=texts,
        timeout=timeout_ms,
    )


def texts(page: Any) -> list[str]:
    return [str(t) for t in page.locator(MESSAGES).all_text_contents()]


def ids(page: Any) -> list[int]:
    return [
        int(i)
        for i in page.eval_on_selector_all("#messages li[data-id]", "l => l.map(e => e.dataset.id)")
    ]


def waiting(page: Any) -> list[str]:
    """This page's messages still waiting for the server's answer ("sending…")."""
    return [str(t) for t in page.locator("#messages li.pending .text").all_text_contents()]


def failed(page: Any) -> list[str]:
    """This page's messages marked "not sent" (refused, or never answered)."""
    return [str(t) for t in page.locator("#messages li.failed .text").all_text_contents()]


def online(page: Any) -> list[str]:
    return [str(t) for t in page.locator("#online li").all_text_contents()]


def wait_online(page: Any, *nicks: str) -> None:
    page.wait_for_function(
        "(nicks) => JSON.stringify([...document.querySelectorAll('#online li')]"
        ".map((li) => li.textContent)) === JSON.stringify(nicks)",
        arg=sorted(nicks),
    )


def wait_connected(page: Any, timeout_ms: float = TIMEOUT_MS) -> None:
    page.wait_for_function(
        "document.querySelector('#status').dataset.state === 'open'", timeout=timeout_ms
    )


def wait_typing(page: Any, shown: str) -> None:
    page.wait_for_function(
        "(shown) => document.querySelector('#typing').textContent === shown", arg=shown
    )


def hold(page: Any) -> None:
    """From now on the page's connection attempts go nowhere (see :data:`HOLD_SCRIPT`)."""
    page.evaluate("(port) => { window.heldUrl = `ws://127.0.0.1:${port}/`; }", free_port())
    page.evaluate("window.held = true")


# The chat page's reconnectAfterMs cap (examples/chat/static/app.js): after a few
# failed tries, the next one comes up to this long after the last (full jitter).
RECONNECT_CAP_MS = 10_000


def release(page: Any) -> None:
    """Let the page's next attempt through: it was still retrying, and connects by itself.

    Each of the two waits may last a whole backoff delay: up to RECONNECT_CAP_MS.
    """
    patience = RECONNECT_CAP_MS + TIMEOUT_MS // 2
    attempts = page.evaluate("window.heldAttempts")
    page.wait_for_function(  # still retrying
        "(n) => window.heldAttempts > n", arg=attempts, timeout=patience
    )
    assert page.evaluate("document.querySelector('#status').dataset.state") != "open"
    page.evaluate("window.held = false")
    wait_connected(page, patience)


# Once the held attempt in flight (if any) has failed, try again at once.
RECONNECT_NOW = """() => new Promise((resolve) => {
  const tick = () => {
    const state = chat.socket.state;
    if (state === "open") return resolve();
    if (state === "reconnecting") {
      chat.socket.connect();
      return resolve();
    }
    setTimeout(tick, 10);
  };
  tick();
})"""


def release_now(page: Any) -> None:
    """Let the page's attempts through and reconnect at once, not after the backoff's delay.

    For a test of what waits for the connection (a message sent offline has
    8 s to be acknowledged): the delay, up to RECONNECT_CAP_MS, would count
    against it.  release() is the one that shows the page reconnects by itself.
    """
    page.evaluate("window.held = false")
    page.evaluate(RECONNECT_NOW)
    wait_connected(page)


def recovered(page: Any, room: str = "lobby") -> Any:
    """The last join of ``room``: whether peregrine.js said it recovered (true, false, null)."""
    return page.evaluate("(room) => chat.state.rooms.get(room).channel.recovered", room)
