// The browser snippets of docs/channels/browser.rst, run as written: the
// served path resolves to the package's file, the page's globals are stood in
// for, and a fake WebSocket plays the server.
import assert from "node:assert/strict";
import { register } from "node:module";
import { test } from "node:test";

import { Clock, fakeTransport } from "./fakes.mjs";

register("./serve_path.mjs", import.meta.url);
const { connect, openRoom, send } = await import("../../docs/snippets/channels_browser.js");

/** The page's globals for one test: a fake WebSocket, a location, a document, a clock. */
function page(t) {
  const transport = fakeTransport();
  const clock = new Clock();
  const saved = { setTimeout: globalThis.setTimeout, clearTimeout: globalThis.clearTimeout };
  Object.assign(globalThis, {
    WebSocket: transport.WebSocket,
    location: { protocol: "https:", host: "chat.example" },
    document: { body: { dataset: {} } },
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
  });
  t.after(() => {
    Object.assign(globalThis, saved);
    delete globalThis.WebSocket;
    delete globalThis.location;
    delete globalThis.document;
  });
  return { transport, clock };
}

test("the room snippet: join, messages, presence, send, recovery", async (t) => {
  const { transport, clock } = page(t);
  const socket = connect("t0k");
  const ws = transport.last();
  assert.equal(ws.url, "wss://chat.example/socket/websocket?token=t0k&vsn=2.0.0");
  assert.equal(document.body.dataset.connection, "connecting");
  ws.open();
  assert.equal(document.body.dataset.connection, "open");

  const shown = [];
  const people = [];
  const refetched = [];
  const room = openRoom(socket, "lobby", {
    nick: "ann",
    show: (message) => shown.push(message),
    showPeople: (list) => people.push(list),
    refetch: (reason) => refetched.push(reason),
  });
  const join = ws.frames("phx_join")[0];
  assert.deepEqual(join.slice(2), ["room:lobby", "phx_join", { nick: "ann" }]);
  ws.reply("phx_join", "ok", { epoch: "e1", offset: 3 });
  ws.deliver([join[0], null, "room:lobby", "presence_state", { ann: { metas: [{ phx_ref: "a" }] } }]);
  assert.deepEqual(people.at(-1), [{ who: "ann", tabs: 1 }]);
  ws.deliver([null, "p:4", "room:lobby", "new_msg", { nick: "bob", body: "hi" }]);
  assert.deepEqual(shown, [{ nick: "bob", body: "hi" }]);

  const sent = send(room, "hello");
  ws.reply("new_msg", "ok", {});
  assert.equal(await sent, "sent");
  const refused = send(room, "spam");
  ws.reply("new_msg", "error", { reason: "rate_limited" });
  assert.equal(await refused, "rate_limited");

  // The connection drops; the page reconnects and the server cannot recover.
  ws.drop();
  assert.equal(document.body.dataset.connection, "reconnecting");
  clock.advance(1000); // the first backoff is under 1 s
  const ws2 = transport.last();
  assert.notEqual(ws2, ws);
  ws2.open();
  assert.deepEqual(ws2.frames("phx_join")[0][4], { nick: "ann", since: { offset: 4, epoch: "e1" } });
  ws2.reply("phx_join", "ok", { recovered: false, reason: "too_old", epoch: "e1", offset: 9 });
  assert.deepEqual(refetched, ["too_old"]);
  socket.disconnect();
  assert.equal(document.body.dataset.connection, "closed");
});

test("a refused join is shown", (t) => {
  const { transport } = page(t);
  const socket = connect("t0k");
  transport.last().open();
  const shown = [];
  openRoom(socket, "admin", { nick: "ann", show: (m) => shown.push(m), showPeople() {}, refetch() {} });
  transport.last().reply("phx_join", "error", { reason: "unauthorized" });
  assert.deepEqual(shown, [{ nick: "*", body: "not joined: unauthorized" }]);
  socket.disconnect();
});
