"""The in-app inbox: items per subscriber, seen/read/archived."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.store.tables import inbox_items


def item_content(row: Any) -> dict[str, Any]:
    """What an inbox row says (without its seen/read/archived state)."""
    return {
        "id": row.id,
        "notification_id": row.notification_id,
        "category": row.category,
        "title": row.title,
        "body": row.body,
        "data": row.data,
        "created_at": row.created_at,
    }


def item_json(row: Any) -> dict[str, Any]:
    """The API form of an inbox row."""
    return {
        **item_content(row),
        "seen": row.seen_at is not None,
        "read": row.read_at is not None,
        "archived": row.archived_at is not None,
    }


async def list_items(
    conn: AsyncConnection, subscriber_id: str, status: str, before: str | None, limit: int
) -> list[Any]:
    """Newest first; ``unread`` hides read and archived items, ``all`` hides archived ones."""
    query = (
        select(inbox_items)
        .where(inbox_items.c.subscriber_id == subscriber_id, inbox_items.c.archived_at.is_(None))
        .order_by(inbox_items.c.id.desc())
        .limit(limit)
    )
    if status == "unread":
        query = query.where(inbox_items.c.read_at.is_(None))
    if before:
        query = query.where(inbox_items.c.id < before)
    return list((await conn.execute(query)).all())


async def counts(conn: AsyncConnection, subscriber_id: str) -> dict[str, int]:
    """``{unread, unseen}`` for the badge."""
    live = and_live(subscriber_id)
    unread = (
        await conn.execute(select(func.count()).where(*live, inbox_items.c.read_at.is_(None)))
    ).scalar_one()
    unseen = (
        await conn.execute(select(func.count()).where(*live, inbox_items.c.seen_at.is_(None)))
    ).scalar_one()
    return {"unread": int(unread), "unseen": int(unseen)}


def and_live(subscriber_id: str) -> tuple[Any, ...]:
    """Conditions for a subscriber's non-archived items."""
    return (inbox_items.c.subscriber_id == subscriber_id, inbox_items.c.archived_at.is_(None))


async def mark(
    conn: AsyncConnection, subscriber_id: str, item_id: str | None, column: str, now: float
) -> int:
    """Set ``read_at``/``archived_at``/``seen_at`` on one item (or all when ``item_id`` is None)."""
    target = inbox_items.c[column]
    query = update(inbox_items).where(
        inbox_items.c.subscriber_id == subscriber_id, target.is_(None)
    )
    if item_id is not None:
        query = query.where(inbox_items.c.id == item_id)
    values: dict[str, Any] = {column: now}
    if column == "read_at":
        values["seen_at"] = func.coalesce(inbox_items.c.seen_at, now)
    result = await conn.execute(query.values(**values))
    return int(result.rowcount or 0)


async def exists(conn: AsyncConnection, subscriber_id: str, item_id: str) -> bool:
    """Whether the item belongs to this subscriber."""
    found = await conn.execute(
        select(inbox_items.c.id).where(
            inbox_items.c.id == item_id, inbox_items.c.subscriber_id == subscriber_id
        )
    )
    return found.first() is not None
