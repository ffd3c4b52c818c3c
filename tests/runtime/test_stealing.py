"""Several processes on one SQLite file: a processor with nothing of its own to decide takes
the newest of another's undecided backlog, and each event is decided once whoever gets it
(``tidings serve --processes N`` decides an event where it was accepted, and a producer with
few connections may land every event on one process). Two real processors on one real store
(as two processes would share the file), with embedded brokers nobody consumes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tidings.clock import SystemClock
from tidings.config import build_settings
from tidings.events.cloudevents import parse_structured
from tidings.metrics import Metrics
from tidings.queue.embedded import EmbeddedBroker
from tidings.queue.inbox_hub import InboxHub
from tidings.runtime.processor import Processor
from tidings.store import Store
from tidings.store import events as event_rows
from tidings.store.events import StoredEvent
from tidings.store.tables import decisions
from tidings.strategy.decide import Policy
from tidings.templates import Templates

pytestmark = pytest.mark.timeout(120)

EVENTS = 300


async def test_an_idle_processor_decides_another_ones_backlog_each_event_once(
    tmp_path: Path,
) -> None:
    settings = build_settings({}, {}, "test")  # the built-in pack
    store = Store.open(f"sqlite:///{tmp_path / 't.db'}", None)
    await store.start()
    policy = Policy(settings, Templates(settings.templates, settings.default_locale))

    def processor(steals: bool) -> Processor:
        hub, broker = InboxHub(), EmbeddedBroker()
        return Processor(store, broker, policy, SystemClock(), Metrics(), hub, steals=steals)

    owner, helper = processor(steals=False), processor(steals=True)
    now = time.time()
    batch = [
        parse_structured(
            {
                "specversion": "1.0",
                "id": f"e-{n}",
                "source": "/shop",
                "type": "order.shipped",
                "subject": f"order/o-{n}",
                "data": {"order_id": f"o-{n}", "buyer_id": f"b-{n % 7}", "seller_id": "s-1"},
            }
        )
        for n in range(EVENTS)
    ]
    accepted = await store.write(lambda conn: event_rows.insert_events(conn, batch, now))
    owner.submit([StoredEvent(a.pk, e, now) for a, e in zip(accepted, batch, strict=True)])
    helping = asyncio.create_task(helper.run())
    owning: asyncio.Task[None] | None = None
    try:

        async def undecided() -> int:
            async with store.read() as conn:
                return len(await event_rows.unprocessed(conn, EVENTS, now + 60))

        for _ in range(600):  # the owner has not started: only the helper decides
            if await undecided() <= EVENTS - 2 * 64:
                break
            await asyncio.sleep(0.05)
        taken = EVENTS - await undecided()
        assert taken >= 2 * 64, taken
        assert owner.backlog() == EVENTS  # its queue still holds every one of them
        owning = asyncio.create_task(owner.run())
        for _ in range(600):
            if await undecided() == 0 and owner.backlog() == 0:
                break
            await asyncio.sleep(0.05)
        assert await undecided() == 0 and owner.backlog() == 0
        await asyncio.sleep(0.2)  # a batch both took would be written by now
        async with store.read() as conn:
            decided = await conn.execute(
                select(decisions.c.event_pk, func.count()).group_by(decisions.c.event_pk)
            )
            per_event = dict(decided.all())
        assert set(per_event) == {a.pk for a in accepted}
        # order.shipped: the built-in pack has one rule for it, the buyer's: one decision each
        assert set(per_event.values()) == {1}, per_event
    finally:
        for task in (helping, owning):
            if task is not None:
                task.cancel()
        await asyncio.gather(helping, *([owning] if owning else []), return_exceptions=True)
        await store.aclose()
