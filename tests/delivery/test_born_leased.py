"""Deliveries born leased: the processor's transaction inserts a due delivery ``sending`` under
the dispatcher's lease and hands it straight over — no ticket, no claim. Against a real store
(SQLite and PostgreSQL), the real processor and dispatcher and a signature-checking receiver."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from fakes.webhook_receiver import Reply, WebhookReceiver
from testbed.services import create_database, drop_database
from tidings.clock import SystemClock
from tidings.config import build_settings
from tidings.crypto import generate_key
from tidings.delivery.dispatcher import Dispatcher
from tidings.events.cloudevents import Event
from tidings.metrics import Metrics
from tidings.queue.embedded import EmbeddedBroker
from tidings.queue.inbox_hub import InboxHub
from tidings.runtime.processor import Processor
from tidings.store import Store
from tidings.store import deliveries as delivery_store
from tidings.store import events as event_rows
from tidings.store import subscribers as subscriber_rows
from tidings.store.events import StoredEvent
from tidings.store.tables import attempts, deliveries, notifications
from tidings.strategy.decide import Policy
from tidings.templates import Templates

pytestmark = pytest.mark.timeout(60)


@dataclass
class Rig:
    store: Store
    broker: EmbeddedBroker
    dispatcher: Dispatcher
    processor: Processor
    receiver: WebhookReceiver

    async def process(self, *batch: Event) -> list[StoredEvent]:
        now = time.time()
        accepted = await self.store.write(lambda conn: event_rows.insert_events(conn, batch, now))
        stored = [StoredEvent(a.pk, e, now) for a, e in zip(accepted, batch, strict=True)]
        await self.processor.process(stored)
        return stored

    async def rows(self, query: Any) -> list[Any]:
        async with self.store.read() as conn:
            return list((await conn.execute(query)).all())

    async def delivery_of(self, stored: StoredEvent) -> Any:
        (row,) = await self.rows(
            select(deliveries)
            .join(notifications, notifications.c.id == deliveries.c.notification_id)
            .where(notifications.c.event_pk == stored.pk)
        )
        return row

    async def settled(self, stored: StoredEvent) -> Any:
        """The delivery once it is neither pending nor sending (as it is after 10 s)."""
        deadline = time.monotonic() + 10
        while True:
            row = await self.delivery_of(stored)
            if row.status not in ("pending", "sending") or time.monotonic() > deadline:
                return row
            await asyncio.sleep(0.02)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running:
        yield running


@pytest.fixture(params=["sqlite", "postgresql"])
async def rig(
    request: pytest.FixtureRequest, tmp_path: Path, receiver: WebhookReceiver
) -> AsyncIterator[Rig]:
    settings = build_settings(
        {
            "categories": {"order_updates": {"required": True}},
            "providers": {"webhook": [{"kind": "webhook", "allow_private_networks": True}]},
            "rules": [
                {
                    "id": "paid",
                    "on": "order.paid",
                    "to": "seller",
                    "category": "order_updates",
                    "priority": "high",
                    "channels": ["webhook"],
                    "template": "paid",
                    "dedup": "event",  # several order.paid of one order: each one notifies
                }
            ],
            "templates": {"paid": {"en-US": {"title": "Paid {{ order_id }}", "body": "b"}}},
        },
        {},
        "test",
    )
    if request.param == "postgresql":
        url = await create_database(request.getfixturevalue("postgres_url"))
    else:
        url = f"sqlite:///{tmp_path / 't.db'}"
    store = Store.open(url, generate_key() if request.param == "postgresql" else None)
    await store.start()
    clock = SystemClock()
    now = clock.now()

    async def seller(conn: AsyncConnection) -> None:
        await subscriber_rows.upsert(conn, store.cipher, "seller-1", {"name": "Shop"}, now)
        await subscriber_rows.add_endpoint(
            conn, store.cipher, "seller-1", receiver.url, receiver.secret, now
        )

    await store.write(seller)
    broker = EmbeddedBroker()  # nobody consumes: a ticket stays in its lane, to be seen
    dispatcher = Dispatcher(store, broker, settings, clock, Metrics())
    policy = Policy(settings, Templates(settings.templates, settings.default_locale))
    processor = Processor(store, broker, policy, clock, Metrics(), InboxHub())
    try:
        yield Rig(store, broker, dispatcher, processor, receiver)
    finally:
        await broker.aclose()
        await dispatcher.aclose()
        await store.aclose()
        if request.param == "postgresql":
            await drop_database(url)


def paid(event_id: str, subject: str, at: float | None = None) -> Event:
    data = {"order_id": subject, "buyer_id": "buyer-1", "seller_id": "seller-1"}
    return Event(
        id=event_id, source="/shop", type="order.paid", data=data, subject=subject, time=at
    )


def tickets(broker: EmbeddedBroker) -> int:
    return sum(broker.depth().values())


async def test_a_born_leased_delivery_is_sent_once_and_recorded(rig: Rig) -> None:
    (stored,) = await rig.process(paid("e-1", "o-1"))
    assert tickets(rig.broker) == 0  # handed over, not queued
    row = await rig.settled(stored)
    assert (row.status, row.attempts, row.provider) == ("delivered", 1, "webhook")
    assert (row.lease_until, row.leased_by, row.last_error) == (None, None, None)
    assert row.tp is not None and row.tc is not None and row.td is not None
    assert row.started_at >= row.created_at
    (attempt,) = await rig.rows(select(attempts).where(attempts.c.delivery_id == row.id))
    assert (attempt.number, attempt.outcome) == (1, "delivered")
    await asyncio.sleep(0.2)  # nothing else arrives later
    assert rig.receiver.ids == [row.id]
    (sent,) = rig.receiver.deliveries
    assert sent.verified
    assert sent.payload["data"]["event_id"] == "e-1"
    assert sent.payload["data"]["order_id"] == "o-1"
    assert sent.payload["data"]["subject"] == "o-1"
    assert sent.payload["data"]["notification"]["title"] == "Paid o-1"
    assert sent.payload["data"]["notification"]["id"] == row.notification_id


async def test_a_born_leased_delivery_is_sending_under_the_dispatchers_lease(rig: Rig) -> None:
    rig.receiver.script(Reply(200, delay=1.0))
    (stored,) = await rig.process(paid("e-1", "o-1"))
    row = await rig.delivery_of(stored)
    assert (row.status, row.leased_by) == ("sending", rig.dispatcher.owner)
    assert row.lease_until == pytest.approx(row.created_at + rig.dispatcher.lease)
    assert (await rig.settled(stored)).status == "delivered"


async def test_an_earlier_open_delivery_of_the_subject_goes_first(rig: Rig) -> None:
    rig.receiver.script(Reply(200, delay=0.5), Reply(200, delay=0.5))
    first, other = await rig.process(paid("e-1", "o-1", 1000.0), paid("e-x", "o-2", 1000.0))
    (second,) = await rig.process(paid("e-2", "o-1", 1001.0))
    # o-1's first delivery is in flight: the second is born pending and waits its turn as a
    # ticket; another subject's delivery is not held back
    assert (await rig.delivery_of(first)).status == "sending"
    assert (await rig.delivery_of(second)).status == "pending"
    assert tickets(rig.broker) == 1
    assert (await rig.settled(first)).status == "delivered"
    assert (await rig.settled(other)).status == "delivered"
    consuming = asyncio.create_task(rig.broker.consume(rig.dispatcher.handle))
    try:
        assert (await rig.settled(second)).status == "delivered"
    finally:
        await rig.broker.aclose()
        await asyncio.gather(consuming, return_exceptions=True)
    ids = [(await rig.delivery_of(s)).id for s in (first, second)]
    got = [i for i in rig.receiver.ids if i in ids]
    assert got == ids


async def test_within_a_batch_only_the_first_of_a_subject_is_born_leased(rig: Rig) -> None:
    rig.receiver.script(Reply(200, delay=0.3))
    # in one batch, listed out of order: the event that happened first goes first
    later, earlier = await rig.process(paid("e-2", "o-1", 1001.0), paid("e-1", "o-1", 1000.0))
    assert (await rig.delivery_of(earlier)).status == "sending"
    assert (await rig.delivery_of(later)).status == "pending"
    assert tickets(rig.broker) == 1
    # the ticket, taken now, does not overtake: its claim waits for the earlier one
    waiting = (await rig.delivery_of(later)).id
    claimed = await rig.store.write(
        lambda conn: delivery_store.claim(conn, [waiting], time.time(), 30)
    )
    assert claimed == []
    assert (await rig.settled(earlier)).status == "delivered"


async def test_nothing_is_born_leased_beyond_the_dispatchers_room(rig: Rig) -> None:
    rig.dispatcher.max_leased = 2
    rig.receiver.script(*[Reply(200, delay=0.3)] * 2)
    stored = await rig.process(*(paid(f"e-{n}", f"o-{n}") for n in range(5)))
    statuses = [(await rig.delivery_of(s)).status for s in stored]
    assert statuses.count("sending") == 2 and statuses.count("pending") == 3
    assert tickets(rig.broker) == 3
