// atalaya's dashboard: plain modules, no build step, served by the binary at /ui/.
// Everything it shows comes from the public API with the signed-in key; live figures come
// from GET /api/v1/events read as Server-Sent Events through fetch().

const KEY = "atalaya-key";
let key = sessionStorage.getItem(KEY);
let refreshTimer = null;

// ---------------------------------------------------------------------------------------
// Helpers

/** An element with attributes and children; strings become text nodes (never HTML). */
function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs = {}, text) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) element.setAttribute(name, value);
  if (text !== undefined) element.textContent = text;
  return element;
}

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json", ...(options.headers || {}) },
  });
  if (response.status === 401) throw new Unauthorized("The key was refused.");
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body?.error?.message || `HTTP ${response.status}`);
  return body;
}

const number = (n, digits = 0) =>
  n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
const ms = (n) => (n === null || n === undefined ? "–" : n >= 1000 ? `${number(n / 1000, 2)} s` : `${number(n, n < 10 ? 1 : 0)} ms`);
const usd = (n) => (n === null || n === undefined ? "–" : `$${Number(n).toFixed(n < 1 ? 4 : 2)}`);
const percent = (n) => `${number(n * 100, 1)} %`;
const time = (t) => new Date(t).toLocaleTimeString();
const statusClass = (status) => (status >= 500 ? "bad" : status >= 400 ? "warn" : "ok");

function card(label, value, id) {
  return h("div", { class: "card" }, h("div", { class: "label" }, label), h("div", { class: "value", id }, value));
}

function table(columns, rows, id) {
  return h(
    "table",
    { id },
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c[0])))),
    h("tbody", {}, rows.map((row) => h("tr", {}, columns.map((c) => h("td", c[2] || {}, c[1](row)))))),
  );
}

/** A time-series chart: one polyline per series over `points` ({t_ms, ...}). */
function chart(points, series, id) {
  const width = 1000;
  const height = 180;
  const pad = 28;
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", id });
  const max = Math.max(1, ...points.flatMap((p) => series.map((serie) => serie.value(p) || 0)));
  const x = (i) => pad + (i * (width - 2 * pad)) / Math.max(1, points.length - 1);
  const y = (v) => height - pad - ((v || 0) * (height - 2 * pad)) / max;
  svg.append(s("line", { x1: pad, y1: height - pad, x2: width - pad, y2: height - pad, stroke: "#2a333d" }));
  svg.append(s("text", { x: 2, y: pad }, number(max, max < 10 ? 1 : 0)));
  svg.append(s("text", { x: 2, y: height - pad }, "0"));
  if (points.length) {
    svg.append(s("text", { x: pad, y: height - 8 }, time(points[0].t_ms)));
    svg.append(s("text", { x: width - pad - 50, y: height - 8 }, time(points[points.length - 1].t_ms)));
  }
  for (const serie of series) {
    const path = points.map((p, i) => `${x(i)},${y(serie.value(p))}`).join(" ");
    svg.append(s("polyline", { points: path, fill: "none", stroke: serie.color, "stroke-width": 2, "data-series": serie.name }));
  }
  return h("div", {}, svg, h("div", { class: "legend" }, series.map((serie) => h("span", {}, h("i", { style: `background:${serie.color}` }), serie.name))));
}

/** Horizontal bars, largest first. */
function bars(rows, label, value, format, id) {
  const max = Math.max(1e-12, ...rows.map(value));
  return h(
    "div",
    { id },
    rows.map((row) =>
      h(
        "div",
        { style: "display:flex;align-items:center;gap:.6rem;margin:.25rem 0" },
        h("span", { style: "width:220px;overflow:hidden;text-overflow:ellipsis" }, label(row)),
        h("span", { style: `height:12px;background:#4aa3ff;border-radius:3px;width:${Math.max(1, (value(row) / max) * 60)}%` }),
        h("span", { class: "muted" }, format(value(row))),
      ),
    ),
  );
}

// ---------------------------------------------------------------------------------------
// The live feed

const live = {
  listeners: new Set(),
  seen: 0,
  spend: 0,
  recent: [], // timestamps of the last minute's requests
  requests: [], // the last 20 request events, newest first
  controller: null,
};

function onLive(listener) {
  live.listeners.add(listener);
  return () => live.listeners.delete(listener);
}

async function connectLive() {
  live.controller?.abort();
  const controller = new AbortController();
  live.controller = controller;
  const status = document.getElementById("live-status");
  try {
    const response = await fetch("/api/v1/events", { headers: { authorization: `Bearer ${key}` }, signal: controller.signal });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    status.textContent = "live";
    status.classList.add("on");
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block.split("\n").find((line) => line.startsWith("data: "));
        if (!data) continue;
        const event = JSON.parse(data.slice(6));
        if (event.type === "request") {
          live.seen += 1;
          live.spend += event.data.cost_usd || 0;
          live.recent.push(event.time_ms);
          live.requests.unshift(event);
          live.requests.length = Math.min(live.requests.length, 20);
        }
        for (const listener of live.listeners) listener(event);
      }
    }
  } catch (error) {
    if (controller.signal.aborted) return;
  }
  status.textContent = "reconnecting…";
  status.classList.remove("on");
  setTimeout(() => key && live.controller === controller && connectLive(), 2000);
}

// The header's health badge: the level and score, from the API at sign-in and every 15 s,
// and from `health` events as levels change.
function paintHealth(level, score) {
  const badge = document.getElementById("health");
  badge.textContent = `${level} ${Math.round(score)}`;
  badge.className = `health ${level.toLowerCase()}`;
}

async function refreshHealth() {
  const health = await api("/api/v1/health");
  paintHealth(health.level, health.score);
  return health;
}

let healthTimer;
onLive((event) => {
  if (event.type === "health") paintHealth(event.data.to, event.data.score);
});

function liveRps() {
  const now = Date.now();
  live.recent = live.recent.filter((t) => now - t < 10_000);
  return live.recent.length / 10;
}

// ---------------------------------------------------------------------------------------
// Views

const views = {
  async overview(view) {
    const [summary, series] = await Promise.all([
      api("/api/v1/analytics/summary?from=1h"),
      api("/api/v1/analytics/timeseries?from=1h&step=1m"),
    ]);
    const stats = summary.stats;
    const feed = h("tbody", { id: "live-requests" });
    view.replaceChildren(
      h("div", { class: "cards" },
        card("Live requests/s (10 s)", number(liveRps(), 1), "kpi-rps"),
        card("Requests seen live", number(live.seen), "kpi-live"),
        card("Requests, last hour", number(stats.requests), "kpi-requests"),
        card("Error rate", percent(stats.error_rate), "kpi-errors"),
        card("p50 latency", ms(stats.latency_ms?.p50), "kpi-p50"),
        card("p95 latency", ms(stats.latency_ms?.p95), "kpi-p95"),
        card("p99 latency", ms(stats.latency_ms?.p99), "kpi-p99"),
        card("Spend, last hour", usd(stats.cost_usd), "kpi-spend"),
      ),
      h("h2", {}, "Requests and errors per minute"),
      chart(series.points, [
        { name: "requests", color: "#4aa3ff", value: (p) => p.requests },
        { name: "errors", color: "#f85149", value: (p) => p.errors },
      ], "chart-requests"),
      h("h2", {}, "p95 latency per minute (ms)"),
      chart(series.points, [{ name: "p95", color: "#d29922", value: (p) => p.latency_ms?.p95 }], "chart-latency"),
      h("h2", {}, "Live requests"),
      h("table", {}, h("thead", {}, h("tr", {}, ["time", "model", "deployment", "status", "latency", "tokens", "cost"].map((c) => h("th", {}, c)))), feed),
    );
    const tick = setInterval(() => {
      const rps = document.getElementById("kpi-rps");
      if (!rps) return clearInterval(tick);
      rps.textContent = number(liveRps(), 1);
    }, 1000);
    const requestRow = (event) => {
      const row = event.data;
      return h("tr", {},
        h("td", {}, time(event.time_ms)),
        h("td", {}, row.model || "–"),
        h("td", {}, row.deployment || "–"),
        h("td", { class: statusClass(row.status) }, row.status),
        h("td", {}, ms(row.latency_ms)),
        h("td", {}, number((row.prompt_tokens || 0) + (row.completion_tokens || 0))),
        h("td", {}, usd(row.cost_usd)),
      );
    };
    feed.append(...live.requests.map(requestRow));
    const off = onLive((event) => {
      if (!document.body.contains(feed)) return off();
      if (event.type !== "request") return;
      document.getElementById("kpi-live").textContent = number(live.seen);
      feed.prepend(requestRow(event));
      while (feed.children.length > 20) feed.lastChild.remove();
    });
    return 15_000;
  },

  async providers(view) {
    const [providers, deployments, metrics] = await Promise.all([
      api("/api/v1/providers"),
      api("/api/v1/analytics/breakdown?by=deployment&from=1h"),
      fetch("/metrics").then((r) => r.text()),
    ]);
    const states = {};
    for (const match of metrics.matchAll(/^atalaya_circuit_state\{breaker="([^"]+)"\} (\d+)/gm)) {
      states[match[1]] = ["closed", "half-open", "open"][Number(match[2])] || "?";
    }
    const stateClass = (state) => (state === "open" ? "bad" : state === "half-open" ? "warn" : "ok");
    const transitions = h("tbody", { id: "breaker-events" });
    view.replaceChildren(
      h("h2", {}, "Providers"),
      table([
        ["name", (p) => p.name],
        ["type", (p) => p.type],
        ["source", (p) => p.source],
        ["models", (p) => (p.models || []).join(", ") || "any", { class: "wrap" }],
      ], providers.data, "providers"),
      h("h2", {}, "Deployments and breakers (last hour)"),
      table([
        ["deployment", (d) => d.name],
        ["breaker", (d) => h("span", { class: `badge ${stateClass(d.state)}` }, d.state)],
        ["requests", (d) => number(d.stats?.requests)],
        ["error rate", (d) => (d.stats ? percent(d.stats.error_rate) : "–")],
        ["p95", (d) => ms(d.stats?.latency_ms?.p95)],
        ["spend", (d) => usd(d.stats?.cost_usd)],
      ], Object.keys({ ...states, ...Object.fromEntries(deployments.data.filter((g) => g.value).map((g) => [g.value, 1])) })
        .sort()
        .map((name) => ({ name, state: states[name] || "closed", stats: deployments.data.find((g) => g.value === name) })), "deployments"),
      h("h2", {}, "Breaker transitions (live)"),
      h("table", {}, h("thead", {}, h("tr", {}, ["time", "breaker", "from", "to", "reason"].map((c) => h("th", {}, c)))), transitions),
    );
    const off = onLive((event) => {
      if (!document.body.contains(transitions)) return off();
      if (event.type !== "breaker") return;
      const b = event.data;
      transitions.prepend(h("tr", {}, h("td", {}, time(event.time_ms)), h("td", {}, b.breaker), h("td", {}, b.from), h("td", { class: stateClass(b.to.replace("_", "-")) }, b.to), h("td", { class: "wrap" }, b.reason)));
    });
    return 15_000;
  },

  async keys(view) {
    const [keys, spend] = await Promise.all([
      api("/api/v1/keys"),
      api("/api/v1/analytics/breakdown?by=key&from=30d"),
    ]);
    const byKey = Object.fromEntries(spend.data.map((g) => [g.value, g]));
    const rows = keys.data.map((k) => ({ ...k, stats: byKey[k.id] }));
    const spenders = rows.filter((r) => r.stats).sort((a, b) => b.stats.cost_usd - a.stats.cost_usd).slice(0, 15);
    view.replaceChildren(
      h("h2", {}, "Spend per key, last 30 days"),
      spenders.length ? bars(spenders, (r) => r.name || r.id, (r) => r.stats.cost_usd, usd, "spend-bars") : h("p", { class: "muted" }, "No priced traffic yet."),
      h("h2", {}, "Keys"),
      table([
        ["name", (k) => k.name],
        ["id", (k) => k.id],
        ["role", (k) => k.role],
        ["team", (k) => k.team || "–"],
        ["requests (30 d)", (k) => number(k.stats?.requests || 0)],
        ["spend (30 d)", (k) => usd(k.stats?.cost_usd || 0)],
        ["budget", (k) => (k.budget_usd ? `${usd(k.budget_usd)} / ${k.budget_period || ""}` : "–")],
        ["limits", (k) => [k.rpm_limit && `${k.rpm_limit} rpm`, k.tpm_limit && `${k.tpm_limit} tpm`].filter(Boolean).join(", ") || "–"],
        ["state", (k) => (k.revoked_at_ms ? h("span", { class: "bad" }, "revoked") : "active")],
      ], rows, "keys"),
    );
    return 30_000;
  },

  async logs(view) {
    const form = h("form", { class: "filters", id: "log-filters" },
      ...[["status", "status (code or failed)"], ["model", "model"], ["key", "key id"], ["team", "team"], ["provider", "provider"], ["request_id", "request id"], ["from", "from (e.g. 1h)"]].map(([name, label]) =>
        h("label", {}, label, h("input", { name, size: 12 }))),
      h("button", { type: "submit" }, "Filter"),
    );
    const body = h("tbody", { id: "log-rows" });
    const more = h("button", { type: "button", id: "log-more", hidden: true }, "Load more");
    let next = null;
    const load = async (append) => {
      const params = new URLSearchParams();
      for (const [name, value] of new FormData(form)) if (String(value).trim()) params.set(name, String(value).trim());
      params.set("limit", "50");
      if (append && next) params.set("before", next);
      const page = await api(`/api/v1/logs?${params}`);
      if (!append) body.replaceChildren();
      for (const row of page.data) {
        body.append(h("tr", {},
          h("td", {}, new Date(row.created_at_ms).toLocaleString()),
          h("td", {}, row.model || "–"),
          h("td", {}, row.deployment || "–"),
          h("td", {}, row.key_id || "–"),
          h("td", { class: statusClass(row.status) }, row.status),
          h("td", {}, ms(row.latency_ms)),
          h("td", {}, number((row.prompt_tokens || 0) + (row.completion_tokens || 0))),
          h("td", {}, usd(row.cost_usd)),
          h("td", { class: "wrap error" }, row.error || ""),
        ));
      }
      next = page.next_before;
      more.hidden = !next;
      form.dataset.loaded = String(Date.now());
    };
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      load(false).catch(showError);
    });
    more.addEventListener("click", () => load(true).catch(showError));
    view.replaceChildren(
      h("h2", {}, "Request log"),
      form,
      h("table", {}, h("thead", {}, h("tr", {}, ["time", "model", "deployment", "key", "status", "latency", "tokens", "cost", "error"].map((c) => h("th", {}, c)))), body),
      more,
    );
    await load(false);
    return null;
  },

  async errors(view) {
    const [errors, alerts] = await Promise.all([api("/api/v1/errors?status=all&limit=100"), api("/api/v1/alerts?limit=50")]);
    const severityClass = { critical: "bad", high: "bad", medium: "warn", low: "muted", warning: "warn", info: "muted" };
    const resolve = async (group, button) => {
      button.disabled = true;
      try {
        await api(`/api/v1/errors/${group.fingerprint}/${group.resolved ? "reopen" : "resolve"}`, { method: "POST" });
        await render();
      } catch (error) {
        showError(error);
        button.disabled = false;
      }
    };
    view.replaceChildren(
      h("h2", {}, "Errors"),
      errors.data.length
        ? table([
            ["severity", (g) => h("span", { class: `badge ${severityClass[g.severity] || ""}` }, g.severity)],
            ["component", (g) => g.component],
            ["code", (g) => g.code || "–"],
            ["message", (g) => g.message, { class: "wrap" }],
            ["where", (g) => (g.file ? `${g.file}:${g.line}` : g.module || "–")],
            ["count", (g) => number(g.count)],
            ["last seen", (g) => new Date(g.last_seen_ms).toLocaleString()],
            ["", (g) => { const b = h("button", { type: "button", "data-fingerprint": g.fingerprint }, g.resolved ? "Reopen" : "Resolve"); b.addEventListener("click", () => resolve(g, b)); return b; }],
          ], errors.data, "errors")
        : h("p", { class: "muted" }, "No errors tracked."),
      h("h2", {}, "Alerts"),
      alerts.data.length
        ? table([
            ["time", (a) => new Date(a.time_ms).toLocaleString()],
            ["state", (a) => h("span", { class: a.state === "firing" ? "bad" : "ok" }, a.state)],
            ["severity", (a) => h("span", { class: `badge ${severityClass[a.severity] || ""}` }, a.severity)],
            ["rule", (a) => a.rule],
            ["summary", (a) => a.summary, { class: "wrap" }],
            ["sent to", (a) => (a.channels || []).join(", ") || a.suppressed || "–"],
          ], alerts.data, "alerts")
        : h("p", { class: "muted" }, "No alerts."),
    );
    return 15_000;
  },

  async compare(view) {
    const models = await api("/api/v1/models");
    const boxes = models.data.map((m) => h("label", {}, h("input", { type: "checkbox", name: "model", value: m.id }), ` ${m.id}`));
    const results = h("div", { class: "compare", id: "compare-results" });
    const run = h("button", { type: "submit", id: "compare-run" }, "Run");
    const form = h("form", { id: "compare-form" },
      h("h2", {}, "Models"),
      h("div", { class: "models" }, boxes),
      h("h2", {}, "Prompt"),
      h("textarea", { name: "prompt", rows: 4, style: "width:100%", required: true }),
      h("p", {}, run),
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const data = new FormData(form);
      const chosen = data.getAll("model");
      if (!chosen.length) return showError(new Error("Choose at least one model."));
      run.disabled = true;
      results.replaceChildren(h("p", { class: "muted" }, "Running…"));
      try {
        const answer = await api("/api/v1/compare", { method: "POST", body: JSON.stringify({ models: chosen, prompt: data.get("prompt") }) });
        results.replaceChildren(...answer.results.map((r) =>
          h("div", { class: "card compare-result" },
            h("strong", {}, r.model), " ", h("span", { class: statusClass(r.status) }, r.status),
            h("div", { class: "muted" }, `${ms(r.latency_ms)} · ${number(r.usage?.total_tokens || 0)} tokens · ${usd(r.cost_usd)}${r.deployment ? ` · ${r.deployment}` : ""}`),
            r.error ? h("p", { class: "error" }, r.error.message) : h("pre", {}, r.content),
          )));
      } catch (error) {
        results.replaceChildren();
        showError(error);
      } finally {
        run.disabled = false;
      }
    });
    view.replaceChildren(form, results);
    return null;
  },
};

// ---------------------------------------------------------------------------------------
// Routing and sign-in

function showError(error) {
  if (error instanceof Unauthorized) return signOut(error.message);
  const view = document.getElementById("view");
  view.prepend(h("p", { class: "error", role: "alert" }, error.message));
}

async function render() {
  clearTimeout(refreshTimer);
  const name = (location.hash.replace("#/", "") || "overview").split("?")[0];
  const show = views[name] ? name : "overview";
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.view === show);
  const view = document.getElementById("view");
  try {
    const every = await views[show](view);
    view.dataset.view = show;
    if (every) refreshTimer = setTimeout(() => location.hash.replace("#/", "").split("?")[0] === name && render(), every);
  } catch (error) {
    showError(error);
  }
}

function signOut(message) {
  sessionStorage.removeItem(KEY);
  key = null;
  clearInterval(healthTimer);
  live.controller?.abort();
  document.getElementById("app").hidden = true;
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = message || "";
}

async function signIn(candidate) {
  key = candidate;
  // The health report is never switched off, so sign-in works at any health level.
  await refreshHealth();
  clearInterval(healthTimer);
  healthTimer = setInterval(() => key && refreshHealth().catch(() => {}), 15_000);
  sessionStorage.setItem(KEY, key);
  document.getElementById("login").hidden = true;
  document.getElementById("app").hidden = false;
  connectLive();
  await render();
}

document.getElementById("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    await signIn(document.getElementById("login-key").value.trim());
  } catch (error) {
    signOut(error instanceof Unauthorized ? "That key was refused." : error.message);
  }
});
document.getElementById("logout").addEventListener("click", () => signOut());
window.addEventListener("hashchange", render);

if (key) signIn(key).catch((error) => signOut(error.message));
else signOut();
