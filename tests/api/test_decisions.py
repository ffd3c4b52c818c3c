"""Decisions a buyer can trust, over HTTP on a ``--processes 2`` service sharing one SQLite
database: a batch lists in the inbox in event order, a re-sent step notifies once, and an
event no rule took says why."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from testbed.harness import Server, cloudevent, wait_for

ORDER = {"buyer_id": "buyer-1", "seller_id": "seller-1", "amount": "9.00", "currency": "CNY"}
CONFIG = {
    "categories": {"order_updates": {"required": True}},
    "rules": [
        {
            "id": "note",
            "on": "order.note",
            "to": "buyer",
            "channels": ["inapp"],
            "template": "note",
        },
        {
            "id": "order-paid-buyer",
            "on": "order.paid",
            "to": "buyer",
            "channels": ["inapp"],
            "template": "paid",
            "when": {"payment_method": "card"},
        },
    ],
    "templates": {
        "note": {"en-US": {"title": "Note #{{ n }}", "body": "{{ order_id }}"}},
        "paid": {"en-US": {"title": "Payment received", "body": "{{ order_id }}"}},
    },
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("decisions"), config=CONFIG, processes=2).start()
    try:
        yield running
    finally:
        running.stop()


def explained(client: httpx.Client, event_id: str) -> list[dict[str, Any]] | None:
    body = client.get(f"/v1/events/{event_id}").json()
    return body["decisions"] if body.get("processed_at") else None


def inbox(server: Server, subscriber: str, token: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{server.url}/v1/inbox?status=all&limit=100",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text
    return response.json()["items"]  # type: ignore[no-any-return]


def notes_of(server: Server, token: str, order_id: str) -> list[dict[str, Any]]:
    return [i for i in inbox(server, "note-buyer", token) if i["body"] == order_id]


def test_a_batch_of_one_order_lists_in_the_inbox_in_event_order(server: Server) -> None:
    token = server.token("note-buyer")
    with server.client() as client:
        for run in range(3):
            batch = [
                cloudevent(
                    "order.note",
                    f"note-{run}-{n}",
                    **{**ORDER, "order_id": f"o-note-{run}", "buyer_id": "note-buyer", "n": n},
                )
                for n in range(16)
            ]
            posted = client.post(
                "/v1/events",
                content=httpx.Request("POST", "/", json=batch).content,
                headers={"Content-Type": "application/cloudevents-batch+json"},
            )
            assert posted.status_code == 202, posted.text
            items = wait_for(
                lambda run=run: (
                    len(found := notes_of(server, token, f"o-note-{run}")) == 16 and found
                ),
                timeout=30,
            )
            # newest first: the last event of the batch on top
            assert [i["title"] for i in items] == [f"Note #{n}" for n in reversed(range(16))]


def test_a_resent_order_paid_notifies_the_buyer_once(server: Server) -> None:
    paid = {**ORDER, "order_id": "o-1", "buyer_id": "paid-buyer", "payment_method": "card"}
    with server.client() as client:
        assert client.post("/v1/events", json=cloudevent("order.paid", "evt-9", **paid)).is_success
        first = wait_for(lambda: explained(client, "evt-9"), timeout=30)
        assert [d["outcome"] for d in first] == ["sent"]
        # the gateway re-sends its callback: a new event id, the same order, twice at once
        again = [cloudevent("order.paid", f"evt-{n}", **paid) for n in (10, 11)]
        posted = client.post(
            "/v1/events",
            content=httpx.Request("POST", "/", json=again).content,
            headers={"Content-Type": "application/cloudevents-batch+json"},
        )
        assert posted.status_code == 202, posted.text
        for event_id in ("evt-10", "evt-11"):
            (made,) = wait_for(lambda e=event_id: explained(client, e), timeout=30)
            assert made["outcome"] == "deduplicated"
            assert made["reason"] == "order.paid was already notified for o-1 (event evt-9)"
    assert [i["title"] for i in inbox(server, "paid-buyer", server.token("paid-buyer"))] == [
        "Payment received"
    ]


def test_an_event_no_rule_took_says_why(server: Server) -> None:
    with server.client() as client:
        client.post("/v1/events", json=cloudevent("cart.abandoned", "cart-1", **ORDER))
        paypal = {**ORDER, "order_id": "o-2", "payment_method": "paypal"}
        client.post("/v1/events", json=cloudevent("order.paid", "paid-pp", **paypal))
        (none,) = wait_for(lambda: explained(client, "cart-1"), timeout=30)
        assert none == {
            "rule": None,
            "recipient": None,
            "outcome": "suppressed",
            "reason": "no rule listens to cart.abandoned",
            "notification_ids": [],
        }
        (unmet,) = wait_for(lambda: explained(client, "paid-pp"), timeout=30)
        assert unmet["reason"] == "rule order-paid-buyer: condition payment_method=card not met"


def test_duplicates_posted_at_once_to_both_processes_notify_once(server: Server) -> None:
    from concurrent.futures import ThreadPoolExecutor

    paid = {**ORDER, "order_id": "o-9", "buyer_id": "race-buyer", "payment_method": "card"}
    events = [cloudevent("order.paid", f"race-{n}", **paid) for n in range(8)]

    def post(event: dict[str, Any]) -> int:
        with server.client() as client:  # a connection each: the kernel spreads them
            return client.post("/v1/events", json=event).status_code

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(post, events)) == [202] * 8
    with server.client() as client:
        outcomes = [
            wait_for(lambda e=event: explained(client, e["id"]), timeout=30)[0]["outcome"]
            for event in events
        ]
    assert sorted(outcomes) == ["deduplicated"] * 7 + ["sent"]
    assert len(inbox(server, "race-buyer", server.token("race-buyer"))) == 1
