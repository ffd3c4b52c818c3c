/* tidings dashboard: login, live overview, events + explain, dead letters, subscribers, test events.
 * Every value from the server is put into the page as text (never as HTML): event data is untrusted.
 */
"use strict";

(function () {
  const KEY = "tidings.apiKey";
  const SPAN = 120; // seconds shown on the charts
  const $ = (sel) => document.querySelector(sel);
  const state = { series: [], lastT: null, seenEvents: new Set(), timers: [], view: null, explained: null };

  /* --- tiny DOM builder: text only, never innerHTML ------------------------------------------ */
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "class") node.className = v;
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const child of children.flat(Infinity)) {
      if (child == null || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }
  const tag = (text, kind) => h("span", { class: `status-tag st-${kind || text}` }, text);

  /* --- formatting ------------------------------------------------------------------------------ */
  function seconds(value) {
    if (value == null) return "–";
    if (value === 0) return "0";
    if (value < 0.001) return `${(value * 1e6).toFixed(0)} µs`;
    if (value < 1) return `${(value * 1000).toFixed(value < 0.01 ? 1 : 0)} ms`;
    return `${value.toFixed(2)} s`;
  }
  const rate = (v) => (v == null ? "–" : v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));
  function clock(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    return d.toLocaleTimeString([], { hour12: false });
  }
  function duration(s) {
    if (s < 60) return `${Math.floor(s)}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m`;
    return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  }
  function toast(text) {
    const box = $("#toast");
    box.textContent = text;
    box.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { box.hidden = true; }, 3500);
  }

  /* --- the API ---------------------------------------------------------------------------------- */
  class Unauthorized extends Error {}
  async function api(path, options) {
    const key = sessionStorage.getItem(KEY);
    const init = Object.assign({ headers: {} }, options || {});
    init.headers = Object.assign({ Authorization: `Bearer ${key}` }, init.headers);
    const response = await fetch(path, init);
    if (response.status === 401) throw new Unauthorized("the API key was refused");
    const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
    if (!response.ok) {
      const error = new Error((body && (body.detail || body.title)) || `HTTP ${response.status}`);
      error.status = response.status;
      throw error;
    }
    return body;
  }
  function failed(error) {
    if (error instanceof Unauthorized) { logout("Your API key was refused; sign in again."); return; }
    $("#live-dot").className = "dot down";
    console.warn(error);
  }

  /* --- login ------------------------------------------------------------------------------------ */
  async function login(event) {
    event.preventDefault();
    const key = $("#api-key").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY, key);
    try {
      await api("/v1/admin/overview");
    } catch (error) {
      sessionStorage.removeItem(KEY);
      $("#login-error").textContent = error instanceof Unauthorized
        ? "That API key was refused." : `Could not sign in: ${error.message}`;
      return;
    }
    $("#api-key").value = "";
    start();
  }
  function logout(message) {
    sessionStorage.removeItem(KEY);
    stopPolling();
    $("#app").hidden = true;
    $("#login").hidden = false;
    $("#login-error").textContent = message || "";
    $("#api-key").focus();
  }

  /* --- views and polling ------------------------------------------------------------------------ */
  function every(ms, fn) {
    fn();
    state.timers.push(setInterval(fn, ms));
  }
  function stopPolling() {
    state.timers.forEach(clearInterval);
    state.timers = [];
  }
  function start() {
    $("#login").hidden = true;
    $("#app").hidden = false;
    route();
  }
  function route() {
    if (!sessionStorage.getItem(KEY)) { logout(); return; }
    const [view, arg] = (location.hash.slice(1) || "overview").split("/");
    const name = view === "explain" ? "events" : view;
    if (!document.getElementById(`view-${name}`)) { location.hash = "#overview"; return; }
    for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== `view-${name}`;
    for (const link of document.querySelectorAll("#tabs a")) link.classList.toggle("active", link.dataset.view === name);
    stopPolling();
    state.view = name;
    // the overview polls even off-screen so the DLQ badge and the live dot stay current
    every(1000, pollOverview);
    if (name === "overview") every(10000, pollAvailability);
    if (name === "overview" || name === "events") every(1000, pollEvents);
    if (name === "dlq") every(2000, pollDeadLetters);
    if (name === "send") renderSendPreview();
    if (view === "explain" && arg) explain(decodeURIComponent(arg));
    if (name === "subscribers" && arg) lookup(decodeURIComponent(arg));
  }

  /* --- overview --------------------------------------------------------------------------------- */
  async function pollOverview() {
    let data;
    try {
      data = await api(`/v1/admin/overview${state.lastT ? `?since=${state.lastT}` : ""}`);
    } catch (error) { failed(error); return; }
    $("#live-dot").className = "dot live";
    $("#server-info").textContent = `v${data.version} · role ${data.role} · up ${duration(data.uptime)}`;
    for (const point of data.series) state.series.push(point);
    if (data.series.length) state.lastT = data.series[data.series.length - 1].t;
    state.series = state.series.filter((p) => p.t > data.now - SPAN - 5);
    const badge = $("#dlq-badge");
    badge.hidden = !data.dead_letters;
    badge.textContent = data.dead_letters;
    if (state.view !== "overview") return;
    renderKpis(data);
    renderCharts(data.now);
    renderDeliveries(data.deliveries);
    renderQueues(data.queues);
    renderBacklog(data.backlog);
    renderProviders(data.providers);
    renderConsole(data.console);
  }

  function recent(field, seconds) {
    const points = state.series.slice(-seconds);
    if (!points.length) return null;
    return points.reduce((sum, p) => sum + p[field], 0) / points.length;
  }
  function renderKpis(data) {
    $("#kpi-events").textContent = rate(recent("events", 5));
    $("#kpi-delivered").textContent = rate(recent("delivered", 5));
    const last = state.series.slice(-10).map((p) => p.latency.total.p95).filter((v) => v != null);
    $("#kpi-latency").textContent = last.length ? seconds(Math.max(...last)) : "–";
    $("#kpi-queue").textContent = Object.values(data.queues).reduce((a, b) => a + b, 0);
    $("#kpi-dead").textContent = data.dead_letters;
  }

  const THROUGHPUT = [
    { name: "events", label: "events accepted", color: "#3b5bdb", fill: true },
    { name: "delivered", label: "deliveries sent", color: "#2b8a3e" },
    { name: "failed", label: "failed / dead", color: "#c92a2a" },
    { name: "retried", label: "retried", color: "#e67700" },
  ];
  const LATENCY = [
    { stage: "produce", label: "Tp accept → decided", color: "#7048e8" },
    { stage: "queue", label: "Tc queue wait", color: "#f08c00" },
    { stage: "deliver", label: "Td provider call", color: "#1098ad" },
    { stage: "total", label: "total", color: "#868e96" },
  ];
  function renderCharts(now) {
    const tp = $("#chart-throughput");
    const series = THROUGHPUT.map((s) => ({ ...s, points: state.series.map((p) => [p.t, p[s.name]]) }));
    TidingsCharts.line(tp, series, { span: SPAN, end: now, format: (v) => rate(v) });
    TidingsCharts.legend(tp.parentElement, series);
    const lat = $("#chart-latency");
    const lines = LATENCY.map((s) => ({ ...s, name: s.stage,
      points: state.series.map((p) => [p.t, p.latency[s.stage].p95]) }));
    TidingsCharts.line(lat, lines, { span: SPAN, end: now, format: seconds });
    TidingsCharts.legend(lat.parentElement, lines);
  }

  const OK = new Set(["sent", "delivered"]);
  const WAIT = new Set(["pending", "sending", "scheduled"]);
  const BAD = new Set(["failed", "dead", "expired"]);
  function renderDeliveries(rows) {
    const byChannel = {};
    for (const r of rows) (byChannel[r.channel] ||= {})[r.status] = r.count;
    const statuses = [...new Set(rows.map((r) => r.status))].sort();
    const box = $("#deliveries-table");
    if (!rows.length) { box.replaceChildren(h("p", { class: "muted" }, "No deliveries yet.")); return; }
    const table = h("table", { class: "table" },
      h("thead", {}, h("tr", {}, h("th", {}, "channel"), statuses.map((s) => h("th", { class: "num" }, tag(s))), h("th", {}, ""))),
      h("tbody", {}, Object.keys(byChannel).sort().map((channel) => {
        const counts = byChannel[channel];
        const total = Object.values(counts).reduce((a, b) => a + b, 0);
        const part = (set, cls) => {
          const n = Object.entries(counts).filter(([s]) => set.has(s)).reduce((a, [, c]) => a + c, 0);
          const span = h("span", { class: cls });
          span.style.width = `${(100 * n) / total}%`;
          return span;
        };
        const grey = new Set(statuses.filter((s) => !OK.has(s) && !WAIT.has(s) && !BAD.has(s)));
        return h("tr", { "data-channel": channel }, h("td", {}, h("b", {}, channel)),
          statuses.map((s) => h("td", { class: "num" }, counts[s] || "·")),
          h("td", {}, h("div", { class: "stack" }, part(OK, "ok"), part(WAIT, "wait"), part(BAD, "bad"), part(grey, "grey"))));
      })));
    box.replaceChildren(table);
  }
  function renderQueues(queues) {
    const max = Math.max(10, ...Object.values(queues));
    $("#queues").replaceChildren(h("div", { class: "bars" }, ["high", "normal", "low"].map((lane) => {
      const fill = h("span");
      fill.style.width = `${(100 * (queues[lane] || 0)) / max}%`;
      return h("div", { class: "bar-row", "data-lane": lane }, h("span", {}, lane), h("div", { class: "bar" }, fill),
        h("span", { class: "num" }, queues[lane] || 0));
    })));
  }
  function renderBacklog(backlog) {
    if (!backlog) { $("#backlog").replaceChildren(h("p", { class: "muted" }, "Not measured by this process.")); return; }
    const fill = h("span");
    fill.style.width = `${Math.min(100, (100 * backlog.events) / backlog.limit)}%`;
    $("#backlog").replaceChildren(h("div", { class: "bars" },
      h("div", { class: "bar-row", "data-backlog": "events" }, h("span", {}, "events"), h("div", { class: "bar" }, fill),
        h("span", { class: "num" }, backlog.events)),
      h("p", { class: "muted small", "data-backlog": "age" },
        `oldest waiting ${seconds(backlog.age_seconds)} · 503 at ${backlog.limit}`)));
  }
  function renderProviders(providers) {
    $("#providers").replaceChildren(h("div", { class: "providers" }, providers.map((p) =>
      h("div", { class: "provider", "data-provider": p.name },
        h("span", {}, h("span", { class: "name" }, p.name), " ", h("span", { class: "muted" }, `${p.kind} · ${p.channels.join(", ")}`)),
        h("span", {}, p.failures ? h("span", { class: "muted small" }, `${p.failures} failures `) : null,
          tag(p.state === "closed" ? "up" : p.state.replace("_", "-"), p.state))))));
  }
  /* availability (SPEC §13): the service, each channel and each provider over 1 h / 24 h / 7 d */
  async function pollAvailability() {
    let data;
    try { data = await api("/v1/availability"); } catch (error) { failed(error); return; }
    if (state.view === "overview") renderAvailability(data);
  }
  function percent(value) {
    return value === null ? "–" : `${(100 * value).toFixed(value === 1 ? 0 : 3)}%`;
  }
  function availabilityCell(w) {
    const title = w.failures
      ? `${w.failures} failures · MTBF ${duration(w.mtbf_seconds)} · MTTR ${duration(w.mttr_seconds)}`
      : "no failure in this window";
    return h("td", { class: "num", title },
      h("span", { class: w.failures ? "bad-text" : "" }, percent(w.availability)),
      w.failures ? h("div", { class: "muted small" }, `MTBF ${duration(w.mtbf_seconds)} · MTTR ${duration(w.mttr_seconds)}`) : null);
  }
  function renderAvailability(data) {
    const rows = [
      ["service", "", data.service],
      ...data.channels.map((c) => ["channel", c.channel, c]),
      ...data.providers.map((p) => ["provider", `${p.provider} (${p.channel})`, p]),
    ];
    $("#availability").replaceChildren(h("table", { class: "table" },
      h("thead", {}, h("tr", {}, h("th", {}, ""), h("th", {}, ""), data.windows.map((w) => h("th", { class: "num" }, w)))),
      h("tbody", {}, rows.map(([kind, name, entry]) => h("tr", { "data-availability": `${kind}:${name}` },
        h("td", { class: "muted" }, kind), h("td", {}, h("b", {}, name)),
        data.windows.map((w) => availabilityCell(entry.windows[w])))))));
  }
  function renderConsole(items) {
    const box = $("#console-list");
    if (!items.length) { box.replaceChildren(h("p", { class: "muted" }, "Nothing went through the console provider yet.")); return; }
    box.replaceChildren(h("table", { class: "table" },
      h("thead", {}, h("tr", {}, h("th", {}, "channel"), h("th", {}, "to"), h("th", {}, "subscriber"), h("th", {}, "title"), h("th", {}, "body"))),
      h("tbody", {}, items.map((m) => h("tr", {}, h("td", {}, m.channel), h("td", {}, m.destination),
        h("td", { class: "mono" }, m.subscriber_id), h("td", {}, m.title), h("td", { class: "muted" }, m.body))))));
  }

  /* --- events ----------------------------------------------------------------------------------- */
  function outcomeTags(outcomes) {
    const entries = Object.entries(outcomes);
    if (!entries.length) return h("span", { class: "muted small" }, "no rule matched");
    return entries.map(([o, n]) => [tag(n > 1 ? `${o} ×${n}` : o, o), " "]);
  }
  async function pollEvents() {
    let data;
    try { data = await api("/v1/admin/events/recent?limit=25"); } catch (error) { failed(error); return; }
    const first = state.seenEvents.size === 0;
    const fresh = (e) => !first && !state.seenEvents.has(e.pk);
    if (state.view === "overview") {
      $("#live-events").replaceChildren(...(data.items.length ? data.items.map((e) =>
        h("li", { class: fresh(e) ? "new" : null, "data-event-id": e.id, title: "explain this event",
                  onclick: () => { location.hash = `#explain/${encodeURIComponent(e.pk)}`; } },
          h("span", { class: "muted small" }, clock(e.received_at)),
          h("span", {}, h("span", { class: "type" }, e.type), " ", h("span", { class: "sub" }, e.subject || e.id)),
          h("span", {}, e.processed_at ? outcomeTags(e.outcomes) : tag("pending")))) :
        [h("li", { class: "muted" }, "No events yet — send one from “Send test event”.")]));
    }
    if (state.view === "events") {
      $("#events-table tbody").replaceChildren(...data.items.map((e) =>
        h("tr", { class: `clickable${state.explained === e.pk ? " selected" : ""}`, "data-event-id": e.id,
                  onclick: () => { location.hash = `#explain/${encodeURIComponent(e.pk)}`; } },
          h("td", { class: "nowrap" }, clock(e.received_at)), h("td", { class: "nowrap" }, h("b", {}, e.type)),
          h("td", { class: "mono", title: e.id }, e.id.length > 18 ? `${e.id.slice(0, 16)}…` : e.id),
          h("td", { class: "mono" }, e.subject || "–"),
          h("td", {}, e.processed_at ? outcomeTags(e.outcomes) : tag("pending")))));
    }
    for (const e of data.items) state.seenEvents.add(e.pk);
  }

  async function explain(id) {
    const box = $("#explain");
    box.replaceChildren(h("h2", {}, "Explain"), h("p", { class: "muted" }, "Loading…"));
    let data;
    try { data = await api(`/v1/admin/events/${encodeURIComponent(id)}/explain`); } catch (error) {
      if (error instanceof Unauthorized) { failed(error); return; }
      box.replaceChildren(h("h2", {}, "Explain"), h("p", { class: "error" }, error.message));
      return;
    }
    state.explained = data.pk;
    const ev = data.event;
    const notes = Object.fromEntries(data.notifications.map((n) => [n.id, n]));
    box.replaceChildren(
      h("h2", {}, "Explain ", h("span", { class: "mono" }, ev.type), " ",
        h("button", { class: "ghost small", onclick: () => explain(data.pk) }, "refresh")),
      h("dl", { class: "kv" },
        h("dt", {}, "id"), h("dd", { class: "mono", id: "explain-id" }, ev.id),
        h("dt", {}, "source"), h("dd", { class: "mono" }, ev.source),
        h("dt", {}, "subject"), h("dd", { class: "mono" }, ev.subject || "–"),
        h("dt", {}, "received"), h("dd", {}, data.received_at || "–"),
        h("dt", {}, "processed"), h("dd", {}, data.processed_at || "not yet")),
      h("h3", {}, `Decisions (${data.decisions.length})`),
      h("div", { class: "tree", id: "decisions" }, data.decisions.length ? data.decisions.map((d) =>
        h("div", { class: `decision o-${d.outcome}`, "data-rule": d.rule, "data-outcome": d.outcome },
          h("div", { class: "head" }, h("b", {}, d.rule || "no rule"), "→", h("span", { class: "mono" }, d.recipient || "–"), tag(d.outcome)),
          h("p", { class: "reason" }, d.reason, d.until ? h("span", { class: "muted" }, ` (until ${d.until})`) : null),
          d.notification_ids.map((nid) => notes[nid] ? renderNote(notes[nid]) : h("p", { class: "muted note" }, `notification ${nid}`)))) :
        h("p", { class: "muted" }, data.processed_at ? "No rule matched this event." : "Not processed yet.")),
      h("details", {}, h("summary", { class: "muted" }, "event data"), h("pre", { class: "code" }, JSON.stringify(ev, null, 2))));
  }
  function renderNote(n) {
    return h("div", { class: "note", "data-notification": n.id },
      h("div", {}, h("span", { class: "title" }, n.title || "(no title)"), " ", tag(n.status), " ",
        h("span", { class: "muted small" }, `${n.category} · ${n.priority} · ${n.locale}`)),
      n.body ? h("div", { class: "muted small" }, n.body) : null,
      n.deliveries.map((d) => h("div", { class: "delivery", "data-channel": d.channel },
        h("div", { class: "line" }, h("b", {}, d.channel), h("span", { class: "muted" }, d.destination),
          d.provider ? h("span", { class: "muted" }, `via ${d.provider}`) : null, tag(d.status),
          d.fallback ? tag("fallback", "pending") : null,
          h("span", { class: "lat" }, `Tp ${seconds(d.latency.tp)} · Tc ${seconds(d.latency.tc)} · Td ${seconds(d.latency.td)}`)),
        d.last_error ? h("div", { class: "error small" }, d.last_error) : null,
        h("ul", { class: "attempts" }, (d.attempt_log || []).map((a) =>
          h("li", {}, `#${a.number} ${a.provider} ${clock(a.started_at)} → ${a.outcome}`, a.error ? ` — ${a.error}` : ""))))));
  }

  /* --- dead letters ----------------------------------------------------------------------------- */
  async function pollDeadLetters() {
    let data;
    try { data = await api("/v1/admin/dead-letters?limit=100"); } catch (error) { failed(error); return; }
    $("#dlq-empty").hidden = data.items.length > 0;
    $("#dlq-table").hidden = !data.items.length;
    $("#dlq-table tbody").replaceChildren(...data.items.map((d) => h("tr", { "data-dead-letter": d.id },
      h("td", {}, clock(d.created_at)), h("td", {}, d.channel), h("td", {}, d.provider || "–"),
      h("td", {}, d.event_pk ? h("a", { href: `#explain/${encodeURIComponent(d.event_pk)}` }, d.event_type || "event") : "–"),
      h("td", { class: "mono" }, d.subscriber_id || "–"), h("td", { class: "num" }, d.attempts ?? "–"),
      h("td", { class: "error small" }, d.reason),
      h("td", {}, h("button", { class: "small replay", onclick: (e) => replay(d.id, e.target) }, "Replay")))));
  }
  async function replay(id, button) {
    button.disabled = true;
    try {
      await api(`/v1/dlq/${encodeURIComponent(id)}/replay`, { method: "POST" });
      toast("Replayed: the delivery is queued again with a fresh retry budget.");
    } catch (error) {
      button.disabled = false;
      if (error instanceof Unauthorized) { failed(error); return; }
      toast(error.status === 403 ? "Replaying needs an API key with the admin scope." : `Replay failed: ${error.message}`);
      return;
    }
    pollDeadLetters();
  }

  /* --- subscribers ------------------------------------------------------------------------------ */
  async function lookup(id) {
    $("#subscriber-id").value = id;
    $("#subscriber-error").textContent = "";
    let data;
    try { data = await api(`/v1/admin/subscribers/${encodeURIComponent(id)}`); } catch (error) {
      if (error instanceof Unauthorized) { failed(error); return; }
      $("#subscriber").replaceChildren();
      $("#subscriber-error").textContent = error.status === 404 ? `No subscriber “${id}”.` : error.message;
      return;
    }
    const p = data.profile;
    const prefs = data.preferences;
    $("#subscriber").replaceChildren(
      h("div", { class: "card" }, h("h2", {}, p.name || p.id, " ", h("span", { class: "muted small mono" }, p.id)),
        h("dl", { class: "kv" },
          h("dt", {}, "email"), h("dd", {}, p.email || "–"), h("dt", {}, "phone"), h("dd", {}, p.phone || "–"),
          h("dt", {}, "locale"), h("dd", {}, p.locale || "default"), h("dt", {}, "timezone"), h("dd", {}, p.timezone || "UTC"),
          h("dt", {}, "role"), h("dd", {}, p.role || "–"),
          h("dt", {}, "devices"), h("dd", {}, data.devices.length ? data.devices.map((d) => [tag(d.kind, d.active ? "up" : "dead"), " "]) : "none"),
          h("dt", {}, "webhooks"), h("dd", {}, data.webhooks.length ? data.webhooks.map((w) => [tag(w.host, w.active ? "up" : "dead"), " "]) : "none")),
        h("h3", {}, "Preferences"), renderPreferences(prefs),
        h("h3", {}, "Recent notifications"),
        data.notifications.length ? h("table", { class: "table" }, h("tbody", {}, data.notifications.map((n) =>
          h("tr", {}, h("td", {}, clock(n.created_at)), h("td", {}, n.rule), h("td", {}, n.title || ""),
            h("td", {}, n.deliveries.map((d) => [tag(`${d.channel}: ${d.status}`, d.status), " "])))))) :
          h("p", { class: "muted" }, "None yet.")),
      h("div", { class: "card", id: "inbox-preview" }, h("h2", {}, "Inbox ",
        h("span", { class: "muted small" }, `${data.inbox.unread} unread · ${data.inbox.unseen} unseen`)),
        data.inbox.items.length ? data.inbox.items.map((i) => h("div", { class: `inbox-item${i.read ? "" : " unread"}` },
          h("div", { class: "title" }, i.title), h("div", { class: "muted small" }, i.body))) :
          h("p", { class: "muted" }, "The inbox is empty.")));
  }
  function renderPreferences(prefs) {
    const lines = [];
    for (const [channel, on] of Object.entries(prefs.channels || {})) lines.push(`${channel}: ${on ? "on" : "off"}`);
    for (const [category, c] of Object.entries(prefs.categories || {})) {
      if (c.enabled === false) lines.push(`${category}: off`);
      for (const [channel, on] of Object.entries(c.channels || {})) lines.push(`${category} by ${channel}: ${on ? "on" : "off"}`);
    }
    if (prefs.quiet_hours) lines.push(`quiet hours ${prefs.quiet_hours.start}–${prefs.quiet_hours.end}`);
    if (prefs.muted_until) lines.push(`muted until ${prefs.muted_until}`);
    return lines.length ? h("ul", { class: "small" }, lines.map((l) => h("li", {}, l)))
      : h("p", { class: "muted small" }, "Defaults (everything on).");
  }

  /* --- send a test event ------------------------------------------------------------------------ */
  const SAMPLES = {
    "order.created": { order_id: "o-1001", buyer_id: "buyer-42", seller_id: "seller-7", amount: "129.00", currency: "USD",
      items: [{ sku: "TEA-01", name: "Oolong tea", qty: 2, price: "64.50" }] },
    "order.paid": { order_id: "o-1001", buyer_id: "buyer-42", seller_id: "seller-7", amount: "129.00", currency: "USD", payment_method: "card" },
    "payment.failed": { order_id: "o-1001", buyer_id: "buyer-42", reason: "card declined" },
    "order.shipped": { order_id: "o-1001", buyer_id: "buyer-42", seller_id: "seller-7", carrier: "SF Express", tracking_no: "SF123456789" },
    "order.delivered": { order_id: "o-1001", buyer_id: "buyer-42", seller_id: "seller-7" },
    "order.cancelled": { order_id: "o-1001", buyer_id: "buyer-42", seller_id: "seller-7", reason: "changed my mind" },
    "refund.requested": { order_id: "o-1001", refund_id: "r-1", buyer_id: "buyer-42", seller_id: "seller-7", amount: "64.50", currency: "USD", reason: "damaged" },
    "review.created": { order_id: "o-1001", review_id: "rv-1", buyer_id: "buyer-42", seller_id: "seller-7", rating: 5, text: "Lovely tea" },
  };
  function randomId(prefix) {
    const bytes = new Uint8Array(6);
    crypto.getRandomValues(bytes);
    return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }
  function buildEvent() {
    const data = JSON.parse($("#send-data").value || "{}");
    if ($("#send-fresh").checked && "order_id" in data) data.order_id = randomId("o-");
    return { specversion: "1.0", id: randomId("dash-"), source: "/dashboard", type: $("#send-type").value, data };
  }
  function renderSendPreview() {
    let text;
    try { text = JSON.stringify(buildEvent(), null, 2); } catch { text = "(the data is not valid JSON)"; }
    $("#send-preview").textContent = `POST /v1/events\nContent-Type: application/cloudevents+json\nAuthorization: Bearer …\n\n${text}`;
  }
  async function send(event) {
    event.preventDefault();
    let body;
    try { body = buildEvent(); } catch (error) { $("#send-result").textContent = `The data is not valid JSON: ${error.message}`; return; }
    $("#send-button").disabled = true;
    try {
      const result = await api("/v1/events", { method: "POST", body: JSON.stringify(body),
        headers: { "Content-Type": "application/cloudevents+json" } });
      const link = h("a", { href: `#explain/${encodeURIComponent(result.id)}`, id: "send-explain" }, "explain it");
      $("#send-result").replaceChildren(`Accepted ${result.id} (${result.duplicate ? "duplicate" : "new"}) — `, link);
    } catch (error) {
      if (error instanceof Unauthorized) { failed(error); return; }
      $("#send-result").textContent = error.status === 403
        ? "Sending needs an API key with the events scope." : `Refused: ${error.message}`;
    } finally {
      $("#send-button").disabled = false;
      renderSendPreview();
    }
  }

  /* --- wiring ----------------------------------------------------------------------------------- */
  document.addEventListener("DOMContentLoaded", () => {
    $("#login-form").addEventListener("submit", login);
    $("#logout").addEventListener("click", () => logout("Signed out."));
    $("#event-lookup").addEventListener("submit", (e) => {
      e.preventDefault();
      const id = $("#event-lookup-id").value.trim();
      if (id) location.hash = `#explain/${encodeURIComponent(id)}`;
    });
    $("#subscriber-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const id = $("#subscriber-id").value.trim();
      if (id) location.hash = `#subscribers/${encodeURIComponent(id)}`;
    });
    const select = $("#send-type");
    for (const type of Object.keys(SAMPLES)) select.append(h("option", { value: type }, type));
    select.value = "order.paid";
    const fill = () => { $("#send-data").value = JSON.stringify(SAMPLES[select.value], null, 2); renderSendPreview(); };
    select.addEventListener("change", fill);
    $("#send-data").addEventListener("input", renderSendPreview);
    $("#send-fresh").addEventListener("change", renderSendPreview);
    $("#send-form").addEventListener("submit", send);
    fill();
    window.addEventListener("hashchange", route);
    window.addEventListener("resize", () => { if (state.series.length) renderCharts(Date.now() / 1000); });
    if (sessionStorage.getItem(KEY)) start(); else logout();
  });
})();
