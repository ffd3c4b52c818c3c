"""Dead letters: deliveries whose retry budget is spent, listed and replayed by an operator."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.store.tables import dead_letters, deliveries


async def add_dead_letter(
    conn: AsyncConnection,
    dead_id: str,
    delivery_id: str,
    channel: str,
    provider: str | None,
    reason: str,
    now: float,
) -> None:
    """Record a delivery whose retry budget is spent."""
    await conn.execute(
        insert(dead_letters).values(
            id=dead_id,
            delivery_id=delivery_id,
            channel=channel,
            provider=provider,
            reason=reason,
            created_at=now,
        )
    )


async def list_dead_letters(
    conn: AsyncConnection, after: str | None, limit: int, include_replayed: bool = False
) -> list[Any]:
    """Dead letters, newest last, after the cursor."""
    query = select(dead_letters).order_by(dead_letters.c.id).limit(limit)
    if after:
        query = query.where(dead_letters.c.id > after)
    if not include_replayed:
        query = query.where(dead_letters.c.replayed_at.is_(None))
    return list((await conn.execute(query)).all())


async def waiting(conn: AsyncConnection) -> int:
    """How many dead letters wait for replay."""
    query = select(func.count()).select_from(dead_letters)
    return int((await conn.execute(query.where(dead_letters.c.replayed_at.is_(None)))).scalar_one())


async def replay_dead_letter(conn: AsyncConnection, dead_id: str, now: float) -> str | None:
    """Put a dead delivery back to ``pending`` with a fresh budget; its delivery id."""
    row = (
        await conn.execute(
            select(dead_letters).where(
                dead_letters.c.id == dead_id, dead_letters.c.replayed_at.is_(None)
            )
        )
    ).first()
    if row is None:
        return None
    await conn.execute(
        update(dead_letters).where(dead_letters.c.id == dead_id).values(replayed_at=now)
    )
    await conn.execute(
        update(deliveries)
        .where(deliveries.c.id == row.delivery_id, deliveries.c.status == "dead")
        .values(status="pending", attempts=0, due_at=now, enqueued_at=None, last_error=None)
    )
    return str(row.delivery_id)
