"""Notifications, their per-channel deliveries, attempts and dead letters.

Delivery status life cycle::

    pending ──claim──▶ sending ──▶ sent | delivered
       ▲              ▲   │
       │     (born)───┘   │  (decided due, first of its subject: leased to this process's
       │                  │   dispatcher in the deciding transaction, see open_order_keys)
       └──── retry ◀──────┤ (transient, budget left: pending again with a later due_at)
                          ├──▶ failed   (permanent)
                          └──▶ dead     (budget spent) ──replay──▶ pending
    scheduled ──fire──▶ pending (or delivered, in-app)        (deferred: delay, digest, quiet hours)
    scheduled ──▶ cancelled | expired | suppressed (a timed fallback whose item was read)
    cancelled / expired / suppressed are set by the strategy and the scheduler.

The queries live in modules by concern and are re-exported here for the callers:
:mod:`~tidings.store.claims` (the claim and the per-subject order),
:mod:`~tidings.store.outgoing` (what sending reads), :mod:`~tidings.store.outcomes`
(``finish``: outcomes and attempts), :mod:`~tidings.store.leases` (due work and leases) and
:mod:`~tidings.store.dead_letters`; :func:`~tidings.store.statements.rows_of` runs one
statement text on either backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.store.claims import ORDER_WAIT, Claimed, claim, open_order_keys
from tidings.store.dead_letters import add_dead_letter, list_dead_letters, replay_dead_letter
from tidings.store.leases import due, lease_owner, release_expired_leases, release_leases_of
from tidings.store.outcomes import finish
from tidings.store.outgoing import Outgoing, active_destinations, notifications_by_id, outgoing
from tidings.store.statements import rows_of
from tidings.store.tables import attempts, deliveries, notifications
from tidings.vocabulary import DeliveryStatus

__all__ = [
    "FINAL",
    "ORDER_WAIT",
    "Claimed",
    "Outgoing",
    "active_destinations",
    "add_dead_letter",
    "attempts_of",
    "claim",
    "deliveries_of",
    "due",
    "existing_dedup_keys",
    "finish",
    "lease_owner",
    "list_dead_letters",
    "list_notifications",
    "notifications_by_id",
    "open_order_keys",
    "outgoing",
    "release_expired_leases",
    "release_leases_of",
    "replay_dead_letter",
    "rows_of",
]

FINAL: frozenset[DeliveryStatus] = frozenset(
    {"sent", "delivered", "failed", "dead", "cancelled", "expired", "suppressed"}
)


async def existing_dedup_keys(conn: AsyncConnection, keys: Sequence[str]) -> set[str]:
    """Which of ``keys`` already have a notification."""
    found: set[str] = set()
    for start in range(0, len(keys), 500):
        chunk = list(keys[start : start + 500])
        found.update(key for (key,) in await rows_of(conn, _DEDUP_KEYS, chunk))
    return found


_DEDUP_KEYS = "SELECT dedup_key FROM notifications WHERE dedup_key IN ({})"


async def list_notifications(
    conn: AsyncConnection,
    *,
    subscriber_id: str | None,
    event_pk: str | None,
    status: str | None,
    after: str | None,
    limit: int,
) -> list[Any]:
    """Notifications matching the filters, oldest first, after the cursor."""
    query = select(notifications).order_by(notifications.c.id).limit(limit)
    conditions = []
    if subscriber_id:
        conditions.append(notifications.c.subscriber_id == subscriber_id)
    if event_pk:
        conditions.append(notifications.c.event_pk == event_pk)
    if after:
        conditions.append(notifications.c.id > after)
    if status:
        having = select(deliveries.c.notification_id).where(deliveries.c.status == status)
        conditions.append(or_(notifications.c.status == status, notifications.c.id.in_(having)))
    if conditions:
        query = query.where(and_(*conditions))
    return list((await conn.execute(query)).all())


async def deliveries_of(conn: AsyncConnection, notification_ids: Sequence[str]) -> list[Any]:
    """Delivery rows of the given notifications."""
    if not notification_ids:
        return []
    rows = await conn.execute(
        select(deliveries)
        .where(deliveries.c.notification_id.in_(list(notification_ids)))
        .order_by(deliveries.c.id)
    )
    return list(rows.all())


async def attempts_of(conn: AsyncConnection, delivery_ids: Sequence[str]) -> list[Any]:
    """Attempt rows of the given deliveries."""
    if not delivery_ids:
        return []
    rows = await conn.execute(
        select(attempts)
        .where(attempts.c.delivery_id.in_(list(delivery_ids)))
        .order_by(attempts.c.id)
    )
    return list(rows.all())
