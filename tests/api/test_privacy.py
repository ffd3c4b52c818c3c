"""Export and erasure of a subscriber against a running service (SPEC §11)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from fakes.webhook_receiver import Reply, WebhookReceiver
from testbed.harness import Server, cloudevent, wait_for

CONFIG: dict[str, Any] = {
    "categories": {"order_updates": {"required": True}, "reminders": {}},
    "templates": {"plain": {"en-US": {"title": "Order {{ order_id }}", "body": "to pay"}}},
    "delivery": {"retry": {"attempts": 8, "backoff": "1h", "max_backoff": "1h"}},
    "providers": {"webhook": [{"kind": "webhook", "allow_private_networks": True}]},
    "rules": [
        {
            "id": "reminder",
            "on": "order.created",
            "to": "buyer",
            "category": "reminders",
            "delay": "10m",
            "cancel_on": ["order.paid"],
            "channels": ["inapp"],
            "template": "plain",
        },
        {
            "id": "now",
            "on": "order.created",
            "to": "buyer",
            "category": "order_updates",
            "channels": ["inapp"],
            "template": "plain",
        },
        {
            "id": "erp",
            "on": "order.created",
            "to": "seller",
            "category": "order_updates",
            "channels": ["webhook"],
            "template": "plain",
        },
    ],
}
ORDER = {"order_id": "o-1", "buyer_id": "buyer-1", "seller_id": "seller-1", "amount": "9.90"}


def _order(n: int = 1) -> dict[str, Any]:
    order = {**ORDER, "order_id": f"o-{n}", "buyer_id": f"buyer-{n}", "seller_id": f"seller-{n}"}
    return cloudevent("order.created", f"e-{n}", **order, currency="EUR")


def test_export_then_erase_cancels_what_is_pending(tmp_path: Path) -> None:
    server = Server(tmp_path, config=CONFIG).start()
    later = Server(tmp_path, config=CONFIG)  # the same service, 11 minutes later
    later.port, later.url, later.admin_key = server.port, server.url, server.admin_key
    later.env = {**server.env, "TIDINGS_CLOCK_OFFSET": "11m"}
    database = tmp_path / "tidings.db"
    with WebhookReceiver() as erp:
        erp.script(Reply(500))  # the seller's first delivery fails: a retry waits an hour
        try:
            with server.client() as http:
                http.put("/v1/subscribers/buyer-1", json={"email": "ann@example.com"})
                http.post(
                    "/v1/subscribers/buyer-1/devices", json={"kind": "fcm", "token": "t" * 40}
                )
                http.put("/v1/subscribers/seller-1", json={"name": "Seller One"})
                http.put("/v1/topics/product.sku-1.restock", json={"name": "SKU 1 is back"})
                follow = {"add": ["buyer-1"]}
                added = http.post("/v1/topics/product.sku-1.restock/subscribers", json=follow)
                assert added.is_success, added.text
                hook = {"url": erp.url, "secret": erp.secret}
                assert http.post("/v1/subscribers/seller-1/webhooks", json=hook).status_code == 201
                assert http.post("/v1/events", json=_order()).status_code == 202
                assert http.post("/v1/events", json=_order(2)).status_code == 202  # a witness
                wait_for(lambda: _statuses(database, "seller-1") == ["pending"])
                exported = http.get("/v1/subscribers/buyer-1/export").json()
                reader = http.get(
                    "/v1/subscribers/buyer-1/export",
                    headers={"Authorization": "Bearer not-an-admin-key-0000000000"},
                )
                assert http.delete("/v1/subscribers/buyer-1").status_code == 204
                assert http.delete("/v1/subscribers/seller-1").status_code == 204
                explained = http.get("/v1/events/e-1").json()
                gone = http.get("/v1/subscribers/buyer-1/export").json()
                members = http.get("/v1/topics/product.sku-1.restock/subscribers").json()
            server.stop()
            later.start()
            with later.client() as http:
                # the witness's reminder fell due and was fired: the scheduler has passed
                wait_for(lambda: len(_inbox(http, "buyer-2")) == 2, timeout=30)
                after = http.get("/v1/subscribers/buyer-1/export").json()
        finally:
            server.stop()
            later.stop()
    assert reader.status_code == 401
    assert exported["subscriber"]["email"] == "ann@example.com"
    assert exported["devices"][0]["token"] == "t" * 40
    assert exported["topics"] == ["product.sku-1.restock"]
    assert gone["topics"] == [] and members["items"] == []
    assert {n["rule"] for n in exported["notifications"]} == {"reminder", "now"}
    assert {n["title"] for n in exported["notifications"]} == {"Order o-1"}
    assert [i["title"] for i in exported["inbox"]] == ["Order o-1"]
    assert {d["outcome"] for d in exported["decisions"]} == {"deferred", "sent"}
    by_rule = {(d["rule"], d["recipient"]): d for d in explained["decisions"]}
    assert by_rule[("reminder", "buyer-1")]["outcome"] == "cancelled"
    assert by_rule[("reminder", "buyer-1")]["reason"] == "subscriber deleted"
    assert _statuses(database, "seller-1") == ["cancelled"]  # the retry will not happen
    assert gone["subscriber"] is None and gone["devices"] == [] and gone["inbox"] == []
    assert {n["title"] for n in gone["notifications"]} == {None}  # content erased, ids kept
    assert {n["status"] for n in gone["notifications"]} >= {"cancelled"}
    assert after["inbox"] == []  # the reminder fell due after the DELETE: nothing created
    assert len(erp.deliveries) == 1


def _inbox(http: Any, subscriber_id: str) -> list[Any]:
    found: list[Any] = http.get(f"/v1/subscribers/{subscriber_id}/export").json()["inbox"]
    return found


def _statuses(database: Path, subscriber_id: str) -> list[str]:
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "select d.status from deliveries d join notifications n on n.id = d.notification_id"
            " where n.subscriber_id = ? and d.channel != 'inapp'",
            (subscriber_id,),
        ).fetchall()
    return [row[0] for row in rows]
