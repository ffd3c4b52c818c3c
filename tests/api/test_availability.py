"""``GET /v1/availability`` over HTTP: an SMTP server down then back opens and closes the
provider's breaker; the failure shows per provider and channel, the gauge on ``/metrics``,
and in-app deliveries count in ``tidings_deliveries_total``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from fakes.smtp_sink import SmtpSink
from testbed.harness import Server, cloudevent, wait_for

CONFIG: dict[str, Any] = {
    "categories": {"order_updates": {"required": True}},
    "templates": {"plain": {"en-US": {"title": "Paid {{ order_id }}", "body": "b"}}},
    "delivery": {"retry": {"attempts": 30, "backoff": "100ms", "max_backoff": "300ms"}},
    "rules": [
        {
            "id": "paid",
            "on": "order.paid",
            "to": "buyer",
            "channels": ["inapp", "email"],
            "template": "plain",
        }
    ],
}
ORDER = {
    "order_id": "o-1",
    "buyer_id": "buyer-1",
    "seller_id": "s-1",
    "amount": "1",
    "currency": "CNY",
}


def report(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/v1/availability")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def window(entries: list[dict[str, Any]], key: str, name: str) -> dict[str, Any]:
    (found,) = [e for e in entries if e[key] == name]
    return found["windows"]["1h"]  # type: ignore[no-any-return]


def test_a_provider_down_then_back_shows_one_failure(tmp_path: Path) -> None:
    sink = SmtpSink()  # not started: connections are refused
    breaker = {"threshold": 1, "cooldown": "500ms"}
    config = {
        **CONFIG,
        "providers": {"email": [{**sink.settings(), "name": "mail", "breaker": breaker}]},
    }
    server = Server(tmp_path, config=config).start()
    try:
        with server.client() as client:
            body = {"email": "buyer-1@shop.test"}
            assert client.put("/v1/subscribers/buyer-1", json=body).status_code in (200, 201)
            assert (
                client.post("/v1/events", json=cloudevent("order.paid", "e-1", **ORDER)).status_code
                == 202
            )
            wait_for(
                lambda: window(report(client)["providers"], "provider", "mail")["failures"],
                timeout=30,
            )
            sink.start()
            found = wait_for(
                lambda: (
                    (r := report(client))
                    and window(r["providers"], "provider", "mail")["mttr_seconds"]
                    and r
                ),
                timeout=30,
            )
            metrics = client.get("/metrics").text
    finally:
        server.stop()
        sink.stop()
    mail = window(found["providers"], "provider", "mail")
    assert mail["failures"] == 1
    assert 0 < mail["availability"] < 1
    assert mail["mtbf_seconds"] > 0 and mail["mttr_seconds"] > 0
    mtbf, mttr = mail["mtbf_seconds"], mail["mttr_seconds"]
    assert abs(mail["availability"] - mtbf / (mtbf + mttr)) < 1e-3
    assert window(found["channels"], "channel", "email")["failures"] == 1
    inapp = window(found["channels"], "channel", "inapp")
    assert inapp["failures"] == 0 and inapp["availability"] == 1
    assert found["service"]["windows"]["1h"]["failures"] == 0
    assert set(found["windows"]) == {"1h", "24h", "7d"}
    assert 'tidings_provider_availability{provider="mail",window="1h"}' in metrics
    assert (
        'tidings_deliveries_total{channel="inapp",provider="inbox",status="delivered"} 1.0'
        in metrics
    )
