// The browser side of the token example of docs/web/sessions.rst.
// docs/snippets/sessions_tokens.py runs it under Node.js against the server.

async function getToken() {
  const answer = await fetch("/token", { method: "POST", credentials: "same-origin" });
  if (!answer.ok) throw new Error(`no token: ${answer.status}`);
  return (await answer.json()).token;
}

async function connect(onMessage) {
  const url = new URL("/ws", location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  // Browsers cannot set headers on a WebSocket: the token travels as a second
  // subprotocol, and the server must answer with a real one ("chat").
  const ws = new WebSocket(url, ["chat", "bearer." + (await getToken())]);
  ws.onmessage = (event) => onMessage(event.data);
  // Refresh well before the token's 300 s run out; at expiry the server closes with 3000.
  const timer = setInterval(async () => {
    ws.send(JSON.stringify({ type: "refresh", token: await getToken() }));
  }, 240_000);
  ws.onclose = (event) => {
    clearInterval(timer);
    if (event.code === 3000) onMessage("session expired: log in again");
  };
  return ws;
}
