/* The tidings inbox widget: a bell with a live unread badge, a dropdown list, and a
 * preference centre (which categories and channels the subscriber hears on).
 *
 *   const inbox = TidingsInbox.mount(element, { baseUrl: "", token: "<subscriber JWT>" });
 *   // or { baseUrl, fetchToken: async () => "<a fresh JWT from the shop's backend>" }
 *
 * From another origin, list that origin in the service's `api.cors_origins`.
 * Everything from the server is shown as text (never HTML). No dependencies.
 */
"use strict";

window.TidingsInbox = (function () {
  const NS = "http://www.w3.org/2000/svg";

  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "class") node.className = v;
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const child of children.flat(Infinity)) if (child != null) node.append(child instanceof Node ? child : String(child));
    return node;
  }

  function bellIcon() {
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("class", "ti-bell-icon");
    for (const d of ["M18 8a6 6 0 0 0-12 0c0 7-3 9-3 9h18s-3-2-3-9", "M13.7 21a2 2 0 0 1-3.4 0"]) {
      const path = document.createElementNS(NS, "path");
      path.setAttribute("d", d);
      svg.appendChild(path);
    }
    return svg;
  }

  function ago(epoch) {
    const s = Math.max(0, Date.now() / 1000 - epoch);
    if (s < 45) return "just now";
    if (s < 3600) return `${Math.round(s / 60)} min ago`;
    if (s < 86400) return `${Math.round(s / 3600)} h ago`;
    return new Date(epoch * 1000).toLocaleDateString();
  }

  function mount(root, options) {
    // fetchToken: an async function that asks the shop's backend for a fresh token; with it the
    // widget renews its token itself when the service ends the stream at the token's expiry
    const opts = Object.assign({ baseUrl: "", token: "", limit: 20, onCount: null, onStatus: null,
      fetchToken: null }, options || {});
    let token = opts.token;
    let source = null;
    let items = [];
    let count = { unread: 0, unseen: 0 };
    let closed = false;

    const badge = h("span", { class: "ti-badge", hidden: true, "aria-live": "polite" });
    const bell = h("button", { class: "ti-bell", type: "button", "aria-haspopup": "true", "aria-expanded": "false",
      "aria-label": "Notifications", onclick: (e) => { e.stopPropagation(); toggle(); } }, bellIcon(), badge);
    const list = h("ul", { class: "ti-list" });
    const empty = h("p", { class: "ti-empty" }, "You're all caught up.");
    const readAll = h("button", { class: "ti-link", type: "button", onclick: () => post("/v1/inbox/read-all") }, "Mark all read");
    const prefs = preferences(call, (text, ok) => status(text, ok));
    const gear = h("button", { class: "ti-gear", type: "button", "aria-expanded": "false",
      title: "Notification preferences", onclick: () => showPreferences(prefs.view.hidden) }, "Preferences");
    const inbox = h("div", { class: "ti-inbox" }, list, empty);
    const panel = h("div", { class: "ti-panel", hidden: true, role: "menu",
      onclick: (e) => e.stopPropagation() },
      h("div", { class: "ti-head" }, h("b", {}, "Notifications"), h("span", { class: "ti-actions" }, readAll, gear)),
      inbox, prefs.view);
    root.classList.add("ti-root");
    root.replaceChildren(bell, panel);

    function status(text, ok) { if (opts.onStatus) opts.onStatus(text, ok); }
    function showPreferences(show) {
      prefs.view.hidden = !show;
      inbox.hidden = show;
      readAll.hidden = show;
      gear.textContent = show ? "Back" : "Preferences";
      gear.setAttribute("aria-expanded", String(show));
      if (show) prefs.load();
    }
    function toggle(open) {
      const show = open ?? panel.hidden;
      panel.hidden = !show;
      bell.setAttribute("aria-expanded", String(show));
      if (show && count.unseen) post("/v1/inbox/seen-all");
    }
    const outside = () => toggle(false);
    const escape = (e) => { if (e.key === "Escape") toggle(false); };
    document.addEventListener("click", outside);
    document.addEventListener("keydown", escape);

    function setCount(next) {
      count = next;
      badge.hidden = !next.unread;
      badge.textContent = next.unread > 99 ? "99+" : String(next.unread);
      bell.classList.toggle("ti-has-unread", next.unread > 0);
      if (opts.onCount) opts.onCount(next);
    }

    function render() {
      empty.hidden = items.length > 0;
      readAll.disabled = !items.some((i) => !i.read);
      list.replaceChildren(...items.map((item) => h("li", {
        class: `ti-item${item.read ? "" : " ti-unread"}`, "data-item": item.id,
        onclick: () => { if (!item.read) post(`/v1/inbox/${encodeURIComponent(item.id)}/read`, item, "read"); },
      },
        h("div", { class: "ti-dot" }),
        h("div", { class: "ti-text" }, h("div", { class: "ti-title" }, item.title),
          item.body ? h("div", { class: "ti-body" }, item.body) : null,
          h("div", { class: "ti-time" }, ago(item.created_at))),
        h("button", { class: "ti-archive", type: "button", title: "Archive", "aria-label": "Archive",
          onclick: (e) => { e.stopPropagation(); post(`/v1/inbox/${encodeURIComponent(item.id)}/archive`, item, "archived"); } }, "×"))));
    }

    async function call(path, method, body) {
      const headers = { Authorization: `Bearer ${token}` };
      if (body !== undefined) headers["Content-Type"] = "application/json";
      const response = await fetch(opts.baseUrl + path, { method: method || "GET", headers,
        body: body === undefined ? undefined : JSON.stringify(body) });
      if (response.status === 401) { status("The inbox token was refused (expired?).", false); throw new Error("401"); }
      if (!response.ok) {
        let detail = `HTTP ${response.status}`;
        try { detail = (await response.json()).detail || detail; } catch { /* not a problem body */ }
        throw new Error(detail);
      }
      return response.json();
    }

    async function post(path, item, flag) {
      // optimistic: the item changes at once; the server's count follows over the stream
      if (item && flag === "read") item.read = true;
      if (item && flag === "archived") items = items.filter((i) => i !== item);
      if (!item && path.endsWith("read-all")) items.forEach((i) => { i.read = true; });
      render();
      try {
        const result = await call(path, "POST");
        setCount({ unread: result.unread, unseen: result.unseen });
      } catch (error) { status(`Could not update the inbox: ${error.message}`, false); }
    }

    async function load() {
      const [page, counts] = await Promise.all([call(`/v1/inbox?status=all&limit=${opts.limit}`), call("/v1/inbox/count")]);
      items = page.items;
      setCount(counts);
      render();
    }

    function listen() {
      if (source) source.close();
      source = new EventSource(`${opts.baseUrl}/v1/inbox/stream?token=${encodeURIComponent(token)}`);
      source.addEventListener("open", () => status("Live: connected to the inbox stream.", true));
      source.addEventListener("count", (e) => setCount(JSON.parse(e.data)));
      source.addEventListener("expired", () => {
        // the token ran out and the server ends the stream: a fresh token resumes it
        source.close();
        if (closed) return;
        if (opts.fetchToken) { token = ""; connect(); return; }
        status("The inbox token expired; waiting for a fresh one.", false);
      });
      source.addEventListener("item", (e) => {
        const item = JSON.parse(e.data);
        if (items.some((i) => i.id === item.id)) return;
        items.unshift(item);
        items = items.slice(0, opts.limit);
        render();
        bell.classList.remove("ti-ring");
        void bell.offsetWidth; // restart the ring animation
        bell.classList.add("ti-ring");
      });
      source.addEventListener("error", () => {
        // EventSource reconnects by itself unless the server refused the request outright
        if (!closed) status(source.readyState === EventSource.CLOSED
          ? "The stream was refused; check the token." : "Reconnecting…", false);
      });
    }

    async function connect() {
      if (!token && opts.fetchToken) {
        try { token = await opts.fetchToken(); } catch (error) { status(`Could not get a token: ${error.message}`, false); return; }
      }
      if (!token) { status("No token yet.", false); return; }
      try { await load(); } catch (error) { status(`Could not load the inbox: ${error.message}`, false); return; }
      listen();
    }

    connect();
    return {
      setToken(next) { token = next; connect(); },
      refresh: load,
      get count() { return count; },
      close() {
        closed = true;
        if (source) source.close();
        document.removeEventListener("click", outside);
        document.removeEventListener("keydown", escape);
        root.replaceChildren();
      },
    };
  }

  /* The preference centre: GET /v1/inbox/categories and /v1/inbox/preferences, and each
   * change PUT back at once (a required category is shown on and cannot be switched off). */
  function preferences(call, status) {
    const view = h("div", { class: "ti-prefs", hidden: true });
    let doc = {};
    let offer = { items: [], channels: [] };

    function categoryOn(key) { return ((doc.categories || {})[key] || {}).enabled !== false; }
    function channelOn(name) { return (doc.channels || {})[name] !== false; }

    async function save(next, what) {
      try {
        doc = await call("/v1/inbox/preferences", "PUT", next);
        status(`Saved: ${what}.`, true);
      } catch (error) {
        status(`Could not save: ${error.message}`, false);
      }
      render();
    }

    function toggle(label, on, locked, note, change, data) {
      const box = h("input", { type: "checkbox", checked: on, disabled: locked, ...data,
        onchange: (e) => change(e.target.checked) });
      return h("li", { class: "ti-pref" }, h("label", {}, box, " ", label), note ? h("small", {}, note) : null);
    }

    function render() {
      const label = (text) => text.charAt(0).toUpperCase() + text.slice(1);
      const categories = offer.items.map((item) => toggle(label(item.description || item.key.replace(/_/g, " ")),
        item.required || categoryOn(item.key), item.required, item.required ? "always on" : null,
        (on) => {
          const cats = Object.assign({}, doc.categories || {});
          cats[item.key] = Object.assign({}, cats[item.key] || {}, { enabled: on });
          save(Object.assign({}, doc, { categories: cats }), `${item.key} ${on ? "on" : "off"}`);
        }, { "data-category": item.key }));
      const channels = offer.channels.map((name) => toggle(label(name), channelOn(name), false, null, (on) => {
        const next = Object.assign({}, doc.channels || {}, { [name]: on });
        save(Object.assign({}, doc, { channels: next }), `${name} ${on ? "on" : "off"}`);
      }, { "data-channel": name }));
      view.replaceChildren(h("h4", {}, "Topics"), h("ul", { class: "ti-pref-list" }, categories),
        h("h4", {}, "Channels"), h("ul", { class: "ti-pref-list" }, channels));
    }

    async function load() {
      try {
        [offer, doc] = await Promise.all([call("/v1/inbox/categories"), call("/v1/inbox/preferences")]);
        render();
      } catch (error) { status(`Could not load the preferences: ${error.message}`, false); }
    }
    return { view, load };
  }

  return { mount };
})();
