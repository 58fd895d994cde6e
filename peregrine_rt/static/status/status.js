// The live status page of peregrine_rt: one WebSocket, a snapshot of the
// server's figures a second, drawn as tiles, sparklines and tables.
// No framework and no build step; text is only ever set with textContent.
"use strict";

const HISTORY = 60; // points per chart: a minute at one snapshot a second
const SVG = "http://www.w3.org/2000/svg";
const CLOSE_CODES = {
  1000: "normal",
  1001: "going away",
  1002: "protocol error",
  1003: "unsupported data",
  1006: "lost, no close frame",
  1007: "invalid data",
  1008: "policy (slow consumer)",
  1009: "message too big",
  1011: "server error",
  1012: "service restart",
  1013: "try again later (slow consumer)",
};
const TOTALS = [
  ["requests", "HTTP responses"],
  ["ws_received", "WS messages received"],
  ["ws_sent", "WS messages sent"],
  ["hub_publishes", "hub publishes"],
  ["hub_deliveries", "hub deliveries"],
  ["hub_lost", "hub messages lost (Redis down)"],
  ["slow_closed", "slow consumers closed"],
  ["slow_dropped", "messages dropped (drop-oldest)"],
];

const $ = (id) => document.getElementById(id);
const number = new Intl.NumberFormat("en", { maximumFractionDigits: 0 });
const rate = new Intl.NumberFormat("en", { maximumFractionDigits: 1 });

// -- the token: from ?token= once, then kept in memory (the cookie covers reloads)

const params = new URLSearchParams(location.search);
const token = params.get("token");
if (token !== null) {
  params.delete("token");
  const rest = params.toString();
  history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
}

function socketURL() {
  const url = new URL("status/socket", location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.search = "";
  if (token !== null) url.searchParams.set("token", token);
  return url.href;
}

// -- sparklines: inline SVG, 60 points, scaled to the largest one shown

class Sparkline {
  constructor(figure) {
    this.points = [];
    this.value = figure.querySelector(".value");
    this.svg = document.createElementNS(SVG, "svg");
    this.svg.setAttribute("viewBox", `0 0 ${HISTORY - 1} 100`);
    this.svg.setAttribute("preserveAspectRatio", "none");
    this.svg.setAttribute("aria-hidden", "true");
    this.area = document.createElementNS(SVG, "polygon");
    this.area.setAttribute("class", "area");
    this.line = document.createElementNS(SVG, "polyline");
    this.line.setAttribute("class", "line");
    this.line.setAttribute("vector-effect", "non-scaling-stroke");
    this.svg.append(this.area, this.line);
    this.peak = document.createElement("span");
    this.peak.className = "peak";
    figure.append(this.svg, this.peak);
  }

  push(value) {
    this.points.push(value);
    if (this.points.length > HISTORY) this.points.shift();
    this.value.textContent = rate.format(value);
    const top = Math.max(1, ...this.points);
    const offset = HISTORY - this.points.length;
    const coords = this.points.map((v, i) => `${offset + i},${(100 - (v / top) * 92).toFixed(1)}`);
    this.line.setAttribute("points", coords.join(" "));
    this.area.setAttribute("points", `${offset},100 ${coords.join(" ")} ${HISTORY - 1},100`);
    this.peak.textContent = `peak ${rate.format(Math.max(...this.points))}/s over ${this.points.length} s`;
  }
}

const charts = {};
for (const figure of document.querySelectorAll(".chart")) {
  charts[figure.dataset.series] = new Sparkline(figure);
}

// -- one snapshot in

let previous = null;

function totalsOf(snapshot) {
  const c = snapshot.counters || {};
  return { ...c, drops: (c.slow_closed || 0) + (c.slow_dropped || 0) };
}

function rows(tbody, items) {
  const made = items.map((cells) => {
    const tr = document.createElement("tr");
    for (const [text, className] of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      if (className) td.className = className;
      tr.append(td);
    }
    return tr;
  });
  tbody.replaceChildren(...made);
}

function show(snapshot) {
  $("processes").textContent = number.format(snapshot.processes || 1);
  const redis = snapshot.redis;
  const hub = $("redis");
  hub.textContent = redis === null || redis === undefined ? "in memory" : redis ? "Redis up" : "Redis DOWN";
  hub.dataset.health = redis === 0 ? "bad" : "good";
  $("updated").textContent = new Date(snapshot.time * 1000).toLocaleTimeString();

  const connections = snapshot.connections || {};
  for (const kind of ["http", "websocket", "sse"]) {
    $(`conn-${kind}`).textContent = number.format(connections[kind] || 0);
  }
  $("channel-topics").textContent = number.format(snapshot.channel_topics || 0);

  const now = totalsOf(snapshot);
  if (previous !== null) {
    const seconds = snapshot.time - previous.time;
    const before = totalsOf(previous);
    if (seconds > 0) {
      for (const [series, chart] of Object.entries(charts)) {
        // A counter that went down is a restarted server: no rate for that step.
        const delta = (now[series] || 0) - (before[series] || 0);
        chart.push(delta >= 0 ? delta / seconds : 0);
      }
    }
  }
  previous = snapshot;

  const topics = snapshot.topics || [];
  rows($("topics").tBodies[0], topics.map(([name, n]) => [[name, "topic"], [number.format(n), "num"]]));
  $("topics-empty").hidden = topics.length > 0;
  $("topic-count").textContent = topics.length ? `(busiest ${topics.length})` : "";

  const closes = Object.entries(snapshot.closes || {}).sort((a, b) => b[1] - a[1]);
  rows(
    $("closes").tBodies[0],
    closes.map(([code, n]) => [[code, ""], [CLOSE_CODES[code] || "", ""], [number.format(n), "num"]]),
  );
  $("closes-empty").hidden = closes.length > 0;

  const statuses = Object.entries(snapshot.statuses || {}).sort();
  const totals = TOTALS.map(([key, label]) => [[label, ""], [number.format(now[key] || 0), "num"]]);
  for (const [kind, n] of statuses) totals.push([[`HTTP ${kind}`, ""], [number.format(n), "num"]]);
  rows($("totals").tBodies[0], totals);
}

// -- the socket, reconnected with backoff

let attempt = 0;

function setState(state, text) {
  document.body.dataset.state = state;
  $("state").textContent = text;
}

function connect() {
  setState("connecting", attempt ? `reconnecting (try ${attempt + 1})` : "connecting");
  const ws = new WebSocket(socketURL());
  ws.onopen = () => {
    attempt = 0;
    setState("open", "live");
  };
  ws.onmessage = (event) => {
    try {
      show(JSON.parse(event.data));
    } catch (error) {
      console.error("status page: bad snapshot", error);
    }
  };
  ws.onclose = () => {
    const delay = Math.min(30, 0.5 * 2 ** attempt) * (0.75 + Math.random() / 2);
    attempt += 1;
    setState("closed", `disconnected, retry in ${Math.ceil(delay)} s`);
    setTimeout(connect, delay * 1000);
  };
}

connect();
