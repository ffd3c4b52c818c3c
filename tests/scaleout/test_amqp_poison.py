"""Poison messages on ``tidings.events`` go to the dead letters and never stop the consumer.

A lone surrogate, a NUL in the id, NaN, nesting past 64 levels and an integer past 4,300
digits all decode in Python's json; before issue 12 they reached the PostgreSQL insert, failed
the whole batch of messages with them, and were retried and requeued over and over.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.cluster import Cluster, fresh_database
from testbed.harness import cloudevent, wait_for
from testbed.services import Services
from tests.scaleout.test_amqp_ingest import dead_letters, inbox, publish

pytestmark = pytest.mark.scaleout


def paid(event_id: str, buyer: str) -> bytes:
    data = {
        "order_id": f"o-{event_id}",
        "buyer_id": buyer,
        "seller_id": "seller-1",
        "amount": "5.00",
        "currency": "CNY",
    }
    return json.dumps(cloudevent("order.paid", event_id, **data)).encode()


def poisons() -> list[bytes]:
    head = '{"specversion": "1.0", "source": "/shop", "type": "order.paid", "id": '
    data = '"data": {"order_id": "o-p", "buyer_id": "b", "seller_id": "s", "amount": "1.00",'
    return [
        (head + '"p-1", ' + data + ' "currency": "CNY", "note": "\\ud800"}}').encode(),
        (head + '"p-\\u0000", ' + data + ' "currency": "CNY"}}').encode(),
        (head + '"p-3", ' + data + ' "currency": "CNY", "tip": NaN}}').encode(),
        (
            head + '"p-4", ' + data + ' "currency": "CNY", "x": ' + "[" * 100 + "]" * 100 + "}}"
        ).encode(),
        (head + '"p-5", ' + data + ' "currency": "CNY", "n": ' + "9" * 5000 + "}}").encode(),
    ]


@pytest.fixture
def cluster(tmp_path: Path, services: Services, vhosts: Any) -> Iterator[Cluster]:
    database = fresh_database(services)
    running = Cluster(tmp_path, database.url, vhosts.take()).start()
    try:
        yield running
    finally:
        running.stop()
        database.drop()


def test_poison_messages_are_dead_lettered_and_the_consumer_goes_on(cluster: Cluster) -> None:
    url = cluster.env["TIDINGS_BROKER_URL"]
    messages = [("order.paid", paid("amqp-good-1", "amqp-b1"))]
    messages += [("order.paid", body) for body in poisons()]
    messages += [("order.paid", paid("amqp-good-2", "amqp-b2"))]
    publish(url, *messages)
    wait_for(lambda: dead_letters(url) == 5, timeout=30)
    for buyer in ("amqp-b1", "amqp-b2"):
        wait_for(lambda buyer=buyer: inbox(cluster, buyer), timeout=30)
    # the consumer is still consuming: a message after the poison ones is processed too
    publish(url, ("order.paid", paid("amqp-good-3", "amqp-b3")))
    wait_for(lambda: inbox(cluster, "amqp-b3"), timeout=30)
    with cluster.client() as client:
        assert client.get("/v1/events/p-1").status_code == 404
    assert dead_letters(url) == 5
