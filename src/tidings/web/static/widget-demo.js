/* The example shop page around the widget: where the token comes from. */
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const statusLine = document.getElementById("widget-status");
  const user = document.getElementById("shop-user");
  let inbox = null;

  function subscriberOf(token) {
    try {
      const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(atob(payload)).sub || "?";
    } catch { return "?"; }
  }

  function connect(token) {
    if (inbox) inbox.close();
    user.textContent = `signed in as ${subscriberOf(token)}`;
    document.dispatchEvent(new CustomEvent("tidings:token", { detail: token })); // notify-me.js
    inbox = window.TidingsInbox.mount(document.getElementById("inbox"), {
      baseUrl: "",
      token,
      onStatus: (text, ok) => { statusLine.textContent = text; statusLine.className = ok ? "hint ok" : "hint bad"; },
    });
  }

  // a token in the address bar would end up in history and server logs: take it and drop it
  const params = new URLSearchParams(location.search);
  const fromUrl = params.get("token");
  if (fromUrl) {
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? `?${rest}` : "") + location.hash);
    connect(fromUrl);
  }
  document.getElementById("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const value = document.getElementById("token").value.trim();
    if (value) connect(value);
  });
});
