"""Which event a notification's dedup key was first notified for (to explain a duplicate)."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.store.deliveries import rows_of

_NOTIFIED_BY = (
    "SELECT n.dedup_key, e.event_id FROM notifications n JOIN events e ON e.id = n.event_pk"
    " WHERE n.dedup_key IN ({})"
)


async def notified_by(conn: AsyncConnection, keys: Collection[str]) -> dict[str, str | None]:
    """``dedup_key`` → the CloudEvents id of the event it was notified for.

    Asked only for the keys a batch found taken (rare): a key whose event row is gone maps to
    ``None``, still taken.
    """
    found: dict[str, str | None] = dict.fromkeys(keys)
    ordered = list(keys)
    for start in range(0, len(ordered), 500):
        for key, event_id in await rows_of(conn, _NOTIFIED_BY, ordered[start : start + 500]):
            found[key] = event_id
    return found
