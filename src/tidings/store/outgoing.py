"""What sending a claimed delivery reads: its notification with the event's envelope, and the
active devices and webhook endpoints it goes to.

Each query is written once for both backends and run by
:func:`~tidings.store.statements.rows_of`; the rows are mapped in one place.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.store.statements import rows_of
from tidings.store.tables import notifications


@dataclass(slots=True)  # not frozen, as Claimed
class Outgoing:
    """What sending needs of a claimed delivery's notification and of its event."""

    id: str
    subscriber_id: str
    category: str
    priority: str
    subject: str | None
    locale: str
    content: dict[str, Any]
    fallback: list[str]
    expires_at: float | None
    event_pk: str
    envelope: dict[str, Any]
    """The event's CloudEvent (empty if the event row is gone)."""
    occurred_at: float | None
    """The event's ``time``, else when it was accepted."""


def outgoing_of_row(
    note: dict[str, Any], envelope: dict[str, Any], occurred_at: float | None
) -> Outgoing:
    """What :func:`outgoing` would read back for a ``notifications`` row about to be written
    (``note``), whose event's envelope and time the caller holds (born-leased deliveries)."""
    return Outgoing(
        note["id"],
        note["subscriber_id"],
        note["category"],
        note["priority"],
        note["subject"],
        note["locale"],
        note["content"],
        note["fallback"],
        note["expires_at"],
        note["event_pk"],
        envelope,
        occurred_at,
    )


_OUTGOING = (
    "SELECT n.id, n.subscriber_id, n.category, n.priority, n.subject, n.locale, n.content,"
    " n.fallback, n.expires_at, n.event_pk, e.envelope, coalesce(e.time, e.received_at)"
    " FROM notifications AS n LEFT JOIN events AS e ON e.id = n.event_pk WHERE n.id IN ({})"
)


def _decoded(value: Any) -> Any:
    """A JSON column as PostgreSQL's driver hands it: text (then parsed) or already parsed."""
    return json.loads(value) if isinstance(value, str | bytes) else value


async def outgoing(conn: AsyncConnection, notification_ids: Sequence[str]) -> dict[str, Outgoing]:
    """Notifications by id with their events' envelopes, in one query."""
    ids = list(set(notification_ids))
    if not ids:
        return {}
    loads = json.loads if conn.dialect.name == "sqlite" else _decoded  # SQLite: always text
    return {
        r[0]: Outgoing(
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            loads(r[6]),
            loads(r[7]),
            r[8],
            r[9],
            {} if r[10] is None else loads(r[10]),
            r[11],
        )
        for r in await rows_of(conn, _OUTGOING, ids)
    }


_DESTINATIONS = {
    name: f"SELECT {', '.join(columns)} FROM {name} WHERE id IN ({{}}) AND active = TRUE"
    for name, columns in (
        ("devices", ("id", "subscriber_id", "kind", "token_enc", "keys_enc")),
        ("webhook_endpoints", ("id", "subscriber_id", "url_enc", "secret_enc")),
    )
}


async def active_destinations(
    conn: AsyncConnection, table: Table, ids: Sequence[str]
) -> dict[str, tuple[Any, ...]]:
    """Active ``devices`` or ``webhook_endpoints`` rows by id, as tuples of the columns
    sending needs: ``(id, subscriber_id, kind, token_enc, keys_enc)`` for a device,
    ``(id, subscriber_id, url_enc, secret_enc)`` for an endpoint."""
    wanted = list(set(ids))
    if not wanted:
        return {}
    rows = await rows_of(conn, _DESTINATIONS[table.name], wanted)
    return {row[0]: tuple(row) for row in rows}


async def notifications_by_id(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, Any]:
    """Notification rows by id."""
    rows = await conn.execute(select(notifications).where(notifications.c.id.in_(list(set(ids)))))
    return {row.id: row for row in rows}
