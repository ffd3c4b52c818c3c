"""The widget embedded in a shop's own page, served from another origin, in headless Chromium.

The shop is a second local HTTP server on another port: its page loads ``widget.js`` and
``widget.css`` from tidings, and its backend mints the buyer's inbox token with a
``tokens``-scoped key (``POST /v1/subscribers/{id}/inbox-token``). tidings lists the shop's
origin in ``api.cors_origins``; the same page opened under another origin is refused.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from testbed.harness import Server, cloudevent, free_port, wait_for

TOKENS_KEY = "shop-backend-tokens-key-0123456789"
VIEWPORT = {"width": 1100, "height": 800}

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Tea shop</title>
<link rel="stylesheet" href="{tidings}/static/widget.css">
<script src="{tidings}/static/widget.js"></script>
</head><body>
<header><b>Tea shop</b> <div id="inbox"></div></header>
<p id="status" role="status"></p>
<script>
  // the shop's backend mints the buyer's token (again when one expires); the widget talks
  // to tidings directly
  window.inbox = TidingsInbox.mount(document.getElementById("inbox"), {{
    baseUrl: "{tidings}",
    fetchToken: () => fetch("/my/inbox-token").then((r) => r.text()),
    onStatus: (text) => {{ document.getElementById("status").textContent = text; }},
  }});
</script>
</body></html>
"""


class Shop:
    """The shop's web server: its page and its backend's token endpoint."""

    def __init__(self, port: int, tidings: Server) -> None:
        self.port = port
        self.tidings = tidings
        self.buyer = ""
        self.ttl = "10m"
        self.minted = 0
        shop = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                if self.path == "/my/inbox-token":
                    with httpx.Client(base_url=shop.tidings.url, timeout=10) as api:
                        minted = api.post(
                            f"/v1/subscribers/{shop.buyer}/inbox-token",
                            json={"ttl": shop.ttl},
                            headers={"Authorization": f"Bearer {TOKENS_KEY}"},
                        )
                    minted.raise_for_status()
                    shop.minted += 1
                    self._answer(minted.json()["token"].encode(), "text/plain")
                elif self.path == "/":
                    page = PAGE.format(tidings=shop.tidings.url)
                    self._answer(page.encode(), "text/html; charset=utf-8")
                else:
                    self.send_error(404)

            def _answer(self, body: bytes, media: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", media)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self.http = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)

    def url(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/"

    def __enter__(self) -> Shop:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.thread.join(10)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    port = free_port()
    config = {"api": {"cors_origins": [f"http://127.0.0.1:{port}"]}}
    tidings = Server(tmp_path_factory.mktemp("embedded"), config=config)
    tidings.env["TIDINGS_API_KEYS"] += f",{TOKENS_KEY}:tokens"
    tidings.start()
    try:
        with Shop(port, tidings) as running:
            yield running
    finally:
        tidings.stop()


def preferences(shop: Shop) -> Any:
    with shop.tidings.client() as api:
        return api.get(f"/v1/subscribers/{shop.buyer}/preferences").json()


def test_the_embedded_widget_changes_a_preference_the_api_then_reports(
    page: Page, shop: Shop
) -> None:
    shop.buyer = f"buyer-{uuid.uuid4().hex[:6]}"
    page.goto(shop.url())
    status = page.locator("#status")
    expect(status).to_contain_text("Live")  # the stream is open across origins

    event = cloudevent(
        "order.paid",
        f"evt-{uuid.uuid4().hex[:10]}",
        order_id="o-emb-1",
        buyer_id=shop.buyer,
        seller_id="seller-e",
        amount="9.90",
        currency="USD",
    )
    with shop.tidings.client() as api:
        assert api.post("/v1/events", json=event).status_code == 202
    expect(page.locator("#inbox .ti-badge")).to_have_text("1")

    page.click("#inbox .ti-bell")
    page.click("#inbox .ti-gear")
    required = page.locator('#inbox input[data-category="order_updates"]')
    marketing = page.locator('#inbox input[data-category="marketing"]')
    expect(required).to_be_checked()
    expect(required).to_be_disabled()  # a required category cannot be switched off
    expect(marketing).to_be_checked()

    marketing.uncheck()
    expect(status).to_contain_text("Saved: marketing off")
    found = wait_for(lambda: preferences(shop).get("categories"))
    assert found["marketing"] == {"enabled": False}

    page.locator('#inbox input[data-channel="sms"]').uncheck()
    expect(status).to_contain_text("Saved: sms off")
    assert preferences(shop)["channels"] == {"sms": False}
    assert preferences(shop)["categories"]["marketing"] == {"enabled": False}

    # a fresh page shows what the server kept
    page.reload()
    expect(status).to_contain_text("Live")
    page.click("#inbox .ti-bell")
    page.click("#inbox .ti-gear")
    expect(page.locator('#inbox input[data-category="marketing"]')).not_to_be_checked()
    expect(page.locator('#inbox input[data-channel="sms"]')).not_to_be_checked()


def test_the_widget_renews_an_expired_token_through_the_shop(page: Page, shop: Shop) -> None:
    shop.buyer = f"buyer-{uuid.uuid4().hex[:6]}"
    shop.ttl, shop.minted = "2s", 0
    try:
        page.goto(shop.url())
        expect(page.locator("#status")).to_contain_text("Live")
        # the service ends the stream at the token's expiry; the widget asks the shop again
        wait_for(lambda: shop.minted >= 2, timeout=20)
        expect(page.locator("#status")).to_contain_text("Live")
        event = cloudevent(
            "order.paid",
            f"evt-{uuid.uuid4().hex[:10]}",
            order_id="o-emb-2",
            buyer_id=shop.buyer,
            seller_id="seller-e",
            amount="4.50",
            currency="USD",
        )
        with shop.tidings.client() as api:
            assert api.post("/v1/events", json=event).status_code == 202
        expect(page.locator("#inbox .ti-badge")).to_have_text("1")
    finally:
        shop.ttl = "10m"


def test_the_same_page_from_an_origin_not_listed_is_refused(page: Page, shop: Shop) -> None:
    shop.buyer = f"buyer-{uuid.uuid4().hex[:6]}"
    page.goto(shop.url("localhost"))  # another origin: http://localhost:PORT
    expect(page.locator("#status")).to_contain_text("Could not load the inbox")
    # the service itself is fine: the same token works where CORS does not apply
    token = httpx.post(
        f"{shop.tidings.url}/v1/subscribers/{shop.buyer}/inbox-token",
        headers={"Authorization": f"Bearer {TOKENS_KEY}"},
    ).json()["token"]
    answer = httpx.get(f"{shop.tidings.url}/v1/inbox/count", params={"token": token})
    assert answer.status_code == 200
    assert json.loads(answer.text) == {"unread": 0, "unseen": 0}
