/* "Notify me": a button that follows a topic for the signed-in buyer (back in stock, price drops).
 *
 *   const button = TidingsNotifyMe.mount(element, { baseUrl: "", token: "<subscriber JWT>",
 *                                                   topic: "product.sku-1.restock" });
 *
 * It asks GET /v1/inbox/topics whether the buyer follows the topic, and PUT / DELETE
 * /v1/inbox/topics/{topic} to follow and unfollow. No dependencies.
 */
"use strict";

window.TidingsNotifyMe = (function () {
  function mount(button, options) {
    const opts = Object.assign({ baseUrl: "", token: "", topic: "",
      follow: "Notify me when it's back", following: "We'll notify you ✓" }, options || {});
    let following = false;
    const url = `${opts.baseUrl}/v1/inbox/topics/${encodeURIComponent(opts.topic)}`;
    const headers = () => ({ Authorization: `Bearer ${opts.token}` });

    function show() {
      button.textContent = following ? opts.following : opts.follow;
      button.setAttribute("aria-pressed", String(following));
      button.classList.toggle("ti-following", following);
    }
    async function load() {
      let cursor = "";
      do {
        const query = `?limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
        const response = await fetch(`${opts.baseUrl}/v1/inbox/topics${query}`, { headers: headers() });
        if (!response.ok) return;
        const page = await response.json();
        if (page.items.some((item) => item.key === opts.topic)) { following = true; break; }
        cursor = page.next_cursor || "";
      } while (cursor);
      show();
    }
    async function toggle() {
      button.disabled = true;
      try {
        const response = await fetch(url, { method: following ? "DELETE" : "PUT", headers: headers() });
        if (response.ok) following = (await response.json()).following;
      } finally {
        button.disabled = false;
        show();
      }
    }
    button.addEventListener("click", toggle);
    button.disabled = false;
    show();
    load();
    return { refresh: load };
  }
  return { mount };
})();

/* The example shop page: the product card's button, once a token is connected. */
document.addEventListener("tidings:token", (event) => {
  const button = document.getElementById("notify-me");
  if (!button) return;
  const fresh = button.cloneNode(true); // drop the listener of a previous token
  button.replaceWith(fresh);
  window.TidingsNotifyMe.mount(fresh, { token: event.detail, topic: fresh.dataset.topic });
});
