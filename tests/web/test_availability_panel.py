"""The dashboard's availability panel (SPEC §13) in a real headless Chromium."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from testbed.harness import Server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path).start()
    try:
        yield running
    finally:
        running.stop()


def test_the_overview_shows_availability_per_window(page: Page, server: Server) -> None:
    page.goto(server.url + "/")
    page.fill("#api-key", server.admin_key)
    page.click("#login-button")
    expect(page.locator("#app")).to_be_visible()
    panel = page.locator("#availability")
    expect(panel.locator("thead th")).to_contain_text(["", "", "1h", "24h", "7d"])
    expect(panel.locator("[data-availability='service:']")).to_contain_text("100%")
    expect(panel.locator("[data-availability='channel:inapp']")).to_be_visible()
    # the built-in config sends email through the console provider
    expect(panel.locator("[data-availability='provider:console (email)']")).to_be_visible()
