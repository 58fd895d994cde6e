// The chat client: plain ES modules, no build step.  Every string from a
// user goes into the page with textContent, never as HTML.
import { Connection } from "./connection.js";

const $ = (id) => document.getElementById(id);
const TYPING_SHOWN_MS = 3000; // a "typing" event shows for this long
const TYPING_SENT_EVERY_MS = 1500;
const PAGE = Math.random().toString(36).slice(2, 10); // makes this page's refs its own

const state = {
  nick: "",
  active: "lobby",
  joined: ["lobby"], // rooms we are in, in the order joined
  all: [], // every room of the server
  rooms: new Map(), // room -> {messages: Map id -> message, lastId, unread, online, typing}
  typingSentAt: 0,
  outbox: new Map(), // ref -> {room, text, ws}: says the server has not answered yet
  refs: 0,
  resuming: new Set(), // rooms whose history has not come on this connection yet
};

function room(name) {
  let r = state.rooms.get(name);
  if (!r) {
    r = { messages: new Map(), lastId: null, unread: 0, online: [], typing: new Map() };
    state.rooms.set(name, r);
  }
  return r;
}

// -- messages from the server ---------------------------------------------------

const handlers = {
  welcome(msg) {
    conn.welcomed();
    state.nick = msg.nick;
    state.all = msg.rooms;
    $("me").textContent = msg.nick;
    renderRooms();
  },
  history(msg) {
    if (!state.joined.includes(msg.room)) state.joined.push(msg.room);
    for (const m of msg.messages) addMessage(m, false);
    state.resuming.delete(msg.room);
    flush(msg.room); // what the history did not have goes again
    renderRooms();
    if (msg.room === state.active) renderMessages();
  },
  message(msg) {
    addMessage(msg, true);
  },
  sent(msg) {
    state.outbox.delete(msg.ref);
  },
  presence(msg) {
    room(msg.room).online = msg.online;
    if (msg.room === state.active) renderOnline();
  },
  typing(msg) {
    if (msg.nick === state.nick) return;
    const typing = room(msg.room).typing;
    clearTimeout(typing.get(msg.nick));
    typing.set(msg.nick, setTimeout(() => {
      typing.delete(msg.nick);
      renderTyping();
    }, TYPING_SHOWN_MS));
    renderTyping();
  },
  rooms(msg) {
    state.all = msg.rooms;
    renderRooms();
  },
  left(msg) {
    for (const [ref, out] of state.outbox) if (out.room === msg.room) state.outbox.delete(ref);
    state.joined = state.joined.filter((r) => r !== msg.room);
    state.rooms.delete(msg.room);
    if (state.active === msg.room) state.active = state.joined[0] || "lobby";
    render();
  },
  resync(msg) {
    conn.send({ type: "join", room: msg.room, since: msg.since });
  },
  error(msg) {
    if (msg.code === "nick_taken") return login(msg.text); // someone else's: pick another
    const out = msg.ref != null && state.outbox.get(msg.ref);
    if (out) {
      state.outbox.delete(msg.ref); // answered: not sent
      if (!$("text").value) $("text").value = out.text; // back to the writer
    }
    notice(msg.text);
  },
};

// Keep each room's messages once each, in id order, whatever order they come in.
function addMessage(msg, live) {
  const r = room(msg.room);
  if (msg.ref != null && msg.nick === state.nick) state.outbox.delete(msg.ref); // stored
  if (r.messages.has(msg.id)) return; // seen already
  r.messages.set(msg.id, msg);
  if (r.lastId === null || msg.id > r.lastId) r.lastId = msg.id;
  const typing = r.typing.get(msg.nick);
  if (typing !== undefined) {
    clearTimeout(typing);
    r.typing.delete(msg.nick);
    renderTyping();
  }
  if (msg.room !== state.active) {
    if (live && msg.nick !== state.nick) {
      r.unread += 1;
      renderRooms();
    }
    return;
  }
  if (live) insertMessage(msg);
}

// -- rendering (textContent only) ------------------------------------------------

const COLORS = ["#f59e0b", "#38bdf8", "#a78bfa", "#34d399", "#f472b6", "#fb923c", "#60a5fa"];

function color(nick) {
  let h = 0;
  for (const ch of nick) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return COLORS[h % COLORS.length];
}

function messageElement(msg) {
  const li = document.createElement("li");
  li.dataset.id = String(msg.id);
  if (msg.nick === state.nick) li.classList.add("mine");
  const avatar = document.createElement("span");
  avatar.className = "avatar";
  avatar.style.background = color(msg.nick);
  avatar.textContent = [...msg.nick][0].toUpperCase();
  const meta = document.createElement("div");
  meta.className = "meta";
  const nick = document.createElement("span");
  nick.className = "nick";
  nick.textContent = msg.nick;
  const time = document.createElement("time");
  time.className = "time";
  time.dateTime = new Date(msg.ts).toISOString();
  time.textContent = new Date(msg.ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  meta.append(nick, time);
  const text = document.createElement("div");
  text.className = "text";
  text.textContent = msg.text;
  li.append(avatar, meta, text);
  return li;
}

function insertMessage(msg) {
  const list = $("messages");
  const stick = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  let after = list.lastElementChild;
  while (after && Number(after.dataset.id) > msg.id) after = after.previousElementSibling;
  const li = messageElement(msg);
  if (after) after.after(li);
  else list.prepend(li);
  if (stick) list.scrollTop = list.scrollHeight;
}

function renderMessages() {
  const list = $("messages");
  const ids = [...room(state.active).messages.keys()].sort((a, b) => a - b);
  list.replaceChildren(...ids.map((id) => messageElement(room(state.active).messages.get(id))));
  list.scrollTop = list.scrollHeight;
}

function renderRooms() {
  const names = [...new Set([...state.all, ...state.joined])].sort();
  $("rooms").replaceChildren(
    ...names.map((name) => {
      const li = document.createElement("li");
      li.dataset.room = name;
      const label = document.createElement("span");
      label.textContent = name;
      li.append(label);
      if (state.joined.includes(name)) li.classList.add("joined");
      if (name === state.active) li.classList.add("active");
      const unread = state.rooms.get(name)?.unread || 0;
      if (unread > 0) {
        const badge = document.createElement("span");
        badge.className = "unread";
        badge.textContent = String(unread);
        li.append(badge);
      }
      li.addEventListener("click", () => switchTo(name));
      return li;
    }),
  );
}

function renderOnline() {
  $("online").replaceChildren(
    ...room(state.active).online.map((nick) => {
      const li = document.createElement("li");
      li.textContent = nick;
      return li;
    }),
  );
}

function renderTyping() {
  const nicks = [...room(state.active).typing.keys()];
  $("typing").textContent =
    nicks.length === 0 ? "" :
    nicks.length === 1 ? `${nicks[0]} is typing…` :
    nicks.length <= 3 ? `${nicks.join(", ")} are typing…` : "Several people are typing…";
}

function render() {
  $("room-title").textContent = state.active;
  renderRooms();
  renderMessages();
  renderOnline();
  renderTyping();
}

let noticeTimer;
function notice(text) {
  const box = $("notice");
  box.textContent = text;
  box.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => (box.hidden = true), 6000);
}

function switchTo(name) {
  if (!state.joined.includes(name)) {
    conn.send({ type: "join", room: name });
  }
  state.active = name;
  room(name).unread = 0;
  render();
  $("text").focus();
}

// -- the connection --------------------------------------------------------------

const wsUrl = new URL("ws", location.href);
wsUrl.protocol = location.protocol === "https:" ? "wss:" : "ws:";

const conn = new Connection(wsUrl.href, {
  onOpen(c) {
    // Resume: the rooms we are in and the last id seen in each.
    const since = {};
    for (const name of state.joined) {
      const last = state.rooms.get(name)?.lastId;
      if (last != null) since[name] = last;
    }
    state.resuming = new Set(state.joined);
    c.send({ type: "hello", nick: state.nick, rooms: state.joined, since });
  },
  onMessage(msg) {
    const handler = handlers[msg.type];
    if (handler) handler(msg);
  },
  onState(s, detail) {
    const status = $("status");
    status.dataset.state = s;
    if (s === "open") status.textContent = "connected";
    else if (s === "connecting") status.textContent = "connecting…";
    else {
      status.textContent = `reconnecting in ${Math.ceil(detail.wait / 1000)} s…`;
      if (detail.code === 1008) notice(detail.reason || "disconnected by the server");
    }
  },
});

// A say waits in the outbox until the server answers it ("sent", or an error
// with its ref).  One sent on a connection that dropped before the answer may
// have been stored or not: once the room's history is in on the next
// connection (a stored message comes back in it, with its ref), the rest goes
// again, in order, before anything newer.
function say(room, text) {
  const ref = `${PAGE}-${++state.refs}`;
  state.outbox.set(ref, { room, text, ws: null });
  flush(room);
}

function flush(room) {
  if (state.resuming.has(room)) return;
  for (const [ref, out] of state.outbox) {
    if (out.room !== room || out.ws === conn.ws) continue;
    if (!conn.send({ type: "say", room, text: out.text, ref })) return;
    out.ws = conn.ws;
  }
}

// -- the forms ---------------------------------------------------------------------

function start(nick) {
  state.nick = nick;
  localStorage.setItem("peregrine-chat-nick", nick);
  $("login").hidden = true;
  $("login-error").hidden = true;
  $("chat").hidden = false;
  render();
  conn.connect();
  $("text").focus();
}

// Back to the login form, saying why (the nick is taken): no reconnection meanwhile.
function login(why) {
  conn.stop();
  $("chat").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = why;
  $("login-error").hidden = false;
  $("nick-input").select();
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  start($("nick-input").value.trim());
});

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("text");
  const text = input.value;
  if (!text.trim()) return;
  if (conn.open) {
    say(state.active, text);
    input.value = "";
    state.typingSentAt = 0; // the next keystroke starts a new "typing"
  }
  else notice("Not connected: your message was not sent.");
});

$("text").addEventListener("input", () => {
  const now = Date.now();
  if (now - state.typingSentAt > TYPING_SENT_EVERY_MS && $("text").value) {
    state.typingSentAt = now;
    conn.send({ type: "typing", room: state.active });
  }
});

$("new-room").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = $("new-room-input").value.trim();
  if (!name) return;
  conn.send({ type: "create", room: name });
  $("new-room-input").value = "";
  state.active = name;
  render();
});

$("leave").addEventListener("click", () => {
  if (state.joined.length > 1) conn.send({ type: "leave", room: state.active });
  else notice("This is your last room.");
});

const params = new URLSearchParams(location.search);
const saved = params.get("nick") || localStorage.getItem("peregrine-chat-nick");
if (saved) $("nick-input").value = saved;

// For the browser console (and the end-to-end tests): the state and the connection.
window.chat = { state, conn };
