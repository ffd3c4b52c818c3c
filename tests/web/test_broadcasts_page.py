"""The dashboard's Broadcasts tab and the widget's "notify me", in a real headless Chromium."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from testbed.harness import Server, cloudevent, wait_for

VIEWPORT = {"width": 1400, "height": 1000}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("broadcasts")).start()
    try:
        yield running
    finally:
        running.stop()


def test_start_a_broadcast_watch_it_finish_and_cancel_a_scheduled_one(
    page: Page, server: Server
) -> None:
    with server.client() as api:
        api.put("/v1/topics/campaign.618", json={"name": "618"})
        api.post("/v1/topics/campaign.618/subscribers", json={"add": ["u-1", "u-2", "u-3"]})
        later = {
            "id": "next-year",
            "audience": {"all": True},
            "category": "marketing",
            "channels": ["inapp"],
            "content": {"en-US": {"title": "Soon", "body": "Soon"}},
            "send_at": "2099-06-18T00:00:00Z",
        }
        api.put("/v1/subscribers/u-1", json={"locale": "en-US"})
        assert api.post("/v1/broadcasts", json=later).status_code == 202
    page.goto(server.url + "/#broadcasts")
    page.fill("#api-key", server.admin_key)
    page.click("#login-button")
    expect(page.locator("#view-broadcasts")).to_be_visible()
    scheduled = page.locator('#bc-table tr[data-id="next-year"]')
    expect(scheduled.locator(".status-tag")).to_have_text("scheduled")

    page.fill("#bc-target", "campaign.618")
    page.fill("#bc-title", "618 sale")
    page.fill("#bc-body", "Half price today")
    page.fill("#bc-id", "sale-618")
    page.click("#bc-start")
    expect(page.locator("#bc-result")).to_contain_text("started sale-618")
    started = page.locator('#bc-table tr[data-id="sale-618"]')
    expect(started.locator(".status-tag")).to_have_text("done")  # live: the table polls
    expect(started).to_contain_text("3 / 3")
    expect(started).to_contain_text("sent 3")

    scheduled.locator('button[data-action="cancel"]').click()
    expect(scheduled.locator(".status-tag")).to_have_text("cancelled")
    expect(scheduled.locator("button")).to_have_count(0)


def test_notify_me_follows_the_topic_and_the_restock_arrives(page: Page, server: Server) -> None:
    buyer = f"buyer-{uuid.uuid4().hex[:6]}"
    page.goto(f"{server.url}/widget?token={server.token(buyer)}")
    button = page.locator("#notify-me")
    expect(button).to_have_attribute("aria-pressed", "false")
    button.click()
    expect(button).to_have_attribute("aria-pressed", "true")
    with server.client() as api:
        topics = api.get(f"/v1/subscribers/{buyer}/topics").json()["items"]
        assert topics == [{"key": "product.SKU-1.restock"}]
        event = cloudevent("product.restocked", f"r-{buyer}", sku="SKU-1", name="Jade tea set")
        assert api.post("/v1/events", json=event).status_code == 202
    expect(page.locator("#inbox .ti-badge")).to_have_text("1")  # live, over the SSE stream
    page.goto(f"{server.url}/widget?token={server.token(buyer)}")  # opened again later
    expect(button).to_have_attribute("aria-pressed", "true")
    button.click()
    expect(button).to_have_attribute("aria-pressed", "false")
    with server.client() as api:
        wait_for(lambda: api.get(f"/v1/subscribers/{buyer}/topics").json()["items"] == [])
