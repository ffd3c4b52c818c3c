"""The claim of due deliveries (``pending`` → ``sending``) and the per-subject order.

Deliveries of one subject (``order_key``) to one subscriber's destination leave in event
order: a delivery with an earlier one still in flight (:data:`EARLIER_IN_FLIGHT`) is neither
born leased (:func:`open_order_keys`) nor claimed (:func:`claim`). Each query is written once
for both backends and run by :func:`~tidings.store.statements.rows_of`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.store.statements import for_backend, rows_of


@dataclass(slots=True)  # not frozen: a frozen init costs ~1 µs more a row, and no one mutates it
class Claimed:
    """A delivery row the dispatcher now owns, with what sending it needs."""

    id: str
    notification_id: str
    channel: str
    destination_kind: str
    device_id: str | None
    lane: str
    attempts: int
    accepted_at: float
    created_at: float
    due_at: float
    enqueued_at: float | None
    is_fallback: bool
    provider: str | None = None
    """The provider of the last attempt (a retry starts with the next one)."""


ORDER_WAIT = 0.2
"""How long a delivery waits behind an earlier one of its subject before it is tried again."""

OPEN = "('pending', 'sending')"
"""The statuses of a delivery still in flight (ahead of the later ones of its subject)."""

EARLIER_IN_FLIGHT = (
    "EXISTS (SELECT 1 FROM deliveries AS earlier"
    " WHERE earlier.order_key = deliveries.order_key AND earlier.channel = deliveries.channel"
    " AND coalesce(earlier.device_id, '') = coalesce(deliveries.device_id, '')"
    f" AND earlier.status IN {OPEN}"
    " AND (earlier.seq < deliveries.seq"
    " OR (earlier.seq = deliveries.seq AND earlier.id < deliveries.id)))"
)
"""A delivery of ``deliveries`` has an earlier one of its subject and destination in flight."""

_OPEN_ORDER_KEYS = (
    "SELECT order_key, channel, coalesce(device_id, '') FROM deliveries"
    f" WHERE order_key IN ({{}}) AND status IN {OPEN}"
)


async def open_order_keys(
    conn: AsyncConnection, order_keys: Sequence[str]
) -> set[tuple[str, str, str]]:
    """``(order_key, channel, device_id or '')`` of the open (``pending`` or ``sending``)
    deliveries with one of ``order_keys``.

    A delivery with one of these ahead of it must wait its turn (see :func:`claim`): it is
    not born leased. Looked up through ``ix_deliveries_order`` (order_key, status).
    """
    found: set[tuple[str, str, str]] = set()
    keys = list(dict.fromkeys(order_keys))
    for start in range(0, len(keys), 500):
        for key, channel, device in await rows_of(
            conn, _OPEN_ORDER_KEYS, keys[start : start + 500]
        ):
            found.add((key, channel, device))
    return found


_CLAIMED = (
    "id, notification_id, channel, destination_kind, device_id, lane, attempts, accepted_at,"
    " created_at, due_at, enqueued_at, is_fallback, provider"
)
# "+status": SQLite's planner would otherwise take ix_deliveries_due (status, due_at) over the
# primary key for "id IN (…) AND status = 'pending' AND due_at <= …" and scan every due pending
# row (the whole backlog) per batch (see for_backend; PostgreSQL runs it without the +).
_CLAIM = (
    "UPDATE deliveries SET status = 'sending', lease_until = {}, leased_by = {}, started_at = {}"
    " WHERE id IN ({}) AND +status = 'pending' AND due_at <= {}"
    f" AND (order_key IS NULL OR NOT {EARLIER_IN_FLIGHT}) RETURNING {_CLAIMED}"
)
"""The claim: the ids as one list (one array on PostgreSQL, so the text is the same for every
batch and prepared once per connection; nothing compiled per call)."""
_WAIT = (
    "UPDATE deliveries SET enqueued_at = NULL, due_at = {}"
    " WHERE id IN ({}) AND +status = 'pending' AND order_key IS NOT NULL AND due_at <= {}"
)
"""Those of the ids not claimed for an earlier delivery in flight: offered again later."""


async def claim(
    conn: AsyncConnection, ids: Sequence[str], now: float, lease: float, owner: str | None = None
) -> list[Claimed]:
    """``pending`` → ``sending`` for the due ones of ``ids``; a duplicate ticket claims nothing.

    Deliveries of one subject to one subscriber's destination leave in event order: one with
    an earlier delivery still open is not claimed but handed back to the scheduler, which
    offers it again after :data:`ORDER_WAIT`. ``owner`` names the claiming process (see
    :func:`~tidings.store.leases.release_leases_of`).
    """
    wanted = list(dict.fromkeys(ids))
    rows = await rows_of(
        conn, for_backend(conn, _CLAIM), now + lease, owner, now, wanted, now + 0.001
    )
    claimed = [
        Claimed(
            r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], bool(r[11]), r[12]
        )
        for r in rows
    ]
    if len(claimed) < len(wanted):
        taken = {c.id for c in claimed}
        waiting = [i for i in wanted if i not in taken]
        await rows_of(conn, for_backend(conn, _WAIT), now + ORDER_WAIT, waiting, now + 0.001)
    return claimed
