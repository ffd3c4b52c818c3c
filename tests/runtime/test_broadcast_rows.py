"""What a broadcast writes per recipient: an in-app-only recipient is one inbox item; one
reached on another channel too gets the notification and deliveries any decision writes."""

from __future__ import annotations

import time

from sqlalchemy import select

from tests.runtime.test_broadcaster import CONTENT, add_subscribers, at, clock_at, rig, run
from tidings.broadcasts import job as jobs
from tidings.config import RuleSettings
from tidings.events.cloudevents import Event
from tidings.ids import new_id
from tidings.store import Store
from tidings.store import broadcasts as rows
from tidings.store.db import bulk_insert
from tidings.store.tables import (
    broadcast_recipients,
    deliveries,
    devices,
    inbox_items,
    notifications,
)


async def test_in_app_only_is_one_item_and_push_gets_the_full_rows(store: Store) -> None:
    await add_subscribers(store, [{"id": "phone"}, {"id": "no-phone"}])
    device = {
        "id": new_id(),
        "subscriber_id": "phone",
        "kind": "fcm",
        "token_enc": "x",
        "token_index": "t-1",
        "keys_enc": None,
        "active": True,
        "created_at": time.time(),
        "deactivated_at": None,
        "deactivated_reason": None,
    }
    await store.write(lambda conn: bulk_insert(conn, devices, [device]))
    clock = clock_at(at("2026-03-10 12:00"))
    rule = RuleSettings.model_validate(
        {
            "id": "broadcast:b-push",
            "on": jobs.EVENT_TYPE,
            "to": "audience",
            "category": "order_updates",
            "channels": ["push", "inapp"],
            "template": jobs.INLINE,
        }
    )
    row = rows.new_row(
        "b-push", new_id(), {"all": True}, jobs.message(rule, CONTENT, None), clock.now()
    )
    event = Event("b-push", jobs.SOURCE, jobs.EVENT_TYPE, {"name": "Double 11"})
    assert await store.write(lambda conn: rows.create(conn, row, event)) is None
    await run(rig(store, clock))
    async with store.read() as conn:
        items = dict(
            (await conn.execute(select(inbox_items.c.subscriber_id, inbox_items.c.notification_id)))
            .tuples()
            .all()
        )
        made = dict(
            (
                await conn.execute(
                    select(broadcast_recipients.c.subscriber_id, broadcast_recipients.c.reason)
                )
            )
            .tuples()
            .all()
        )
        notes = (
            await conn.execute(select(notifications.c.id, notifications.c.subscriber_id))
        ).all()
        sent = (
            await conn.execute(
                select(deliveries.c.channel, deliveries.c.status).order_by("channel")
            )
        ).all()
    assert made == {
        "phone": "sent on push, inapp",
        "no-phone": "sent on inapp (no active device on file for push)",
    }
    # the subscriber without a device: the inbox item alone
    assert items["no-phone"] is None
    # the one with a device: its notification, a pending push and a delivered in-app item
    assert [(n.subscriber_id, n.id) for n in notes] == [("phone", items["phone"])]
    assert [tuple(d) for d in sent] == [("inapp", "delivered"), ("push", "pending")]
