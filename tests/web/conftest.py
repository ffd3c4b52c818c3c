"""Browser fixtures shared by the dashboard and widget tests (one Chromium per module)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page

from tests.web.browser import chromium


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's headless Chromium, driven by Playwright."""
    with chromium() as running:
        yield running


@pytest.fixture
def page(request: pytest.FixtureRequest, browser: Browser) -> Iterator[Page]:
    """A fresh page (the module's ``VIEWPORT``); fails the test on any uncaught page error."""
    viewport = getattr(request.module, "VIEWPORT", {"width": 1400, "height": 1000})
    context = browser.new_context(viewport=viewport)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield opened
    finally:
        context.close()
    assert errors == [], f"uncaught errors in the page: {errors}"
