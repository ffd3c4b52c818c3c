"""Take the screenshots under docs/: ``.venv/bin/python -m tests.web.screenshots``.

Runs a real service with demo traffic, then photographs the dashboard, the explain view and the
inbox widget in headless Chromium. Not a test: it writes into docs/.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from testbed.harness import REPO, Server, cloudevent, wait_for
from tests.web.browser import chromium

DOCS = REPO / "docs"


def main() -> None:
    """Start, drive, photograph, stop."""
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp)).start()
        try:
            shoot(server)
        finally:
            server.stop()


def shoot(server: Server) -> None:
    """The three pictures."""
    env = {**server.env, "TIDINGS_API_KEY": server.admin_key}
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tidings.cli",
            "demo",
            "--url",
            server.url,
            "--rate",
            "25",
            "--duration",
            "70",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    buyer = "buyer-1042"
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1440, "height": 1180})
        page.goto(server.url + "/")
        page.fill("#api-key", server.admin_key)
        page.click("#login-button")
        page.wait_for_timeout(60_000)  # a minute of charts
        page.screenshot(path=str(DOCS / "dashboard.png"))

        with server.client() as api:
            api.put(f"/v1/subscribers/{buyer}", json={"name": "Mei Lin", "locale": "en-US"})
            event_id = f"evt-{uuid.uuid4().hex[:8]}"
            api.post(
                "/v1/events",
                json=cloudevent(
                    "order.paid",
                    event_id,
                    order_id="o-88231",
                    buyer_id=buyer,
                    seller_id="seller-7",
                    amount="129.00",
                    currency="USD",
                    payment_method="card",
                ),
            )
            wait_for(lambda: api.get(f"/v1/events/{event_id}").json().get("processed_at"))
        page.goto(f"{server.url}/#explain/{event_id}")
        page.wait_for_selector("#decisions .decision")
        page.wait_for_timeout(1500)
        page.screenshot(path=str(DOCS / "dashboard-explain.png"))

        widget = browser.new_page(viewport={"width": 1100, "height": 640})
        widget.goto(f"{server.url}/widget?token={server.token(buyer)}")
        widget.wait_for_selector("#widget-status:has-text('Live')")
        with server.client() as api:
            for number, kind in enumerate(("order.shipped", "order.delivered")):
                api.post(
                    "/v1/events",
                    json=cloudevent(
                        kind,
                        f"evt-{uuid.uuid4().hex[:8]}",
                        order_id=f"o-8823{number + 2}",
                        buyer_id=buyer,
                        seller_id="seller-7",
                        carrier="SF Express",
                        tracking_no="SF1234567890",
                    ),
                )
        widget.wait_for_selector("#inbox .ti-badge:has-text('3')")
        widget.click("#inbox .ti-bell")
        widget.locator("#inbox .ti-item").nth(2).click()
        widget.wait_for_timeout(800)
        widget.screenshot(path=str(DOCS / "widget.png"))
    demo.terminate()
    demo.wait(10)


if __name__ == "__main__":
    main()
