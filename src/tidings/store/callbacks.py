"""Status callbacks to the shop: registrations and the outbox of status changes to send.

A status change is written to ``callback_outbox`` in the transaction that commits it, one row
per registered callback that wants its type; a loop of its own (:mod:`tidings.delivery.callbacks`)
claims due rows under a lease (``due_at`` moved past the lease), sends them, and records each
outcome. A crash mid-send leaves the row due again when the lease runs out: the shop may see a
change twice (same ``webhook-id``), never miss one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.crypto import Cipher
from tidings.ids import new_id
from tidings.store.db import bulk_insert
from tidings.store.tables import (
    callback_outbox,
    deliveries,
    events,
    notifications,
    status_callbacks,
)

StatusType = Literal[
    "notification.sent",
    "notification.delivered",
    "notification.failed",
    "notification.dead",
    "notification.suppressed",
]
"""The status changes a callback may ask for."""
TYPES: tuple[StatusType, ...] = get_args(StatusType)


@dataclass(frozen=True, slots=True)
class Due:
    """One outbox row to send now, with its callback's URL and secret (decrypted)."""

    id: str
    callback_id: str
    payload: dict[str, Any]
    attempts: int
    url: str
    secret: str


async def add(
    conn: AsyncConnection, cipher: Cipher, url: str, secret: str, types: Sequence[str], now: float
) -> str:
    """Register a callback; its id."""
    callback_id = new_id()
    await conn.execute(
        insert(status_callbacks).values(
            id=callback_id,
            url_enc=cipher.encrypt(url),
            secret_enc=cipher.encrypt(secret),
            types=list(types),
            created_at=now,
        )
    )
    return callback_id


def _shown(cipher: Cipher, row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "url": cipher.decrypt(row.url_enc),
        "types": list(row.types),
        "created_at": row.created_at,
    }


async def listed(conn: AsyncConnection, cipher: Cipher) -> list[dict[str, Any]]:
    """Every registered callback (secrets are shown once, at registration)."""
    rows = await conn.execute(select(status_callbacks).order_by(status_callbacks.c.id))
    return [_shown(cipher, row) for row in rows]


async def get(conn: AsyncConnection, cipher: Cipher, callback_id: str) -> dict[str, Any] | None:
    """One callback with its outbox counts per status, or ``None``."""
    row = (
        await conn.execute(select(status_callbacks).where(status_callbacks.c.id == callback_id))
    ).first()
    if row is None:
        return None
    counts = await conn.execute(
        select(callback_outbox.c.status, func.count())
        .where(callback_outbox.c.callback_id == callback_id)
        .group_by(callback_outbox.c.status)
    )
    return {**_shown(cipher, row), "outbox": {status: n for status, n in counts.all()}}


async def remove(conn: AsyncConnection, callback_id: str) -> bool:
    """Forget a callback and what it still had to send."""
    await conn.execute(
        delete(callback_outbox).where(
            callback_outbox.c.callback_id == callback_id, callback_outbox.c.status == "pending"
        )
    )
    result = await conn.execute(
        delete(status_callbacks).where(status_callbacks.c.id == callback_id)
    )
    return bool(result.rowcount)


async def routes(conn: AsyncConnection) -> dict[str, tuple[str, ...]]:
    """Status change type → ids of the callbacks that want it."""
    found: dict[str, list[str]] = {}
    for row in await conn.execute(select(status_callbacks.c.id, status_callbacks.c.types)):
        for kind in row.types:
            found.setdefault(kind, []).append(row.id)
    return {kind: tuple(ids) for kind, ids in found.items()}


async def enqueue(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Add outbox rows (``id, callback_id, type, payload, created_at``), due at once."""
    await bulk_insert(
        conn,
        callback_outbox,
        [
            {
                **row,
                "status": "pending",
                "attempts": 0,
                "due_at": row["created_at"],
                "finished_at": None,
                "last_error": None,
            }
            for row in rows
        ],
    )


async def any_due(conn: AsyncConnection, now: float) -> bool:
    """Whether an outbox row is due to be sent."""
    found = await conn.execute(
        select(callback_outbox.c.id)
        .where(callback_outbox.c.status == "pending", callback_outbox.c.due_at <= now)
        .limit(1)
    )
    return found.first() is not None


async def claim(
    conn: AsyncConnection, cipher: Cipher, now: float, lease: float, limit: int
) -> list[Due]:
    """Take up to ``limit`` due rows for ``lease`` seconds (oldest first)."""
    query = (
        select(
            callback_outbox.c.id,
            callback_outbox.c.callback_id,
            callback_outbox.c.payload,
            callback_outbox.c.attempts,
            status_callbacks.c.url_enc,
            status_callbacks.c.secret_enc,
        )
        .join(status_callbacks, status_callbacks.c.id == callback_outbox.c.callback_id)
        .where(callback_outbox.c.status == "pending", callback_outbox.c.due_at <= now)
        .order_by(callback_outbox.c.due_at)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":  # another process is sending those
        query = query.with_for_update(of=callback_outbox, skip_locked=True)
    rows = (await conn.execute(query)).all()
    if not rows:
        return []
    await conn.execute(
        update(callback_outbox)
        .where(callback_outbox.c.id.in_([row.id for row in rows]))
        .values(due_at=now + lease)
    )
    return [
        Due(
            row.id,
            row.callback_id,
            dict(row.payload),
            row.attempts,
            cipher.decrypt(row.url_enc) or "",
            cipher.decrypt(row.secret_enc) or "",
        )
        for row in rows
    ]


async def finish(conn: AsyncConnection, outcomes: Sequence[dict[str, Any]]) -> None:
    """Record attempts: ``{id, status, attempts, due_at, finished_at, last_error}`` each."""
    for outcome in outcomes:
        values = {key: value for key, value in outcome.items() if key != "id"}
        await conn.execute(
            update(callback_outbox).where(callback_outbox.c.id == outcome["id"]).values(**values)
        )


def _with_context() -> Any:
    """Deliveries with what a status callback tells of them: subscriber and event."""
    return (
        select(
            deliveries.c.id,
            deliveries.c.notification_id,
            deliveries.c.channel,
            deliveries.c.provider,
            deliveries.c.attempts,
            deliveries.c.last_error,
            notifications.c.subscriber_id,
            events.c.envelope,
        )
        .join(notifications, notifications.c.id == deliveries.c.notification_id)
        .outerjoin(events, events.c.id == notifications.c.event_pk)
    )


async def inbox_deliveries(conn: AsyncConnection, notification_ids: Sequence[str]) -> list[Any]:
    """The delivered in-app deliveries of these notifications, with subscriber and event."""
    rows = await conn.execute(
        _with_context().where(
            deliveries.c.notification_id.in_(list(notification_ids)),
            deliveries.c.channel == "inapp",
            deliveries.c.status == "delivered",
        )
    )
    return list(rows.all())


async def deliveries_of(conn: AsyncConnection, delivery_ids: Sequence[str]) -> list[Any]:
    """These deliveries, with subscriber and event."""
    rows = await conn.execute(_with_context().where(deliveries.c.id.in_(list(delivery_ids))))
    return list(rows.all())


async def prune(conn: AsyncConnection, before: float, limit: int = 5000) -> int:
    """Delete up to ``limit`` sent or abandoned rows finished before ``before``; how many."""
    old = (
        select(callback_outbox.c.id)
        .where(callback_outbox.c.status != "pending", callback_outbox.c.finished_at < before)
        .limit(limit)
    )
    ids = list((await conn.execute(old)).scalars())
    if ids:
        await conn.execute(delete(callback_outbox).where(callback_outbox.c.id.in_(ids)))
    return len(ids)
