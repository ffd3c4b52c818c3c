"""The dispatcher in process (SQLite store, embedded broker, local signature-checking receivers):
outcomes are committed as they come in, and an open circuit defers without spending budget."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from fakes.webhook_receiver import Reply, WebhookReceiver
from tests.delivery.test_lanes import add, rows
from tidings.clock import SystemClock
from tidings.config import build_settings
from tidings.delivery.dispatcher import Dispatcher
from tidings.metrics import Metrics
from tidings.queue.base import Ticket
from tidings.queue.embedded import EmbeddedBroker
from tidings.store import Store
from tidings.store import subscribers as subscriber_rows
from tidings.store.tables import attempts, deliveries

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = Store.open(f"sqlite:///{tmp_path / 't.db'}", None)
    await opened.start()
    try:
        yield opened
    finally:
        await opened.aclose()


async def status_of(store: Store, delivery_id: str) -> Any:
    async with store.read() as conn:
        return (await conn.execute(select(deliveries).where(deliveries.c.id == delivery_id))).one()


async def test_a_slow_endpoint_does_not_hold_back_the_batch(store: Store) -> None:
    with WebhookReceiver() as slow, WebhookReceiver() as fast:
        slow.script(Reply(200, delay=2.0))
        clock = SystemClock()
        now = clock.now()
        endpoints = []
        for receiver in (slow, fast):

            async def register(c: AsyncConnection, r: WebhookReceiver = receiver) -> str:
                return await subscriber_rows.add_endpoint(
                    c, store.cipher, "seller-1", r.url, r.secret, now
                )

            endpoints.append(await store.write(register))
        settings = build_settings(
            {"providers": {"webhook": [{"kind": "webhook", "allow_private_networks": True}]}},
            {},
            "test",
        )
        broker = EmbeddedBroker()
        dispatcher = Dispatcher(store, broker, settings, clock, Metrics())
        consuming = asyncio.create_task(broker.consume(dispatcher.handle))
        try:
            slow_rows, fast_rows = (
                rows(endpoints[0], "normal", 1, now),
                rows(endpoints[1], "normal", 1, now),
            )
            await add(store, slow_rows[0] + fast_rows[0], slow_rows[1] + fast_rows[1])
            slow_id, fast_id = slow_rows[1][0]["id"], fast_rows[1][0]["id"]
            await broker.publish([Ticket(slow_id), Ticket(fast_id)])  # one batch
            for _ in range(40):  # well before the slow one answers
                if (await status_of(store, fast_id)).status == "delivered":
                    break
                await asyncio.sleep(0.02)
            assert (await status_of(store, fast_id)).status == "delivered"
            assert (await status_of(store, slow_id)).status == "sending"  # still in flight
            for _ in range(200):
                if (await status_of(store, slow_id)).status == "delivered":
                    break
                await asyncio.sleep(0.02)
            assert (await status_of(store, slow_id)).status == "delivered"
        finally:
            await broker.aclose()
            consuming.cancel()
            await asyncio.gather(consuming, return_exceptions=True)
            await dispatcher.aclose()


async def test_open_circuit_defers_without_spending_an_attempt(store: Store) -> None:
    clock = SystemClock()
    now = clock.now()
    await store.write(
        lambda c: subscriber_rows.upsert(c, store.cipher, "buyer-1", {"email": "b@shop.test"}, now)
    )
    settings = build_settings(
        {
            "providers": {
                "email": [
                    {
                        "kind": "smtp",
                        "host": "127.0.0.1",
                        "port": 9,  # nothing listens: refused
                        "from": "Shop <noreply@shop.test>",
                        "breaker": {"threshold": 1, "cooldown": "30s"},
                    }
                ]
            },
            "delivery": {"retry": {"attempts": 5, "backoff": "10ms", "max_backoff": "10ms"}},
        },
        {},
        "test",
    )
    dispatcher = Dispatcher(store, EmbeddedBroker(), settings, clock, Metrics())
    notes, dels = rows("", "normal", 2, now)
    for d in dels:
        d.update(channel="email", destination_kind="email", device_id=None)
    for n in notes:
        n["subscriber_id"] = "buyer-1"
    await add(store, notes, dels)
    try:
        await dispatcher.handle("normal", [Ticket(dels[0]["id"])])
        first = await status_of(store, dels[0]["id"])
        assert (first.status, first.attempts) == ("pending", 1)
        assert "smtp" in first.last_error
        await dispatcher.handle("normal", [Ticket(dels[1]["id"])])
        second = await status_of(store, dels[1]["id"])
        assert (second.status, second.attempts) == ("pending", 0)
        assert second.last_error == "every provider's circuit is open"
        assert second.due_at > clock.now() + 25  # after the cooldown
        async with store.read() as conn:
            logged = (await conn.execute(select(attempts.c.delivery_id))).scalars().all()
        assert logged == [dels[0]["id"]]
        rendered = dispatcher.metrics.render().decode()
        assert 'tidings_provider_up{provider="smtp"} 0.0' in rendered
    finally:
        await dispatcher.aclose()
