// docs/channels/browser.rst: a chat room in the browser with peregrine.js.
// tests/js/snippets.test.mjs runs it (docs/snippets/channels_browser.py runs that).

// [connect]
import { Presence, Socket } from "/_peregrine/peregrine.js";

export function connect(token) {
  // ws(s)://<this host>/socket/websocket?token=...&vsn=2.0.0
  const socket = new Socket("/socket", { params: { token } });
  socket.onStateChange((state) => {
    document.body.dataset.connection = state; // connecting, open, reconnecting, closed
  });
  socket.connect();
  return socket;
}
// [/connect]

// [room]
export function openRoom(socket, name, { nick, show, showPeople, refetch }) {
  // A function: the params are asked again on every rejoin.
  const room = socket.channel(`room:${name}`, () => ({ nick }));
  room.on("new_msg", (message) => show(message));
  room.onJoin(({ rejoin, recovered, reason }) => {
    // After a reconnect the server replays what this page missed (recovered:
    // true), or says it cannot: then the page loads the recent messages again.
    if (rejoin && recovered === false) refetch(reason);
  });
  const presence = new Presence(room);
  presence.onSync(() => {
    showPeople(presence.list((who, { metas }) => ({ who, tabs: metas.length })));
  });
  room.join().receive("error", ({ reason }) => show({ nick: "*", body: `not joined: ${reason}` }));
  return room;
}
// [/room]

// [send]
export async function send(room, body) {
  try {
    await room.push("new_msg", { body }, { timeout: 5000 });
    return "sent";
  } catch (error) {
    // error.status: "error" (the server's reason in error.response.reason), or
    // "timeout" (no answer in 5 s: the message may or may not have arrived).
    return error.status === "error" ? error.response.reason : "timeout";
  }
}
// [/send]
