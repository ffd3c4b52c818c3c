"""Faults mid-load in scale-out mode: ``kill -9`` a worker, restart RabbitMQ, restart PostgreSQL.

Each test posts paid orders while the fault happens; every order notifies its seller by
webhook (Standard Webhooks, verified by the receiver). Afterwards every accepted event must
have reached the receiver, and the receiver — deduplicating on ``webhook-id``, the delivery
id — must count exactly one delivery per event: nothing lost, nothing delivered twice.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakes.webhook_receiver import WebhookReceiver
from testbed.cluster import CONFIG, SELLERS, Cluster, fresh_database
from testbed.harness import cloudevent
from testbed.services import Services

pytestmark = [pytest.mark.scaleout, pytest.mark.timeout(240)]


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    running = WebhookReceiver().start()
    yield running
    running.stop()


@pytest.fixture
def cluster(
    tmp_path: Path, services: Services, vhosts: Any, receiver: WebhookReceiver
) -> Iterator[Cluster]:
    database = fresh_database(services)
    running = Cluster(tmp_path, database.url, vhosts.take(), workers=2, config=CONFIG).start()
    try:
        with running.client() as client:
            for seller in SELLERS:
                response = client.post(
                    f"/v1/subscribers/{seller}/webhooks",
                    json={"url": receiver.url, "secret": receiver.secret},
                )
                assert response.status_code in (200, 201), response.text
        yield running
    finally:
        running.stop()
        database.drop()


class Load:
    """Posts paid orders in batches from a thread, retrying whatever was not answered 2xx."""

    def __init__(self, cluster: Cluster, total: int, batch: int = 10, pause: float = 0.05) -> None:
        self.cluster = cluster
        self.total = total
        self.batch = batch
        self.pause = pause
        self.accepted: set[str] = set()
        self.errors = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.cluster.client() as client:
            for start in range(0, self.total, self.batch):
                events = [
                    cloudevent(
                        "order.paid",
                        f"paid-{i}",
                        order_id=f"o-{i}",
                        buyer_id=f"b-{i}",
                        seller_id=SELLERS[i % len(SELLERS)],
                        amount="10.00",
                        currency="CNY",
                    )
                    for i in range(start, min(start + self.batch, self.total))
                ]
                while True:  # a client retries until the service answers (idempotent ids)
                    try:
                        response = client.post(
                            "/v1/events",
                            content=json.dumps(events),
                            headers={"content-type": "application/cloudevents-batch+json"},
                        )
                        if response.status_code in (202, 207):
                            results = response.json()["results"]
                            self.accepted |= {r["id"] for r in results if r["status"] in (200, 202)}
                            if len(results) == len(events) and all(
                                r["status"] in (200, 202) for r in results
                            ):
                                break
                    except httpx.HTTPError:
                        pass
                    self.errors += 1
                    time.sleep(0.2)
                time.sleep(self.pause)

    def start(self) -> Load:
        self._thread.start()
        return self

    async def done(self) -> None:
        await asyncio.to_thread(self._thread.join, 120)
        assert not self._thread.is_alive(), "the producer did not finish"


async def delivered(receiver: WebhookReceiver, expected: int, within: float) -> set[str]:
    """Wait until the receiver has seen ``expected`` distinct delivery ids."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:  # the receiver runs in another thread
        if len(set(receiver.ids)) >= expected:
            break
        await asyncio.sleep(0.2)
    return set(receiver.ids)


def order_ids(receiver: WebhookReceiver) -> set[str]:
    return {
        str(d.payload["data"]["order_id"])
        for d in receiver.deliveries
        if d.verified and isinstance(d.payload, dict) and "data" in d.payload
    }


async def check(cluster: Cluster, receiver: WebhookReceiver, load: Load, within: float) -> None:
    await load.done()
    assert len(load.accepted) == load.total
    ids = await delivered(receiver, load.total, within)
    assert len(ids) == load.total, (
        f"{load.total - len(ids)} of {load.total} accepted events never reached the receiver\n"
        + cluster.logs()
    )
    await asyncio.sleep(1.0)  # nothing more trickles in afterwards
    assert len(set(receiver.ids)) == load.total
    assert all(d.verified for d in receiver.deliveries)


async def test_kill_9_a_worker_mid_load(cluster: Cluster, receiver: WebhookReceiver) -> None:
    load = Load(cluster, 300).start()
    await asyncio.sleep(2.0)
    cluster.workers[0].kill()
    # its leases (sending rows) are taken over once they expire: the dispatcher's 30 s
    await check(cluster, receiver, load, within=90)


async def test_restart_rabbitmq_mid_load(
    cluster: Cluster,
    receiver: WebhookReceiver,
    restart_rabbitmq: Callable[[], Awaitable[None]],
) -> None:
    load = Load(cluster, 300).start()
    await asyncio.sleep(2.0)
    await restart_rabbitmq()
    await check(cluster, receiver, load, within=90)


async def test_restart_postgres_mid_load(
    cluster: Cluster,
    receiver: WebhookReceiver,
    restart_postgres: Callable[[], Awaitable[None]],
) -> None:
    load = Load(cluster, 300).start()
    await asyncio.sleep(2.0)
    await restart_postgres()
    await check(cluster, receiver, load, within=90)


async def test_deliveries_go_on_while_rabbitmq_is_away(
    cluster: Cluster, receiver: WebhookReceiver, services: Services
) -> None:
    await services.stop_rabbitmq()
    try:
        started = time.monotonic()
        load = Load(cluster, 100).start()
        # the API commits and answers without the hand-off; the workers process and deliver
        # on their own lanes, while the broker is still down
        await check(cluster, receiver, load, within=30)
        assert time.monotonic() - started < 30
        assert load.errors == 0  # every POST answered 2xx at once, none retried
    finally:
        await services.start_rabbitmq()
    # back on RabbitMQ: new events flow through it again, still once each
    with cluster.client() as client:
        response = client.post(
            "/v1/events",
            json=cloudevent(
                "order.paid",
                "after-1",
                order_id="o-after",
                buyer_id="b-after",
                seller_id=SELLERS[0],
                amount="1.00",
                currency="CNY",
            ),
        )
        assert response.status_code == 202, response.text
    ids = await delivered(receiver, 101, within=60)
    assert len(ids) == 101
