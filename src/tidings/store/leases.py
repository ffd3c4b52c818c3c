"""Due deliveries handed to the scheduler, and the leases of ``sending`` rows.

A claimed delivery is leased to the process that claimed it (``lease_until``, ``leased_by``):
when that process dies mid-call the lease runs out (:func:`release_expired_leases`), or a
process that saw the death gives its rows back at once (:func:`release_leases_of`).
"""

from __future__ import annotations

import os
import socket
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.store.tables import deliveries


async def due(conn: AsyncConnection, now: float, stale_before: float, limit: int) -> list[Any]:
    """Pending deliveries that are due and not (recently) enqueued; marks them enqueued.

    On PostgreSQL the rows are locked with ``SKIP LOCKED``: the schedulers of several workers
    share the due work instead of all publishing the same tickets.
    """
    query = (
        select(deliveries.c.id, deliveries.c.lane, deliveries.c.notification_id)
        .where(
            deliveries.c.status == "pending",
            deliveries.c.due_at <= now,
            or_(deliveries.c.enqueued_at.is_(None), deliveries.c.enqueued_at < stale_before),
        )
        .order_by(deliveries.c.due_at)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = (await conn.execute(query)).all()
    if rows:
        await conn.execute(
            update(deliveries)
            .where(deliveries.c.id.in_([r.id for r in rows]))
            .values(enqueued_at=now)
        )
    return list(rows)


async def release_expired_leases(conn: AsyncConnection, now: float) -> int:
    """``sending`` rows whose worker died mid-call go back to ``pending``."""
    result = await conn.execute(
        update(deliveries)
        .where(deliveries.c.status == "sending", deliveries.c.lease_until < now)
        .values(status="pending", enqueued_at=None, lease_until=None, leased_by=None)
    )
    return int(result.rowcount or 0)


def lease_owner(pid: int | None = None) -> str:
    """How a process signs its leases: host and process id (of this process by default)."""
    return f"{socket.gethostname()[:40]}/{os.getpid() if pid is None else pid}"


async def release_leases_of(conn: AsyncConnection, owner: str) -> int:
    """The ``sending`` rows of a process known to be dead go back to ``pending`` now.

    Its lease would bring them back too, but only after it runs out (the lease covers the
    slowest provider call); the process that saw the death need not wait.
    """
    result = await conn.execute(
        update(deliveries)
        .where(deliveries.c.status == "sending", deliveries.c.leased_by == owner)
        .values(status="pending", enqueued_at=None, lease_until=None, leased_by=None)
    )
    return int(result.rowcount or 0)
