"""Fallback: when every primary external delivery of a notification has failed, its
``fallback`` channels get deliveries (once; never a fallback of a fallback)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.queue.base import Ticket
from tidings.store import sending
from tidings.store import subscribers as subscriber_rows
from tidings.store.deliveries import Outgoing
from tidings.store.planned import delivery_rows
from tidings.vocabulary import DeliveryStatus

EXTERNAL_DONE: frozenset[DeliveryStatus] = frozenset({"failed", "dead", "expired", "cancelled"})
"""Final states of an external delivery that leave the recipient unreached."""


async def fallback(conn: AsyncConnection, note: Outgoing, now: float) -> list[Ticket]:
    """Fallback deliveries for ``note`` if every primary external delivery has failed, in
    ``conn``'s transaction; their tickets, to publish once it commits."""
    if not note.fallback:
        return []
    rows = await sending.delivery_states(conn, note.id)
    if any(row.is_fallback for row in rows):
        return []
    external = [row for row in rows if row.channel != "inapp"]
    if not external or any(row.status not in EXTERNAL_DONE for row in external):
        return []
    _, targets = await subscriber_rows.recipients(conn, [note.subscriber_id])
    fresh = delivery_rows(
        note.id,
        note.fallback,
        targets.get(note.subscriber_id, {}),
        lane=note.priority,
        accepted_at=now,
        due_at=now,
        now=now,
        is_fallback=True,
    )
    fresh = [row for row in fresh if row["channel"] != "inapp"]
    await sending.add_deliveries(conn, fresh)
    return [Ticket(row["id"], row["lane"], note.subject) for row in fresh]
