"""A subscriber's data: everything held about them (export), and their erasure.

Erasure goes past the profile (:func:`tidings.store.subscribers.erase`): the rendered content
of their notifications is blanked (the ids stay, for the audit trail and explain), and
whatever is still pending for them is cancelled with the reason :data:`DELETED` — deferred
notifications (delay, quiet hours, digests) through :func:`tidings.store.schedule.cancel`,
so their decisions say so too, and deliveries waiting for a retry or a fallback. A delivery
already in a provider's hands finishes. They stop following topics (no broadcast reaches
them); broadcast and audit records keep their id.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.crypto import Cipher
from tidings.store import inbox as inbox_rows
from tidings.store import schedule
from tidings.store import subscribers as subscriber_rows
from tidings.store import topics as topic_rows
from tidings.store.tables import (
    decisions,
    devices,
    inbox_items,
    notifications,
    topic_subscribers,
)
from tidings.store.tables import deliveries as delivery_table
from tidings.strategy.model import Cancellation

DELETED = "subscriber deleted"


async def erase(conn: AsyncConnection, subscriber_id: str, now: float) -> bool:
    """Erase the subscriber and cancel what is pending for them; whether anything was held."""
    notes = (
        await conn.execute(
            select(
                notifications.c.id,
                notifications.c.event_pk,
                notifications.c.rule_id,
                notifications.c.status,
            ).where(notifications.c.subscriber_id == subscriber_id)
        )
    ).all()
    await schedule.cancel(
        conn,
        [
            Cancellation(n.id, n.event_pk, n.rule_id, subscriber_id, DELETED)
            for n in notes
            if n.status == "scheduled"
        ],
        now,
    )
    if notes:
        ids = [n.id for n in notes]
        await conn.execute(
            update(delivery_table)
            .where(
                delivery_table.c.notification_id.in_(ids),
                delivery_table.c.status.in_(["pending", "scheduled"]),
            )
            .values(status="cancelled", finished_at=now, last_error=DELETED, enqueued_at=None)
        )
        await conn.execute(
            update(notifications).where(notifications.c.id.in_(ids)).values(content={})
        )
    followed = await conn.execute(  # no broadcast reaches them any more
        delete(topic_subscribers).where(topic_subscribers.c.subscriber_id == subscriber_id)
    )
    erased = await subscriber_rows.erase(conn, subscriber_id)
    return erased or bool(notes) or bool(followed.rowcount)


async def export(conn: AsyncConnection, cipher: Cipher, subscriber_id: str) -> dict[str, Any]:
    """Profile, preferences, devices, endpoints, inbox and decisions, PII decrypted
    (``subscriber`` is ``None`` for an id never registered). Notifications: the caller's."""
    profile = await subscriber_rows.get(conn, cipher, subscriber_id)
    preferences = await subscriber_rows.get_preferences(conn, subscriber_id)
    found_devices = (
        await conn.execute(
            select(devices).where(devices.c.subscriber_id == subscriber_id).order_by(devices.c.id)
        )
    ).all()
    endpoints = await subscriber_rows.list_endpoints(conn, cipher, subscriber_id)
    inbox = (
        await conn.execute(
            select(inbox_items)
            .where(inbox_items.c.subscriber_id == subscriber_id)
            .order_by(inbox_items.c.id)
        )
    ).all()
    made = (
        await conn.execute(
            select(decisions)
            .where(decisions.c.recipient_id == subscriber_id)
            .order_by(decisions.c.id)
        )
    ).all()
    return {
        "subscriber": profile,
        "preferences": preferences or {},
        "devices": [_device(cipher, row) for row in found_devices],
        "webhooks": endpoints,
        "topics": await topic_rows.of_subscriber(conn, subscriber_id, None, 100_000),
        "inbox": [
            {
                **inbox_rows.item_content(row),
                "seen_at": row.seen_at,
                "read_at": row.read_at,
                "archived_at": row.archived_at,
            }
            for row in inbox
        ],
        "decisions": [
            {
                "event_pk": row.event_pk,
                "rule": row.rule_id,
                "outcome": row.outcome,
                "reason": row.reason,
                "notification_ids": row.notification_ids,
                "created_at": row.created_at,
            }
            for row in made
        ],
    }


def _device(cipher: Cipher, row: Any) -> dict[str, Any]:
    keys = cipher.decrypt(row.keys_enc)
    return {
        "device_id": row.id,
        "kind": row.kind,
        "token": cipher.decrypt(row.token_enc),
        "keys": json.loads(keys) if keys else None,
        "active": row.active,
        "created_at": row.created_at,
        "deactivated_at": row.deactivated_at,
        "deactivated_reason": row.deactivated_reason,
    }


async def notifications_of(conn: AsyncConnection, subscriber_id: str) -> list[Any]:
    """Every notification row of the subscriber, oldest first."""
    rows = await conn.execute(
        select(notifications)
        .where(notifications.c.subscriber_id == subscriber_id)
        .order_by(notifications.c.id)
    )
    return list(rows.all())
