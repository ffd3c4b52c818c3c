"""The hand-off between a process's processor and its dispatcher: born-leased deliveries.

The processor (:mod:`tidings.runtime.processor`) decides deliveries; the dispatcher of the
same process (:mod:`tidings.delivery.dispatcher`) sends them. When both publish to one broker
object the dispatcher registers itself here (:func:`send_through`) and the processor finds it
(:func:`sender_of`): due external deliveries are then inserted ``sending`` under the
dispatcher's lease and handed to it after the commit. The registry lives below both, so
neither layer imports the other for it.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.channels.base import Destination
from tidings.queue.base import Broker
from tidings.store.deliveries import Claimed, Outgoing

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
