// The console's live updates: polls the JSON endpoints under /console/api/
// every second and re-renders each section. Everything is built with DOM
// calls and textContent, never innerHTML, so nothing from a message can
// become markup. Replay posts JSON with the X-Labrelay-Console header the
// broker requires of mutating requests.
"use strict";

const POLL_MS = 1000;
const body = document.body;
let search = { report: body.dataset.report || "", message: body.dataset.message || "" };

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("data-")) el.setAttribute(k, String(v));
    else el.setAttribute(k, String(v));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const short = (name) => (name || "").split("/").pop();
const time = (ms) => new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
function age(seconds) {
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}
function reportLink(id) {
  return h("a", { href: `/console?report=${encodeURIComponent(id)}`, "data-report-link": id }, id);
}

async function getJson(path) {
  const response = await fetch(path, { headers: { accept: "application/json" }, cache: "no-store" });
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.error || `HTTP ${response.status}`);
  return answer;
}

// A bar chart of the last 30 minutes: successes up (green), failures down (red).
function chart(series) {
  const ns = "http://www.w3.org/2000/svg";
  const width = 270, height = 40, mid = height / 2;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("role", "img");
  const total = (a) => a.reduce((x, y) => x + y, 0);
  svg.setAttribute("aria-label", `last 30 minutes: ${total(series.success)} ok, ${total(series.failure)} failed`);
  const max = Math.max(1, ...series.success, ...series.failure);
  const barWidth = width / series.success.length;
  const axis = document.createElementNS(ns, "line");
  axis.setAttribute("x1", 0); axis.setAttribute("x2", width);
  axis.setAttribute("y1", mid); axis.setAttribute("y2", mid);
  axis.setAttribute("stroke", "#d0d7de");
  svg.append(axis);
  series.success.forEach((ok, i) => {
    for (const [value, color, up] of [[ok, "#1a7f37", true], [series.failure[i], "#cf222e", false]]) {
      if (!value) continue;
      const bar = document.createElementNS(ns, "rect");
      const length = Math.max(1, (value / max) * (mid - 1));
      bar.setAttribute("x", i * barWidth);
      bar.setAttribute("width", Math.max(1, barWidth));
      bar.setAttribute("y", up ? mid - length : mid);
      bar.setAttribute("height", length);
      bar.setAttribute("fill", color);
      bar.setAttribute("class", up ? "bar-ok" : "bar-failed");
      svg.append(bar);
    }
  });
  return svg;
}

function renderSubscriptions(overview) {
  const rows = overview.subscriptions.map((s) => {
    const e = s.last_error;
    return h("tr", { "data-subscription": s.name, "data-kind": s.kind },
      h("td", { class: "name", title: s.name }, short(s.name)),
      h("td", { class: "topic", title: s.topic }, short(s.topic)),
      h("td", { class: "kind", title: s.endpoint || "" }, s.kind),
      h("td", { class: `backlog${s.backlog ? " nonzero" : ""}` }, s.backlog),
      h("td", { class: "in-flight" }, s.in_flight),
      h("td", { class: "oldest" }, age(s.oldest_unacked_age_s)),
      h("td", { class: "rate" }, s.delivery_rate.toFixed(2)),
      h("td", { class: "ok" }, s.pushes_ok),
      h("td", { class: `failed${s.pushes_failed ? " nonzero" : ""}` }, s.pushes_failed),
      h("td", { class: `dead${s.dead_lettered ? " nonzero" : ""}` }, s.dead_lettered),
      h("td", { class: e ? "last-error" : "last-error none" },
        e ? `${e.error} (message ${e.message_id}, attempt ${e.attempt}) at ${time(e.at_ms)}` : "none"),
      h("td", { class: "chart" }, s.kind === "push" ? chart(s.series) : ""));
  });
  document.querySelector("#subscriptions tbody").replaceChildren(...rows);
  const warnings = overview.subscriptions.filter((s) => s.drops_dead_letters).map((s) =>
    h("li", { class: "warning", "data-drops-dead-letters": s.name, title: s.dead_letter_topic },
      `${short(s.name)}: dead-letter topic ${short(s.dead_letter_topic)} has no subscription: dead letters are dropped`));
  document.getElementById("dead-letter-warnings").replaceChildren(...warnings);
}

function channelBadge(c) {
  const title = c.last_error ? `last error: ${c.last_error}` : c.reason ? `reason: ${c.reason}` : "";
  return h("span", { class: `channel state-${c.state}`, "data-subscription": c.subscription, "data-state": c.state, title },
    `${short(c.subscription)}: ${c.state}`, c.reason ? h("span", { class: "reason" }, ` (${c.reason})`) : null);
}

function stepLine(s) {
  return h("li", { "data-step": s.kind, "data-ok": String(s.ok), title: s.provider_id }, `${time(s.at_ms)} · ${s.label}`);
}

function renderRecent(recent) {
  const rows = recent.messages.map((m) => h("tr", { "data-message-id": m.message_id, "data-report": m.report_id || "" },
    h("td", {}, m.report_id ? reportLink(m.report_id) : "-"),
    h("td", {}, h("a", { href: `/console?message=${m.message_id}` }, m.message_id)),
    h("td", { title: m.topic }, short(m.topic)),
    h("td", {}, time(m.published_ms)),
    h("td", { class: "channels" }, m.channels.map(channelBadge))));
  document.querySelector("#recent tbody").replaceChildren(...rows);
}

function eventLine(e) {
  const what = e.kind === "dead-lettered" ? `dead-lettered after ${e.attempt} attempts`
    : e.kind === "push" ? `push ${e.attempt}` : e.kind;
  const parts = [time(e.at_ms), what];
  if (e.status) parts.push(`HTTP ${e.status}`);
  else if (e.error) parts.push(e.error);
  if (e.outcome) parts.push(e.outcome);
  if (e.latency_ms !== null && e.latency_ms !== undefined) parts.push(`${e.latency_ms.toFixed(1)} ms`);
  if (e.related_id) parts.push(`as ${e.related_id}`);
  const ok = e.kind === "push" ? (e.status >= 200 && e.status < 300 || e.status === 102) : e.kind !== "dead-lettered";
  return h("li", { "data-kind": e.kind, "data-status": e.status || "", "data-ok": String(ok) }, parts.join(" · "));
}

function renderJourney(journey) {
  const section = document.getElementById("journey-section");
  section.hidden = false;
  document.getElementById("journey-report").textContent = journey.report || `(message ${journey.message})`;
  const messages = journey.messages.map((m) => h("div", { class: "message", "data-message-id": m.message_id },
    h("h3", {}, `Message ${m.message_id} on ${short(m.topic)} · published ${time(m.published_ms)}`),
    h("ul", { class: "attributes" }, Object.entries(m.attributes).map(([k, v]) => h("li", {}, h("code", {}, k), " = ", h("code", {}, v)))),
    m.data !== undefined ? h("pre", { class: "data" }, m.data) : null,
    m.channels.map((c) => h("div", { class: "channel-journey", "data-subscription": c.subscription, "data-state": c.state },
      h("h4", {}, h("span", { class: `badge state-${c.state}` }, c.state), " ", short(c.subscription),
        c.reason ? h("span", { class: "reason" }, ` (${c.reason})`) : null),
      h("ol", { class: "attempts" }, m.events.filter((e) => e.subscription === c.subscription).map(eventLine)),
      c.steps.length ? h("ol", { class: "steps" }, c.steps.map(stepLine)) : null))));
  const target = document.getElementById("journey");
  if (messages.length === 0) target.replaceChildren(h("p", { class: "empty" }, "Nothing journaled for this report (yet)."));
  else target.replaceChildren(...messages);
}

function renderDeadLetters(answer) {
  const blocks = answer.subscriptions.map((d) => h("div", { class: "dl-sub", "data-subscription": d.name },
    h("h3", {}, short(d.name), " ", h("span", { class: "count" }, `(${d.total})`), " ",
      h("button", { type: "button", class: "replay-all", "data-subscription": d.name, disabled: d.total === 0 ? "" : null }, "Replay all")),
    d.messages.length === 0 ? h("p", { class: "empty" }, "No dead letters.") :
      h("table", {},
        h("thead", {}, h("tr", {}, ["Message", "Report", "From", "Attempts", "Last error", "Dead-lettered", ""].map((t) => h("th", {}, t)))),
        h("tbody", {}, d.messages.map((m) => h("tr", { "data-message-id": m.message_id },
          h("td", {}, m.message_id),
          h("td", {}, m.report_id ? reportLink(m.report_id) : ""),
          h("td", {}, m.source_subscription || ""),
          h("td", {}, m.delivery_attempts || ""),
          h("td", {}, m.error || ""),
          h("td", {}, time(m.dead_lettered_ms)),
          h("td", {}, h("button", { type: "button", class: "replay", "data-subscription": d.name, "data-message-id": m.message_id }, "Replay"))))))));
  const target = document.getElementById("dead-letters");
  if (blocks.length === 0) target.replaceChildren(h("p", { class: "empty" }, "No dead-letter subscription."));
  else target.replaceChildren(...blocks);
}

async function replay(subscription, ids) {
  const status = document.getElementById("replay-status");
  status.textContent = "Replaying…";
  try {
    const response = await fetch("/console/api/dead-letters/replay", {
      method: "POST",
      headers: { "content-type": "application/json", "x-labrelay-console": "1" },
      body: JSON.stringify({ subscription, message_ids: ids }),
    });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error || `HTTP ${response.status}`);
    const done = answer.replayed.map((r) => `${r.message_id} → ${r.new_id}`).join(", ");
    status.textContent = `Replayed ${answer.replayed.length}${done ? `: ${done}` : ""}` +
      (answer.not_found.length ? `; not found: ${answer.not_found.join(", ")}` : "");
    status.dataset.result = "ok";
  } catch (error) {
    status.textContent = `Replay failed: ${error.message}`;
    status.dataset.result = "error";
  }
  refresh();
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button.replay, button.replay-all");
  if (!button) return;
  const ids = button.classList.contains("replay") ? [button.dataset.messageId] : [];
  replay(button.dataset.subscription, ids);
});

document.getElementById("search").addEventListener("submit", (event) => {
  const report = document.getElementById("report").value.trim();
  if (!report) return;
  event.preventDefault();
  search = { report, message: "" };
  history.pushState(null, "", `/console?report=${encodeURIComponent(report)}`);
  refresh();
});

window.addEventListener("popstate", () => {
  const params = new URLSearchParams(location.search);
  search = { report: params.get("report") || "", message: params.get("message") || "" };
  document.getElementById("report").value = search.report;
  if (!search.report && !search.message) document.getElementById("journey-section").hidden = true;
  refresh();
});

let running = false;
async function refresh() {
  if (running) return;
  running = true;
  const live = document.getElementById("live");
  try {
    const journeyPath = search.report ? `/console/api/journey?report=${encodeURIComponent(search.report)}`
      : search.message ? `/console/api/journey?message=${encodeURIComponent(search.message)}` : null;
    const [overview, recent, deadLetters, journey] = await Promise.all([
      getJson("/console/api/overview"), getJson("/console/api/recent"), getJson("/console/api/dead-letters"),
      journeyPath ? getJson(journeyPath) : null,
    ]);
    renderSubscriptions(overview);
    renderRecent(recent);
    renderDeadLetters(deadLetters);
    if (journey) renderJourney(journey);
    live.textContent = `live · ${time(overview.now_ms)}`;
    live.className = "live on";
  } catch (error) {
    live.textContent = `stale: ${error.message}`;
    live.className = "live stale";
  } finally {
    running = false;
  }
}

refresh();
setInterval(refresh, POLL_MS);
