// The phoenix npm client, unmodified, against a peregrine_rt Channels server.
// tests/channels/test_phoenix_npm.py installs this folder with npm and runs
//
//   node run.mjs basic   <url> [<url of a second node>]
//   node run.mjs recover <url>
//
// printing one JSON record per line.  Under Node, phoenix's Socket takes the
// `ws` package's WebSocket as its `transport` option (Node 20 has no global
// WebSocket).
import { Presence, Socket } from "phoenix";
import WebSocket from "ws";
import { createInterface } from "node:readline";

const out = (record) => process.stdout.write(`${JSON.stringify(record)}\n`);
const [scenario, url, url2 = url] = process.argv.slice(2);

function connect(endPoint, params = {}) {
  const socket = new Socket(endPoint, { transport: WebSocket, params });
  socket.connect();
  return socket;
}

/** The first outcome of a phoenix Push: ["ok" | "error" | "timeout", response]. */
const outcome = (push) =>
  new Promise((resolve) => {
    for (const status of ["ok", "error", "timeout"]) {
      push.receive(status, (response) => resolve([status, response ?? null]));
    }
  });

/** Waits for `condition()`, checking every 10 ms, for at most 10 s. */
async function until(condition, what) {
  for (let waited = 0; !condition(); waited += 10) {
    if (waited > 10_000) throw new Error(`gave up waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const names = (presence) =>
  presence.list((key, p) => `${key}:${p.metas.length}`).sort().join(",");

async function basic() {
  const ann = connect(url, { user: "ann" });
  const lobby = ann.channel("room:lobby", { nick: "ann" });
  const presence = new Presence(lobby);
  const syncs = [];
  presence.onSync(() => syncs.push(names(presence)));
  const messages = [];
  lobby.on("new_msg", (payload, ref) => messages.push({ payload, ref }));

  out({ join: await outcome(lobby.join()) });
  const admin = ann.channel("room:admin", { nick: "ann" });
  out({ refused: await outcome(admin.join()) });
  admin.leave(); // phoenix would retry a refused join

  out({ push: await outcome(lobby.push("new_msg", { body: "hi" })) });
  await until(() => messages.length > 0, "the broadcast");
  out({ messages });

  // Presence: bob joins (from the second node when there is one), then leaves.
  await until(() => syncs.at(-1) === "ann:1", "ann's presence");
  const bob = connect(url2, { user: "bob" });
  const bobLobby = bob.channel("room:lobby", { nick: "bob" });
  const bobPresence = new Presence(bobLobby);
  out({ bob: await outcome(bobLobby.join()) });
  await until(() => syncs.at(-1) === "ann:1,bob:1", "bob in ann's presence");
  await until(() => names(bobPresence) === "ann:1,bob:1", "ann in bob's presence");
  out({ bob_sees: names(bobPresence) });
  await outcome(bobLobby.leave());
  await until(() => syncs.at(-1) === "ann:1", "bob gone from ann's presence");
  out({ presence: syncs });

  out({ slow: await outcome(lobby.push("slow", {}, 300)) });
  ann.disconnect();
  bob.disconnect();
}

async function recover() {
  // Recovery rides on join params: phoenix.js calls a params function on every
  // (re)join, and passes a broadcast's ref ("p:<offset>") to on() callbacks.
  // [recover]
  let since = null;
  const socket = connect(url);
  const feed = socket.channel("room:feed", () => (since ? { nick: "ann", since } : { nick: "ann" }));
  feed.on("new_msg", (payload, ref) => {
    if (typeof ref === "string" && ref.startsWith("p:") && since) {
      since = { ...since, offset: Number(ref.slice(2)) };
    }
    out({ message: payload, ref });
  });
  feed.join().receive("ok", (response) => {
    if (typeof response.epoch === "string") {
      const offset = response.recovered && since ? since.offset : response.offset;
      since = { offset, epoch: response.epoch };
    }
    out({ joined: response });
  });
  // [/recover]
  socket.onClose(() => out({ closed: true }));
  // The test says when to stop.
  for await (const line of createInterface({ input: process.stdin })) {
    if (line.trim() === "quit") break;
  }
  socket.disconnect();
}

const scenarios = { basic, recover };
scenarios[scenario]().then(
  () => {
    out({ done: true });
    process.exit(0); // stdout to a pipe is written synchronously on Linux
  },
  (error) => {
    out({ failed: String(error && error.stack ? error.stack : error) });
    process.exit(1);
  },
);
