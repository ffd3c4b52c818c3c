"""Topics: named audiences (``product.sku-1.restock``) and who follows them (SPEC §10)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.store.db import sqlite_many
from tidings.store.tables import topic_subscribers, topics

MAX_IDS = 10_000
"""Subscriber ids one call may add or remove."""


def topic_json(row: Any) -> dict[str, Any]:
    """A topic as the API shows it."""
    return {
        "key": row.key,
        "name": row.name,
        "description": row.description,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


async def put(
    conn: AsyncConnection, key: str, name: str, description: str, now: float
) -> tuple[dict[str, Any], bool]:
    """Create or update a topic; ``(topic, created)``."""
    result = await conn.execute(
        update(topics)
        .where(topics.c.key == key)
        .values(name=name, description=description, updated_at=now)
    )
    created = not result.rowcount
    if created:
        await conn.execute(
            insert(topics).values(
                key=key, name=name, description=description, created_at=now, updated_at=now
            )
        )
    found = await get(conn, key)
    assert found is not None
    return found, created


async def ensure(conn: AsyncConnection, key: str, now: float) -> None:
    """Create the topic ``key`` (named after itself) unless it exists."""
    exists = (await conn.execute(select(topics.c.key).where(topics.c.key == key))).first()
    if exists is None:
        await conn.execute(
            insert(topics).values(key=key, name=key, description="", created_at=now, updated_at=now)
        )


async def get(conn: AsyncConnection, key: str) -> dict[str, Any] | None:
    """One topic, or ``None``."""
    row = (await conn.execute(select(topics).where(topics.c.key == key))).first()
    return None if row is None else topic_json(row)


async def list_topics(conn: AsyncConnection, after: str | None, limit: int) -> list[Any]:
    """Topics in key order after the cursor."""
    query = select(topics).order_by(topics.c.key).limit(limit)
    if after:
        query = query.where(topics.c.key > after)
    return list(await conn.execute(query))


async def remove(conn: AsyncConnection, key: str) -> bool:
    """Delete a topic and its memberships."""
    await conn.execute(delete(topic_subscribers).where(topic_subscribers.c.topic_key == key))
    result = await conn.execute(delete(topics).where(topics.c.key == key))
    return bool(result.rowcount)


async def add_members(conn: AsyncConnection, key: str, ids: Sequence[str], now: float) -> None:
    """Add subscribers to a topic (already following: no change)."""
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return
    rows = [{"topic_key": key, "subscriber_id": i, "created_at": now} for i in wanted]
    if conn.dialect.name == "postgresql":
        await conn.execute(pg_insert(topic_subscribers).on_conflict_do_nothing(), rows)
        return
    await sqlite_many(
        conn,
        "INSERT OR IGNORE INTO topic_subscribers (topic_key, subscriber_id, created_at)"
        " VALUES (?, ?, ?)",
        [(key, i, now) for i in wanted],
    )


async def remove_members(conn: AsyncConnection, key: str, ids: Sequence[str]) -> None:
    """Remove subscribers from a topic."""
    wanted = list(dict.fromkeys(ids))
    for start in range(0, len(wanted), 500):
        part = wanted[start : start + 500]
        await conn.execute(
            delete(topic_subscribers).where(
                topic_subscribers.c.topic_key == key, topic_subscribers.c.subscriber_id.in_(part)
            )
        )


async def members(conn: AsyncConnection, key: str, after: str | None, limit: int) -> list[str]:
    """Subscriber ids following ``key``, in id order after the cursor."""
    query = (
        select(topic_subscribers.c.subscriber_id)
        .where(topic_subscribers.c.topic_key == key)
        .order_by(topic_subscribers.c.subscriber_id)
        .limit(limit)
    )
    if after:
        query = query.where(topic_subscribers.c.subscriber_id > after)
    return list((await conn.execute(query)).scalars())


async def of_subscriber(
    conn: AsyncConnection, subscriber_id: str, after: str | None, limit: int
) -> list[str]:
    """The topic keys ``subscriber_id`` follows, in key order after the cursor."""
    query = (
        select(topic_subscribers.c.topic_key)
        .where(topic_subscribers.c.subscriber_id == subscriber_id)
        .order_by(topic_subscribers.c.topic_key)
        .limit(limit)
    )
    if after:
        query = query.where(topic_subscribers.c.topic_key > after)
    return list((await conn.execute(query)).scalars())


async def count_members(conn: AsyncConnection, key: str) -> int:
    """How many subscribers follow ``key``."""
    query = select(func.count()).where(topic_subscribers.c.topic_key == key)
    return int((await conn.execute(query)).scalar_one())


async def count_followed(conn: AsyncConnection, subscriber_id: str) -> int:
    """How many topics ``subscriber_id`` follows."""
    query = select(func.count()).where(topic_subscribers.c.subscriber_id == subscriber_id)
    return int((await conn.execute(query)).scalar_one())


async def follows(conn: AsyncConnection, key: str, subscriber_id: str) -> bool:
    """Whether ``subscriber_id`` follows ``key``."""
    query = select(topic_subscribers.c.created_at).where(
        topic_subscribers.c.topic_key == key, topic_subscribers.c.subscriber_id == subscriber_id
    )
    return (await conn.execute(query)).first() is not None
