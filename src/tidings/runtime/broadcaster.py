"""The broadcaster: runs broadcasts chunk by chunk, in every worker process.

Each round it starts the scheduled broadcasts whose time came, plans the next chunks of a
running one, then claims chunks and decides them, one transaction each
(:mod:`tidings.store.broadcasts`): the recipients' rows (an in-app-only recipient's inbox
item; any other's notification, deliveries and inbox item) and decisions commit with the
chunk's progress, so after a ``kill -9`` the next round (in this
process after its restart, or in any other) goes on from the last commit — no recipient lost,
none notified twice. Memory holds one chunk at a time, whatever the audience. After each
commit the due deliveries go to the broker and the inbox items to the live streams.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, OrderedDict
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.broadcasts import fanout
from tidings.broadcasts.fanout import ChunkRows
from tidings.broadcasts.job import Job, event_of, job_of
from tidings.clock import Clock
from tidings.delivery.handoff import sender_of
from tidings.metrics import Metrics
from tidings.queue.base import Broker
from tidings.queue.inbox_hub import InboxHub
from tidings.store import Store, audiences, broadcast_recipients, schedule
from tidings.store import broadcasts as rows
from tidings.store import subscribers as subscriber_rows
from tidings.store.tables import events
from tidings.strategy.decide import Policy
from tidings.strategy.model import Cancellation

log = logging.getLogger(__name__)

_DESTINED = {"push", "webhook"}
"""The channels that deliver to a device or an endpoint (looked up per recipient)."""
_MAX_QUEUED = 4096
"""Tickets waiting in this process's lanes past which no chunk is started."""


class Broadcaster:
    """Claims and decides chunks of running broadcasts, forever."""

    def __init__(
        self,
        store: Store,
        broker: Broker,
        policy: Policy,
        clock: Clock,
        metrics: Metrics,
        hub: InboxHub,
        *,
        tick: float = 0.2,
    ) -> None:
        self.store = store
        self.broker = broker
        self.policy = policy
        self.clock = clock
        self.hub = hub
        self.metrics = metrics
        self.tick = tick
        self._jobs: OrderedDict[str, tuple[dict[str, Any], Job | str]] = OrderedDict()
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Look for work now (a broadcast was just created or resumed)."""
        self._wake.set()

    async def run(self) -> None:
        """Run rounds forever; idle rounds wait for :meth:`wake` or the tick."""
        while True:
            try:
                busy = await self.round()
            except Exception:
                log.exception("broadcast round failed")
                busy = False
            if busy:
                await asyncio.sleep(0)  # let the API and the other loops in between chunks
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), self.tick)
            except TimeoutError:
                pass
            self._wake.clear()

    async def round(self) -> bool:
        """One round: start, plan, decide one chunk, finish; whether a chunk was decided."""
        now = self.clock.now()
        async with self.store.read() as conn:
            work = await rows.work(conn, now)
        if not work:
            return False  # nothing to write: an idle round costs one read
        if work.due:
            await self.store.write(lambda conn: rows.promote(conn, now))
        if work.due or work.unplanned:
            # one planning step a round: the first chunks are decided while the rest is planned
            await self.store.write(lambda conn: rows.plan(conn, self.clock.now()))
        if sum(self.broker.depth().values()) >= _MAX_QUEUED:
            return False  # the dispatcher is behind: wait for it (decided work waits there)
        written = await self.store.write(self._chunk)
        if written is None:
            await self.store.write(lambda conn: rows.finish(conn, self.clock.now()))
            return False
        if written.leased:
            sender = sender_of(self.broker)
            assert sender is not None
            sender.send_leased(written.leased)
        tickets = written.tickets()
        if tickets:
            await self.broker.publish(tickets)
        self.hub.publish_items(written.inbox)  # to the streams of every process, one message
        self.metrics.count_recipients(written.outcomes)
        return True

    async def _chunk(self, conn: AsyncConnection) -> ChunkRows | None:
        """Claim a chunk, decide it and write it (one transaction); ``None``: nothing to do."""
        now = self.clock.now()
        chunk = await rows.claim(conn, now)
        if chunk is None:
            return None
        audience, job = await self._job(conn, chunk.broadcast_id)
        if isinstance(job, str):
            log.warning("broadcast %s cannot run: %s", chunk.broadcast_id, job)
            await rows.change_status(conn, chunk.broadcast_id, "cancel", now)
            return ChunkRows(now)
        size = audiences.CHUNK if not job.rate else max(1, min(audiences.CHUNK, int(job.rate)))
        ids, last, end = await audiences.page(conn, audience, chunk.after_id, chunk.upto_id, size)
        fresh = ids
        if chunk.counts is not None:  # taken up again (a rate's part, a segment's misses)
            known = await broadcast_recipients.decided(conn, job.broadcast_id, ids)
            fresh = [i for i in ids if i not in known]
        channels = {*job.rule.channels, *job.rule.fallback}
        recipients, targets = await subscriber_rows.recipients(
            conn, fresh, destinations=bool(channels & _DESTINED), blank=False
        )
        category = self.policy.settings.categories[job.rule.category]
        state = await schedule.load_state(
            conn,
            subjects=(),
            exclude_pks=(),
            subscribers=fresh,
            caps={job.rule.category: category.cap.per} if category.cap else {},
            digest_rules=(),
            now=now,
        )
        written = fanout.decide_chunk(job, fresh, recipients, targets, state, now)
        sender = sender_of(self.broker)
        if sender is not None and written.deliveries:
            await written.lease(conn, sender, job)
        await written.write(conn)
        await rows.advance(conn, chunk, last, end, written.outcomes, now)
        if job.rate:
            await rows.pace(conn, job.broadcast_id, now + max(len(ids), 1) / job.rate)
        if end:
            await rows.finish(conn, now)  # the last chunk: done now, not a pace later
        return written

    async def _job(
        self, conn: AsyncConnection, broadcast_id: str
    ) -> tuple[dict[str, Any], Job | str]:
        """The broadcast's audience and job, or why it cannot run (read once, kept for the
        next chunks: they do not change; a few broadcasts run at once)."""
        found = self._jobs.get(broadcast_id)
        if found is not None:
            self._jobs.move_to_end(broadcast_id)
            return found
        row = await rows.get(conn, broadcast_id)
        stored = None
        if row is not None:
            stored = (
                await conn.execute(
                    select(events.c.envelope, events.c.received_at).where(
                        events.c.id == row.event_pk
                    )
                )
            ).first()
        made: tuple[dict[str, Any], Job | str] = ({}, "its event is gone")
        if row is not None and stored is not None:
            audience = row.audience if isinstance(row.audience, dict) else {}
            event = event_of(stored.envelope, stored.received_at)
            made = (audience, job_of(row, event, row.created_at, self.policy))
        self._jobs[broadcast_id] = made
        while len(self._jobs) > 64:
            self._jobs.popitem(last=False)
        return made


class Cancelled(NamedTuple):
    """What one :func:`cancel_pending` pass did."""

    found: int
    """Deferred notifications it found (fewer than asked: none left)."""
    settled: Counter[str]
    """Recipients whose decision moved on, by their new outcome (``cancelled``)."""


async def cancel_pending(
    conn: AsyncConnection, row: Any, now: float, limit: int = 500
) -> Cancelled:
    """Cancel a cancelled broadcast's deferred notifications not fired yet."""
    rule_id = rows.rule_of(row)
    found = await rows.scheduled_notifications(conn, row.event_pk, rule_id, limit)
    reason = f"broadcast {row.id} cancelled"
    won = set(
        await schedule.cancel(
            conn,
            [Cancellation(n.id, row.event_pk, rule_id, n.subscriber_id, reason) for n in found],
            now,
        )
    )
    moves = {n.subscriber_id: ("cancelled", reason) for n in found if n.id in won}
    return Cancelled(len(found), await broadcast_recipients.settle(conn, row.id, moves))
