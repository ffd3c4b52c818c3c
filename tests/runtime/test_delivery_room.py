"""The processor waits while decided deliveries outrun the dispatcher (issue 11: a flood of
events must slow intake down, not grow a queue of tickets in memory). A real SQLite store,
the real processor, and an embedded broker whose lanes nobody consumes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tidings.clock import SystemClock
from tidings.config import build_settings
from tidings.events.cloudevents import parse_structured
from tidings.metrics import Metrics
from tidings.queue.base import Ticket
from tidings.queue.embedded import EmbeddedBroker
from tidings.queue.inbox_hub import InboxHub
from tidings.runtime import processor as processor_module
from tidings.runtime.processor import Processor
from tidings.store import Store
from tidings.store import events as event_rows
from tidings.store.events import StoredEvent
from tidings.strategy.decide import Policy
from tidings.templates import Templates

pytestmark = pytest.mark.timeout(60)


async def test_a_deep_lane_holds_the_next_decision_until_it_drains(tmp_path: Path) -> None:
    settings = build_settings({}, {}, "test")  # the built-in pack
    store = Store.open(f"sqlite:///{tmp_path / 't.db'}", None)
    await store.start()
    broker = EmbeddedBroker()  # nobody consumes: published tickets stay in their lanes
    policy = Policy(settings, Templates(settings.templates, settings.default_locale))
    processor = Processor(store, broker, policy, SystemClock(), Metrics(), InboxHub())
    runner = asyncio.create_task(processor.run())
    try:
        deep = processor_module._MAX_QUEUED
        await broker.publish([Ticket(f"d-{n}", "low") for n in range(deep)])
        now = time.time()
        event = parse_structured(
            {
                "specversion": "1.0",
                "id": "e-1",
                "source": "/shop",
                "type": "order.delivered",
                "data": {"order_id": "o-1", "buyer_id": "b-1", "seller_id": "s-1"},
            }
        )
        (accepted,) = await store.write(lambda conn: event_rows.insert_events(conn, [event], now))
        processor.submit([StoredEvent(accepted.pk, event, now)])

        async def processed() -> bool:
            async with store.read() as conn:
                found = await event_rows.unprocessed(conn, 10, now + 60)
            return not found

        await asyncio.sleep(0.5)
        assert not await processed()  # held back: the lanes are full of undelivered work
        low = broker._lanes["low"]
        for _ in range(deep // 2):
            low.popleft()  # the dispatcher caught up by half
        for _ in range(200):
            if await processed():
                break
            await asyncio.sleep(0.05)
        assert await processed()
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await store.aclose()
