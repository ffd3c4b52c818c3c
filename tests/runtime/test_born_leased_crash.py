"""``kill -9`` of a service holding born-leased deliveries: one in flight at the provider, one
committed ``sending`` but not yet sent (waiting for the provider's only place). After a
restart both come back; only the call in flight at the instant of death is made twice (with
the same ``webhook-id``), and nothing is lost."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fakes.webhook_receiver import Reply, WebhookReceiver
from testbed.harness import Server, cloudevent, wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running:
        yield running


def config() -> dict[str, Any]:
    return {
        "categories": {"order_updates": {"required": True}},
        "providers": {
            # one call at a time: the second delivery waits, leased, for the first's place
            "webhook": [{"kind": "webhook", "allow_private_networks": True, "concurrency": 1}]
        },
        "rules": [
            {
                "id": "paid",
                "on": "order.paid",
                "to": "seller",
                "category": "order_updates",
                "priority": "high",
                "channels": ["webhook"],
                "template": "paid",
            }
        ],
        "templates": {"paid": {"en-US": {"title": "Paid {{ order_id }}", "body": "b"}}},
    }


def deliveries(database: Path) -> dict[str, tuple[str, str | None, str]]:
    """Event id → (delivery status, leased_by, delivery id)."""
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "SELECT e.event_id, d.status, d.leased_by, d.id FROM deliveries d"
            " JOIN notifications n ON n.id = d.notification_id"
            " JOIN events e ON e.id = n.event_pk"
        ).fetchall()
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def test_kill_9_with_born_leased_deliveries_then_restart(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    receiver.script(Reply(200, delay=20.0))  # the first call hangs until long after the kill
    server = Server(tmp_path, config=config()).start()
    database = tmp_path / "tidings.db"
    with server.client() as client:
        assert client.put("/v1/subscribers/seller-1", json={"name": "Shop"}).status_code in (
            200,
            201,
        )
        created = client.post(
            "/v1/subscribers/seller-1/webhooks",
            json={"url": receiver.url, "secret": receiver.secret},
        )
        assert created.status_code == 201, created.text
        for n in (1, 2):
            event = cloudevent(
                "order.paid",
                f"e-{n}",
                order_id=f"o-{n}",
                buyer_id="buyer-1",
                seller_id="seller-1",
                amount="9.00",
                currency="CNY",
            )
            event["subject"] = f"o-{n}"
            assert client.post("/v1/events", json=event).status_code == 202
            if n == 1:
                wait_for(lambda: len(receiver.ids) == 1, timeout=15)  # in flight
    before = wait_for(
        lambda: (found := deliveries(database)) and len(found) == 2 and found, timeout=15
    )
    # both were born leased to this process; the second has not been sent
    assert {status for status, _, _ in before.values()} == {"sending"}
    assert server.process is not None
    pid = server.process.pid
    assert all(owner and owner.endswith(f"/{pid}") for _, owner, _ in before.values())
    first, second = before["e-1"][2], before["e-2"][2]
    assert receiver.ids == [first]
    server.kill()

    restarted = Server(tmp_path, config=config())
    restarted.port, restarted.url, restarted.admin_key = server.port, server.url, server.admin_key
    restarted.env = server.env
    restarted.start()
    try:
        wait_for(
            lambda: {s for s, _, _ in deliveries(database).values()} == {"delivered"}, timeout=30
        )
        after = deliveries(database)
        assert all(owner is None for _, owner, _ in after.values())
        # the call in flight at the kill is made again (same webhook-id, which receivers
        # deduplicate); the delivery that never left is made once; nothing else
        assert sorted(receiver.ids) == sorted([first, first, second])
    finally:
        restarted.stop()
