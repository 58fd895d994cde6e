// The chat client, on peregrine.js (the toolkit's Channels client): plain ES
// modules, no build step.  Every string from a user goes into the page with
// textContent, never as HTML.
//
// The protocol (examples/chat/app.py): join "chat" with the nick, then one
// "room:<name>" channel per room.  peregrine.js reconnects with backoff and
// full jitter and rejoins every channel by itself, asking for what it missed;
// this file keeps the page in step with what it reports.
import { Presence, Socket, backoff } from "/_peregrine/peregrine.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const TYPING_SHOWN_MS = 3000; // a "typing" event shows for this long
const TYPING_SENT_EVERY_MS = 1100; // the server passes one a second at most
const ACK_TIMEOUT_MS = 8000; // a message not acknowledged by then is marked "not sent"
const HISTORY_PAGE = Number(params.get("page")) || 100; // messages per history request
const PAGE = Math.random().toString(36).slice(2, 10); // makes this page's refs its own

const state = {
  nick: "",
  inChat: false, // the "chat" channel is joined (the nick is ours)
  active: "lobby",
  joined: [], // rooms we are in, in the order joined
  all: [], // every room of the server (the join reply of "chat", then its "rooms" pushes)
  rooms: new Map(), // room -> see newRoom()
  limits: { text: 2000 },
  typingSentAt: 0,
  refs: 0,
};

// -- the connection ----------------------------------------------------------------

const socket = new Socket("/socket", {
  reconnectAfterMs: backoff(500, 10000),
  rejoinAfterMs: backoff(500, 5000),
});
let chat = null; // the "chat" channel of the current login

socket.onStateChange(renderStatus);
socket.onClose((event) => {
  if (event.code === 1008) notice(event.reason || "Disconnected by the server.");
});

// [login]
function login(nick) {
  state.nick = nick;
  $("login-button").disabled = true;
  socket.connect(); // does nothing if connected already
  chat = socket.channel("chat", () => ({ nick: state.nick }));
  chat.on("rooms", ({ rooms }) => {
    state.all = rooms;
    renderRooms();
  });
  chat.join()
    .receive("ok", (reply) => {
      const first = !state.inChat;
      state.inChat = true;
      state.nick = reply.nick;
      state.all = reply.rooms;
      state.limits = { ...state.limits, ...reply.limits };
      if (first) enter();
      renderRooms();
      renderStatus();
    })
    .receive("error", (reply) => {
      const reason = reply && reply.reason;
      // Someone else's nick, or not a nick: pick another.  (Any other refusal,
      // rate_limited say, peregrine.js tries again by itself.)
      if (reason === "nick_taken" || reason === "bad_nick") backToLogin(reason, reply.text);
    });
}
// [/login]

function enter() {
  localStorage.setItem("peregrine-chat-nick", state.nick);
  $("login").hidden = true;
  $("login-error").hidden = true;
  $("chat").hidden = false;
  $("me").textContent = state.nick;
  $("text").maxLength = state.limits.text;
  if (state.joined.length === 0) joinRoom("lobby");
  switchTo(state.active);
}

// The nick was refused (at login, or on a rejoin after a long absence): leave
// everything, say why, and let the user pick another.
function backToLogin(reason, text) {
  if (chat !== null) chat.leave();
  chat = null;
  for (const name of [...state.joined]) dropRoom(name);
  state.inChat = false;
  $("chat").hidden = true;
  $("login").hidden = false;
  $("login-button").disabled = false;
  const error = $("login-error");
  error.dataset.reason = reason;
  error.textContent =
    text || (reason === "nick_taken" ? "That nick is someone else's: pick another." :
      "A nickname is 1–24 letters, digits, _ or -, with single spaces inside.");
  error.hidden = false;
  $("nick-input").select();
}

// -- rooms ---------------------------------------------------------------------------

function newRoom(name) {
  return {
    name,
    channel: null,
    presence: null,
    messages: new Map(), // id -> {id, nick, text, ts, ref?}: stored, acknowledged
    pending: new Map(), // ref -> {ref, text, failed: null | "why"}: sent, not acknowledged yet
    loads: 0, // bumped when the messages are dropped: older history answers are ignored
    more: false, // the server may have older messages ("load older")
    unread: 0,
    online: [],
    typing: new Map(), // nick -> timer
  };
}

// [room]
function joinRoom(name) {
  if (state.rooms.has(name)) return;
  const room = newRoom(name);
  state.rooms.set(name, room);
  state.joined.push(name);
  const channel = socket.channel(`room:${name}`, {});
  room.channel = channel;
  room.presence = new Presence(channel);
  room.presence.onSync(() => {
    room.online = room.presence.list((nick) => nick).sort();
    if (name === state.active) renderOnline();
  });
  // A message's id is its offset, which the server puts in the ref slot: "p:<offset>".
  channel.on("new_msg", (msg, ref) => addMessages(room, [{ ...msg, id: Number(ref.slice(2)) }], true));
  channel.on("typing", ({ nick }) => showTyping(room, nick));
  channel.onJoin(({ recovered, offset }) => {
    // Recovered: the messages missed while away follow, once each, in order.
    // Otherwise (the first join, or the server lost what we had: a new epoch,
    // too old) the room starts again from the server's history.
    if (recovered === true) return;
    room.loads += 1;
    room.messages.clear();
    if (offset !== null) loadHistory(room, offset + 1);
  });
  channel.join().receive("error", (reply) => {
    const reason = reply && reply.reason;
    if (reason === "hello_first" || reason === "rate_limited") return; // tried again by itself
    dropRoom(name);
    notice((reply && reply.text) || `Could not join ${name} (${reason}).`);
    render();
  });
  renderRooms();
}
// [/room]

function dropRoom(name) {
  const room = state.rooms.get(name);
  if (!room) return;
  room.channel.leave();
  for (const timer of room.typing.values()) clearTimeout(timer);
  state.rooms.delete(name);
  state.joined = state.joined.filter((r) => r !== name);
  if (state.active === name) state.active = state.joined[0] || "lobby";
}

// [history]
// The newest HISTORY_PAGE messages with an id below `before`.
function loadHistory(room, before) {
  const loads = room.loads;
  room.channel.push("history", { before, limit: HISTORY_PAGE })
    .receive("ok", ({ messages }) => {
      if (loads !== room.loads || state.rooms.get(room.name) !== room) return; // stale
      room.more = messages.length >= HISTORY_PAGE;
      const older = room.messages.size > 0 && before <= oldestId(room);
      addMessages(room, messages, false, older);
    })
    .receive("error", (reply) => notice((reply && reply.text) || "Could not load the history."))
    .receive("timeout", () => {
      if (loads === room.loads) notice("The history did not come: try again.");
    });
}

function oldestId(room) {
  return Math.min(...room.messages.keys());
}
// [/history]

// [messages]
// Keep each room's messages once each, by id, whatever order they come in
// (history, live, replayed after a reconnect).  A message carrying the ref of
// one of ours that waits for its acknowledgement is that one: it is sent.
function addMessages(room, messages, live, older = false) {
  let unread = 0;
  for (const msg of messages) {
    if (msg.ref != null) room.pending.delete(String(msg.ref)); // ours: sent
    const seen = room.messages.has(msg.id);
    room.messages.set(msg.id, msg);
    if (live) clearTyping(room, msg.nick);
    if (live && !seen && msg.nick !== state.nick && room.name !== state.active) unread += 1;
  }
  if (unread > 0) {
    room.unread += unread;
    renderRooms();
  }
  if (room.name === state.active) renderMessages(older);
}
// [/messages]

// [send]
// A message shows as "sending…" until the server acknowledges it (its id) or
// its broadcast comes back; refused or unanswered, it is marked so, with a
// button to try again.  Its ref lets this page recognise it in the history
// after a reconnect: a message stored whose acknowledgement was lost with the
// connection comes back in the recovered messages and stops waiting.
function send(room, text, ref = `${PAGE}-${++state.refs}`) {
  const entry = { ref, text, failed: null };
  room.pending.delete(ref); // a retry goes to the end
  room.pending.set(ref, entry);
  if (room.name === state.active) renderMessages();
  const current = () => room.pending.get(ref) === entry;
  room.channel.push("new_msg", { text, ref }, { timeout: ACK_TIMEOUT_MS })
    .receive("ok", ({ id }) => {
      if (!current()) return; // its broadcast came first
      room.pending.delete(ref);
      if (!room.messages.has(id)) {
        room.messages.set(id, { id, nick: state.nick, text, ts: Date.now(), ref });
      }
      if (room.name === state.active) renderMessages();
    })
    .receive("error", (reply) => current() && fail(room, entry, failure(reply)))
    .receive("timeout", () => current() && fail(room, entry, "no answer from the server"));
}

function failure(reply) {
  const reason = reply && reply.reason;
  if (reply && reply.text) return reply.text;
  if (reason === "too_long") return `too long (${state.limits.text} characters at most)`;
  if (reason === "rate_limited") return "too fast: wait a moment";
  return reason ? `refused (${reason})` : "refused";
}

function fail(room, entry, why) {
  entry.failed = why;
  if (room.name === state.active) renderMessages();
}
// [/send]

// -- typing ----------------------------------------------------------------------------

function showTyping(room, nick) {
  if (nick === state.nick) return;
  clearTimeout(room.typing.get(nick));
  room.typing.set(nick, setTimeout(() => clearTyping(room, nick), TYPING_SHOWN_MS));
  if (room.name === state.active) renderTyping();
}

function clearTyping(room, nick) {
  if (!room.typing.has(nick)) return;
  clearTimeout(room.typing.get(nick));
  room.typing.delete(nick);
  if (room.name === state.active) renderTyping();
}

// -- rendering (textContent only) ------------------------------------------------------

const COLORS = ["#f59e0b", "#38bdf8", "#a78bfa", "#34d399", "#f472b6", "#fb923c", "#60a5fa"];

function color(nick) {
  let h = 0;
  for (const ch of nick) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return COLORS[h % COLORS.length];
}

function element(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}

// [element]
function messageElement(msg, pending = null) {
  const li = document.createElement("li");
  if (pending) li.dataset.ref = pending.ref;
  else li.dataset.id = String(msg.id);
  if (msg.nick === state.nick) li.classList.add("mine");
  const avatar = element("span", "avatar", [...msg.nick][0].toUpperCase());
  avatar.style.background = color(msg.nick);
  const meta = element("div", "meta");
  const time = element("time", "time");
  if (pending) {
    li.classList.add(pending.failed ? "failed" : "pending");
    time.textContent = pending.failed ? "not sent" : "sending…";
  } else {
    time.dateTime = new Date(msg.ts).toISOString();
    time.textContent = new Date(msg.ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }
  meta.append(element("span", "nick", msg.nick), time);
  li.append(avatar, meta, element("div", "text", msg.text));
  if (pending && pending.failed) {
    const why = element("div", "failure", `${pending.failed}.`);
    const retry = element("button", "retry", "Retry");
    retry.type = "button";
    retry.addEventListener("click", () => send(state.rooms.get(state.active), pending.text, pending.ref));
    const discard = element("button", "discard", "Discard");
    discard.type = "button";
    discard.addEventListener("click", () => {
      state.rooms.get(state.active).pending.delete(pending.ref);
      renderMessages();
    });
    why.append(retry, discard);
    li.append(why);
  }
  return li;
}
// [/element]

// The active room's messages, oldest first, then ours that wait for an answer.
// Kept at the bottom if it was there; a page of older messages keeps in place
// what was on screen.
function renderMessages(older = false) {
  const scroller = $("scroller");
  const fromBottom = scroller.scrollHeight - scroller.scrollTop;
  const stick = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 40;
  const room = state.rooms.get(state.active);
  const items = [];
  if (room) {
    const ids = [...room.messages.keys()].sort((a, b) => a - b);
    for (const id of ids) items.push(messageElement(room.messages.get(id)));
    for (const entry of room.pending.values()) {
      items.push(messageElement({ nick: state.nick, text: entry.text }, entry));
    }
  }
  $("messages").replaceChildren(...items);
  $("older").hidden = !(room && room.more);
  if (older) scroller.scrollTop = scroller.scrollHeight - fromBottom;
  else if (stick) scroller.scrollTop = scroller.scrollHeight;
}

function renderRooms() {
  const names = [...new Set([...state.all, ...state.joined])].sort();
  $("rooms").replaceChildren(
    ...names.map((name) => {
      const li = document.createElement("li");
      li.dataset.room = name;
      li.append(element("span", "", name));
      if (state.joined.includes(name)) li.classList.add("joined");
      if (name === state.active) li.classList.add("active");
      const unread = state.rooms.get(name)?.unread || 0;
      if (unread > 0) li.append(element("span", "unread", String(unread)));
      li.addEventListener("click", () => switchTo(name));
      return li;
    }),
  );
}

function renderOnline() {
  const room = state.rooms.get(state.active);
  $("online").replaceChildren(...(room ? room.online : []).map((nick) => element("li", "", nick)));
}

function renderTyping() {
  const room = state.rooms.get(state.active);
  const nicks = room ? [...room.typing.keys()] : [];
  $("typing").textContent =
    nicks.length === 0 ? "" :
    nicks.length === 1 ? `${nicks[0]} is typing…` :
    nicks.length <= 3 ? `${nicks.join(", ")} are typing…` : "Several people are typing…";
}

// Online: connected, and the nick is ours.  Offline: peregrine.js is trying
// to reconnect (with backoff); whatever is sent meanwhile waits ("sending…").
function renderStatus() {
  const status = $("status");
  const s = socket.state;
  const online = s === "open" && chat !== null && chat.state === "joined";
  const shown = online ? "open" : s === "connecting" || s === "open" ? "connecting" : "offline";
  status.dataset.state = shown;
  status.textContent =
    shown === "open" ? "online" : shown === "connecting" ? "connecting…" : "offline, reconnecting…";
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
  if (!state.rooms.has(name)) joinRoom(name); // joining a room creates it
  state.active = name;
  const room = state.rooms.get(name);
  if (room) room.unread = 0;
  render();
  $("text").focus();
}

// -- the forms ---------------------------------------------------------------------------

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  login($("nick-input").value.trim());
});

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("text");
  const text = input.value;
  const room = state.rooms.get(state.active);
  if (!text.trim() || !room) return;
  send(room, text);
  input.value = "";
});

// "typing" goes out on a keystroke, at most once per TYPING_SENT_EVERY_MS: a
// keystroke sooner than that sends it when the time comes (if there is still
// text), so a quick second message is announced too.
let typingTimer = null;
function typed() {
  if (!$("text").value) return;
  const wait = state.typingSentAt + TYPING_SENT_EVERY_MS - Date.now();
  if (wait > 0) {
    typingTimer ??= setTimeout(() => {
      typingTimer = null;
      typed();
    }, wait);
    return;
  }
  const room = state.rooms.get(state.active);
  if (room && room.channel.state === "joined" && socket.isConnected()) {
    state.typingSentAt = Date.now();
    room.channel.push("typing", {});
  }
}

$("text").addEventListener("input", typed);

$("older").addEventListener("click", () => {
  const room = state.rooms.get(state.active);
  if (room && room.messages.size > 0) loadHistory(room, oldestId(room));
});

$("new-room").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = $("new-room-input").value.trim();
  if (!name) return;
  $("new-room-input").value = "";
  switchTo(name);
});

$("leave").addEventListener("click", () => {
  if (state.joined.length <= 1) {
    notice("This is your last room.");
    return;
  }
  dropRoom(state.active);
  render();
});

const saved = params.get("nick") || localStorage.getItem("peregrine-chat-nick");
if (saved) $("nick-input").value = saved;

// For the browser console (and the end-to-end tests): the state and the socket.
window.chat = { state, socket };
