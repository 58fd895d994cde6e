// Unit tests of peregrine.js under Node's test runner: `node --test tests/js/`.
// A fake WebSocket and a manual clock stand in for the network and for time.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  backoff,
  ChannelState,
  Presence,
  PushError,
  Socket,
  SocketState,
} from "../../peregrine_rt/static/peregrine.js";
import { Clock, fakeTransport } from "./fakes.mjs";

/** A socket over a fake transport and clock; `random` is fixed unless given. */
function setup(options = {}) {
  const transport = fakeTransport();
  const clock = new Clock();
  const socket = new Socket("ws://example.test/socket", {
    transport: transport.WebSocket,
    timers: clock,
    random: () => 0.5,
    ...options,
  });
  return { socket, clock, transport };
}

/** A socket connected and a channel joined with `response`. */
function joined(topic = "room:lobby", response = {}, options = {}) {
  const env = setup(options);
  env.socket.connect();
  env.transport.last().open();
  const channel = env.socket.channel(topic, options.params ?? {});
  channel.join();
  env.transport.last().reply("phx_join", "ok", response);
  return { ...env, channel, ws: env.transport.last() };
}

describe("connecting", () => {
  test("the URL carries the params and vsn 2.0.0", () => {
    const { socket, transport } = setup({ params: { token: "a b" } });
    socket.connect();
    const url = new URL(transport.last().url);
    assert.equal(url.origin + url.pathname, "ws://example.test/socket/websocket");
    assert.equal(url.searchParams.get("token"), "a b");
    assert.equal(url.searchParams.get("vsn"), "2.0.0");
  });

  test("a relative endpoint takes the page's host and scheme", () => {
    const saved = globalThis.location;
    globalThis.location = { protocol: "https:", host: "chat.example:8443" };
    try {
      const { socket } = setup();
      const relative = new Socket("/socket/", { transport: socket.transport });
      assert.equal(relative.endPointURL(), "wss://chat.example:8443/socket/websocket?vsn=2.0.0");
      const http = new Socket("http://h:1/s", { transport: socket.transport });
      assert.equal(http.endPointURL(), "ws://h:1/s/websocket?vsn=2.0.0");
    } finally {
      globalThis.location = saved;
    }
  });

  test("params given as a function are asked once on every connect", () => {
    let n = 0;
    const { socket, transport, clock } = setup({
      params: () => ({ n: ++n }),
      logger: () => {},
    });
    socket.connect();
    transport.last().open();
    transport.last().drop();
    clock.advance(60_000);
    const urls = transport.sockets.map((ws) => new URL(ws.url).searchParams.get("n"));
    assert.deepEqual(urls, ["1", "2"]);
  });

  test("an auth token travels as a subprotocol beside phoenix", () => {
    const { socket, transport } = setup({ authToken: "tok?en" });
    socket.connect();
    assert.deepEqual(transport.last().protocols, ["phoenix", "base64url.bearer.phx.dG9rP2Vu"]);
  });

  test("state moves through connecting, open, reconnecting, closed", () => {
    const { socket, transport, clock } = setup();
    const seen = [];
    socket.onStateChange((state, previous) => seen.push(`${previous}->${state}`));
    const events = [];
    socket.onOpen(() => events.push("open"));
    socket.onClose((event) => events.push(`close ${event.code}`));
    socket.onError(() => events.push("error"));
    assert.equal(socket.state, SocketState.CLOSED);
    socket.connect();
    assert.equal(socket.state, SocketState.CONNECTING);
    transport.last().open();
    assert.equal(socket.state, SocketState.OPEN);
    transport.last().onerror({});
    transport.last().drop(1006);
    assert.equal(socket.state, SocketState.RECONNECTING);
    clock.advance(60_000);
    transport.last().open();
    socket.disconnect();
    assert.equal(socket.state, SocketState.CLOSED);
    assert.equal(transport.last().closed.code, 1000);
    assert.deepEqual(seen, [
      "closed->connecting",
      "connecting->open",
      "open->reconnecting",
      "reconnecting->connecting",
      "connecting->open",
      "open->closed",
    ]);
    assert.deepEqual(events, ["open", "error", "close 1006", "open", "close 1000"]);
    clock.advance(600_000);
    assert.equal(transport.sockets.length, 2, "no reconnect after disconnect()");
  });

  test("off() removes state callbacks", () => {
    const { socket, transport } = setup();
    let opens = 0;
    const ref = socket.onOpen(() => opens++);
    socket.off([ref]);
    socket.connect();
    transport.last().open();
    assert.equal(opens, 0);
  });

  test("a transport that throws is retried with backoff", () => {
    const clock = new Clock();
    let attempts = 0;
    class Refusing {
      constructor() {
        attempts++;
        throw new Error("blocked");
      }
    }
    const errors = [];
    const socket = new Socket("ws://x/s", { transport: Refusing, timers: clock, random: () => 0.5 });
    socket.onError((error) => errors.push(error.message));
    socket.connect();
    assert.equal(socket.state, SocketState.RECONNECTING);
    assert.deepEqual(clock.pending(), [500]);
    clock.advance(500);
    assert.equal(attempts, 2);
    assert.deepEqual(errors, ["blocked", "blocked"]);
  });

  test("frames that are not JSON 5-arrays are ignored", () => {
    const { ws, channel, socket } = joined();
    const logged = [];
    socket.logger = (kind, msg) => logged.push(msg);
    const got = [];
    channel.on("new_msg", (payload) => got.push(payload));
    ws.deliver("not json");
    ws.deliver([null, null, "room:lobby"]);
    ws.deliver([null, null, "room:lobby", "new_msg", { n: 1 }]);
    assert.deepEqual(got, [{ n: 1 }]);
    assert.deepEqual(logged, ["a frame that is not JSON", "a frame that is not a 5-array"]);
  });
});

describe("backoff with full jitter", () => {
  test("the ceiling doubles from base up to cap; the delay is uniform below it", () => {
    const top = backoff(100, 1000, () => 0.999999);
    assert.deepEqual([1, 2, 3, 4, 5, 6, 20].map(top), [99, 199, 399, 799, 999, 999, 999]);
    const bottom = backoff(100, 1000, () => 0);
    assert.deepEqual([1, 2, 10].map(bottom), [0, 0, 0]);
    const half = backoff(100, 1000, () => 0.5);
    assert.deepEqual([1, 2, 3].map(half), [50, 100, 200]);
  });

  test("with Math.random every delay stays within [0, ceiling)", () => {
    const delay = backoff(250, 8000);
    const seen = new Set();
    for (let tries = 1; tries <= 12; tries++) {
      const ceiling = Math.min(8000, 250 * 2 ** (tries - 1));
      for (let i = 0; i < 200; i++) {
        const ms = delay(tries);
        assert.ok(Number.isInteger(ms) && ms >= 0 && ms < ceiling, `${ms} for try ${tries}`);
        seen.add(ms);
      }
    }
    assert.ok(seen.size > 100, "jitter spreads the delays");
  });

  test("reconnects follow the backoff and a server frame resets it", () => {
    const draws = [0.999, 0.999, 0.999, 0.999];
    const { socket, transport, clock } = setup({ random: () => draws.shift() ?? 0.999 });
    socket.connect();
    const delays = [];
    for (let i = 0; i < 3; i++) {
      transport.last().drop();
      delays.push(clock.pending()[0]);
      clock.advance(delays.at(-1));
    }
    assert.deepEqual(delays, [999, 1998, 3996]);
    transport.last().open();
    transport.last().deliver([null, "1", "phoenix", "phx_reply", { status: "ok", response: {} }]);
    transport.last().drop();
    assert.deepEqual(clock.pending(), [999], "the backoff starts again after a working connection");
  });
});

describe("heartbeat", () => {
  test("a heartbeat every interval on the phoenix topic", () => {
    const { socket, transport, clock } = setup({ heartbeatIntervalMs: 1000 });
    socket.connect();
    const ws = transport.last();
    ws.open();
    clock.advance(999);
    assert.equal(ws.sent.length, 0);
    clock.advance(1);
    assert.deepEqual(ws.sent, [[null, ws.sent[0][1], "phoenix", "heartbeat", {}]]);
    ws.reply("heartbeat", "ok");
    clock.advance(1000);
    assert.equal(ws.frames("heartbeat").length, 2);
    assert.notEqual(ws.sent[0][1], ws.sent[1][1], "each heartbeat has its own ref");
    assert.equal(socket.state, SocketState.OPEN);
  });

  test("a missed heartbeat reply drops the connection and reconnects", () => {
    const { socket, transport, clock } = setup({ heartbeatIntervalMs: 1000 });
    const closes = [];
    socket.onClose((event) => closes.push(event));
    socket.connect();
    const ws = transport.last();
    ws.open();
    clock.advance(1000); // heartbeat sent, never answered
    clock.advance(999);
    assert.equal(socket.state, SocketState.OPEN);
    clock.advance(1);
    assert.deepEqual(ws.closed, { code: 1000, reason: "heartbeat timeout" });
    assert.deepEqual(closes, [{ code: 1006, reason: "heartbeat timeout", wasClean: false }]);
    assert.equal(socket.state, SocketState.RECONNECTING);
    clock.advance(60_000);
    assert.equal(transport.sockets.length, 2);
    ws.drop(); // the old transport's late close event changes nothing
    assert.equal(socket.state, SocketState.CONNECTING);
    assert.equal(closes.length, 1);
  });
});

describe("channels", () => {
  test("join sends phx_join with join_ref = ref and the params", async () => {
    const { socket, transport } = setup();
    socket.connect();
    const ws = transport.last();
    ws.open();
    const channel = socket.channel("room:lobby", { nick: "ada" });
    const join = channel.join();
    assert.equal(channel.state, ChannelState.JOINING);
    const [frame] = ws.frames("phx_join");
    assert.deepEqual(frame, [frame[1], frame[1], "room:lobby", "phx_join", { nick: "ada" }]);
    const answers = [];
    join.receive("ok", (response) => answers.push(response));
    ws.reply("phx_join", "ok", { welcome: true });
    assert.deepEqual(await join, { welcome: true });
    assert.deepEqual(answers, [{ welcome: true }]);
    assert.equal(channel.state, ChannelState.JOINED);
    assert.throws(() => channel.join(), /twice/);
  });

  test("a join before connect() is sent when the socket opens", () => {
    const { socket, transport } = setup();
    const channel = socket.channel("room:a");
    channel.join();
    socket.connect();
    assert.equal(transport.last().sent.length, 0);
    transport.last().open();
    assert.equal(transport.last().frames("phx_join").length, 1);
    assert.equal(channel.state, ChannelState.JOINING);
  });

  test("a refused join rejects with the reason and retries with backoff", async () => {
    const { socket, transport, clock } = setup({
      rejoinAfterMs: (tries) => tries * 100,
      heartbeatIntervalMs: 0, // off: the only timers left are the rejoin's
    });
    socket.connect();
    const ws = transport.last();
    ws.open();
    const channel = socket.channel("room:secret");
    const join = channel.join();
    const reasons = [];
    join.receive("error", (response) => reasons.push(response.reason));
    ws.reply("phx_join", "error", { reason: "unauthorized" });
    await assert.rejects(join, (error) => {
      assert.ok(error instanceof PushError);
      assert.equal(error.status, "error");
      assert.equal(error.response.reason, "unauthorized");
      return true;
    });
    assert.equal(channel.state, ChannelState.ERRORED);
    assert.deepEqual(clock.pending(), [100]);
    clock.advance(100);
    assert.equal(ws.frames("phx_join").length, 2);
    ws.reply("phx_join", "error", { reason: "unauthorized" });
    assert.deepEqual(clock.pending(), [200]);
    channel.leave();
    ws.reply("phx_leave", "error", { reason: "unmatched topic" });
    assert.equal(channel.state, ChannelState.CLOSED);
    assert.deepEqual(clock.pending(), [], "leave() stops the retries");
    assert.deepEqual(reasons, ["unauthorized", "unauthorized"]);
  });

  test("a join that times out sends phx_leave and tries again", () => {
    const { socket, transport, clock } = setup({ timeout: 5000, rejoinAfterMs: () => 10 });
    socket.connect();
    const ws = transport.last();
    ws.open();
    const channel = socket.channel("room:slow");
    let timeouts = 0;
    channel.join().receive("timeout", () => timeouts++);
    const [firstJoin] = ws.frames("phx_join");
    clock.advance(5000);
    assert.equal(timeouts, 1);
    const [leave] = ws.frames("phx_leave");
    assert.equal(leave[0], firstJoin[0], "the leave names the join that timed out");
    clock.advance(10);
    assert.equal(ws.frames("phx_join").length, 2);
    ws.deliver([firstJoin[0], firstJoin[1], "room:slow", "phx_reply", { status: "ok", response: {} }]);
    assert.equal(channel.state, ChannelState.JOINING, "a late reply to the old join is ignored");
    ws.reply("phx_join", "ok");
    assert.equal(channel.state, ChannelState.JOINED);
  });

  test("push gets its reply by ref", async () => {
    const { channel, ws } = joined();
    const push = channel.push("new_msg", { body: "hi" });
    const frame = ws.frames("new_msg")[0];
    assert.deepEqual(frame, [channel.joinRef(), frame[1], "room:lobby", "new_msg", { body: "hi" }]);
    ws.reply("new_msg", "ok", { id: 7 });
    assert.deepEqual(await push, { id: 7 });
  });

  test("a push without a reply times out (option object or number)", async () => {
    const { channel, clock, ws } = joined();
    const outcomes = [];
    const push = channel.push("slow", {}, { timeout: 300 });
    push.receive("timeout", () => outcomes.push("timeout 300"));
    channel.push("slower", {}, 500).receive("timeout", () => outcomes.push("timeout 500"));
    clock.advance(299);
    assert.deepEqual(outcomes, []);
    clock.advance(1);
    assert.deepEqual(outcomes, ["timeout 300"]);
    await assert.rejects(push, (error) => error.status === "timeout");
    ws.reply("slow", "ok", {}); // too late: nothing more happens
    clock.advance(200);
    assert.deepEqual(outcomes, ["timeout 300", "timeout 500"]);
  });

  test("an error reply rejects the push", async () => {
    const { channel, ws } = joined();
    const push = channel.push("new_msg", { body: "" });
    ws.reply("new_msg", "error", { reason: "rate_limited" });
    await assert.rejects(push, /new_msg: error \(rate_limited\)/);
  });

  test("pushes before the join completes wait for it", () => {
    const { socket, transport } = setup();
    socket.connect();
    const ws = transport.last();
    ws.open();
    const channel = socket.channel("room:a");
    channel.join();
    channel.push("first", { n: 1 });
    assert.equal(ws.frames("first").length, 0);
    ws.reply("phx_join", "ok");
    assert.equal(ws.frames("first").length, 1);
  });

  test("a push that timed out while waiting is not sent later", () => {
    const { socket, transport, clock } = setup();
    socket.connect();
    const ws = transport.last();
    ws.open();
    const channel = socket.channel("room:a");
    channel.join(60_000);
    channel.push("stale", {}, 100);
    clock.advance(100);
    ws.reply("phx_join", "ok");
    assert.equal(ws.frames("stale").length, 0);
  });

  test("on/off and messages from an earlier join are dropped", () => {
    const { channel, ws } = joined();
    const got = [];
    const ref = channel.on("new_msg", (payload, r, jr) => got.push([payload.n, r, jr]));
    ws.deliver([null, null, "room:lobby", "new_msg", { n: 1 }]);
    ws.deliver([channel.joinRef(), "9", "room:lobby", "new_msg", { n: 2 }]);
    ws.deliver(["old", null, "room:lobby", "new_msg", { n: 3 }]);
    ws.deliver([null, null, "room:other", "new_msg", { n: 4 }]);
    channel.off("new_msg", ref);
    ws.deliver([null, null, "room:lobby", "new_msg", { n: 5 }]);
    const jr = channel.joinRef();
    assert.deepEqual(got, [[1, null, jr], [2, "9", jr]]);
  });

  test("leave sends phx_leave, closes on ok, and the channel is removed", async () => {
    const { socket, channel, ws } = joined();
    const closes = [];
    channel.onClose((payload) => closes.push(payload.reason));
    const leave = channel.leave();
    assert.equal(channel.state, ChannelState.LEAVING);
    ws.reply("phx_leave", "ok");
    await leave;
    assert.equal(channel.state, ChannelState.CLOSED);
    assert.deepEqual(closes, ["leave"]);
    assert.deepEqual(socket.channels, []);
  });

  test("phx_close from the server closes the channel; no rejoin", () => {
    const { socket, channel, ws, clock } = joined();
    ws.deliver([channel.joinRef(), channel.joinRef(), "room:lobby", "phx_close", {}]);
    assert.equal(channel.state, ChannelState.CLOSED);
    ws.drop();
    clock.advance(60_000);
    transport_open(socket);
    assert.equal(socket.conn.frames("phx_join").length, 0);
  });

  test("phx_error makes the channel rejoin on the same connection", () => {
    const { channel, ws, clock } = joined("room:lobby", {}, { rejoinAfterMs: () => 50 });
    const errors = [];
    channel.onError(() => errors.push("crashed"));
    ws.deliver([channel.joinRef(), channel.joinRef(), "room:lobby", "phx_error", {}]);
    assert.equal(channel.state, ChannelState.ERRORED);
    assert.deepEqual(errors, ["crashed"]);
    clock.advance(50);
    assert.equal(ws.frames("phx_join").length, 2);
  });
});

function transport_open(socket) {
  socket.conn.open();
}

describe("reconnect and recovery", () => {
  test("after a reconnect the channel rejoins with since = {offset, epoch}", () => {
    const { socket, channel, transport, clock, ws } = joined(
      "room:lobby",
      { epoch: "e1", offset: 40 },
      { params: () => ({ nick: "ada" }) },
    );
    const got = [];
    channel.on("new_msg", (payload, ref) => got.push(ref));
    ws.deliver([null, "p:41", "room:lobby", "new_msg", { body: "a" }]);
    ws.deliver([null, "p:42", "room:lobby", "new_msg", { body: "b" }]);
    ws.drop();
    assert.equal(channel.state, ChannelState.ERRORED);
    clock.advance(60_000);
    const ws2 = transport.last();
    assert.notEqual(ws2, ws);
    ws2.open();
    const [rejoin] = ws2.frames("phx_join");
    assert.deepEqual(rejoin[4], { nick: "ada", since: { offset: 42, epoch: "e1" } });
    assert.equal(socket.state, SocketState.OPEN);
    assert.deepEqual(got, ["p:41", "p:42"]);
  });

  test("recovered: the replay advances the offset and duplicates are dropped", () => {
    const { channel, transport, clock, ws } = joined("room:lobby", { epoch: "e1", offset: 1 });
    const infos = [];
    channel.onJoin((info) => infos.push(info));
    const got = [];
    channel.on("new_msg", (payload) => got.push(payload.n));
    ws.deliver([null, "p:2", "room:lobby", "new_msg", { n: 2 }]);
    ws.drop();
    clock.advance(60_000);
    const ws2 = transport.last();
    ws2.open();
    ws2.reply("phx_join", "ok", { recovered: true, epoch: "e1", offset: 4 });
    ws2.deliver([null, "p:2", "room:lobby", "new_msg", { n: 2 }]); // already seen
    ws2.deliver([null, "p:3", "room:lobby", "new_msg", { n: 3 }]);
    ws2.deliver([null, "p:4", "room:lobby", "new_msg", { n: 4 }]);
    ws2.deliver([null, "p:4", "room:lobby", "new_msg", { n: 4 }]);
    ws2.deliver([null, "p:5", "room:lobby", "new_msg", { n: 5 }]);
    assert.deepEqual(got, [2, 3, 4, 5]);
    assert.equal(channel.recovered, true);
    assert.equal(channel.offset, 5);
    assert.deepEqual(
      infos.map(({ rejoin, recovered, reason, epoch }) => ({ rejoin, recovered, reason, epoch })),
      [{ rejoin: true, recovered: true, reason: null, epoch: "e1" }],
    );
  });

  test("not recovered: the reason is reported and the offset restarts from the reply", () => {
    const { channel, transport, clock, ws } = joined("room:lobby", { epoch: "e1", offset: 9 });
    const infos = [];
    channel.onJoin((info) => infos.push(info));
    ws.drop();
    clock.advance(60_000);
    const ws2 = transport.last();
    ws2.open();
    assert.deepEqual(ws2.frames("phx_join")[0][4].since, { offset: 9, epoch: "e1" });
    ws2.reply("phx_join", "ok", { recovered: false, reason: "epoch_changed", epoch: "e2", offset: 3 });
    assert.equal(channel.recovered, false);
    assert.deepEqual(
      infos.map(({ recovered, reason, epoch, offset }) => ({ recovered, reason, epoch, offset })),
      [{ recovered: false, reason: "epoch_changed", epoch: "e2", offset: 3 }],
    );
    const got = [];
    channel.on("new_msg", (payload) => got.push(payload.n));
    ws2.deliver([null, "p:3", "room:lobby", "new_msg", { n: 3 }]);
    ws2.deliver([null, "p:4", "room:lobby", "new_msg", { n: 4 }]);
    assert.deepEqual(got, [4], "offset 3 is in the state the app refetches");
  });

  test("a topic without history: no since, recovered is null", () => {
    const { channel, transport, clock, ws } = joined("room:plain", { hello: 1 });
    const got = [];
    channel.on("ping", (payload, ref) => got.push(ref));
    ws.deliver([null, null, "room:plain", "ping", {}]);
    ws.deliver([null, null, "room:plain", "ping", {}]);
    assert.equal(channel.recovered, null);
    ws.drop();
    clock.advance(60_000);
    transport.last().open();
    assert.deepEqual(transport.last().frames("phx_join")[0][4], {});
    assert.deepEqual(got, [null, null], "messages without an offset are never deduplicated");
  });

  test("publications seen before the first reply still count (offset without epoch)", () => {
    const { channel, ws, transport, clock } = joined("room:x", {});
    ws.deliver([null, "p:7", "room:x", "e", {}]);
    assert.equal(channel.offset, 7);
    ws.drop();
    clock.advance(60_000);
    transport.last().open();
    assert.deepEqual(transport.last().frames("phx_join")[0][4], {}, "no epoch: no since");
  });

  test("a push in flight when the connection drops times out", () => {
    const { channel, ws, clock } = joined("room:lobby", {}, { timeout: 1000 });
    const outcomes = [];
    channel.push("new_msg", {}).receive("timeout", () => outcomes.push("timeout"));
    ws.drop();
    clock.advance(1000);
    assert.deepEqual(outcomes, ["timeout"]);
  });

  test("the join timeout does not run while the socket is reconnecting", () => {
    const { socket, transport, clock } = setup({ timeout: 1000 });
    socket.connect();
    transport.last().open();
    const channel = socket.channel("room:a");
    let timeouts = 0;
    channel.join().receive("timeout", () => timeouts++);
    transport.last().drop();
    clock.advance(5000);
    assert.equal(timeouts, 0);
    assert.equal(channel.state, ChannelState.ERRORED);
  });
});

describe("presence", () => {
  const meta = (ref, extra = {}) => ({ phx_ref: ref, ...extra });

  test("syncState reports joins and leaves against the current state", () => {
    const joins = [];
    const leaves = [];
    const onJoin = (key, had, presence) => joins.push([key, had?.metas.length ?? 0, presence.metas.map((m) => m.phx_ref)]);
    const onLeave = (key, had, left) => leaves.push([key, had.metas.length, left.metas.map((m) => m.phx_ref)]);
    const before = { ada: { metas: [meta("1"), meta("2")] }, bob: { metas: [meta("3")] } };
    const after = { ada: { metas: [meta("2"), meta("4")] }, cy: { metas: [meta("5")] } };
    const state = Presence.syncState(before, after, onJoin, onLeave);
    assert.deepEqual(JSON.parse(JSON.stringify(state)), {
      ada: { metas: [meta("2"), meta("4")] },
      cy: { metas: [meta("5")] },
    });
    assert.deepEqual(joins, [["ada", 2, ["4"]], ["cy", 0, ["5"]]]);
    assert.deepEqual(leaves, [["bob", 0, ["3"]], ["ada", 2, ["1"]]]);
    assert.deepEqual(before.ada.metas, [meta("1"), meta("2")], "the input is not changed");
  });

  test("syncDiff adds metas to a key and removes a key whose metas are gone", () => {
    let state = {};
    state = Presence.syncDiff(state, { joins: { ada: { metas: [meta("1", { tab: 1 })] } }, leaves: {} });
    state = Presence.syncDiff(state, { joins: { ada: { metas: [meta("2", { tab: 2 })] } }, leaves: {} });
    assert.deepEqual(Presence.list(state, (key, p) => [key, p.metas.map((m) => m.tab)]), [["ada", [1, 2]]]);
    state = Presence.syncDiff(state, { joins: {}, leaves: { ada: { metas: [meta("1")] } } });
    assert.deepEqual(Presence.list(state, (key, p) => p.metas.map((m) => m.phx_ref)), [["2"]]);
    state = Presence.syncDiff(state, { joins: {}, leaves: { ada: { metas: [meta("2")] }, nobody: { metas: [] } } });
    assert.deepEqual(Presence.list(state), []);
  });

  test("keys like __proto__ are plain keys", () => {
    const state = Presence.syncState({}, JSON.parse('{"__proto__": {"metas": [{"phx_ref": "1"}]}}'));
    assert.deepEqual(Presence.list(state, (key) => key), ["__proto__"]);
    assert.equal({}.metas, undefined);
  });

  test("a Presence follows presence_state and presence_diff of its channel", () => {
    const { channel, ws } = joined();
    const presence = new Presence(channel);
    const syncs = [];
    presence.onSync(() => syncs.push(presence.list((key, p) => `${key}:${p.metas.length}`)));
    const joinsSeen = [];
    presence.onJoin((key) => joinsSeen.push(key));
    const jr = channel.joinRef();
    // a diff that arrives before the state waits for it
    ws.deliver([jr, null, "room:lobby", "presence_diff", { joins: { bob: { metas: [meta("b1")] } }, leaves: {} }]);
    assert.deepEqual(syncs, []);
    ws.deliver([jr, null, "room:lobby", "presence_state", { ada: { metas: [meta("a1")] } }]);
    assert.deepEqual(syncs, [["ada:1", "bob:1"]]);
    ws.deliver([null, null, "room:lobby", "presence_diff", { joins: { ada: { metas: [meta("a2")] } }, leaves: { bob: { metas: [meta("b1")] } } }]);
    assert.deepEqual(syncs.at(-1), ["ada:2"]);
    assert.deepEqual(joinsSeen, ["ada", "bob", "ada"]);
  });

  test("after a rejoin diffs wait for the new state", () => {
    const { channel, ws, transport, clock } = joined();
    const presence = new Presence(channel);
    ws.deliver([channel.joinRef(), null, "room:lobby", "presence_state", { ada: { metas: [meta("a1")] } }]);
    ws.drop();
    clock.advance(60_000);
    const ws2 = transport.last();
    ws2.open();
    ws2.reply("phx_join", "ok");
    const jr = channel.joinRef();
    ws2.deliver([jr, null, "room:lobby", "presence_diff", { joins: { cy: { metas: [meta("c1")] } }, leaves: {} }]);
    assert.deepEqual(presence.list((key) => key), ["ada"], "held until the state");
    ws2.deliver([jr, null, "room:lobby", "presence_state", { bob: { metas: [meta("b1")] } }]);
    assert.deepEqual(presence.list((key) => key).sort(), ["bob", "cy"]);
  });
});
