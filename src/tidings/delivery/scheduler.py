"""The scheduler: publishes deliveries when they fall due, and recovers after crashes.

It is what makes the embedded broker durable and retries timely: every ``pending`` delivery
that is due and not (recently) enqueued is published; ``sending`` rows whose lease ran out
(their worker died mid-call) go back to ``pending``; accepted events never processed are
processed. At start-up every due delivery is republished, whatever it was doing.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.clock import Clock
from tidings.metrics import Metrics
from tidings.queue.base import Broker, Ticket
from tidings.runtime.processor import Processor
from tidings.store import Store
from tidings.store import deliveries as delivery_rows

log = logging.getLogger(__name__)


class Scheduler:
    """Publishes due deliveries; recovers leases and unprocessed events."""

    def __init__(
        self,
        store: Store,
        broker: Broker,
        processor: Processor,
        clock: Clock,
        metrics: Metrics,
        *,
        tick: float = 0.2,
        requeue_after: float = 300.0,
        recover_every: float = 5.0,
    ) -> None:
        self.store = store
        self.broker = broker
        self.processor = processor
        self.clock = clock
        self.metrics = metrics
        self.tick = tick
        self.requeue_after = requeue_after
        self.recover_every = recover_every
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Look for due work now (e.g. after a replay)."""
        self._wake.set()

    async def startup(self) -> None:
        """Republish every due pending delivery and process every unprocessed event."""
        now = self.clock.now()
        await self.store.write(lambda conn: delivery_rows.release_expired_leases(conn, now + 1e9))
        recovered = await self.processor.recover(older_than=now + 1)
        published = await self.publish_due(stale_before=now + 1e9)
        if recovered or published:
            log.info("recovered %d events and %d deliveries", recovered, published)

    async def publish_due(self, stale_before: float | None = None) -> int:
        """Publish due deliveries; how many."""
        total = 0
        while True:
            now = self.clock.now()
            cutoff = now - self.requeue_after if stale_before is None else stale_before

            async def take(conn: AsyncConnection) -> list[Ticket]:
                rows = await delivery_rows.due(conn, now, cutoff, 500)
                return [Ticket(r.id, r.lane) for r in rows]

            tickets = await self.store.write(take)
            if tickets:
                await self.broker.publish(tickets)
                total += len(tickets)
            if len(tickets) < 500:
                return total

    async def run(self) -> None:
        """Tick forever."""
        last_recovery = self.clock.now()
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.tick)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.publish_due()
                now = self.clock.now()
                if now - last_recovery >= self.recover_every:
                    last_recovery = now
                    await self.store.write(
                        lambda conn: delivery_rows.release_expired_leases(conn, now)
                    )
                    await self.processor.recover(older_than=now - self.recover_every)
                for lane, depth in self.broker.depth().items():
                    self.metrics.queue_depth.labels(lane).set(depth)
            except Exception:
                log.exception("scheduler tick failed")
