"""The audit trail: who (API key id, or ``cli``) did what to which resource, when."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.ids import new_id
from tidings.store.tables import audit_log

CLI = "cli"
"""The ``key_id`` of a write made with the command line (on the database's host)."""


async def record(
    conn: AsyncConnection, key_id: str, action: str, resource: str, now: float
) -> None:
    """Add one entry, in the caller's transaction."""
    await conn.execute(
        insert(audit_log).values(
            id=new_id(), key_id=key_id, action=action[:128], resource=resource[:1024], at=now
        )
    )


async def listed(
    conn: AsyncConnection,
    *,
    key_id: str | None,
    resource: str | None,
    since: float | None,
    after: str | None,
    limit: int,
) -> list[Any]:
    """Entries oldest first, after the cursor; of one key, under one resource path."""
    query = select(audit_log).order_by(audit_log.c.id).limit(limit)
    if key_id:
        query = query.where(audit_log.c.key_id == key_id)
    if resource:
        query = query.where(audit_log.c.resource.startswith(resource, autoescape=True))
    if since is not None:
        query = query.where(audit_log.c.at >= since)
    if after:
        query = query.where(audit_log.c.id > after)
    return list((await conn.execute(query)).all())
