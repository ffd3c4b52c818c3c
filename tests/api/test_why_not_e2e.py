"""A decision's reason follows each channel over HTTP: email dead, SMS took over."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from fakes.smtp_sink import SmtpSink
from testbed.harness import Server, cloudevent, wait_for

ORDER = {"order_id": "o-1", "buyer_id": "b-1", "seller_id": "s-1", "amount": "1", "currency": "CNY"}


def decision(client: httpx.Client, event_id: str) -> dict[str, Any] | None:
    body = client.get(f"/v1/events/{event_id}").json()
    made = body.get("decisions") or []
    return made[0] if made and "took over" in made[0]["reason"] else None


def test_the_reason_says_email_failed_and_sms_took_over(tmp_path: Path) -> None:
    sink = SmtpSink()  # never started: the mail server refuses every connection
    config = {
        "categories": {"order_updates": {"required": True}},
        "templates": {"plain": {"en-US": {"title": "Paid {{ order_id }}", "body": "b"}}},
        "delivery": {"retry": {"attempts": 1}},
        "providers": {"email": [sink.settings()]},  # sms: the console provider
        "rules": [
            {
                "id": "paid",
                "on": "order.paid",
                "channels": ["email"],
                "fallback": ["sms"],
                "template": "plain",
            }
        ],
    }
    server = Server(tmp_path, config=config).start()
    try:
        with server.client() as client:
            buyer = {"email": "b-1@shop.test", "phone": "+15550000001"}
            assert client.put("/v1/subscribers/b-1", json=buyer).status_code in (200, 201)
            posted = client.post("/v1/events", json=cloudevent("order.paid", "e-1", **ORDER))
            assert posted.status_code == 202
            made = wait_for(lambda: decision(client, "e-1"), timeout=30)
    finally:
        server.stop()
    assert made["outcome"] == "sent"
    assert made["reason"].startswith("sent on email — email failed (")
    assert made["reason"].endswith("; sms took over: sent")
