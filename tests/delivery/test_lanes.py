"""Priority lanes through the real dispatcher: the embedded broker, a SQLite store and a slow
local webhook receiver (signatures verified). A backlog of 10,000 low-priority deliveries to
one endpoint must not hold back a high-priority delivery to that same endpoint."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from fakes.webhook_receiver import Reply, WebhookReceiver
from tidings.clock import SystemClock
from tidings.config import build_settings
from tidings.delivery.dispatcher import Dispatcher
from tidings.ids import new_id
from tidings.metrics import Metrics
from tidings.queue.base import Ticket
from tidings.queue.embedded import EmbeddedBroker
from tidings.store import Store
from tidings.store import subscribers as subscriber_rows
from tidings.store.tables import deliveries, notifications
from tidings.vocabulary import Lane

pytestmark = pytest.mark.timeout(120)
BACKLOG = 10_000


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running:
        running.script(*[Reply(200, delay=0.05)] * BACKLOG)  # a slow ERP: 50 ms a request
        yield running


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = Store.open(f"sqlite:///{tmp_path / 't.db'}", None)
    await opened.start()
    try:
        yield opened
    finally:
        await opened.aclose()


def rows(endpoint: str, lane: Lane, count: int, now: float) -> tuple[list[Any], list[Any]]:
    notes, dels = [], []
    for _ in range(count):
        note_id = new_id()
        notes.append(
            {
                "id": note_id,
                "event_pk": "evt",
                "rule_id": "r",
                "subscriber_id": "seller-1",
                "category": "order_updates",
                "priority": lane,
                "subject": None,
                "locale": "en-US",
                "content": {"title": lane, "body": "b"},
                "channels": ["webhook"],
                "fallback": [],
                "status": "pending",
                "dedup_key": note_id,
                "created_at": now,
                "due_at": now,
            }
        )
        dels.append(
            {
                "id": new_id(),
                "notification_id": note_id,
                "channel": "webhook",
                "destination_kind": "webhook",
                "device_id": endpoint,
                "lane": lane,
                "status": "pending",
                "is_fallback": False,
                "attempts": 0,
                "accepted_at": now,
                "created_at": now,
                "due_at": now,
                "enqueued_at": now,
            }
        )
    return notes, dels


async def add(store: Store, notes: list[Any], dels: list[Any]) -> None:
    async def write(conn: AsyncConnection) -> None:
        await conn.execute(insert(notifications), notes)
        await conn.execute(insert(deliveries), dels)

    await store.write(write)


async def test_high_leaves_within_a_second_behind_10000_low(
    store: Store, receiver: WebhookReceiver
) -> None:
    clock = SystemClock()
    now = clock.now()
    endpoint = await store.write(
        lambda conn: subscriber_rows.add_endpoint(
            conn, store.cipher, "seller-1", receiver.url, receiver.secret, now
        )
    )
    settings = build_settings(
        {"providers": {"webhook": [{"kind": "webhook", "allow_private_networks": True}]}},
        {},
        "test",
    )
    broker = EmbeddedBroker()
    metrics = Metrics()
    dispatcher = Dispatcher(store, broker, settings, clock, metrics)
    consuming = asyncio.create_task(broker.consume(dispatcher.handle))
    try:
        low_notes, low = rows(endpoint, "low", BACKLOG, now)
        await add(store, low_notes, low)
        await broker.publish([Ticket(d["id"], "low") for d in low])
        # the backlog is being worked: low requests are in flight at the slow receiver
        while len(receiver.deliveries) < 20:  # noqa: ASYNC110 - the receiver is another thread
            await asyncio.sleep(0.01)

        high_notes, high = rows(endpoint, "high", 1, clock.now())
        await add(store, high_notes, high)
        started = time.monotonic()
        await broker.publish([Ticket(high[0]["id"], "high")])
        high_id = high[0]["id"]
        while high_id not in receiver.ids:
            await asyncio.sleep(0.005)
            assert time.monotonic() - started < 5, "the high-priority delivery never left"
        waited = time.monotonic() - started
        low_done = sum(1 for i in receiver.ids if i != high_id)
        depth = broker.depth()
    finally:
        await broker.aclose()
        consuming.cancel()
        await asyncio.gather(consuming, return_exceptions=True)
        await dispatcher.aclose()
    assert waited < 1.0, f"high waited {waited:.2f}s behind the low backlog"
    assert low_done < BACKLOG // 10  # it really overtook a backlog
    assert depth["low"] > BACKLOG // 2
    async with store.read() as conn:
        status = (
            await conn.execute(select(deliveries.c.status).where(deliveries.c.id == high_id))
        ).scalar_one()
    assert status in ("sending", "delivered")
    (got,) = [d for d in receiver.deliveries if d.webhook_id == high_id]
    assert got.verified and got.payload["data"]["notification"]["title"] == "high"
