"""The strategy against a real SQLite store: processor + scheduler with a driven clock.

Covers what the pure tests cannot: state loaded inside the write transaction, digests
folded across batches, cancels racing the scheduled fire, timed fallback, expiry and the
per-subject ordering of claims.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from testbed.services import create_database, drop_database
from tests.strategy.helpers import TEMPLATES, event
from tidings.clock import OffsetClock
from tidings.config import build_settings
from tidings.crypto import generate_key
from tidings.events.cloudevents import Event
from tidings.metrics import Metrics
from tidings.queue.embedded import EmbeddedBroker
from tidings.queue.inbox_hub import InboxHub
from tidings.runtime.processor import Processor
from tidings.store import Store, schedule
from tidings.store import deliveries as delivery_store
from tidings.store import events as event_rows
from tidings.store.events import StoredEvent
from tidings.store.tables import decisions, deliveries, inbox_items, notifications
from tidings.strategy.decide import Policy
from tidings.templates import Templates

RULES = [
    {
        "id": "unpaid-reminder",
        "on": "order.created",
        "to": "buyer",
        "channels": ["inapp"],
        "template": "plain",
        "delay": "15m",
        "cancel_on": ["order.paid", "order.cancelled"],
    },
    {
        "id": "seller-digest",
        "on": "order.paid",
        "to": "seller",
        "channels": ["inapp"],
        "template": "digest",
        "digest": {"window": "5m", "max": 4},
    },
    {
        "id": "shipped",
        "on": "order.shipped",
        "to": "buyer",
        "channels": ["inapp"],
        "fallback": ["email"],
        "fallback_after": "10m",
        "template": "plain",
        "ttl": "1h",
    },
    {
        "id": "refund-done",
        "on": "refund.completed",
        "to": "buyer",
        "channels": ["inapp"],
        "template": "plain",
    },
    {
        "id": "promo",
        "on": "promo.sent",
        "to": "buyer",
        "category": "marketing",
        "channels": ["inapp"],
        "template": "plain",
    },
]


@dataclass
class Engine:
    store: Store
    processor: Processor
    clock: OffsetClock
    n: int = 0

    async def send(self, *batch: Event) -> list[StoredEvent]:
        now = self.clock.now()
        accepted = await self.store.write(lambda conn: event_rows.insert_events(conn, batch, now))
        return [StoredEvent(a.pk, e, now) for a, e in zip(accepted, batch, strict=True)]

    async def process(self, *batch: Event) -> list[StoredEvent]:
        stored = await self.send(*batch)
        await self.processor.process(stored)
        return stored

    async def rows(self, query: Any) -> list[Any]:
        async with self.store.read() as conn:
            return list((await conn.execute(query)).all())

    async def decisions_of(self, stored: StoredEvent) -> list[tuple[str, str, str]]:
        return [
            (d.rule_id, d.outcome, d.reason)
            for d in await self.rows(select(decisions).where(decisions.c.event_pk == stored.pk))
        ]

    async def fire(self) -> schedule.Fired:
        now = self.clock.now()
        return await self.store.write(lambda conn: schedule.fire_due(conn, now))


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Engine]:
    raw = {
        "categories": {
            "order_updates": {"required": True},
            "marketing": {"cap": {"count": 2, "per": "1d"}},
        },
        "rules": RULES,
        "templates": TEMPLATES,
    }
    settings = build_settings(raw, {}, "test")
    if request.param == "postgresql":
        url = await create_database(request.getfixturevalue("postgres_url"))
    else:
        url = f"sqlite:///{tmp_path / 't.db'}"
    store = Store.open(url, generate_key() if request.param == "postgresql" else None)
    await store.start()
    clock = OffsetClock()
    policy = Policy(settings, Templates(settings.templates, settings.default_locale))
    processor = Processor(store, EmbeddedBroker(), policy, clock, Metrics(), InboxHub())
    try:
        yield Engine(store, processor, clock)
    finally:
        await store.aclose()
        if request.param == "postgresql":
            await drop_database(url)


def created(event_id: str, subject: str = "o-1") -> Event:
    return event("order.created", event_id, subject, amount="9.00", currency="CNY")


async def test_delay_then_cancel_by_a_later_event(engine: Engine) -> None:
    (first,) = await engine.process(created("e-1"))
    assert (await engine.decisions_of(first))[0][1] == "deferred"
    (note,) = await engine.rows(select(notifications))
    assert note.status == "scheduled" and note.cancel_on == ["order.paid", "order.cancelled"]
    assert {d.status for d in await engine.rows(select(deliveries))} == {"scheduled"}
    await engine.process(event("order.paid", "e-2"))
    (note,) = await engine.rows(select(notifications).where(notifications.c.id == note.id))
    assert note.status == "cancelled"
    assert {
        d.status
        for d in await engine.rows(
            select(deliveries).where(deliveries.c.notification_id == note.id)
        )
    } == {"cancelled"}
    assert await engine.decisions_of(first) == [
        ("unpaid-reminder", "cancelled", "cancelled by order.paid e-2")
    ]
    engine.clock.advance(3600)
    assert note.id not in (await engine.fire()).fired
    assert [i.subscriber_id for i in await engine.rows(select(inbox_items))] == ["seller-1"]


async def test_created_and_paid_in_one_batch(engine: Engine) -> None:
    first, _ = await engine.process(created("e-1"), event("order.paid", "e-2"))
    assert await engine.decisions_of(first) == [
        ("unpaid-reminder", "cancelled", "cancelled by order.paid e-2")
    ]
    statuses = {n.rule_id: n.status for n in await engine.rows(select(notifications))}
    assert statuses["unpaid-reminder"] == "cancelled"


async def test_a_reminder_nobody_cancels_fires_after_the_delay(engine: Engine) -> None:
    await engine.process(created("e-1"))
    engine.clock.advance(899)
    assert (await engine.fire()).fired == []
    engine.clock.advance(2)
    fired = await engine.fire()
    assert len(fired.fired) == 1 and len(fired.inbox) == 1
    (item,) = await engine.rows(select(inbox_items))
    assert item.subscriber_id == "buyer-1" and item.title == "order.created"
    assert {d.status for d in await engine.rows(select(deliveries))} == {"delivered"}
    # too late now: the paid event does not un-send the reminder
    await engine.process(event("order.paid", "e-2"))
    (note,) = await engine.rows(
        select(notifications).where(notifications.c.rule_id == "unpaid-reminder")
    )
    assert note.status == "created"


async def test_a_cancel_accepted_before_the_due_time_wins_even_unprocessed(engine: Engine) -> None:
    (first,) = await engine.process(created("e-1"))
    await engine.send(event("order.cancelled", "e-2"))  # accepted, then the process died
    engine.clock.advance(3600)
    fired = await engine.fire()
    assert fired.fired == [] and len(fired.cancelled) == 1
    assert await engine.decisions_of(first) == [
        ("unpaid-reminder", "cancelled", "cancelled by order.cancelled e-2")
    ]
    assert await engine.rows(select(inbox_items)) == []


@pytest.mark.parametrize("order", ["cancel first", "fire first", "together"])
async def test_cancel_racing_the_fire(engine: Engine, order: str) -> None:
    await engine.process(created("e-1"))
    paid = await engine.send(event("order.paid", "e-2"))
    engine.clock.advance(901)  # due now; the cancel was accepted before
    if order == "cancel first":
        await engine.processor.process(paid)
        await engine.fire()
    elif order == "fire first":
        await engine.fire()
        await engine.processor.process(paid)
    else:
        await asyncio.gather(engine.processor.process(paid), engine.fire())
    (note,) = await engine.rows(
        select(notifications).where(notifications.c.rule_id == "unpaid-reminder")
    )
    assert note.status == "cancelled"
    assert not await engine.rows(
        select(inbox_items).where(inbox_items.c.subscriber_id == "buyer-1")
    )


async def test_digest_across_batches_then_fired_once(engine: Engine) -> None:
    batch = [
        event("order.paid", f"e-{n}", f"o-{n}", amount="1.00", currency="CNY") for n in range(2)
    ]
    first, second = await engine.process(*batch)
    (note,) = await engine.rows(select(notifications))
    assert (await engine.decisions_of(first))[0][1] == "deferred"
    assert await engine.decisions_of(second) == [
        ("seller-digest", "digested", f"folded into digest {note.id} (2 events so far)")
    ]
    (third,) = await engine.process(event("order.paid", "e-2", "o-2"))
    assert (await engine.decisions_of(third))[0][1:] == (
        "digested",
        f"folded into digest {note.id} (3 events so far)",
    )
    (note,) = await engine.rows(select(notifications))
    assert note.digest["count"] == 3 and note.content["title"] == "You have 3 new paid orders"
    engine.clock.advance(301)
    await engine.fire()
    (item,) = await engine.rows(select(inbox_items))
    assert item.subscriber_id == "seller-1" and item.body.split() == ["o-0", "o-1", "o-2"]
    (fourth,) = await engine.process(event("order.paid", "e-3", "o-3"))
    assert (await engine.decisions_of(fourth))[0][1] == "deferred"  # a new window
    assert len(await engine.rows(select(notifications))) == 2


async def test_a_full_digest_goes_out_at_once(engine: Engine) -> None:
    await engine.process(*[event("order.paid", f"e-{n}", f"o-{n}") for n in range(5)])
    notes = await engine.rows(
        select(notifications).order_by(notifications.c.created_at, notifications.c.id)
    )
    counts = sorted(n.digest["count"] for n in notes)
    assert counts == [1, 4]
    fired = await engine.fire()
    assert len(fired.fired) == 1


async def test_stale_and_caps_use_what_earlier_batches_did(engine: Engine) -> None:
    await engine.process(event("refund.completed", "e-1", refund_id="r-1"))
    (late,) = await engine.process(event("order.shipped", "e-2"))
    ((_, outcome, reason),) = await engine.decisions_of(late)
    assert outcome == "suppressed" and reason.startswith("stale: refund.completed e-1")
    outcomes = []
    for n in range(3):
        (promo,) = await engine.process(event("promo.sent", f"p-{n}", f"promo-{n}"))
        outcomes.append((await engine.decisions_of(promo))[0][1:])
    assert outcomes[:2] == [("sent", "sent on inapp")] * 2
    assert outcomes[2] == ("suppressed", "over the cap of 2 per 1d for marketing")


async def _subscriber_with_email(engine: Engine) -> None:
    from tidings.store import subscribers

    now = engine.clock.now()
    await engine.store.write(
        lambda conn: subscribers.upsert(
            conn, engine.store.cipher, "buyer-1", {"email": "b@shop.test"}, now
        )
    )


@pytest.mark.parametrize("read", [True, False])
async def test_timed_fallback_only_when_unread(engine: Engine, read: bool) -> None:
    await _subscriber_with_email(engine)
    await engine.process(event("order.shipped", "e-1"))
    (fallback,) = await engine.rows(select(deliveries).where(deliveries.c.is_fallback.is_(True)))
    assert fallback.status == "scheduled" and fallback.channel == "email"
    if read:
        await engine.store.write(
            lambda conn: conn.execute(update(inbox_items).values(read_at=engine.clock.now()))
        )
    engine.clock.advance(599)
    now = engine.clock.now()
    assert await engine.store.write(lambda conn: schedule.fallback_due(conn, now)) == []
    engine.clock.advance(2)
    now = engine.clock.now()
    due = await engine.store.write(lambda conn: schedule.fallback_due(conn, now))
    (fallback,) = await engine.rows(select(deliveries).where(deliveries.c.is_fallback.is_(True)))
    if read:
        assert due == [] and fallback.status == "suppressed"
        assert fallback.last_error == schedule.READ_BEFORE_FALLBACK
    else:
        assert [d for d, _, _ in due] == [fallback.id] and fallback.status == "pending"


async def test_ttl_expires_what_was_not_delivered(engine: Engine) -> None:
    await _subscriber_with_email(engine)
    await engine.process(event("order.shipped", "e-1"))
    engine.clock.advance(601)
    now = engine.clock.now()
    await engine.store.write(lambda conn: schedule.fallback_due(conn, now))  # email pending now
    # the provider failed: the retry waits in backoff beyond the ttl
    await engine.store.write(
        lambda conn: conn.execute(
            update(deliveries).where(deliveries.c.channel == "email").values(due_at=now + 7200)
        )
    )
    engine.clock.advance(3600)
    now = engine.clock.now()
    expired = await engine.store.write(lambda conn: schedule.expire_due(conn, now))
    (email,) = await engine.rows(select(deliveries).where(deliveries.c.channel == "email"))
    assert expired == [email.id] and email.status == "expired"
    (note,) = await engine.rows(select(notifications))
    assert note.status == "created"  # the in-app item was delivered: not all of it expired


async def test_deliveries_of_one_subject_leave_in_event_order(engine: Engine) -> None:
    now = engine.clock.now()
    rows = [
        {
            "id": f"d-{n}",
            "notification_id": f"n-{n}",
            "channel": "email",
            "destination_kind": "email",
            "device_id": None,
            "lane": "normal",
            "status": "pending",
            "is_fallback": False,
            "attempts": 0,
            "accepted_at": now,
            "created_at": now,
            "due_at": now,
            "order_key": "buyer-1\x1fo-1",
            "seq": seq,
        }
        for n, seq in enumerate([now - 10, now - 5])
    ] + [
        {
            "id": "d-other",
            "notification_id": "n-x",
            "channel": "email",
            "destination_kind": "email",
            "device_id": None,
            "lane": "normal",
            "status": "pending",
            "is_fallback": False,
            "attempts": 0,
            "accepted_at": now,
            "created_at": now,
            "due_at": now,
            "order_key": "buyer-1\x1fo-2",
            "seq": now,
        }
    ]
    from sqlalchemy import insert

    await engine.store.write(lambda conn: conn.execute(insert(deliveries), rows))
    claimed = await engine.store.write(
        lambda conn: delivery_store.claim(conn, ["d-1", "d-other"], now, 30)
    )
    assert [c.id for c in claimed] == ["d-other"]  # d-1 waits for the earlier d-0
    (waiting,) = await engine.rows(select(deliveries).where(deliveries.c.id == "d-1"))
    assert waiting.status == "pending" and waiting.enqueued_at is None
    assert waiting.due_at == pytest.approx(now + delivery_store.ORDER_WAIT)
    both = await engine.store.write(
        lambda conn: delivery_store.claim(conn, ["d-1", "d-0"], now + 1, 30)
    )
    assert [c.id for c in both] == ["d-0"]
    await engine.store.write(
        lambda conn: conn.execute(
            update(deliveries).where(deliveries.c.id == "d-0").values(status="sent")
        )
    )
    later = await engine.store.write(lambda conn: delivery_store.claim(conn, ["d-1"], now + 2, 30))
    assert [c.id for c in later] == ["d-1"]


async def test_recovery_takes_lost_events_and_leaves_queued_ones_to_the_processor(
    engine: Engine,
) -> None:
    queued = await engine.send(created("e-queued", "o-q"))
    lost = await engine.send(created("e-lost", "o-l"))
    engine.processor.submit(queued)  # waiting in this process's queue: a backlog, not a loss
    later = engine.clock.now() + 1
    assert await engine.processor.recover(older_than=later) == 1
    async with engine.store.read() as conn:
        left = await event_rows.unprocessed(conn, 10, later)
    assert [e.pk for e in left] == [queued[0].pk]
    assert await engine.decisions_of(lost[0])
    running = asyncio.create_task(engine.processor.run())
    try:
        for _ in range(200):
            async with engine.store.read() as conn:
                if not await event_rows.unprocessed(conn, 10, later):
                    break
            await asyncio.sleep(0.02)
        assert await engine.decisions_of(queued[0])
        assert engine.processor.backlog() == 0
        # once through run(), a queued event is the recovery's again should it be left over
        assert await engine.processor.recover(older_than=later) == 0
    finally:
        running.cancel()
