"""The scheduler: publishes deliveries when they fall due, and recovers after crashes.

It is what makes the embedded broker durable and retries timely: every ``pending`` delivery
that is due and not (recently) enqueued is published; ``sending`` rows whose lease ran out
(their worker died mid-call) go back to ``pending``; accepted events never processed are
processed. At start-up every due delivery is republished, whatever it was doing.

It also runs the strategy's deferred work, all of it kept in the store so that it survives
restarts: deferred notifications that fell due are fired (or cancelled by a ``cancel_on``
event accepted meanwhile, or expired), timed fallbacks go out if the in-app item is still
unread, and undelivered notifications past their ``ttl`` expire (see
:mod:`tidings.store.schedule`). Unprocessed events are processed *before* anything fires,
so a cancel accepted before a crash is decided first.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.clock import Clock
from tidings.delivery import callbacks as status_callbacks
from tidings.metrics import Metrics
from tidings.queue.base import Broker, Ticket
from tidings.queue.inbox_hub import InboxHub
from tidings.store import Store, schedule
from tidings.store import deliveries as delivery_rows
from tidings.vocabulary import LANES, Lane

log = logging.getLogger(__name__)


class Recovering(Protocol):
    """What the scheduler needs of the processor (:class:`tidings.runtime.processor.Processor`):
    its inbox hub, and re-processing events accepted but never processed."""

    hub: InboxHub

    async def recover(self, older_than: float) -> int:
        """Re-process events accepted before ``older_than`` and never processed; how many."""
        ...


class Scheduler:
    """Publishes due deliveries; recovers leases and unprocessed events."""

    def __init__(
        self,
        store: Store,
        broker: Broker,
        processor: Recovering,
        clock: Clock,
        metrics: Metrics,
        *,
        tick: float = 0.2,
        requeue_after: float = 300.0,
        recover_every: float = 5.0,
        recover_after: float | None = None,
    ) -> None:
        self.store = store
        self.broker = broker
        self.processor = processor
        self.clock = clock
        self.metrics = metrics
        self.tick = tick
        self.requeue_after = requeue_after
        self.recover_every = recover_every
        self.recover_after = recover_every if recover_after is None else recover_after
        """Age of an undecided event before this process takes it over (sibling processes
        hold theirs in memory for a while under load; a dead one's are taken at once by the
        process that replaces it)."""
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Look for due work now (e.g. after a replay)."""
        self._wake.set()

    async def startup(self, release_leases: bool = True) -> None:
        """Republish every due pending delivery and process every unprocessed event.

        ``release_leases``: put every ``sending`` row back to ``pending`` first — right when
        this process is the only one (a previous run's calls are dead); not in one of several
        processes, whose supervisor releases exactly a dead sibling's rows.
        """
        now = self.clock.now()
        if release_leases:
            await self.store.write(
                lambda conn: delivery_rows.release_expired_leases(conn, now + 1e9)
            )
        recovered = await self.processor.recover(older_than=now + 1)
        await self.run_deferred()
        published = await self.publish_due(stale_before=now + 1e9)
        if recovered or published:
            log.info("recovered %d events and %d deliveries", recovered, published)

    async def publish_due(self, stale_before: float | None = None) -> int:
        """Publish due deliveries; how many."""
        total = 0
        while True:
            now = self.clock.now()
            cutoff = now - self.requeue_after if stale_before is None else stale_before

            tickets = await self.store.write(partial(_take, now=now, cutoff=cutoff))
            if tickets:
                await self.broker.publish(tickets)
                total += len(tickets)
            if len(tickets) < 500:
                return total

    async def run_deferred(self) -> int:
        """Fire due deferred notifications, timed fallbacks and expiries; how many moved."""
        moved = 0
        while True:
            now = self.clock.now()
            fired = await self.store.write(partial(self._fire_due, now=now))
            tickets = [Ticket(d, _lane(lane), subject) for d, lane, subject in fired.tickets]
            if tickets:
                await self.broker.publish(tickets)
            self.processor.hub.publish_items(fired.inbox)  # every process's streams, one message
            if fired.inbox:  # an in-app delivery is delivered as its inbox item is written
                self.metrics.child(self.metrics.deliveries, "inapp", "inbox", "delivered").inc(
                    len(fired.inbox)
                )
            self.metrics.count_recipients(fired.settled)  # a broadcast's deferred ones
            done = len(fired.fired) + len(fired.cancelled) + len(fired.expired)
            moved += done
            if done < 200:
                break
        now = self.clock.now()
        fallbacks = await self.store.write(partial(self._fallback_due, now=now))
        if fallbacks:
            await self.broker.publish([Ticket(d, _lane(lane), s) for d, lane, s in fallbacks])
        expired = await self.store.write(lambda conn: schedule.expire_due(conn, now))
        return moved + len(fallbacks) + len(expired)

    async def _fire_due(self, conn: AsyncConnection, *, now: float) -> schedule.Fired:
        fired = await schedule.fire_due(conn, now)
        callbacks = status_callbacks.watch(self.store)
        if fired.inbox and await callbacks.active(conn):  # nothing more when none registered
            await callbacks.record_inbox(conn, fired.inbox, now)
        return fired

    async def _fallback_due(
        self, conn: AsyncConnection, *, now: float
    ) -> list[tuple[str, str, str | None]]:
        skipped: list[str] = []
        due = await schedule.fallback_due(conn, now, skipped=skipped)
        callbacks = status_callbacks.watch(self.store)
        if skipped and await callbacks.active(conn):  # read in the inbox: no fallback
            await callbacks.record_suppressed(conn, skipped, now)
        return due

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
                await self.run_deferred()
                await self.publish_due()
                now = self.clock.now()
                if now - last_recovery >= self.recover_every:
                    last_recovery = now
                    await self.store.write(partial(delivery_rows.release_expired_leases, now=now))
                    await self.processor.recover(older_than=now - self.recover_after)
                for lane, depth in self.broker.depth().items():
                    self.metrics.queue_depth.labels(lane).set(depth)
            except Exception:
                log.exception("scheduler tick failed")


async def _take(conn: AsyncConnection, *, now: float, cutoff: float) -> list[Ticket]:
    rows = await delivery_rows.due(conn, now, cutoff, 500)
    return [Ticket(r.id, _lane(r.lane)) for r in rows]


def _lane(name: str) -> Lane:
    return next((lane for lane in LANES if lane == name), "normal")
