"""The inbox widget example page in a real headless Chromium: a live badge over SSE."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from testbed.harness import Server, cloudevent


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("widget")).start()
    try:
        yield running
    finally:
        running.stop()


VIEWPORT = {"width": 1200, "height": 800}


def paid(server: Server, buyer: str, **extra: Any) -> None:
    event = cloudevent(
        "order.paid",
        f"evt-{uuid.uuid4().hex[:12]}",
        order_id=f"o-{uuid.uuid4().hex[:6]}",
        buyer_id=buyer,
        seller_id="seller-w",
        amount="18.00",
        currency="USD",
        **extra,
    )
    with server.client() as api:
        assert api.post("/v1/events", json=event).status_code == 202


def test_the_badge_counts_new_items_live_and_the_list_reads_and_archives(
    page: Page, server: Server
) -> None:
    buyer = f"buyer-{uuid.uuid4().hex[:6]}"
    page.goto(f"{server.url}/widget?token={server.token(buyer)}")
    expect(page).not_to_have_url(re.compile("token="))  # taken out of the address bar
    expect(page.locator("#shop-user")).to_contain_text(buyer)
    expect(page.locator("#widget-status")).to_contain_text("Live")
    badge = page.locator("#inbox .ti-badge")
    expect(badge).to_be_hidden()

    paid(server, buyer)  # arrives over the open SSE stream: no reload, no polling
    expect(badge).to_have_text("1")
    paid(server, buyer)
    expect(badge).to_have_text("2")

    page.click("#inbox .ti-bell")
    items = page.locator("#inbox .ti-item")
    expect(items).to_have_count(2)
    expect(items.first).to_have_class(re.compile("ti-unread"))
    expect(items.first).to_contain_text("Payment received")

    items.first.click()  # read
    expect(badge).to_have_text("1")
    expect(items.first).not_to_have_class(re.compile("ti-unread"))
    items.nth(1).locator(".ti-archive").click()
    expect(items).to_have_count(1)
    expect(badge).to_be_hidden()

    # the server kept it: a fresh page with the token typed in shows the same state
    page.goto(f"{server.url}/widget")
    page.fill("#token", server.token(buyer))
    page.click("#token-form button")
    expect(page.locator("#widget-status")).to_contain_text("Live")
    page.click("#inbox .ti-bell")
    expect(page.locator("#inbox .ti-item")).to_have_count(1)
    expect(page.locator("#inbox .ti-badge")).to_be_hidden()
    expect(page.locator("#inbox .ti-link")).to_be_disabled()  # nothing unread to mark
    paid(server, buyer)
    expect(page.locator("#inbox .ti-item")).to_have_count(2)  # the open list grows live
    expect(page.locator("#inbox .ti-badge")).to_have_text("1")
    page.click("#inbox .ti-link")
    expect(page.locator("#inbox .ti-badge")).to_be_hidden()
    expect(page.locator("#inbox .ti-item.ti-unread")).to_have_count(0)


def test_a_token_sees_only_its_own_subscriber_and_a_bad_one_is_refused(
    page: Page, server: Server
) -> None:
    mine, other = f"buyer-{uuid.uuid4().hex[:6]}", f"buyer-{uuid.uuid4().hex[:6]}"
    page.goto(f"{server.url}/widget?token={server.token(mine)}")
    expect(page.locator("#widget-status")).to_contain_text("Live")
    paid(server, other)
    paid(server, mine)
    expect(page.locator("#inbox .ti-badge")).to_have_text("1")
    page.click("#inbox .ti-bell")
    expect(page.locator("#inbox .ti-item")).to_have_count(1)

    page.goto(f"{server.url}/widget?token=not.a.token")
    expect(page.locator("#widget-status")).to_contain_text("refused")
    response = httpx.get(f"{server.url}/v1/inbox/count", params={"token": "not.a.token"})
    assert response.status_code == 401
