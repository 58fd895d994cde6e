// Test doubles for peregrine.js: a WebSocket class the test drives from the
// server's side, and a manual clock (no real time passes in these tests).

/** A WebSocket class whose instances record what the client sent. */
export function fakeTransport() {
  const sockets = [];
  class FakeWebSocket {
    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.sent = [];
      this.closed = null;
      this.readyState = 0;
      sockets.push(this);
    }

    send(data) {
      if (this.readyState !== 1) throw new Error("send on a WebSocket that is not open");
      this.sent.push(JSON.parse(data));
    }

    close(code, reason) {
      this.closed = { code, reason };
      this.readyState = 3;
    }

    // -- the server's side --
    open() {
      this.readyState = 1;
      this.onopen?.({});
    }

    deliver(frame) {
      this.onmessage?.({ data: typeof frame === "string" ? frame : JSON.stringify(frame) });
    }

    drop(code = 1006) {
      this.readyState = 3;
      this.onclose?.({ code, reason: "", wasClean: false });
    }

    /** The frames sent with `event`, e.g. "phx_join". */
    frames(event) {
      return this.sent.filter((frame) => frame[3] === event);
    }

    /** Answers the last frame with `event` with a phx_reply. */
    reply(event, status, response = {}) {
      const frame = this.frames(event).at(-1);
      if (!frame) throw new Error(`no ${event} frame was sent`);
      const [joinRef, ref, topic] = frame;
      this.deliver([joinRef, ref, topic, "phx_reply", { status, response }]);
      return frame;
    }
  }
  return { WebSocket: FakeWebSocket, sockets, last: () => sockets.at(-1) };
}

/** setTimeout/clearTimeout on a clock that moves only when told to. */
export class Clock {
  constructor() {
    this.now = 0;
    this.nextId = 1;
    this.timers = new Map();
    this.setTimeout = (callback, ms) => {
      const id = this.nextId++;
      this.timers.set(id, { at: this.now + Math.max(0, ms), callback, id });
      return id;
    };
    this.clearTimeout = (id) => {
      this.timers.delete(id);
    };
  }

  /** Runs every timer due within `ms`, in order, moving the clock to each. */
  advance(ms) {
    const end = this.now + ms;
    for (let fired = 0; ; fired++) {
      if (fired > 10_000) throw new Error("timers keep firing: a loop in the code under test?");
      const due = [...this.timers.values()]
        .filter((t) => t.at <= end)
        .sort((a, b) => a.at - b.at || a.id - b.id)[0];
      if (!due) break;
      this.timers.delete(due.id);
      this.now = due.at;
      due.callback();
    }
    this.now = end;
  }

  /** The delays of the pending timers, from now. */
  pending() {
    return [...this.timers.values()].map((t) => t.at - this.now).sort((a, b) => a - b);
  }
}
