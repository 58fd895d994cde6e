// The tutorial's page (step 6): the lobby of the chat, on peregrine.js.
import { Presence, Socket } from "/_peregrine/peregrine.js";

const $ = (selector) => document.querySelector(selector);

function show({ id, nick, text }) {
  // Each message once, in id order: a recovery or a history page may repeat some.
  const list = $("#messages");
  if (list.querySelector(`li[data-id="${id}"]`)) return;
  const li = document.createElement("li");
  li.dataset.id = id;
  li.textContent = `${nick}: ${text}`; // textContent: a message is never HTML
  const later = [...list.children].find((other) => Number(other.dataset.id) > id);
  list.insertBefore(li, later ?? null);
}

function enter(nick) {
  const socket = new Socket("/socket"); // the browser sends the session cookie itself
  socket.onStateChange((state) => {
    $("#status").dataset.state = $("#status").textContent = state;
  });
  const chat = socket.channel("chat", { nick });
  const lobby = socket.channel("room:lobby");

  lobby.on("new_msg", (message, ref) => show({ id: Number(ref.slice(2)), ...message }));
  lobby.onJoin(({ rejoin, recovered, offset }) => {
    if (rejoin && recovered) return; // what this page missed follows the reply
    $("#messages").replaceChildren(); // a first join, or a gap: load the last page
    lobby.push("history", { before: offset + 1 }).receive("ok", ({ messages }) => {
      messages.forEach(show);
    });
  });
  let hideTyping;
  lobby.on("typing", ({ nick }) => {
    $("#typing").textContent = `${nick} is typing…`;
    clearTimeout(hideTyping);
    hideTyping = setTimeout(() => ($("#typing").textContent = ""), 3000);
  });
  const presence = new Presence(lobby);
  presence.onSync(() => {
    const items = presence.list((nick) => Object.assign(document.createElement("li"), { textContent: nick }));
    $("#online").replaceChildren(...items);
  });

  let entered = false;
  chat.join()
    .receive("ok", () => {
      if (!entered) lobby.join(); // once: after a reconnect both rejoin by themselves
      entered = true;
    })
    .receive("error", ({ reason, text }) => {
      $("#error").textContent = text ?? reason; // nick_taken, bad_nick: pick another
      $("#login").hidden = false;
      socket.disconnect();
    });
  socket.connect();

  let typed = 0;
  $("#text").addEventListener("input", () => {
    if (Date.now() - typed > 2000) lobby.push("typing", {});
    typed = Date.now();
  });
  $("#say").addEventListener("submit", (event) => {
    event.preventDefault();
    lobby.push("new_msg", { text: $("#text").value })
      .receive("ok", () => ($("#text").value = ""))
      .receive("error", ({ reason, text }) => ($("#error").textContent = text ?? reason));
  });
}

$("#login").addEventListener("submit", (event) => {
  event.preventDefault();
  $("#login").hidden = true;
  enter($("#nick-input").value.trim());
});
