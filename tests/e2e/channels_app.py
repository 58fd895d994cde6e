"""The app of tests/e2e/test_channels_browser.py: a page on peregrine.js and one Channels topic.

Served in a child process (``python -m peregrine_rt tests.e2e.channels_app:Site``):

* ``/``: the page (:data:`PAGE`), which imports ``/_peregrine/peregrine.js``;
* ``/socket``: :class:`Lobby`, whose ``room:lobby`` keeps its publications in
  a :class:`~peregrine_rt._channels._sqlite.SQLiteHistory` in the directory the
  ``CHANNELS_E2E_DATA`` environment variable names (the test restarts the
  server on the same directory, or on a fresh one: a new epoch);
* ``/history?upto=N``: the topic's publications up to offset ``N``, for a
  page that could not recover.
"""

from __future__ import annotations

import os
from typing import Any, Final

import peregrine_rt as pr
from peregrine_rt._channels import Channels, Refuse, Socket, topic
from peregrine_rt._channels._sqlite import SQLiteHistory
from peregrine_rt.exceptions import HTTPError

DATA_VARIABLE: Final = "CHANNELS_E2E_DATA"
TOPIC: Final = "room:lobby"


class Lobby(Channels):
    @topic("room:{name}")
    class Room:
        async def on_new_msg(self, socket: Socket, payload: Any) -> dict[str, Any]:
            text = payload.get("text") if isinstance(payload, dict) else None
            if not isinstance(text, str) or not text:
                raise Refuse("empty")
            await socket.broadcast("new_msg", {"text": text})
            return {"sent": True}


class Site(pr.Router):
    def __init__(self) -> None:
        super().__init__()
        self.lobby = Lobby(history=SQLiteHistory(os.environ[DATA_VARIABLE]))
        self.mount("/socket", self.lobby)

    @pr.get("/")
    async def page(self, request: pr.Request, response: pr.Response) -> None:
        response.html(PAGE)

    @pr.get("/history")
    async def history(self, request: pr.Request, response: pr.Response) -> None:
        try:
            upto = int(request.query.get("upto", ""))
        except ValueError:
            raise HTTPError(400, "upto is a whole number") from None
        kept = await self.lobby.history_of(TOPIC)
        response.json([{"offset": p.offset, **p.payload} for p in kept if p.offset <= upto])


# The page.  What the test reads from it:
# * #messages li: one per message shown, in the order shown (data-offset: its "p:" offset);
# * #joins li: one per successful join of room:lobby (data-rejoin, data-recovered,
#   data-reason, data-epoch, data-offset: peregrine.js's onJoin info);
# * body[data-state]: the socket's state;
# * window.frames: the offset of every new_msg frame the socket received, duplicates
#   included (peregrine.js drops those before the page sees them);
# * window.held: while true, every connection attempt goes to window.heldUrl (where
#   nothing listens), so the page keeps reconnecting, with its backoff, and failing;
#   window.heldAttempts counts those attempts;
# * window.say(text): the page's own push of new_msg, resolved with the reply.
PAGE: Final = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>channels e2e</title></head>
<body data-state="closed">
<ol id="joins"></ol>
<ul id="messages"></ul>
<script type="module">
import { Socket, backoff } from "/_peregrine/peregrine.js";

window.held = false;
window.heldUrl = null;
window.heldAttempts = 0;
window.frames = [];

class HeldWebSocket extends WebSocket {
  constructor(url, protocols) {
    if (window.held) window.heldAttempts += 1;
    super(window.held ? window.heldUrl : url, protocols);
  }
}

const socket = new Socket("/socket", {
  transport: HeldWebSocket,
  reconnectAfterMs: backoff(50, 400),
  rejoinAfterMs: backoff(50, 400),
});
socket.onStateChange((state) => { document.body.dataset.state = state; });
socket.onMessage(([, ref, topic, event]) => {
  if (topic === "room:lobby" && event === "new_msg") window.frames.push(Number(ref.slice(2)));
});

const list = document.getElementById("messages");
const show = (offset, text) => {
  const li = document.createElement("li");
  li.dataset.offset = offset;
  li.textContent = text;
  list.append(li);
};

// One chain: a reload (after a join that did not recover) completes before
// the messages that arrive meanwhile are shown.
let chain = Promise.resolve();
const then = (step) => { chain = chain.then(step); };

const lobby = socket.channel("room:lobby");
lobby.on("new_msg", ({ text }, ref) => then(() => show(Number(ref.slice(2)), text)));
lobby.onJoin(({ rejoin, recovered, reason, epoch, offset }) => {
  const li = document.createElement("li");
  Object.assign(li.dataset, {
    rejoin: String(rejoin), recovered: String(recovered), reason: String(reason),
    epoch: String(epoch), offset: String(offset),
  });
  document.getElementById("joins").append(li);
  if (recovered === true) return; // the missed messages follow the reply
  then(async () => { // first join, or nothing to recover from: load what the server has
    const rows = await (await fetch(`/history?upto=${offset}`)).json();
    list.replaceChildren();
    for (const row of rows) show(row.offset, row.text);
  });
});
lobby.join();
socket.connect();

window.say = async (text) => await lobby.push("new_msg", { text });
</script>
</body>
</html>
"""
