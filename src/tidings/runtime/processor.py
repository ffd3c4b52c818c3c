"""The processor: accepted events → decisions → notifications, deliveries and inbox items.

Events are processed in batches: one read for every recipient's profile, then one write
transaction that claims the events (so a recovered event is never processed twice), loads
the strategy's state (subject history, cap counts, open digests, deferred notifications),
runs the pure :func:`~tidings.strategy.decide.decide` event by event (folding each outcome
into the state, so a batch decides exactly as one-by-one would), and stores decisions,
notifications (unique per event × rule × recipient), deliveries, inbox items, digest folds
and cancellations. After the commit the due deliveries are published to the broker and new
inbox items to the live streams.

Due external deliveries are *born leased* when the dispatcher of this process can take them
(see :mod:`tidings.delivery.handoff`): the same transaction inserts them ``sending`` under its
lease and reads their destinations, and after the commit they go straight to it with the
notification and event already in memory — no ticket, no claim transaction, no re-read. A
delivery with an earlier one of its subject and destination still open (in the store, or
earlier in this batch) is born ``pending`` instead and waits its turn through the broker, as do
all of them while the dispatcher has many calls in flight. If the process dies before the
outcome is committed, the lease brings the row back
(:func:`~tidings.store.deliveries.release_leases_of` at once, or when it runs out); only a call
in flight at that instant may be made twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.clock import Clock
from tidings.config import RuleSettings
from tidings.delivery import callbacks as status_callbacks
from tidings.delivery.handoff import Sender, sender_of
from tidings.metrics import Metrics
from tidings.queue.base import Broker
from tidings.queue.inbox_hub import InboxHub
from tidings.runtime.batch import Batch, Written
from tidings.store import Store, schedule
from tidings.store import events as event_rows
from tidings.store import subscribers as subscriber_rows
from tidings.store.db import advisory_lock
from tidings.store.dedup import notified_by
from tidings.store.deliveries import existing_dedup_keys
from tidings.store.events import StoredEvent
from tidings.store.subscribers import Target
from tidings.strategy import dedup
from tidings.strategy.decide import (
    Policy,
    cancellations,
    decide,
    prerender,
    recipient_ids,
    recipients_of,
)
from tidings.strategy.model import (
    PastEvent,
    Recipient,
)

log = logging.getLogger(__name__)


_MAX_QUEUED = 4096
"""Tickets waiting in this process's lanes past which the processor waits before deciding."""
_ROOM_CHECK = 0.005
_ROOM_PATIENCE = 5.0
_STEAL_FIRST = 0.02
"""Seconds without a submitted event before an idle processor looks at the others' backlog
(doubling, up to :data:`_STEAL_LAST`, while it finds none)."""
_STEAL_LAST = 1.0
_STEAL_AGE = 0.05
"""Events younger than this are left to the process that accepted them: it is about to."""


class Processor:
    """Turns accepted events into decisions and queued deliveries."""

    def __init__(
        self,
        store: Store,
        broker: Broker,
        policy: Policy,
        clock: Clock,
        metrics: Metrics,
        hub: InboxHub,
        *,
        batch: int = 64,
        sender: Sender | None = None,
        steals: bool = False,
    ) -> None:
        self.store = store
        self.broker = broker
        self.policy = policy
        self.clock = clock
        self.metrics = metrics
        self.hub = hub
        self._queue: asyncio.Queue[StoredEvent] = asyncio.Queue()
        self._held: set[str] = set()
        """Events submitted here and not yet through :meth:`run`: recovery leaves them be."""
        # A batch is decided and written in one transaction that holds the event loop (SQLite
        # runs inline): 64 events keep that under ~20 ms, so a backlog after a hiccup does not
        # stall intake; per event it costs about what 256 did.
        self._batch = batch
        self._sender = sender
        self._steals = steals
        """Whether, idle, it decides events another process accepted (:meth:`_steal`)."""
        self._stole = False
        """Whether the last look at the others' backlog found some (look again at once)."""

    @property
    def sender(self) -> Sender | None:
        """The dispatcher born-leased deliveries go to (``None``: every one is a ticket)."""
        return self._sender if self._sender is not None else sender_of(self.broker)

    def submit(self, accepted: Sequence[StoredEvent]) -> None:
        """Hand freshly committed events over (the recovery loop finds any lost here)."""
        for item in accepted:
            self._held.add(item.pk)
            self._queue.put_nowait(item)

    def backlog(self) -> int:
        """Events waiting for a decision in this process."""
        return self._queue.qsize()

    async def run(self) -> None:
        """Process submitted events in batches, forever."""
        while True:
            batch = await self._next()
            await self._delivery_room()
            while len(batch) < self._batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self.process(batch)
            except Exception:
                # the events stay unprocessed in the store; the recovery loop retries them
                log.exception("processing a batch of %d events failed", len(batch))
                await asyncio.sleep(1)
            finally:
                self._held.difference_update(item.pk for item in batch)

    async def _next(self) -> list[StoredEvent]:
        """The first event of the next batch: a submitted one, or (see :meth:`_steal`) events
        of another process's backlog while this one has none."""
        if not self._steals:
            return [await self._queue.get()]
        idle = 0.0 if self._stole else _STEAL_FIRST  # found some last time: look again now
        while True:
            if not self._queue.empty():
                return [self._queue.get_nowait()]
            if idle > 0:
                try:
                    async with asyncio.timeout(idle):
                        return [await self._queue.get()]
                except TimeoutError:
                    pass
            stolen = await self._steal()
            self._stole = bool(stolen)
            if stolen:
                return stolen
            idle = min(max(idle * 2, _STEAL_FIRST), _STEAL_LAST)

    async def _steal(self) -> list[StoredEvent]:
        """Events another process of this run accepted and has not decided yet: the newest
        of its backlog older than :data:`_STEAL_AGE` (it works from the oldest).

        ``tidings serve --processes N`` decides each event in the process that accepted it,
        and a producer with few connections lands them all on one process: in batches of 500
        from 4 connections one process used 0.84 of a core and the other 0.34. Claiming is
        idempotent (:func:`~tidings.store.events.claim`): an event the owner reaches first is
        skipped here, and one taken here is skipped there.
        """
        try:
            async with self.store.read() as conn:
                found = await event_rows.unprocessed(
                    conn, self._batch, self.clock.now() - _STEAL_AGE, newest=True
                )
        except Exception:  # noqa: BLE001 - the next round tries again
            log.warning("looking for undecided events failed", exc_info=True)
            return []
        return [item for item in found if item.pk not in self._held]

    async def _delivery_room(self) -> None:
        """Wait while the deliveries already decided outrun the dispatcher.

        Deciding is cheaper than sending: without this, a flood of events turns into an
        ever longer queue of tickets in memory while the undecided backlog — what intake's
        ``max_backlog`` watches — stays short, and no producer is ever told to slow down.
        Waiting here lets the undecided backlog grow instead, so the 503s come where they
        help. Bounded: after :data:`_ROOM_PATIENCE` seconds the batch goes ahead anyway.
        """
        for _ in range(int(_ROOM_PATIENCE / _ROOM_CHECK)):
            if sum(self.broker.depth().values()) < _MAX_QUEUED:
                return
            await asyncio.sleep(_ROOM_CHECK)

    async def recover(self, older_than: float) -> int:
        """Re-process events accepted but never processed (after a crash); how many.

        Events this process holds in its own queue (a backlog, not a loss) are left to
        :meth:`run`: taking them here as well would decide nothing twice (the claim is
        idempotent) but would load and parse them twice.
        """
        total = 0
        while True:
            async with self.store.read() as conn:
                found = await event_rows.unprocessed(conn, self._batch, older_than)
            lost = [item for item in found if item.pk not in self._held]
            if not lost:
                return total
            await self.process(lost)
            total += len(lost)

    async def process(self, batch: Sequence[StoredEvent]) -> None:
        """Decide on ``batch`` and commit the outcome."""
        wanted: set[str] = set()
        for item in batch:
            wanted |= recipients_of(self.policy, item.event)
        async with self.store.read() as conn:
            recipients, targets = await subscriber_rows.recipients(conn, wanted)
        # what does not depend on the state is made before the write lock is taken: the
        # notifications' dedup keys and their content (rendering is most of a decision)
        ahead = Ahead(self.policy, batch, recipients)

        async def write(conn: AsyncConnection) -> Written:
            # "now" is when the transaction runs, not when the batch was taken: time spent
            # waiting for the writer belongs to Tp (accept → decided), not to the queue wait
            return await self._write(conn, batch, ahead, targets, self.clock.now())

        sender = self.sender
        if sender is not None:
            sender.record_now()  # the outcomes of earlier batches commit with this one
        written = await self.store.write(write)
        if written.leased:
            assert sender is not None
            sender.send_leased(written.leased)
        if written.tickets:
            await self.broker.publish(written.tickets)
        for row in written.inbox:
            self.hub.publish(row["subscriber_id"], {"type": "item", "item": row})
        if written.inbox:  # an in-app delivery is delivered as its inbox item is written
            delivered = self.metrics.child(self.metrics.deliveries, "inapp", "inbox", "delivered")
            delivered.inc(len(written.inbox))
        for event_type, count in Counter(item.event.type for item in batch).items():
            self.metrics.events.labels(event_type, "processed").inc(count)
        latency = self.metrics.latency
        for channel, seconds in written.latencies:
            self.metrics.child(latency, "total", channel).observe(seconds)
            self.metrics.child(latency, "produce", channel).observe(seconds)

    async def _write(
        self,
        conn: AsyncConnection,
        batch: Sequence[StoredEvent],
        ahead: Ahead,
        targets: dict[str, dict[Any, list[Target]]],
        now: float,
    ) -> Written:
        # The decision runs inside the write transaction: the state it reads (subject
        # history, open digests, deferred notifications to cancel) cannot change under it.
        # SQLite has one writer; on PostgreSQL several workers write at once, so the subjects
        # (and digest keys) of this batch are locked for the transaction, in a fixed order.
        if conn.dialect.name == "postgresql":
            await _lock_keys(conn, batch, self.policy)
        fresh = await event_rows.claim(conn, [item.pk for item in batch], now)
        items = [item for item in batch if item.pk in fresh]
        if not items:
            return Written()  # processed already (a recovered duplicate hand-off)
        settings = self.policy.settings
        matched = {r.id: r for i in items for r in self.policy.rules_for(i.event.type)}.values()
        # only the caps of categories this batch's rules notify in: counting a busy
        # recipient's notifications costs a scan of their rows per category
        used = {r.category for r in matched}
        state = await schedule.load_state(
            conn,
            subjects={i.event.subject for i in items if i.event.subject},
            exclude_pks=[i.pk for i in items],
            subscribers=ahead.recipients,
            caps={
                name: c.cap.per for name, c in settings.categories.items() if c.cap and name in used
            },
            cancel_types={t for r in settings.rules for t in r.cancel_on},
            digest_rules={r.id for r in matched if r.digest is not None},
            now=now,
        )
        state.rendered = ahead.rendered
        keys = ahead.keys
        taken = await existing_dedup_keys(conn, list({k for k, _ in keys.values()}))
        seen = await notified_by(conn, taken) if taken else {}
        out = Batch(now, seen, self.sender, keys)
        for item in items:
            made = decide(self.policy, item.event, ahead.recipients, now, state)
            subject = item.event.subject
            for decision in made:
                out.record(item, decision, targets, state)
            if subject is not None:
                out.cancel(
                    cancellations(item.event, item.pk, state.scheduled.get(subject, [])),
                    state,
                    subject,
                )
                refund_id = item.event.data.get("refund_id")
                state.history.setdefault(subject, []).append(
                    PastEvent(
                        item.event.type,
                        item.event.id,
                        item.event.time,
                        None if refund_id is None else str(refund_id),
                    )
                )
        written = await out.commit(conn)
        callbacks = status_callbacks.watch(self.store)
        if await callbacks.active(conn):  # nothing more when none is registered
            await callbacks.record_inbox(conn, written.inbox, now)
            await callbacks.record(conn, status_callbacks.suppressed(out.decisions, items), now)
        return written


class Ahead:
    """What a batch's decisions need that the state does not change, made before the write
    transaction: the recipients' profiles (read already), each possible notification's
    dedup key and its rendered content (:func:`~tidings.strategy.decide.prerender`)."""

    __slots__ = ("keys", "recipients", "rendered")

    def __init__(
        self, policy: Policy, batch: Sequence[StoredEvent], recipients: dict[str, Recipient]
    ) -> None:
        self.recipients = recipients
        self.keys: dict[tuple[str, str, str], tuple[str, RuleSettings]] = {
            (i.pk, rule.id, rid): (dedup.key(rule, i.event, i.pk, rid), rule)
            for i in batch
            for rule in policy.rules_for(i.event.type)
            for rid in recipient_ids(rule, i.event.data)
        }
        self.rendered: dict[tuple[str, str, str, str], tuple[str, dict[str, Any]]] = {}
        for item in batch:
            self.rendered.update(prerender(policy, item.event, recipients))


async def _lock_keys(conn: AsyncConnection, batch: Sequence[StoredEvent], policy: Policy) -> None:
    keys: set[str] = set()
    for item in batch:
        if item.event.subject:
            keys.add(f"subject:{item.event.subject}")
        for rule in policy.rules_for(item.event.type):
            if rule.digest is not None:
                keys.update(f"digest:{rule.id}:{r}" for r in recipient_ids(rule, item.event.data))
    await advisory_lock(conn, *keys)
