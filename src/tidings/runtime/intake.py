"""The intake: commits accepted events, coalescing concurrent requests into one insert.

While one insert is being committed, every event offered meanwhile waits in ``pending``; the
next insert takes them all. So N concurrent single-event POSTs cost one ``SELECT`` (for
duplicates) and one ``INSERT`` per commit instead of N of each — durability before ``202``
costs little. Should that insert fail, the requests are committed in halves apart
(:func:`tidings.events.poison.apart`): one request's bad event fails that request alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import partial

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.clock import Clock
from tidings.events.cloudevents import Event
from tidings.events.poison import apart
from tidings.store import Store
from tidings.store import events as event_rows
from tidings.store.events import Accepted

_Waiting = tuple[Sequence[Event], "asyncio.Future[list[Accepted]]"]
"""One ``accept`` call waiting for its commit: its events and its future."""


class Intake:
    """Commits events in coalesced batches; ``accept`` returns once they are durable."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self._pending: list[_Waiting] = []
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
            now = self.clock.now()
            try:
                outcomes = await apart(taken, partial(self._insert, now=now))
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                for _, future in taken:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), outcome in zip(taken, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, Exception):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    async def _insert(self, callers: Sequence[_Waiting], now: float) -> list[list[Accepted]]:
        """One insert of every caller's events; the results sliced per caller."""
        events = [event for batch, _ in callers for event in batch]
        offered = event_rows.offer(events, now, sqlite=self.store.is_sqlite)

        async def statement(conn: AsyncConnection) -> list[Accepted]:
            return await event_rows.insert_offered(conn, offered)

        results = await self.store.write(statement)
        sliced = []
        start = 0
        for batch, _ in callers:
            sliced.append(results[start : start + len(batch)])
            start += len(batch)
        return sliced
