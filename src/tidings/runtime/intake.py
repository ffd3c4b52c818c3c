"""The intake: commits accepted events, coalescing concurrent requests into one insert.

While one insert is being committed, every event offered meanwhile waits in ``pending``; the
next insert takes them all. So N concurrent single-event POSTs cost one ``SELECT`` (for
duplicates) and one ``INSERT`` per commit instead of N of each — durability before ``202``
costs little.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.clock import Clock
from tidings.events.cloudevents import Event
from tidings.store import Store
from tidings.store import events as event_rows
from tidings.store.events import Accepted


class Intake:
    """Commits events in coalesced batches; ``accept`` returns once they are durable."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self._pending: list[tuple[Sequence[Event], asyncio.Future[list[Accepted]]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def accept(self, batch: Sequence[Event]) -> list[Accepted]:
        """Commit ``batch``; one :class:`Accepted` per event, in order."""
        future: asyncio.Future[list[Accepted]] = asyncio.get_running_loop().create_future()
        self._pending.append((batch, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._pending:
            taken, self._pending = self._pending, []
            events = [event for batch, _ in taken for event in batch]
            now = self.clock.now()

            async def insert(
                conn: AsyncConnection, events: list[Event] = events, now: float = now
            ) -> list[Accepted]:
                return await event_rows.insert_events(conn, events, now)

            try:
                results = await self.store.write(insert)
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                for _, future in taken:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for batch, future in taken:
                if not future.done():
                    future.set_result(results[start : start + len(batch)])
                start += len(batch)
