// peregrine.js: the browser client of peregrine_rt Channels.
//
// A small ES module with no build step and no dependency.  It speaks the
// Phoenix Channels V2 JSON wire format (frames [join_ref, ref, topic, event,
// payload]), so its API follows phoenix.js's (Socket, Channel, Push, Presence),
// and adds what a production client needs on top:
//
// * reconnect with exponential backoff and FULL jitter (the delay before try n
//   is uniform in [0, min(cap, base * 2^(n-1))));
// * connection-state events and a `state` getter;
// * automatic rejoin after a reconnect, with recovery: the client remembers the
//   last publication offset it saw per topic (the server puts it in the ref slot
//   of a broadcast, "p:<offset>") and the epoch of the join reply, rejoins with
//   {since: {offset, epoch}} merged into the join params, reports whether the
//   server recovered (Channel.onJoin, Channel.recovered) and drops a
//   publication whose offset it has already seen;
// * acknowledgements with timeouts: push(...).receive("ok" | "error" |
//   "timeout", cb), or `await` the push (it is a thenable).
//
// Served by peregrine_rt at /_peregrine/peregrine.js (docs/channels/browser.rst).
// Everything the module takes from its environment (the WebSocket class, the
// timers, the random source) can be injected, which is how its tests under
// Node's test runner run without a network or real time.

export const VSN = "2.0.0";
export const DEFAULT_TIMEOUT = 10000;
export const DEFAULT_HEARTBEAT_MS = 30000;
const AUTH_TOKEN_PREFIX = "base64url.bearer.phx.";

/** The socket's states, in the order a connection goes through them. */
export const SocketState = Object.freeze({
  CLOSED: "closed", // not connected and not trying: before connect(), after disconnect()
  CONNECTING: "connecting",
  OPEN: "open",
  RECONNECTING: "reconnecting", // the connection was lost; a new try is scheduled
});

/** A channel's states (phoenix.js's names). */
export const ChannelState = Object.freeze({
  CLOSED: "closed",
  JOINING: "joining",
  JOINED: "joined",
  ERRORED: "errored", // lost (connection dropped, join refused or timed out, server crash)
  LEAVING: "leaving",
});

/**
 * Exponential backoff with full jitter: `tries` 1, 2, 3... gives a whole number
 * of milliseconds uniform in [0, min(capMs, baseMs * 2^(tries-1))).
 *
 * @param {number} baseMs
 * @param {number} capMs
 * @param {() => number} random - a source of numbers in [0, 1)
 * @returns {(tries: number) => number}
 */
export function backoff(baseMs = 1000, capMs = 30000, random = Math.random) {
  return (tries) => {
    const ceiling = Math.min(capMs, baseMs * 2 ** Math.max(0, tries - 1));
    return Math.floor(random() * ceiling);
  };
}

const closure = (value) => (typeof value === "function" ? value : () => value);

/** What a push promise rejects with: `status` is "error" or "timeout". */
export class PushError extends Error {
  constructor(event, status, response) {
    const reason = response && typeof response === "object" ? response.reason : undefined;
    super(`${event}: ${status}${reason ? ` (${reason})` : ""}`);
    this.name = "PushError";
    this.status = status;
    this.response = response;
  }
}

/**
 * One message sent on a channel, and what came back for it: `receive(status,
 * callback)` with status "ok", "error" or "timeout", or `await push` (resolves
 * with the ok response, rejects with a PushError).
 */
export class Push {
  constructor(channel, event, payload, timeout) {
    this.channel = channel;
    this.event = event;
    this.payload = closure(payload ?? {});
    this.timeout = timeout;
    this.ref = null;
    this.received = null; // {status, response} once answered or timed out
    this.hooks = [];
    this.timer = null;
    this.promise = null;
    this.settle = null;
  }

  /** Sends the push now (starting its timeout unless already started). */
  send() {
    if (this.timer === null) this.startTimeout();
    this.channel.socket.send([this.channel.joinRef(), this.ref, this.channel.topic, this.event,
      this.payload()]);
  }

  /** Sends again, as a new push: new ref, new timeout (a join after a reconnect). */
  resend(timeout = this.timeout) {
    this.timeout = timeout;
    this.reset();
    this.send();
  }

  /** Forgets the ref and the answer, stops the timeout. */
  reset() {
    this.cancelTimeout();
    this.ref = null;
    this.received = null;
  }

  startTimeout() {
    this.cancelTimeout();
    this.ref = this.channel.socket.makeRef();
    this.channel.pending.set(this.ref, this);
    this.timer = this.channel.socket.setTimeout(() => this.trigger("timeout", {}), this.timeout);
  }

  cancelTimeout() {
    if (this.timer !== null) this.channel.socket.clearTimeout(this.timer);
    this.timer = null;
    if (this.ref !== null) this.channel.pending.delete(this.ref);
  }

  /** Registers `callback(response)` for "ok", "error" or "timeout"; chainable. */
  receive(status, callback) {
    if (this.received && this.received.status === status) callback(this.received.response);
    this.hooks.push({ status, callback });
    return this;
  }

  /** The push as a promise: its first outcome settles it. */
  then(onFulfilled, onRejected) {
    if (this.promise === null) {
      this.promise = new Promise((resolve, reject) => {
        this.settle = { resolve, reject };
      });
      if (this.received) this.settlePromise(this.received.status, this.received.response);
    }
    return this.promise.then(onFulfilled, onRejected);
  }

  catch(onRejected) {
    return this.then(undefined, onRejected);
  }

  /** A phx_reply for this push: {status, response}. */
  reply(payload) {
    const status = payload && typeof payload.status === "string" ? payload.status : "error";
    this.trigger(status, payload ? payload.response : undefined);
  }

  trigger(status, response) {
    this.cancelTimeout();
    this.received = { status, response };
    this.settlePromise(status, response);
    for (const hook of this.hooks.filter((h) => h.status === status)) hook.callback(response);
  }

  settlePromise(status, response) {
    if (this.settle === null) return;
    if (status === "ok") this.settle.resolve(response);
    else this.settle.reject(new PushError(this.event, status, response));
  }
}

/**
 * A topic joined over the socket: `join()`, `push()`, `on()`/`off()`,
 * `leave()`.  It rejoins by itself after a reconnect or a server-side crash,
 * asking the server for the publications it missed.
 */
export class Channel {
  constructor(topic, params, socket) {
    this.topic = topic;
    this.params = closure(params ?? {});
    this.socket = socket;
    this.state = ChannelState.CLOSED;
    this.timeout = socket.timeout;
    this.joinedOnce = false;
    this.joinPush = null;
    this.bindings = [];
    this.bindingRef = 0;
    this.pushBuffer = [];
    this.pending = new Map(); // ref -> Push waiting for its phx_reply
    this.offset = null; // the last publication offset seen on this topic
    this.epoch = null; // the history's epoch, from the join reply
    this.recovered = null; // from the last join reply: true, false, or null (no history)
    this.joins = 0;
    this.joinCallbacks = [];
    this.rejoinTries = 0;
    this.rejoinTimer = null;
  }

  /** The ref of the current join (the join_ref of every frame on this channel). */
  joinRef() {
    return this.joinPush ? this.joinPush.ref : null;
  }

  /**
   * Joins the topic: returns the join Push (`.receive("ok", ...)` fires on every
   * successful join, rejoins included; `await` settles on the first outcome).
   */
  join(timeout = this.timeout) {
    if (this.joinedOnce) {
      throw new Error(`tried to join ${this.topic} twice: a Channel joins once (it rejoins itself)`);
    }
    this.joinedOnce = true;
    this.timeout = timeout;
    this.joinPush = new Push(this, "phx_join", () => this.joinParams(), timeout);
    this.joinPush
      .receive("ok", (response) => this.joined(response))
      .receive("error", () => this.joinFailed())
      .receive("timeout", () => {
        // Tell the server to drop a join that may still arrive, then try again.
        new Push(this, "phx_leave", {}, this.timeout).send();
        this.joinFailed();
      });
    this.rejoin();
    return this.joinPush;
  }

  /** The join params: the app's (re-evaluated each time) plus `since` once known. */
  joinParams() {
    const params = { ...this.params() };
    if (this.epoch !== null && this.offset !== null) {
      params.since = { offset: this.offset, epoch: this.epoch };
    }
    return params;
  }

  /**
   * Calls `callback(info)` after every successful join: `info` is `{rejoin,
   * recovered, reason, epoch, offset, response}`.  `recovered` is true when
   * the server replayed what this client missed, false when it could not
   * (`reason`: "too_old", "epoch_changed", "no_history": refetch), null when the
   * topic has no history.
   */
  onJoin(callback) {
    this.joinCallbacks.push(callback);
    return this;
  }

  onClose(callback) {
    return this.on("phx_close", callback);
  }

  onError(callback) {
    return this.on("phx_error", callback);
  }

  /** `callback(payload, ref, joinRef)` for each `event`; returns a ref for off(). */
  on(event, callback) {
    const ref = this.bindingRef++;
    this.bindings.push({ event, ref, callback });
    return ref;
  }

  off(event, ref) {
    this.bindings = this.bindings.filter(
      (b) => !(b.event === event && (ref === undefined || b.ref === ref)),
    );
  }

  /**
   * Sends `event` with `payload`; the Push reports the reply or a timeout
   * (`options`: `{timeout}` in ms, or the number itself).  Pushed before the
   * join completes, it waits for the join (its timeout runs meanwhile).
   */
  push(event, payload = {}, options = {}) {
    if (!this.joinedOnce) {
      throw new Error(`tried to push ${event} to ${this.topic} before joining it`);
    }
    const timeout = typeof options === "number" ? options : (options.timeout ?? this.timeout);
    const push = new Push(this, event, payload, timeout);
    if (this.state === ChannelState.JOINED && this.socket.isConnected()) {
      push.send();
    } else {
      push.startTimeout();
      this.pushBuffer.push(push);
    }
    return push;
  }

  /** Leaves the topic; the channel is closed once the server confirms (or on timeout). */
  leave(timeout = this.timeout) {
    this.clearRejoin();
    if (this.joinPush) this.joinPush.cancelTimeout();
    this.state = ChannelState.LEAVING;
    const onClose = () => this.close("leave");
    const push = new Push(this, "phx_leave", {}, timeout);
    push.receive("ok", onClose).receive("error", onClose).receive("timeout", onClose);
    if (this.socket.isConnected() && this.joinRef() !== null) push.send();
    else push.trigger("ok", {});
    return push;
  }

  // -- called by the socket and by the pushes --------------------------------

  rejoin() {
    if (this.state === ChannelState.LEAVING || !this.joinedOnce) return;
    this.clearRejoin();
    this.state = ChannelState.JOINING;
    // Not connected: the socket calls rejoin() again when it opens.
    if (this.socket.isConnected()) this.joinPush.resend(this.timeout);
    else this.joinPush.reset();
  }

  joined(response) {
    const r = response && typeof response === "object" ? response : {};
    this.state = ChannelState.JOINED;
    this.rejoinTries = 0;
    if (typeof r.epoch === "string") {
      // Recovered: the missed publications follow and advance the offset.  Not
      // recovered (or a first join): go on from the topic's current offset.
      if (r.recovered !== true) this.offset = Number.isSafeInteger(r.offset) ? r.offset : null;
      this.epoch = r.epoch;
    }
    this.recovered = typeof r.recovered === "boolean" ? r.recovered : null;
    const buffered = this.pushBuffer;
    this.pushBuffer = [];
    for (const push of buffered) if (push.received === null) push.send();
    const info = {
      rejoin: this.joins > 0,
      recovered: this.recovered,
      reason: typeof r.reason === "string" ? r.reason : null,
      epoch: this.epoch,
      offset: this.offset,
      response: r,
    };
    this.joins += 1;
    for (const callback of this.joinCallbacks) callback(info);
  }

  joinFailed() {
    this.state = ChannelState.ERRORED;
    if (this.socket.isConnected()) this.scheduleRejoin();
  }

  scheduleRejoin() {
    this.clearRejoin();
    this.rejoinTries += 1;
    const delay = this.socket.rejoinAfterMs(this.rejoinTries);
    this.rejoinTimer = this.socket.setTimeout(() => {
      this.rejoinTimer = null;
      if (this.socket.isConnected()) this.rejoin();
    }, delay);
  }

  clearRejoin() {
    if (this.rejoinTimer !== null) this.socket.clearTimeout(this.rejoinTimer);
    this.rejoinTimer = null;
  }

  /** The connection dropped: rejoin when the socket opens again. */
  connectionLost() {
    if (this.state === ChannelState.JOINED || this.state === ChannelState.JOINING) {
      this.state = ChannelState.ERRORED;
    }
    this.clearRejoin();
    if (this.joinPush) this.joinPush.cancelTimeout();
  }

  /** Whether the socket should (re)join this channel when it opens. */
  wantsJoin() {
    return this.state === ChannelState.ERRORED || this.state === ChannelState.JOINING;
  }

  close(reason) {
    this.state = ChannelState.CLOSED;
    this.clearRejoin();
    if (this.joinPush) this.joinPush.cancelTimeout();
    this.socket.remove(this);
    this.trigger("phx_close", { reason }, null, null);
  }

  /** A frame for this topic. */
  receive(joinRef, ref, event, payload) {
    if (joinRef !== null && joinRef !== undefined && joinRef !== this.joinRef()) {
      this.socket.log("channel", `dropping a message of an earlier join of ${this.topic}`, event);
      return;
    }
    if (event === "phx_reply") {
      const push = this.pending.get(ref);
      if (push) push.reply(payload);
      return;
    }
    if (event === "phx_close") {
      if (this.state !== ChannelState.CLOSED) this.close("server");
      return;
    }
    if (event === "phx_error") {
      this.socket.log("channel", `server error on ${this.topic}`);
      this.state = ChannelState.ERRORED;
      if (this.joinPush) this.joinPush.cancelTimeout();
      this.trigger("phx_error", payload, ref, joinRef);
      if (this.socket.isConnected()) this.scheduleRejoin();
      return;
    }
    if (this.state !== ChannelState.JOINED && this.state !== ChannelState.JOINING) return;
    if (typeof ref === "string" && ref.startsWith("p:") && (joinRef === null || joinRef === undefined)) {
      const offset = Number(ref.slice(2));
      if (Number.isSafeInteger(offset)) {
        if (this.offset !== null && offset <= this.offset) {
          this.socket.log("channel", `dropping a duplicate publication of ${this.topic}`, offset);
          return;
        }
        this.offset = offset;
      }
    }
    this.trigger(event, payload, ref, joinRef);
  }

  trigger(event, payload, ref, joinRef) {
    for (const binding of this.bindings.filter((b) => b.event === event)) {
      binding.callback(payload, ref, joinRef ?? this.joinRef());
    }
  }
}

/**
 * The connection: `new Socket("/socket", options).connect()`.
 *
 * Options: `params` (object or function, sent in the URL's query on every
 * connect), `authToken` (string or function: sent as the subprotocol
 * `base64url.bearer.phx.<token>` beside `phoenix`), `timeout` (default push
 * timeout, ms), `heartbeatIntervalMs`, `reconnectAfterMs(tries)` and
 * `rejoinAfterMs(tries)` (default: backoff(1000, 30000), full jitter),
 * `logger(kind, msg, data)`; for tests and unusual hosts: `transport` (a
 * WebSocket class), `timers` ({setTimeout, clearTimeout}), `random`.
 */
export class Socket {
  constructor(endPoint, opts = {}) {
    this.endPoint = endPoint.replace(/\/+$/, "");
    this.params = closure(opts.params ?? {});
    this.authToken = opts.authToken ? closure(opts.authToken) : null;
    this.timeout = opts.timeout ?? DEFAULT_TIMEOUT;
    this.heartbeatIntervalMs = opts.heartbeatIntervalMs ?? DEFAULT_HEARTBEAT_MS;
    const random = opts.random ?? Math.random;
    this.reconnectAfterMs = opts.reconnectAfterMs ?? backoff(1000, 30000, random);
    this.rejoinAfterMs = opts.rejoinAfterMs ?? backoff(1000, 30000, random);
    this.logger = opts.logger ?? null;
    this.transport = opts.transport ?? globalThis.WebSocket;
    this.timers = opts.timers ?? null;
    this.channels = [];
    this.ref = 0;
    this.conn = null;
    this.url = null; // the URL of the last connection attempt
    this.currentState = SocketState.CLOSED;
    this.tries = 0;
    this.reconnectTimer = null;
    this.heartbeatTimer = null;
    this.pendingHeartbeat = null;
    this.callbacks = { open: [], close: [], error: [], message: [], state: [] };
  }

  /** One of SocketState's values. */
  get state() {
    return this.currentState;
  }

  isConnected() {
    return this.currentState === SocketState.OPEN;
  }

  setTimeout(callback, ms) {
    return this.timers ? this.timers.setTimeout(callback, ms) : globalThis.setTimeout(callback, ms);
  }

  clearTimeout(id) {
    if (this.timers) this.timers.clearTimeout(id);
    else globalThis.clearTimeout(id);
  }

  log(kind, msg, data) {
    if (this.logger) this.logger(kind, msg, data);
  }

  makeRef() {
    this.ref += 1;
    return String(this.ref);
  }

  // -- connection-state events: each returns a ref for off() -----------------

  onOpen(callback) {
    return this.addCallback("open", callback);
  }

  /** `callback(event)`: the CloseEvent (code, reason, wasClean). */
  onClose(callback) {
    return this.addCallback("close", callback);
  }

  onError(callback) {
    return this.addCallback("error", callback);
  }

  /** `callback(frame)` for every frame received, decoded. */
  onMessage(callback) {
    return this.addCallback("message", callback);
  }

  /** `callback(state, previous)` on every change of `socket.state`. */
  onStateChange(callback) {
    return this.addCallback("state", callback);
  }

  off(refs) {
    const drop = new Set(Array.isArray(refs) ? refs : [refs]);
    for (const kind of Object.keys(this.callbacks)) {
      this.callbacks[kind] = this.callbacks[kind].filter(([ref]) => !drop.has(ref));
    }
  }

  addCallback(kind, callback) {
    const ref = this.makeRef();
    this.callbacks[kind].push([ref, callback]);
    return ref;
  }

  fire(kind, ...args) {
    for (const [, callback] of this.callbacks[kind]) callback(...args);
  }

  setState(state) {
    const previous = this.currentState;
    if (state === previous) return;
    this.currentState = state;
    this.fire("state", state, previous);
  }

  // -- channels ----------------------------------------------------------------

  /** A channel for `topic`, with join params (an object, or a function called on every join). */
  channel(topic, params = {}) {
    const channel = new Channel(topic, params, this);
    this.channels.push(channel);
    return channel;
  }

  remove(channel) {
    this.channels = this.channels.filter((c) => c !== channel);
  }

  // -- the connection ------------------------------------------------------------

  /** The WebSocket URL: `<endPoint>/websocket?<params>&vsn=2.0.0`, made absolute. */
  endPointURL() {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(this.params())) query.append(key, String(value));
    query.set("vsn", VSN);
    const url = `${this.endPoint}/websocket?${query}`;
    if (/^wss?:/i.test(url)) return url;
    if (/^https?:/i.test(url)) return url.replace(/^http/i, "ws");
    const here = globalThis.location;
    const scheme = here && here.protocol === "https:" ? "wss" : "ws";
    if (url.startsWith("//")) return `${scheme}:${url}`;
    return `${scheme}://${here.host}${url}`;
  }

  /** Connects (and keeps reconnecting until disconnect()). */
  connect() {
    if (this.conn !== null) return;
    this.clearReconnect();
    this.openConnection();
  }

  /** Closes the connection for good (no reconnect); connect() starts again. */
  disconnect(code = 1000, reason = "") {
    this.clearReconnect();
    const conn = this.conn;
    if (conn !== null) {
      this.release(conn);
      try {
        conn.close(code, reason);
      } catch (error) {
        this.log("transport", "close failed", error);
      }
      this.connectionClosed({ code, reason, wasClean: true }, false);
    } else {
      this.setState(SocketState.CLOSED);
    }
  }

  openConnection() {
    this.setState(SocketState.CONNECTING);
    let conn;
    try {
      const url = this.endPointURL();
      this.url = url;
      if (this.authToken) {
        const token = btoa(this.authToken()).replace(/\+/g, "-").replace(/\//g, "_")
          .replace(/=+$/, "");
        conn = new this.transport(url, ["phoenix", `${AUTH_TOKEN_PREFIX}${token}`]);
      } else {
        conn = new this.transport(url);
      }
    } catch (error) {
      this.log("transport", "could not connect", error);
      this.fire("error", error);
      this.scheduleReconnect();
      return;
    }
    this.conn = conn;
    conn.onopen = () => conn === this.conn && this.connectionOpened();
    conn.onerror = (error) => conn === this.conn && this.fire("error", error);
    conn.onmessage = (event) => conn === this.conn && this.frameReceived(event.data);
    conn.onclose = (event) => {
      if (conn !== this.conn) return;
      this.release(conn);
      this.connectionClosed(event, true);
    };
  }

  release(conn) {
    conn.onopen = conn.onerror = conn.onmessage = conn.onclose = null;
    this.conn = null;
    this.pendingHeartbeat = null;
    if (this.heartbeatTimer !== null) this.clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = null;
  }

  connectionOpened() {
    this.log("transport", `connected to ${this.url}`);
    this.setState(SocketState.OPEN);
    this.scheduleHeartbeat();
    for (const channel of this.channels.slice()) if (channel.wantsJoin()) channel.rejoin();
    this.fire("open");
  }

  connectionClosed(event, reconnect) {
    for (const channel of this.channels) channel.connectionLost();
    if (reconnect) this.scheduleReconnect();
    else this.setState(SocketState.CLOSED);
    this.fire("close", event);
  }

  scheduleReconnect() {
    this.tries += 1;
    const delay = this.reconnectAfterMs(this.tries);
    this.log("transport", `reconnecting in ${delay} ms (try ${this.tries})`);
    this.setState(SocketState.RECONNECTING);
    this.clearReconnect();
    this.reconnectTimer = this.setTimeout(() => {
      this.reconnectTimer = null;
      this.openConnection();
    }, delay);
  }

  clearReconnect() {
    if (this.reconnectTimer !== null) this.clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
  }

  /** Drops the connection as lost (a missed heartbeat): close it, reconnect now-ish. */
  dropConnection(reason) {
    const conn = this.conn;
    if (conn === null) return;
    this.log("transport", reason);
    this.release(conn);
    try {
      conn.close(1000, reason);
    } catch (error) {
      this.log("transport", "close failed", error);
    }
    this.connectionClosed({ code: 1006, reason, wasClean: false }, true);
  }

  // -- heartbeat: one frame every interval; no reply by the next one = lost ------

  scheduleHeartbeat() {
    if (!this.heartbeatIntervalMs) return;
    this.heartbeatTimer = this.setTimeout(() => this.heartbeat(), this.heartbeatIntervalMs);
  }

  heartbeat() {
    this.heartbeatTimer = null;
    if (this.pendingHeartbeat !== null) {
      this.dropConnection("heartbeat timeout");
      return;
    }
    this.pendingHeartbeat = this.makeRef();
    this.send([null, this.pendingHeartbeat, "phoenix", "heartbeat", {}]);
    this.scheduleHeartbeat();
  }

  // -- frames ----------------------------------------------------------------------

  /** Sends one frame if connected; returns whether it was sent. */
  send(frame) {
    if (!this.isConnected()) return false;
    this.conn.send(JSON.stringify(frame));
    return true;
  }

  frameReceived(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      this.log("transport", "a frame that is not JSON", data);
      return;
    }
    if (!Array.isArray(frame) || frame.length !== 5) {
      this.log("transport", "a frame that is not a 5-array", frame);
      return;
    }
    this.tries = 0; // the server answers: the next loss starts the backoff afresh
    const [joinRef, ref, topic, event, payload] = frame;
    if (topic === "phoenix" && ref !== null && ref === this.pendingHeartbeat) {
      this.pendingHeartbeat = null;
    }
    this.fire("message", frame);
    for (const channel of this.channels.slice()) {
      if (channel.topic === topic) channel.receive(joinRef, ref, event, payload);
    }
  }
}

/**
 * Who is in a topic: follows `presence_state` and `presence_diff` (phoenix.js's
 * format: `{key: {metas: [{phx_ref, ...}]}}`).  `list(chooser)` gives one entry
 * per key; `onJoin`, `onLeave`, `onSync` report changes.
 */
export class Presence {
  constructor(channel, opts = {}) {
    const events = opts.events ?? { state: "presence_state", diff: "presence_diff" };
    this.state = Object.create(null);
    this.pendingDiffs = [];
    this.channel = channel;
    this.joinRef = null;
    this.caller = { onJoin() {}, onLeave() {}, onSync() {} };
    channel.on(events.state, (newState) => {
      const { onJoin, onLeave, onSync } = this.caller;
      this.joinRef = channel.joinRef();
      this.state = Presence.syncState(this.state, newState, onJoin, onLeave);
      for (const diff of this.pendingDiffs) {
        this.state = Presence.syncDiff(this.state, diff, onJoin, onLeave);
      }
      this.pendingDiffs = [];
      onSync();
    });
    channel.on(events.diff, (diff) => {
      const { onJoin, onLeave, onSync } = this.caller;
      // A diff before the state of the current join is kept until the state arrives.
      if (this.joinRef === null || this.joinRef !== channel.joinRef()) {
        this.pendingDiffs.push(diff);
      } else {
        this.state = Presence.syncDiff(this.state, diff, onJoin, onLeave);
        onSync();
      }
    });
  }

  onJoin(callback) {
    this.caller.onJoin = callback;
  }

  onLeave(callback) {
    this.caller.onLeave = callback;
  }

  onSync(callback) {
    this.caller.onSync = callback;
  }

  list(chooser) {
    return Presence.list(this.state, chooser);
  }

  /** The state after a full `presence_state`; joins and leaves reported against `state`. */
  static syncState(state, newState, onJoin, onLeave) {
    const current = nullProto(clone(state));
    const incoming = nullProto(clone(newState));
    const joins = Object.create(null);
    const leaves = Object.create(null);
    for (const key of Object.keys(current)) {
      if (!incoming[key]) leaves[key] = current[key];
    }
    for (const key of Object.keys(incoming)) {
      const presence = incoming[key];
      const had = current[key];
      if (!had) {
        joins[key] = presence;
        continue;
      }
      const newRefs = new Set(presence.metas.map((m) => m.phx_ref));
      const oldRefs = new Set(had.metas.map((m) => m.phx_ref));
      const joined = presence.metas.filter((m) => !oldRefs.has(m.phx_ref));
      const left = had.metas.filter((m) => !newRefs.has(m.phx_ref));
      if (joined.length > 0) joins[key] = { ...clone(presence), metas: joined };
      if (left.length > 0) leaves[key] = { ...clone(had), metas: left };
    }
    return Presence.syncDiff(current, { joins, leaves }, onJoin, onLeave);
  }

  /** The state after a `presence_diff` ({joins, leaves}). */
  static syncDiff(state, diff, onJoin = () => {}, onLeave = () => {}) {
    const result = nullProto(clone(state));
    const { joins, leaves } = clone(diff);
    for (const key of Object.keys(joins ?? {})) {
      const had = result[key];
      const presence = joins[key];
      result[key] = clone(presence);
      if (had) {
        const refs = new Set(result[key].metas.map((m) => m.phx_ref));
        result[key].metas.unshift(...had.metas.filter((m) => !refs.has(m.phx_ref)));
      }
      onJoin(key, had, presence);
    }
    for (const key of Object.keys(leaves ?? {})) {
      const had = result[key];
      if (!had) continue;
      const gone = new Set(leaves[key].metas.map((m) => m.phx_ref));
      had.metas = had.metas.filter((m) => !gone.has(m.phx_ref));
      onLeave(key, had, leaves[key]);
      if (had.metas.length === 0) delete result[key];
    }
    return result;
  }

  /** One entry per key: `chooser(key, presence)`, by default the presence itself. */
  static list(state, chooser = (key, presence) => presence) {
    return Object.keys(state).map((key) => chooser(key, state[key]));
  }
}

// Presence keys come from the server and may be "__proto__" or "constructor":
// objects indexed by them have no prototype.
function nullProto(object) {
  if (Object.getPrototypeOf(object) === null) return object;
  const result = Object.create(null);
  for (const key of Object.keys(object)) result[key] = object[key];
  return result;
}

function clone(value) {
  return JSON.parse(JSON.stringify(value));
}
