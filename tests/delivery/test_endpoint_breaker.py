"""A circuit breaker per webhook endpoint: one seller's dead ERP stops being called (its
deliveries wait without spending attempts) while the other sellers' webhooks keep flowing
through the same provider, whose own circuit stays closed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from fakes.tls import free_port
from fakes.webhook_receiver import WebhookReceiver, new_secret
from tests.delivery.test_lanes import add, rows
from tidings.clock import SystemClock
from tidings.config import build_settings
from tidings.delivery.breaker import Breaker, EndpointBreakers
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


async def endpoint(store: Store, seller: str, url: str, secret: str, now: float) -> str:
    async def register(conn: AsyncConnection) -> str:
        return await subscriber_rows.add_endpoint(conn, store.cipher, seller, url, secret, now)

    return await store.write(register)


async def state(store: Store, ids: list[str]) -> list[tuple[str, int, str | None]]:
    async with store.read() as conn:
        found = {
            r.id: (r.status, r.attempts, r.last_error)
            for r in await conn.execute(select(deliveries).where(deliveries.c.id.in_(ids)))
        }
    return [found[i] for i in ids]


async def test_a_dead_erp_opens_its_own_circuit_and_the_healthy_seller_keeps_flowing(
    store: Store,
) -> None:
    clock = SystemClock()
    now = clock.now()
    # the dead ERP: another host (127.0.0.2) where nothing listens, so every call is refused
    dead_url = f"http://127.0.0.2:{free_port()}/hooks/erp"
    with WebhookReceiver() as healthy:
        dead = await endpoint(store, "seller-dead", dead_url, new_secret(), now)
        alive = await endpoint(store, "seller-1", healthy.url, healthy.secret, now)
        settings = build_settings(
            {
                "providers": {
                    "webhook": [
                        {
                            "kind": "webhook",
                            "allow_private_networks": True,
                            "breaker": {"threshold": 2, "cooldown": "30s"},
                        }
                    ]
                },
                "delivery": {"retry": {"attempts": 5, "backoff": "10ms", "max_backoff": "10ms"}},
            },
            {},
            "test",
        )
        dispatcher = Dispatcher(store, EmbeddedBroker(), settings, clock, Metrics())
        dead_notes, to_dead = rows(dead, "normal", 6, now)
        for note in dead_notes:
            note["subscriber_id"] = "seller-dead"
        alive_notes, to_alive = rows(alive, "normal", 6, now)
        await add(store, dead_notes + alive_notes, to_dead + to_alive)
        dead_ids = [d["id"] for d in to_dead]
        alive_ids = [d["id"] for d in to_alive]
        try:
            for delivery_id in dead_ids[:2]:  # two refusals: the endpoint's circuit opens
                await dispatcher.handle("normal", [Ticket(delivery_id)])
            # the rest of the dead seller's and all of the healthy seller's, in one batch
            await dispatcher.handle("normal", [Ticket(i) for i in dead_ids[2:] + alive_ids])

            assert [s[0] for s in await state(store, alive_ids)] == ["delivered"] * 6
            assert sorted(healthy.ids) == sorted(alive_ids)
            dead_states = await state(store, dead_ids)
            assert [(s[0], s[1]) for s in dead_states[:2]] == [("pending", 1)] * 2, dead_states
            # not called, so no attempt spent: they wait for the cooldown
            assert dead_states[2:] == [("pending", 0, "the endpoint's circuit is open")] * 4
            async with store.read() as conn:
                tried = (await conn.execute(select(attempts.c.delivery_id))).scalars().all()
            assert sorted(tried) == sorted(dead_ids[:2] + alive_ids)
            async with store.read() as conn:
                due = (
                    await conn.execute(
                        select(deliveries.c.due_at).where(deliveries.c.id.in_(dead_ids[2:]))
                    )
                ).scalars()
                assert all(when > clock.now() + 25 for when in due)  # after the cooldown

            # the provider's own circuit never opened: the other sellers are not failed over
            [provider] = [p for p in dispatcher.providers() if p["name"] == "webhook"]
            assert provider["state"] == "closed"
            rendered = dispatcher.metrics.render().decode()
            assert 'tidings_provider_up{provider="webhook"} 1.0' in rendered
        finally:
            await dispatcher.aclose()


def test_endpoint_breakers_are_per_host_and_bounded() -> None:
    clock = SystemClock()
    breakers = EndpointBreakers.like(Breaker(clock, threshold=1, cooldown=30))
    one = breakers.of("https://erp.seller-1.example/hooks/a")
    assert breakers.of("https://ERP.seller-1.example:8443/other") is one  # per host
    assert breakers.of("https://erp.seller-2.example/hooks") is not one
    one.failure()
    assert breakers.open() == ["erp.seller-1.example"]
    assert not one.allow()
    assert 25 < one.next_try_in() <= 30

    small = EndpointBreakers(clock, threshold=1, cooldown=30, limit=3)
    failing = small.of("https://down.example/")
    failing.failure()
    for index in range(10):
        small.of(f"https://quiet-{index}.example/").success()
    remembered: Any = small._breakers
    assert len(remembered) <= 3
    assert small.of("https://down.example/") is failing  # an open circuit is never forgotten
