"""What sending a delivery reads and writes beside :mod:`tidings.store.deliveries`.

Where each delivery goes (a subscriber's profile addresses, active devices and webhook
endpoints, by id, PII still encrypted) and what a notification's fallback needs (the states of
its deliveries, the insert of fallback deliveries). The dispatcher (``tidings.delivery``) reads
and writes through these only: it holds no SQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.store.deliveries import active_destinations
from tidings.store.tables import deliveries, devices, subscribers, webhook_endpoints


async def profile_addresses(conn: AsyncConnection, subscriber_ids: Sequence[str]) -> dict[str, Any]:
    """Each subscriber's encrypted profile addresses by id: rows with ``email_enc``,
    ``phone_enc`` and ``wechat_openid_enc``, in one query."""
    rows = await conn.execute(
        select(
            subscribers.c.id,
            subscribers.c.email_enc,
            subscribers.c.phone_enc,
            subscribers.c.wechat_openid_enc,
        ).where(subscribers.c.id.in_(list(subscriber_ids)))
    )
    return {row.id: row for row in rows}


async def active_devices(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, tuple[Any, ...]]:
    """Active devices by id: ``(id, subscriber_id, kind, token_enc, keys_enc)``."""
    return await active_destinations(conn, devices, ids)


async def active_endpoints(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, tuple[Any, ...]]:
    """Active webhook endpoints by id: ``(id, subscriber_id, url_enc, secret_enc)``."""
    return await active_destinations(conn, webhook_endpoints, ids)


async def delivery_states(conn: AsyncConnection, notification_id: str) -> list[Any]:
    """Every delivery of a notification as rows of ``channel``, ``status``, ``is_fallback``."""
    rows = await conn.execute(
        select(deliveries.c.channel, deliveries.c.status, deliveries.c.is_fallback).where(
            deliveries.c.notification_id == notification_id
        )
    )
    return list(rows.all())


async def add_deliveries(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Insert delivery rows (as :func:`tidings.runtime.processor.delivery_rows` makes them)."""
    if rows:
        await conn.execute(insert(deliveries), list(rows))
