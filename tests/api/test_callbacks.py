"""Status callbacks against a running service: signed, per type, retried, never in the way."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakes.webhook_receiver import Reply, WebhookReceiver
from testbed.harness import Server, cloudevent, free_port, wait_for

CONFIG: dict[str, Any] = {
    "delivery": {"retry": {"attempts": 8, "backoff": "100ms", "max_backoff": "500ms"}},
    "providers": {"webhook": [{"kind": "webhook", "allow_private_networks": True}]},
}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path, config=CONFIG).start()
    try:
        yield running
    finally:
        running.stop()


def _cancelled(n: int) -> dict[str, Any]:
    # built-in rules: the buyer by in-app + email (console), the seller by in-app + webhook
    return cloudevent(
        "order.cancelled", f"c-{n}", order_id=f"o-{n}", buyer_id="buyer-1", seller_id="seller-1"
    )


def _shop(http: httpx.Client, erp_url: str, erp_secret: str) -> None:
    assert http.put("/v1/subscribers/buyer-1", json={"email": "b@example.com"}).status_code < 300
    assert http.put("/v1/subscribers/seller-1", json={}).status_code < 300
    endpoint = {"url": erp_url, "secret": erp_secret}
    assert http.post("/v1/subscribers/seller-1/webhooks", json=endpoint).status_code == 201


def test_status_changes_are_posted_signed(served: Server) -> None:
    with WebhookReceiver() as shop, WebhookReceiver() as erp, served.client() as http:
        erp.script(Reply(400))  # the seller's ERP refuses: that webhook delivery fails
        _shop(http, erp.url, erp.secret)
        bad = http.post("/v1/callbacks", json={"url": shop.url, "types": ["notification.read"]})
        made = http.post(
            "/v1/callbacks",
            json={
                "url": shop.url,
                "types": ["notification.sent", "notification.failed"],
                "secret": shop.secret,
            },
        )
        assert made.status_code == 201, made.text
        callback = made.json()
        assert http.post("/v1/events", json=_cancelled(1)).status_code == 202
        wait_for(lambda: len(shop.deliveries) >= 2, timeout=30)
        listed = http.get("/v1/callbacks").json()
        one = wait_for(
            lambda: (
                (r := http.get(f"/v1/callbacks/{callback['id']}").json())["outbox"].get("sent") == 2
                and r
            )
        )
        assert http.delete(f"/v1/callbacks/{callback['id']}").status_code == 204
        assert http.get(f"/v1/callbacks/{callback['id']}").status_code == 404
        assert http.post("/v1/events", json=_cancelled(2)).status_code == 202
        database = served.workdir / "tidings.db"

        def second_done() -> int | None:
            with sqlite3.connect(database) as db:
                final = db.execute(
                    "select count(*) from deliveries d join notifications n"
                    " on n.id = d.notification_id join events e on e.id = n.event_pk"
                    " where e.event_id = 'c-2' and d.channel != 'inapp'"
                    " and d.status in ('sent', 'delivered')"
                ).fetchone()[0]
                outbox = db.execute("select count(*) from callback_outbox").fetchone()[0]
            return outbox + 1 if final == 2 else None

        # outbox rows are written with the outcomes: none for the second event's
        outbox_rows = wait_for(second_done, timeout=30) - 1
    assert bad.status_code == 422 and "/types" in bad.text
    assert callback["secret"] == shop.secret and callback["types"] == [
        "notification.sent", "notification.failed"
    ]  # fmt: skip
    assert all(d.verified for d in shop.deliveries), [d.status for d in shop.deliveries]
    by_type = {d.payload["type"]: d.payload["data"] for d in shop.deliveries}
    assert set(by_type) == {"notification.sent", "notification.failed"}
    assert by_type["notification.sent"]["channel"] == "email"
    assert by_type["notification.sent"]["subscriber_id"] == "buyer-1"
    assert by_type["notification.sent"]["event"]["id"] == "c-1"
    assert by_type["notification.failed"]["channel"] == "webhook"
    assert "400" in by_type["notification.failed"]["error"]
    assert len(set(shop.ids)) == 2
    assert [c["id"] for c in listed["items"]] == [callback["id"]]
    assert "secret" not in listed["items"][0] and one["outbox"] == {"sent": 2}
    assert outbox_rows == 2 and len(shop.deliveries) == 2  # removed: nobody called back


def test_a_dead_callback_endpoint_does_not_hold_deliveries(served: Server) -> None:
    dead = f"http://127.0.0.1:{free_port()}/hooks/gone"
    with WebhookReceiver() as slow, WebhookReceiver() as erp, served.client() as http:
        slow.script(*[Reply(200, delay=3.0)] * 200)
        _shop(http, erp.url, erp.secret)
        for url, secret in ((dead, None), (slow.url, slow.secret)):
            body = {"url": url, "types": ["notification.sent", "notification.delivered"]}
            made = http.post(
                "/v1/callbacks", json={**body, **({"secret": secret} if secret else {})}
            )
            assert made.status_code == 201, made.text
        for n in range(40):
            assert http.post("/v1/events", json=_cancelled(n)).status_code == 202
        database = served.workdir / "tidings.db"

        def settled() -> tuple[int, int, int] | None:
            with sqlite3.connect(database) as db:
                done, waiting = db.execute(
                    "select sum(status in ('sent', 'delivered')), sum(status not in"
                    " ('sent', 'delivered')) from deliveries where channel != 'inapp'"
                ).fetchone()
                retried = db.execute(
                    "select count(*) from callback_outbox where status = 'pending'"
                    " and attempts >= 1 and last_error like '%Connect%'"
                ).fetchone()[0]
            return (done, waiting, retried) if done == 80 and retried else None

        done, waiting, retried = wait_for(settled, timeout=60, interval=0.1)
        with sqlite3.connect(database) as db:
            unsent = db.execute(
                "select count(*) from callback_outbox where status = 'pending'"
            ).fetchone()[0]
    # every delivery (40 emails, 40 webhooks) went while the shop's endpoints were dead
    # or slow: 160 callbacks (80 changes × 2 endpoints) were still waiting for them
    assert (done, waiting) == (80, 0)
    assert retried >= 1 and unsent >= 80
    assert len(erp.deliveries) == 40 and all(d.verified for d in erp.deliveries)


def test_inbox_items_delivered_now_and_when_deferred_and_suppressed_decisions(
    tmp_path: Path,
) -> None:
    plain = {"en-US": {"title": "Order {{ order_id }}", "body": "created"}}
    rule = {"on": "order.created", "to": "buyer", "channels": ["inapp"], "template": "plain"}
    config = {
        "categories": {"order_updates": {"required": True}, "marketing": {}},
        "templates": {"plain": plain},
        "rules": [
            {**rule, "id": "now", "category": "order_updates"},
            {**rule, "id": "later", "category": "order_updates", "delay": "1s"},
            {**rule, "id": "promo", "category": "marketing"},
        ],
        "providers": CONFIG["providers"],
    }
    server = Server(tmp_path, config=config).start()
    try:
        with WebhookReceiver() as shop, server.client() as admin:
            types = ["notification.delivered", "notification.suppressed"]
            body = {"url": shop.url, "types": types, "secret": shop.secret}
            assert admin.post("/v1/callbacks", json=body).status_code == 201
            opted_out = {"categories": {"marketing": {"enabled": False}}}
            assert admin.put("/v1/subscribers/b-1/preferences", json=opted_out).is_success
            event = cloudevent("order.created", "e-1", order_id="o-1", buyer_id="b-1")
            event["data"] |= {"seller_id": "s-1", "amount": "1.00", "currency": "EUR"}
            assert admin.post("/v1/events", json=event).status_code == 202
            wait_for(lambda: len(shop.deliveries) >= 3, timeout=30)
            notes = admin.get("/v1/notifications", params={"subscriber_id": "b-1"}).json()
    finally:
        server.stop()
    assert all(d.verified for d in shop.deliveries)
    by_type: dict[str, list[Any]] = {}
    for d in shop.deliveries:
        by_type.setdefault(d.payload["type"], []).append(d.payload["data"])
    delivered, (held,) = by_type["notification.delivered"], by_type["notification.suppressed"]
    assert {d["channel"] for d in delivered} == {"inapp"}
    # one immediate (the processor), one deferred (fired by the scheduler)
    assert {d["notification_id"] for d in delivered} == {n["id"] for n in notes["items"]}
    assert {d["event"]["id"] for d in delivered} == {"e-1"} == {held["event"]["id"]}
    assert held["rule"] == "promo" and held["subscriber_id"] == "b-1"
    assert held["notification_id"] is None and "marketing" in held["error"]


def test_a_fallback_read_in_the_inbox_is_a_suppressed_callback(tmp_path: Path) -> None:
    nudge = {
        "id": "nudge",
        "on": "order.shipped",
        "to": "buyer",
        "category": "order_updates",
        "channels": ["inapp"],
        "fallback": ["email"],
        "fallback_after": "6s",  # the buyer reads it well before
        "template": "plain",
    }
    config = {
        "categories": {"order_updates": {"required": True}},
        "templates": {"plain": {"en-US": {"title": "Order {{ order_id }}", "body": "shipped"}}},
        "rules": [nudge],
        "providers": CONFIG["providers"],
    }
    server = Server(tmp_path, config=config).start()
    try:
        with WebhookReceiver() as shop, server.client() as admin:
            body = {"url": shop.url, "types": ["notification.suppressed"], "secret": shop.secret}
            assert admin.post("/v1/callbacks", json=body).status_code == 201
            assert admin.put("/v1/subscribers/b-1", json={"email": "b@example.com"}).is_success
            event = cloudevent("order.shipped", "e-1", order_id="o-1", buyer_id="b-1")
            event["data"]["seller_id"] = "s-1"
            assert admin.post("/v1/events", json=event).status_code == 202
            inbox = {"Authorization": f"Bearer {server.token('b-1')}"}
            with httpx.Client(base_url=server.url, headers=inbox, timeout=10) as buyer:
                (item,) = wait_for(lambda: buyer.get("/v1/inbox").json()["items"])
                assert buyer.post(f"/v1/inbox/{item['id']}/read").is_success
            wait_for(lambda: shop.deliveries, timeout=30)
    finally:
        server.stop()
    (told,) = shop.deliveries
    assert told.verified and told.payload["type"] == "notification.suppressed"
    data = told.payload["data"]
    assert (data["channel"], data["status"], data["subscriber_id"]) == (
        "email",
        "suppressed",
        "b-1",
    )
    assert "read" in data["error"] and data["event"]["id"] == "e-1"


@pytest.mark.scaleout
def test_callbacks_scaled_out(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Workers write the outbox (PostgreSQL), the API process sends it."""
    from testbed.cluster import Cluster, fresh_database

    database = fresh_database(request.getfixturevalue("services"))
    request.addfinalizer(database.drop)
    vhost = request.getfixturevalue("vhosts").take()
    cluster = Cluster(tmp_path, database.url, vhost, config=CONFIG).start()
    try:
        with WebhookReceiver() as shop, WebhookReceiver() as erp, cluster.client() as http:
            _shop(http, erp.url, erp.secret)
            types = ["notification.sent", "notification.delivered"]
            body = {"url": shop.url, "types": types, "secret": shop.secret}
            assert http.post("/v1/callbacks", json=body).status_code == 201
            assert http.post("/v1/events", json=_cancelled(1)).status_code == 202
            # email sent (console), webhook delivered, and two in-app items delivered
            wait_for(lambda: len(shop.deliveries) >= 4, timeout=60)
    finally:
        cluster.stop()
    channels = sorted(d.payload["data"]["channel"] for d in shop.deliveries)
    assert channels == ["email", "inapp", "inapp", "webhook"]
    assert all(d.verified for d in shop.deliveries)
