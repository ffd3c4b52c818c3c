"""Events in over AMQP: a plain ``pika`` producer on ``tidings.events`` (SPEC §2)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pika
import pytest

from testbed.cluster import Cluster, fresh_database
from testbed.harness import cloudevent, wait_for
from testbed.services import Services

pytestmark = pytest.mark.scaleout
PAID = {
    "order_id": "o-1",
    "buyer_id": "buyer-1",
    "seller_id": "seller-1",
    "amount": "5.00",
    "currency": "CNY",
}


@pytest.fixture
def cluster(tmp_path: Path, services: Services, vhosts: Any) -> Iterator[Cluster]:
    database = fresh_database(services)
    running = Cluster(tmp_path, database.url, vhosts.take()).start()
    try:
        yield running
    finally:
        running.stop()
        database.drop()


def publish(url: str, *bodies: tuple[str, bytes]) -> None:
    """The seed document's style: a blocking pika connection, persistent messages."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for routing_key, body in bodies:
            channel.basic_publish(
                "tidings.events", routing_key, body, pika.BasicProperties(delivery_mode=2)
            )
    finally:
        connection.close()


def dead_letters(url: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        declared = connection.channel().queue_declare("tidings.dead", passive=True)
        return int(declared.method.message_count)
    finally:
        connection.close()


def inbox(cluster: Cluster, subscriber: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{cluster.url}/v1/inbox",
        headers={"Authorization": f"Bearer {cluster.token(subscriber)}"},
    )
    assert response.status_code == 200, response.text
    return response.json()["items"]  # type: ignore[no-any-return]


def test_a_pika_producer_gets_its_event_processed_once(cluster: Cluster) -> None:
    url = cluster.env["TIDINGS_BROKER_URL"]
    event = json.dumps(cloudevent("order.paid", "amqp-1", **PAID)).encode()
    publish(url, ("order.paid", event), ("order.paid", event))  # the same (source, id) twice
    items = wait_for(lambda: inbox(cluster, "buyer-1"), timeout=20)
    assert items[0]["title"] == "Payment received"
    with cluster.client() as client:
        explained = wait_for(lambda: client.get("/v1/events/amqp-1").json().get("decisions"))
        assert {d["rule"] for d in explained} >= {"order-paid-buyer"}
        # also idempotent against the HTTP API: the same key is a duplicate there
        again = client.post("/v1/events", json=cloudevent("order.paid", "amqp-1", **PAID))
        assert again.status_code == 200 and again.json()["duplicate"] is True
    # another order: a second order.paid of o-1 would be deduplicated (one notice per step)
    other = cloudevent("order.paid", "amqp-2", **{**PAID, "order_id": "o-2"})
    publish(url, ("order.paid", json.dumps(other).encode()))
    wait_for(lambda: len(inbox(cluster, "buyer-1")) == 2, timeout=20)
    assert len(inbox(cluster, "buyer-1")) == 2  # amqp-1 once, amqp-2 once


def test_invalid_messages_are_dead_lettered_not_lost_nor_requeued(cluster: Cluster) -> None:
    url = cluster.env["TIDINGS_BROKER_URL"]
    missing_buyer = cloudevent("order.paid", "bad-1", order_id="o-9")
    publish(
        url,
        ("order.paid", b"{not json"),
        ("order.paid", json.dumps(missing_buyer).encode()),
        ("order.paid", json.dumps(cloudevent("order.paid", "good-1", **PAID)).encode()),
    )
    wait_for(lambda: dead_letters(url) == 2, timeout=20)
    wait_for(lambda: inbox(cluster, "buyer-1"), timeout=20)  # the valid one still went through
    with cluster.client() as client:
        assert client.get("/v1/events/bad-1").status_code == 404
    assert dead_letters(url) == 2


def test_a_batch_message_is_processed_and_a_bad_batch_kept_whole(cluster: Cluster) -> None:
    url = cluster.env["TIDINGS_BROKER_URL"]
    good = [
        cloudevent("order.paid", f"amqp-batch-{i}", **{**PAID, "buyer_id": f"buyer-b{i}"})
        for i in range(3)
    ]
    bad = [
        cloudevent("order.paid", "amqp-batch-ok", **PAID),
        cloudevent("order.paid", "amqp-batch-bad", order_id="o-9"),  # no buyer_id
    ]
    publish(url, ("batch", json.dumps(good).encode()), ("batch", json.dumps(bad).encode()))
    for i in range(3):
        wait_for(lambda i=i: inbox(cluster, f"buyer-b{i}"), timeout=20)
    wait_for(lambda: dead_letters(url) == 1, timeout=20)
    with cluster.client() as client:
        # all or nothing: the valid event of the rejected batch is in tidings.dead with it
        assert client.get("/v1/events/amqp-batch-ok").status_code == 404


def test_a_large_http_batch_is_handed_to_the_workers_in_chunks(cluster: Cluster) -> None:
    batch = [
        cloudevent("order.paid", f"http-batch-{i}", **{**PAID, "buyer_id": f"buyer-h{i}"})
        for i in range(300)
    ]
    with cluster.client() as client:
        response = client.post(
            "/v1/events",
            content=json.dumps(batch),
            headers={"content-type": "application/cloudevents-batch+json"},
        )
        assert response.status_code == 202, response.text
    for i in (0, 150, 299):
        wait_for(lambda i=i: inbox(cluster, f"buyer-h{i}"), timeout=30)
    with cluster.client() as client:
        explained = client.get("/v1/events/http-batch-299").json()
        assert explained["decisions"], explained
