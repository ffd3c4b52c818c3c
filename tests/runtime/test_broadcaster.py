"""Broadcasts decided chunk by chunk on a real store (SQLite and PostgreSQL), clock injected."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, update

from tidings.broadcasts import job as jobs
from tidings.clock import OffsetClock
from tidings.config import RuleSettings, load_settings
from tidings.events.cloudevents import Event
from tidings.ids import new_id
from tidings.metrics import Metrics
from tidings.queue.embedded import EmbeddedBroker
from tidings.queue.inbox_hub import InboxHub
from tidings.runtime.broadcaster import Broadcaster, cancel_pending
from tidings.store import Store, schedule
from tidings.store import broadcasts as rows
from tidings.store import topics as topic_rows
from tidings.store.audiences import CHUNK
from tidings.store.db import bulk_insert
from tidings.store.tables import (
    broadcast_recipients,
    deliveries,
    inbox_items,
    notifications,
    subscribers,
)
from tidings.strategy.decide import Policy
from tidings.templates import Templates

SETTINGS = load_settings(env={})
POLICY = Policy(SETTINGS, Templates(SETTINGS.templates, SETTINGS.default_locale))
CONTENT = {
    "en-US": {"title": "Sale", "body": "{{ name }} is on"},
    "zh-CN": {"title": "促销", "body": "{{ name }}"},
}


def at(text: str, tz: str = "UTC") -> float:
    """Epoch seconds of a wall-clock time in ``tz``."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp()


def clock_at(moment: float) -> OffsetClock:
    """The real clock shifted to read ``moment`` now."""
    return OffsetClock(moment - time.time())


async def add_subscribers(store: Store, people: list[dict[str, Any]]) -> None:
    """Subscribers in bulk (``id``, ``timezone``, ``locale``, ``preferences``…)."""
    now = time.time()
    made = [
        {
            "id": p["id"],
            "name_enc": None,
            "email_enc": None,
            "phone_enc": None,
            "locale": p.get("locale"),
            "timezone": p.get("timezone"),
            "role": p.get("role"),
            "attributes": p.get("attributes", {}),
            "preferences": p.get("preferences", {}),
            "created_at": now,
            "updated_at": now,
        }
        for p in people
    ]
    await store.write(lambda conn: bulk_insert(conn, subscribers, made))


async def start(
    store: Store,
    clock: OffsetClock,
    audience: dict[str, Any],
    *,
    category: str = "marketing",
    local_time: str | None = None,
    content: dict[str, Any] | None = None,
    send_at: float | None = None,
    rate: float | None = None,
    template: str | None = None,
    data: dict[str, Any] | None = None,
) -> str:
    """A broadcast as POST /v1/broadcasts stores it; its id."""
    broadcast_id = "b-" + new_id()
    rule = RuleSettings.model_validate(
        {
            "id": f"broadcast:{broadcast_id}",
            "on": jobs.EVENT_TYPE,
            "to": "audience",
            "category": category,
            "channels": ["inapp"],
            "template": template or jobs.INLINE,
        }
    )
    row = rows.new_row(
        broadcast_id,
        new_id(),
        audience,
        jobs.message(rule, None if template else content or CONTENT, local_time),
        clock.now(),
        send_at=send_at,
        rate=rate,
    )
    event = Event(broadcast_id, jobs.SOURCE, jobs.EVENT_TYPE, data or {"name": "Double 11"})
    assert await store.write(lambda conn: rows.create(conn, row, event)) is None
    return broadcast_id


async def run(broadcaster: Broadcaster, rounds: int = 1000) -> int:
    """Rounds until no chunk is left; how many chunks were decided."""
    chunks = 0
    for _ in range(rounds):
        if not await broadcaster.round():
            return chunks
        chunks += 1
    raise AssertionError("the broadcast never ran out of chunks")


def rig(store: Store, clock: OffsetClock) -> Broadcaster:
    return Broadcaster(store, EmbeddedBroker(), POLICY, clock, Metrics(), InboxHub())


async def decisions(store: Store, broadcast_id: str) -> dict[str, Any]:
    async with store.read() as conn:
        found = await conn.execute(
            select(broadcast_recipients).where(broadcast_recipients.c.broadcast_id == broadcast_id)
        )
        return {r.subscriber_id: r for r in found}


async def status(store: Store, broadcast_id: str) -> tuple[str, dict[str, int], int | None]:
    async with store.read() as conn:
        row = await rows.get(conn, broadcast_id)
        counts = await rows.counts(conn, [broadcast_id])
    assert row is not None
    return row.status, counts[broadcast_id], row.audience_size


async def test_every_member_of_the_audience_once_across_chunks(store: Store) -> None:
    size = 2 * CHUNK + 203
    await add_subscribers(store, [{"id": f"s-{i:05d}"} for i in range(size)])
    clock = clock_at(at("2026-03-10 12:00"))
    broadcast_id = await start(store, clock, {"all": True})
    chunks = await run(rig(store, clock))
    assert chunks == 3  # two full chunks and 203
    assert await status(store, broadcast_id) == ("done", {"sent": size}, size)
    async with store.read() as conn:
        per_person = (
            await conn.execute(
                select(inbox_items.c.subscriber_id, func.count())
                .group_by(inbox_items.c.subscriber_id)
                .having(func.count() > 1)
            )
        ).all()
        total = (await conn.execute(select(func.count()).select_from(inbox_items))).scalar_one()
    assert per_person == []
    assert total == size
    # in-app at once: each recipient is its inbox item alone (no notification, no delivery)
    async with store.read() as conn:
        for table in (notifications, deliveries):
            assert (await conn.execute(select(func.count()).select_from(table))).scalar_one() == 0


async def test_a_delivery_that_fails_for_good_is_counted(store: Store) -> None:
    await add_subscribers(store, [{"id": "ny", "timezone": "America/New_York"}])
    clock = clock_at(at("2026-03-10 12:00"))
    broadcast_id = await start(store, clock, {"all": True}, local_time="10:00")
    await run(rig(store, clock))
    async with store.read() as conn:
        row = await rows.get(conn, broadcast_id)
        assert row is not None
        assert await rows.failed(conn, row.event_pk, rows.rule_of(row)) == 0
    # the dispatcher's outcome, written here
    await store.write(
        lambda conn: conn.execute(
            update(deliveries)
            .where(deliveries.c.id == select(deliveries.c.id).limit(1).scalar_subquery())
            .values(status="dead")
        )
    )
    async with store.read() as conn:
        assert await rows.failed(conn, row.event_pk, rows.rule_of(row)) == 1


async def test_opt_outs_quiet_hours_and_caps_with_reasons(store: Store) -> None:
    night = {"quiet_hours": {"start": "22:00", "end": "08:00"}}
    await add_subscribers(
        store,
        [
            {"id": "ok", "timezone": "Europe/London", "preferences": night},
            {"id": "opted-out", "preferences": {"categories": {"marketing": {"enabled": False}}}},
            {"id": "sh-night", "timezone": "Asia/Shanghai", "preferences": night},
            {"id": "tokyo-night", "timezone": "Asia/Tokyo", "preferences": night},
            {"id": "capped", "timezone": "Europe/London"},
        ],
    )
    clock = clock_at(at("2026-03-10 15:30"))  # 23:30 in Shanghai, 00:30 in Tokyo
    broadcaster = rig(store, clock)
    await store.write(lambda conn: topic_rows.add_members(conn, "regulars", ["capped"], 0.0))
    for _ in range(3):  # the marketing cap is 3 a day
        await start(store, clock, {"topic": "regulars"})
        await run(broadcaster)
    broadcast_id = await start(store, clock, {"all": True})
    await run(broadcaster)
    made = await decisions(store, broadcast_id)
    assert {k: v.outcome for k, v in made.items()} == {
        "ok": "sent",
        "opted-out": "suppressed",
        "sh-night": "deferred",
        "tokyo-night": "deferred",
        "capped": "suppressed",
    }
    assert made["opted-out"].reason == "opted out of marketing"
    assert made["capped"].reason == "over the cap of 3 per 1d for marketing"
    assert "quiet hours until 08:00 Asia/Shanghai" in made["sh-night"].reason
    assert "quiet hours until 08:00 Asia/Tokyo" in made["tokyo-night"].reason
    # deferred to each recipient's own local end of the night
    assert made["sh-night"].until == at("2026-03-11 08:00", "Asia/Shanghai")
    assert made["tokyo-night"].until == at("2026-03-11 08:00", "Asia/Tokyo")
    state, counts, _ = await status(store, broadcast_id)
    # decided for all, two still deferred: it runs on until they fire (they can be paused)
    assert (state, counts) == ("running", {"sent": 1, "suppressed": 2, "deferred": 2})


async def test_local_time_in_three_zones(store: Store) -> None:
    zones = {"sh": "Asia/Shanghai", "ny": "America/New_York", "ldn": "Europe/London"}
    await add_subscribers(store, [{"id": k, "timezone": tz} for k, tz in zones.items()])
    # 20:00 in Shanghai, 08:00 in New York (EDT since March 8), 12:00 in London
    clock = clock_at(at("2026-03-10 12:00"))
    broadcaster = rig(store, clock)
    broadcast_id = await start(store, clock, {"all": True}, local_time="10:00")
    await run(broadcaster)
    made = await decisions(store, broadcast_id)
    expected = {
        "sh": at("2026-03-11 10:00", "Asia/Shanghai"),  # passed there today: tomorrow
        "ny": at("2026-03-10 10:00", "America/New_York"),  # still ahead today
        "ldn": at("2026-03-11 10:00", "Europe/London"),
    }
    for key, due in expected.items():
        assert made[key].outcome == "deferred"
        assert made[key].until == pytest.approx(due)
        assert made[key].reason.startswith("waiting for 10:00 local time: ")
    async with store.read() as conn:
        dues = dict(
            (
                await conn.execute(select(notifications.c.subscriber_id, notifications.c.due_at))
            ).all()
        )
    assert dues == pytest.approx(expected)
    # when each one's 10:00 comes, its notification fires: New York first
    fired = await store.write(lambda conn: schedule.fire_due(conn, expected["ny"] + 1))
    assert [row["subscriber_id"] for row in fired.inbox] == ["ny"]
    fired = await store.write(lambda conn: schedule.fire_due(conn, expected["ldn"] + 1))
    assert sorted(row["subscriber_id"] for row in fired.inbox) == ["ldn", "sh"]


async def test_pause_resume_and_cancel(store: Store) -> None:
    size = 3 * CHUNK + 100
    await add_subscribers(store, [{"id": f"p-{i:05d}"} for i in range(size)])
    clock = clock_at(at("2026-03-10 12:00"))
    broadcaster = rig(store, clock)
    broadcast_id = await start(store, clock, {"all": True})
    assert await broadcaster.round()
    now = clock.now()
    row, problem = await store.write(
        lambda conn: rows.change_status(conn, broadcast_id, "pause", now)
    )
    assert problem is None and row.status == "paused"
    assert await run(broadcaster) == 0  # a paused broadcast starts no chunk
    assert await status(store, broadcast_id) == ("paused", {"sent": CHUNK}, size)
    _, problem = await store.write(
        lambda conn: rows.change_status(conn, broadcast_id, "pause", now)
    )
    assert problem == "a paused broadcast cannot be paused"
    await store.write(lambda conn: rows.change_status(conn, broadcast_id, "resume", now))
    assert await run(broadcaster) == 3
    assert await status(store, broadcast_id) == ("done", {"sent": size}, size)

    # cancelled after its first chunk: deferred messages cancelled, no chunk after
    later = await start(store, clock, {"all": True}, local_time="23:00")
    assert await broadcaster.round()
    row, _ = await store.write(lambda conn: rows.change_status(conn, later, "cancel", now))
    first = await store.write(lambda conn: cancel_pending(conn, row, now, CHUNK - 10))
    assert first.found == CHUNK - 10  # a whole page: the API asks again
    rest = await store.write(lambda conn: cancel_pending(conn, row, now))
    assert (rest.found, rest.settled) == (10, {"cancelled": 10})
    assert await run(broadcaster) == 0
    made = await decisions(store, later)
    assert len(made) == CHUNK
    assert {r.outcome for r in made.values()} == {"cancelled"}
    assert {r.reason for r in made.values()} == {f"broadcast {later} cancelled"}
    async with store.read() as conn:
        left = (
            await conn.execute(
                select(func.count()).where(
                    notifications.c.rule_id == f"broadcast:{later}",
                    notifications.c.status != "cancelled",
                )
            )
        ).scalar_one()
    assert left == 0


async def test_content_is_shared_unless_it_names_the_recipient(store: Store) -> None:
    await add_subscribers(
        store,
        [{"id": "x", "locale": "zh-CN"}, {"id": "y", "locale": "zh-CN"}, {"id": "z"}],
    )
    clock = clock_at(at("2026-03-10 12:00"))
    broadcaster = rig(store, clock)
    await start(store, clock, {"all": True})
    personal = {"en-US": {"title": "Hi", "body": "{{ name }} for {{ recipient.id }}"}}
    await start(store, clock, {"all": True}, content=personal)
    await run(broadcaster)
    async with store.read() as conn:
        bodies = sorted(
            (await conn.execute(select(inbox_items.c.subscriber_id, inbox_items.c.body))).all()
        )
    assert bodies == [
        ("x", "Double 11"),
        ("x", "Double 11 for x"),
        ("y", "Double 11"),
        ("y", "Double 11 for y"),
        ("z", "Double 11 for z"),
        ("z", "Double 11 is on"),
    ]


async def test_send_at_waits_and_rate_paces_the_chunks(store: Store) -> None:
    await add_subscribers(store, [{"id": f"r-{i:03d}"} for i in range(250)])
    clock = clock_at(at("2026-03-10 12:00"))
    broadcaster = rig(store, clock)
    broadcast_id = await start(
        store, clock, {"all": True}, send_at=at("2026-03-10 12:30"), rate=100.0
    )
    assert await run(broadcaster) == 0
    assert (await status(store, broadcast_id))[0] == "scheduled"
    clock.advance(30 * 60)
    assert await run(broadcaster) == 1  # 100 a second: one chunk of 100, then it waits
    assert await status(store, broadcast_id) == ("running", {"sent": 100}, 250)
    clock.advance(1.0)
    assert await run(broadcaster) == 1
    clock.advance(1.0)
    assert await run(broadcaster) == 1
    assert await status(store, broadcast_id) == ("done", {"sent": 250}, 250)


async def test_a_configured_template_in_each_recipients_locale(store: Store) -> None:
    await add_subscribers(store, [{"id": "zh", "locale": "zh-CN"}, {"id": "en", "locale": "en-US"}])
    clock = clock_at(at("2026-03-10 12:00"))
    data = {"sku": "SKU-1", "name": "Jade tea set", "price": "89.00", "currency": "CNY"}
    await start(store, clock, {"all": True}, template="product_restocked", data=data)
    await run(rig(store, clock))
    async with store.read() as conn:
        found = dict(
            (await conn.execute(select(inbox_items.c.subscriber_id, inbox_items.c.body))).all()
        )
    assert found == {
        "zh": "Jade tea set 已到货，售价 ¥89.00，欲购从速！",
        "en": "Jade tea set is back in stock at CN¥89.00. Get it before it is gone!",
    }
