/* tidings dashboard, Broadcasts tab: live progress, pause/resume/cancel, and a form to start one.
 * Shares the dashboard's sign-in (the API key in sessionStorage). Server values go in as text only.
 */
"use strict";

(function () {
  const KEY = "tidings.apiKey";
  const $ = (sel) => document.querySelector(sel);

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

  async function api(path, options) {
    const init = Object.assign({ headers: {} }, options || {});
    init.headers = Object.assign({ Authorization: `Bearer ${sessionStorage.getItem(KEY)}` }, init.headers);
    const response = await fetch(path, init);
    const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
    if (!response.ok) {
      const where = body && body.field ? ` (${body.field})` : "";
      throw new Error(((body && (body.detail || body.title)) || `HTTP ${response.status}`) + where);
    }
    return body;
  }

  function audienceText(audience) {
    if (!audience) return "–";
    if (audience.topic) return `topic ${audience.topic}`;
    if (audience.all) return "everyone";
    const seg = audience.segment || {};
    const parts = ["locale", "timezone", "role"].filter((k) => seg[k]).map((k) => `${k}=${seg[k]}`);
    for (const [k, v] of Object.entries(seg.attributes || {})) parts.push(`${k}=${JSON.stringify(v)}`);
    return `segment ${parts.join(", ") || "(any)"}`;
  }

  function progress(b) {
    const decided = Object.values(b.counts || {}).reduce((a, c) => a + c, 0);
    const size = b.audience_size;
    const bar = h("progress", { class: "bc-bar", max: String(size || 1),
      value: String(size ? Math.min(decided, size) : (b.status === "done" ? 1 : 0)) });
    const label = size == null ? `${decided} decided` : `${decided} / ${size}`;
    return h("div", { class: "bc-progress" }, bar, " ", h("span", { class: "muted small" }, label));
  }

  function countsText(counts) {
    return Object.entries(counts || {}).filter(([, n]) => n).map(([k, n]) => `${k} ${n}`).join(" · ") || "–";
  }

  async function act(id, action) {
    try {
      await api(`/v1/broadcasts/${encodeURIComponent(id)}/${action}`, { method: "POST" });
      $("#bc-result").textContent = `${action}: ${id}`;
    } catch (error) {
      $("#bc-result").textContent = `${action} failed: ${error.message}`;
    }
    poll();
  }

  function row(b) {
    const buttons = [];
    if (b.status === "running" || b.status === "scheduled")
      buttons.push(h("button", { class: "ghost small", "data-action": "pause", onclick: () => act(b.id, "pause") }, "Pause"));
    if (b.status === "paused")
      buttons.push(h("button", { class: "ghost small", "data-action": "resume", onclick: () => act(b.id, "resume") }, "Resume"));
    if (["running", "scheduled", "paused"].includes(b.status))
      buttons.push(h("button", { class: "ghost small danger", "data-action": "cancel", onclick: () => act(b.id, "cancel") }, "Cancel"));
    return h("tr", { "data-id": b.id },
      h("td", {}, h("code", {}, b.id)),
      h("td", {}, h("span", { class: `status-tag st-${b.status}` }, b.status)),
      h("td", {}, audienceText(b.audience)),
      h("td", {}, b.category || "–", b.local_time ? ` · ${b.local_time} local` : "", b.rate ? ` · ${b.rate}/s` : ""),
      h("td", {}, progress(b)),
      h("td", { class: "small" }, countsText(b.counts)),
      h("td", {}, buttons));
  }

  async function poll() {
    let data;
    try {
      data = await api("/v1/broadcasts?limit=50");
    } catch (error) {
      $("#bc-empty").textContent = `Could not load broadcasts: ${error.message}`;
      return;
    }
    const body = $("#bc-table tbody");
    body.replaceChildren(...data.items.map(row));
    $("#bc-empty").hidden = data.items.length > 0;
  }

  function value(id) {
    const node = document.getElementById(id);
    return node ? node.value.trim() : "";
  }

  async function create(event) {
    event.preventDefault();
    const kind = value("bc-audience");
    const target = value("bc-target");
    const audience = kind === "all" ? { all: true }
      : kind === "topic" ? { topic: target }
      : { segment: target ? { locale: target } : {} };
    const content = { "en-US": { title: value("bc-title"), body: value("bc-body") } };
    if (value("bc-title-zh")) content["zh-CN"] = { title: value("bc-title-zh"), body: value("bc-body-zh") || value("bc-body") };
    const channels = [...document.querySelectorAll("#bc-form input[name=channel]:checked")].map((c) => c.value);
    const body = { audience, category: value("bc-category"), channels, content };
    if (value("bc-id")) body.id = value("bc-id");
    if (value("bc-local-time")) body.local_time = value("bc-local-time");
    if (value("bc-rate")) body.rate = Number(value("bc-rate"));
    try {
      const made = await api("/v1/broadcasts", { method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify(body) });
      $("#bc-result").textContent = `started ${made.id} (${made.status})`;
    } catch (error) {
      $("#bc-result").textContent = `not started: ${error.message}`;
    }
    poll();
  }

  function tick() {
    const section = document.getElementById("view-broadcasts");
    if (section && !section.hidden && sessionStorage.getItem(KEY)) poll();
  }

  document.addEventListener("DOMContentLoaded", () => {
    const form = $("#bc-form");
    if (!form) return;
    form.addEventListener("submit", create);
    $("#bc-audience").addEventListener("change", () => {
      const kind = value("bc-audience");
      $("#bc-target").hidden = kind === "all";
      $("#bc-target").placeholder = kind === "topic" ? "topic key, e.g. campaign.1111" : "locale, e.g. zh-CN (empty: any)";
    });
    // the dashboard shows the section (its router); poll while it is shown
    window.addEventListener("hashchange", () => setTimeout(tick, 0));
    setInterval(tick, 1000);
  });
})();
