"""The operator's dashboard in a real headless Chromium against a real ``tidings serve``."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from fakes.webhook_receiver import Reply, WebhookReceiver
from testbed.harness import REPO, Server, cloudevent, wait_for

# a webhook provider that dead-letters at the first transient failure, and lets loopback through
CONFIG: dict[str, Any] = {
    "providers": {
        "webhook": [{"kind": "webhook", "allow_private_networks": True, "retry": {"attempts": 1}}]
    }
}


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("dashboard"), config=CONFIG)
    running.env["TIDINGS_API_KEYS"] += f",{READER}:read"
    running.start()
    try:
        yield running
    finally:
        running.stop()


VIEWPORT = {"width": 1400, "height": 1000}
READER = "dashboard-reader-key-0123456789"
"""A key without the ``pii`` scope: the dashboard masks names, emails and phones for it."""


@pytest.fixture
def api(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def login(page: Page, server: Server, view: str = "", key: str | None = None) -> None:
    page.goto(server.url + "/" + view)
    page.fill("#api-key", key or server.admin_key)
    page.click("#login-button")
    expect(page.locator("#app")).to_be_visible()


def post(api: httpx.Client, event_type: str, **data: Any) -> str:
    event_id = f"evt-{uuid.uuid4().hex[:12]}"
    response = api.post("/v1/events", json=cloudevent(event_type, event_id, **data))
    assert response.status_code == 202, response.text
    return event_id


def test_login_refuses_a_wrong_key_and_keeps_the_right_one_for_the_tab(
    page: Page, server: Server
) -> None:
    page.goto(server.url + "/")
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#app")).to_be_hidden()
    page.fill("#api-key", "not-a-key")
    page.click("#login-button")
    expect(page.locator("#login-error")).to_contain_text("refused")
    expect(page.locator("#app")).to_be_hidden()

    page.fill("#api-key", server.admin_key)
    page.click("#login-button")
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator("#live-dot")).to_have_class(re.compile(r"\blive\b"))
    expect(page.locator("#providers [data-provider='webhook']")).to_contain_text("up")
    expect(page.locator("#queues [data-lane='high']")).to_be_visible()
    expect(page.locator("#backlog [data-backlog='events']")).to_be_visible()
    expect(page.locator("#backlog [data-backlog='age']")).to_contain_text("503 at 10000")
    assert page.evaluate("sessionStorage.getItem('tidings.apiKey')") == server.admin_key

    page.reload()  # the key lives for the tab: no second login
    expect(page.locator("#app")).to_be_visible()
    page.click("#logout")
    expect(page.locator("#login")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('tidings.apiKey')") is None


def test_a_posted_event_shows_up_live_and_its_explain_view_tells_the_story(
    page: Page, server: Server, api: httpx.Client
) -> None:
    login(page, server)
    expect(page.locator("#live-events li").first).to_be_visible()
    # markup in event data must come out as text
    order = f"<i>o-{uuid.uuid4().hex[:6]}</i>"
    assert api.put("/v1/subscribers/buyer-live", json={"name": "Ada"}).status_code in (200, 201)
    device = api.post("/v1/subscribers/buyer-live/devices", json={"kind": "fcm", "token": "t" * 40})
    assert device.status_code in (200, 201), device.text  # no FCM configured: the console sends
    event_id = post(
        api,
        "order.paid",
        order_id=order,
        buyer_id="buyer-live",
        seller_id="seller-live",
        amount="42.00",
        currency="EUR",
    )

    row = page.locator(f"#live-events li[data-event-id='{event_id}']")
    expect(row).to_be_visible()
    expect(row).to_contain_text(order)
    expect(row.locator(".st-sent").first).to_be_visible()
    assert page.locator("#live-events i").count() == 0
    # the throughput chart drew the events line from the per-second series
    expect(page.locator("#chart-throughput path[data-series='events']").first).to_be_attached()
    expect(page.locator("#deliveries-table tr[data-channel='inapp']")).to_be_visible()
    expect(page.locator("#console-list")).to_contain_text("buyer-live")

    row.click()
    expect(page).to_have_url(re.compile(r"#explain/"))
    expect(page.locator("#explain-id")).to_have_text(event_id)
    buyer = page.locator("#decisions .decision[data-rule='order-paid-buyer']")
    expect(buyer).to_have_attribute("data-outcome", "sent")
    expect(buyer).to_contain_text("buyer-live")
    expect(buyer.locator(".delivery[data-channel='inapp']")).to_contain_text("delivered")
    expect(buyer.locator(".delivery[data-channel='push']")).to_contain_text("via console")
    seller = page.locator("#decisions .decision[data-rule='order-paid-seller']")
    expect(seller).to_be_visible()
    expect(page.locator(f"#events-table tr[data-event-id='{event_id}']")).to_have_class(
        re.compile("selected")
    )


def test_a_dead_letter_is_listed_and_replayed_from_the_dashboard(
    page: Page, server: Server, api: httpx.Client, receiver: WebhookReceiver
) -> None:
    seller = f"seller-{uuid.uuid4().hex[:6]}"
    assert api.put(f"/v1/subscribers/{seller}", json={"name": "Tea Farm"}).status_code in (200, 201)
    hook = api.post(
        f"/v1/subscribers/{seller}/webhooks", json={"url": receiver.url, "secret": receiver.secret}
    )
    assert hook.status_code in (200, 201), hook.text
    receiver.script(Reply(503))  # the ERP is down once: attempts 1 → dead letter
    event_id = post(
        api,
        "order.paid",
        order_id=f"o-{seller}",
        buyer_id="buyer-dlq",
        seller_id=seller,
        amount="9.90",
        currency="USD",
    )

    def dead() -> str | None:
        for item in api.get("/v1/dlq").json()["items"]:
            if item["channel"] == "webhook":
                return str(item["id"])
        return None

    dead_id = wait_for(dead, timeout=15)
    login(page, server, "#dlq")
    expect(page.locator("#dlq-badge")).to_have_text(re.compile(r"[1-9]"))
    row = page.locator(f"#dlq-table tr[data-dead-letter='{dead_id}']")
    expect(row).to_contain_text(seller)
    expect(row).to_contain_text("order.paid")
    row.locator("button.replay").click()
    expect(page.locator("#toast")).to_contain_text("Replayed")
    expect(row).to_have_count(0)

    def delivered() -> bool:
        notes = api.get("/v1/notifications", params={"event_id": event_id}).json()["items"]
        return any(
            d["channel"] == "webhook" and d["status"] in ("sent", "delivered")
            for n in notes
            for d in n["deliveries"]
        )

    wait_for(delivered, timeout=15)
    mine = [d for d in receiver.deliveries if seller in d.body.decode()]
    assert [d.status for d in mine] == [503, 200]
    assert all(d.verified for d in mine)
    assert mine[0].webhook_id == mine[1].webhook_id  # the replay keeps the idempotency id

    page.goto(f"{server.url}/#explain/{event_id}")
    webhook = page.locator("#decisions .delivery[data-channel='webhook']")
    expect(webhook).to_contain_text("delivered")
    expect(webhook.locator(".attempts li")).to_have_count(2)


def test_the_send_form_posts_a_cloudevent_and_links_to_its_explanation(
    page: Page, server: Server
) -> None:
    login(page, server, "#send")
    page.select_option("#send-type", "order.created")
    expect(page.locator("#send-preview")).to_contain_text('"type": "order.created"')
    page.click("#send-button")
    expect(page.locator("#send-result")).to_contain_text("Accepted")
    page.click("#send-explain")
    expect(page.locator("#decisions .decision[data-rule='order-created-buyer']")).to_be_visible()
    expect(page.locator("#explain")).to_contain_text("/dashboard")


def test_subscriber_lookup_shows_masked_profile_preferences_and_inbox(
    page: Page, server: Server, api: httpx.Client
) -> None:
    buyer = f"buyer-{uuid.uuid4().hex[:6]}"
    profile = {
        "name": "Mei Lin",
        "email": "mei.lin@shop.test",
        "phone": "+8613800138000",
        "locale": "zh-CN",
        "timezone": "Asia/Shanghai",
    }
    assert api.put(f"/v1/subscribers/{buyer}", json=profile).status_code in (200, 201)
    prefs = {"channels": {"email": False}, "quiet_hours": {"start": "22:00", "end": "08:00"}}
    assert api.put(f"/v1/subscribers/{buyer}/preferences", json=prefs).status_code == 200
    event_id = post(
        api,
        "order.shipped",
        order_id=f"o-{buyer}",
        buyer_id=buyer,
        seller_id="seller-x",
        carrier="SF Express",
        tracking_no="SF1",
    )
    wait_for(lambda: api.get(f"/v1/events/{event_id}").json().get("processed_at"))

    login(page, server, "#subscribers", READER)
    page.fill("#subscriber-id", buyer)
    page.click("#subscriber-form button")
    card = page.locator("#subscriber")
    expect(card).to_contain_text("M***")
    expect(card).to_contain_text("m***@shop.test")
    expect(card).not_to_contain_text("Mei Lin")
    expect(card).not_to_contain_text("mei.lin@shop.test")
    expect(card).not_to_contain_text("+8613800138000")
    expect(card).to_contain_text("email: off")
    expect(card).to_contain_text("quiet hours 22:00–08:00")
    expect(page.locator("#inbox-preview .inbox-item.unread")).to_have_count(1)
    expect(card).to_contain_text("order-shipped-buyer")

    page.fill("#subscriber-id", "nobody-here")
    page.click("#subscriber-form button")
    expect(page.locator("#subscriber-error")).to_contain_text("No subscriber")

    admin = page.context.new_page()  # a tab of its own: an admin key sees PII unmasked
    login(admin, server, "#subscribers")
    admin.fill("#subscriber-id", buyer)
    admin.click("#subscriber-form button")
    expect(admin.locator("#subscriber")).to_contain_text("mei.lin@shop.test")
    expect(admin.locator("#subscriber")).to_contain_text("Mei Lin")


def test_the_pages_load_nothing_from_elsewhere(server: Server) -> None:
    for path in ("/", "/widget"):
        response = httpx.get(server.url + path)
        assert response.status_code == 200
        assert "default-src 'self'" in response.headers["content-security-policy"]
        assert "http://" not in response.text.replace("https://notify.example", "")
        assert "<script>" not in response.text  # no inline script: the CSP would refuse it
    assert httpx.get(server.url + "/static/..%2Froutes.py").status_code == 404
    assert (
        httpx.get(server.url + "/static/dashboard.js")
        .headers["content-type"]
        .startswith("text/javascript")
    )
    assert httpx.get(server.url + "/v1/admin/overview").status_code == 401


def test_the_grafana_dashboard_queries_only_metrics_the_service_exposes(
    server: Server, api: httpx.Client
) -> None:
    event_id = post(
        api,
        "order.paid",
        order_id="o-grafana",
        buyer_id="buyer-g",
        seller_id="s-g",
        amount="1.00",
        currency="USD",
    )
    wait_for(lambda: api.get(f"/v1/events/{event_id}").json().get("processed_at"))
    exposed = set(re.findall(r"^(tidings_\w+?)(?:\{| )", api.get("/metrics").text, re.MULTILINE))
    board = json.loads((REPO / "docs" / "grafana-dashboard.json").read_text())
    queried = {
        name
        for panel in board["panels"]
        for target in panel["targets"]
        for name in re.findall(r"tidings_\w+", target["expr"])
    }
    assert {
        "tidings_events_total",
        "tidings_deliveries_total",
        "tidings_latency_seconds_bucket",
        "tidings_queue_depth",
        "tidings_provider_up",
        "tidings_dead_letters",
    } <= queried
    assert queried <= exposed, queried - exposed
