"""The hand-off between a process's processor and its dispatcher: born-leased deliveries.

The processor (:mod:`tidings.runtime.processor`) and the broadcaster decide deliveries; the
dispatcher of the same process (:mod:`tidings.delivery.dispatcher`) sends them. When both
publish to one broker object the dispatcher registers itself here (:func:`send_through`) and
the deciding side finds it (:func:`sender_of`): due external deliveries are then inserted
``sending`` under the dispatcher's lease (:func:`born_leased`) and handed to it after the
commit. The registry lives below both, so
neither layer imports the other for it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.channels.base import Destination
from tidings.queue.base import Broker
from tidings.store.deliveries import Claimed, Outgoing, open_order_keys

Leased = tuple[Claimed, Outgoing, Destination | None]
"""A born-leased delivery with what sending it needs (``None``: its destination is gone)."""


class Sender(Protocol):
    """The dispatcher of this process, as the processor hands it born-leased deliveries."""

    owner: str
    """How it signs its leases (:func:`~tidings.store.deliveries.lease_owner`)."""
    lease: float
    """Seconds a lease lasts."""

    def room(self) -> int:
        """How many more born-leased deliveries it takes now."""
        ...

    async def destinations(
        self, conn: AsyncConnection, items: Sequence[Claimed], owners: dict[str, str]
    ) -> dict[str, Destination]:
        """Where each delivery goes (``owners``: delivery id → subscriber id)."""
        ...

    def send_leased(self, items: Sequence[Leased]) -> None:
        """Attempt deliveries committed ``sending`` under its lease, and record outcomes."""
        ...

    def record_now(self) -> None:
        """Queue the write of the outcomes it holds now (to join the next transaction)."""
        ...


_SENDERS: weakref.WeakKeyDictionary[Broker, Sender] = weakref.WeakKeyDictionary()


def send_through(broker: Broker, sender: Sender) -> None:
    """Make ``sender`` the dispatcher that sends what processors publishing to ``broker``
    decide (in this process: both hold the same broker object)."""
    _SENDERS[broker] = sender


def sender_of(broker: Broker) -> Sender | None:
    """The dispatcher registered for ``broker`` (:func:`send_through`), if any."""
    return _SENDERS.get(broker)


async def born_leased(
    conn: AsyncConnection,
    sender: Sender,
    rows: Sequence[dict[str, Any]],
    now: float,
    outgoing_of: Callable[[str], Outgoing],
) -> list[Leased]:
    """Turn the due external deliveries among ``rows`` (delivery rows about to be inserted)
    that may go at once into born-leased ones, in place; what to hand ``sender`` after the
    commit.

    Per (subject, channel, destination) only the first of the rows may, and only if no
    delivery of it is open in the store: the rest stay ``pending`` and wait their turn (see
    :func:`~tidings.store.deliveries.claim`). At most the sender's room. ``outgoing_of`` gives
    a notification's :class:`~tidings.store.deliveries.Outgoing` by id (what the dispatcher
    would read back), from what the caller holds in memory.
    """
    room = sender.room()
    due = [r for r in rows if r["status"] == "pending" and r["due_at"] <= now]
    if room <= 0 or not due:
        return []
    first: dict[tuple[str, str, str], dict[str, Any]] = {}
    free: set[str] = set()
    for row in due:
        order_key = row["order_key"]
        if order_key is None:
            free.add(row["id"])
            continue
        key = (order_key, row["channel"], row["device_id"] or "")
        held = first.get(key)
        if held is None or (row["seq"] or 0.0, row["id"]) < (held["seq"] or 0.0, held["id"]):
            first[key] = row
    if first:
        busy = await open_order_keys(conn, [key[0] for key in first])
        free.update(row["id"] for key, row in first.items() if key not in busy)
    chosen = [row for row in due if row["id"] in free][:room]
    if not chosen:
        return []
    lease_until = now + sender.lease
    claimed = []
    for row in chosen:
        row.update(
            status="sending", lease_until=lease_until, leased_by=sender.owner, started_at=now
        )
        claimed.append(
            Claimed(
                row["id"],
                row["notification_id"],
                row["channel"],
                row["destination_kind"],
                row["device_id"],
                row["lane"],
                0,
                row["accepted_at"],
                row["created_at"],
                row["due_at"],
                row["enqueued_at"],
                row["is_fallback"],
            )
        )
    notes: dict[str, Outgoing] = {}
    for c in claimed:
        if c.notification_id not in notes:
            notes[c.notification_id] = outgoing_of(c.notification_id)
    owners = {c.id: notes[c.notification_id].subscriber_id for c in claimed}
    found = await sender.destinations(conn, claimed, owners)
    return [(c, notes[c.notification_id], found.get(c.id)) for c in claimed]
