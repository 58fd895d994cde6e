// A WebSocket that comes back: reconnects after a drop or a server restart,
// with exponential backoff and full jitter (a random wait between 0 and
// min(CAP, BASE * 2^attempt)), so that a thousand clients of a restarted
// server do not all knock at once.

export const BASE_MS = 500;
export const CAP_MS = 10_000;

export function backoff(attempt, random = Math.random) {
  return random() * Math.min(CAP_MS, BASE_MS * 2 ** attempt);
}

export class Connection {
  // onOpen(conn) is called on every (re)connection: send "hello" from it.
  // onMessage(data) receives each parsed message; onState(state, detail)
  // "connecting" | "open" | "closed" (with the wait before the next try).
  constructor(url, { onOpen, onMessage, onState }) {
    this.url = url;
    this.onOpen = onOpen;
    this.onMessage = onMessage;
    this.onState = onState;
    this.attempt = 0;
    this.ws = null;
    this.timer = null;
  }

  connect() {
    clearTimeout(this.timer);
    this.onState("connecting");
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onopen = () => {
      this.onState("open");
      this.onOpen(this);
    };
    ws.onmessage = (event) => {
      let data;
      try {
        data = JSON.parse(event.data);
      } catch {
        return;
      }
      this.onMessage(data);
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      const wait = backoff(this.attempt++);
      this.onState("closed", { wait, code: event.code, reason: event.reason });
      this.timer = setTimeout(() => this.connect(), wait);
    };
  }

  // Close, and do not come back until connect() is called again.
  stop() {
    clearTimeout(this.timer);
    const ws = this.ws;
    this.ws = null; // so its onclose schedules nothing
    this.attempt = 0;
    if (ws) ws.close(1000);
  }

  // The server welcomed us: the next drop starts the backoff from scratch.
  welcomed() {
    this.attempt = 0;
  }

  get open() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  send(data) {
    if (this.open) {
      this.ws.send(JSON.stringify(data));
      return true;
    }
    return false;
  }
}
