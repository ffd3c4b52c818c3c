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
(see :class:`Sender`): the same transaction inserts them ``sending`` under its lease and
reads their destinations, and after the commit they go straight to it with the notification
and event already in memory — no ticket, no claim transaction, no re-read. A delivery with an
earlier one of its subject and destination still open (in the store, or earlier in this
batch) is born ``pending`` instead and waits its turn through the broker, as do all of them
while the dispatcher has many calls in flight. If the process dies before the outcome is
committed, the lease brings the row back (:func:`~tidings.store.deliveries.release_leases_of`
at once, or when it runs out); only a call in flight at that instant may be made twice.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.channels.base import Destination
from tidings.clock import Clock
from tidings.config import RuleSettings
from tidings.delivery import callbacks as status_callbacks
from tidings.ids import new_id
from tidings.metrics import Metrics
from tidings.queue.base import Broker, Ticket
from tidings.runtime.inbox_hub import InboxHub
from tidings.store import Store, schedule
from tidings.store import broadcasts as broadcast_rows
from tidings.store import events as event_rows
from tidings.store import subscribers as subscriber_rows
from tidings.store.db import advisory_lock, bulk_insert
from tidings.store.dedup import notified_by
from tidings.store.deliveries import Claimed, Outgoing, existing_dedup_keys, open_order_keys
from tidings.store.events import StoredEvent
from tidings.store.subscribers import Target
from tidings.store.tables import deliveries, inbox_items, notifications
from tidings.strategy import dedup
from tidings.strategy.decide import Policy, cancellations, decide, recipient_ids, recipients_of
from tidings.strategy.model import (
    Cancellation,
    Decision,
    OpenDigest,
    PastEvent,
    Plan,
    Recipient,
    Scheduled,
    State,
)

log = logging.getLogger(__name__)


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


_MAX_QUEUED = 4096
"""Tickets waiting in this process's lanes past which the processor waits before deciding."""
_ROOM_CHECK = 0.005
_ROOM_PATIENCE = 5.0

_SENDERS: weakref.WeakKeyDictionary[Broker, Sender] = weakref.WeakKeyDictionary()


def send_through(broker: Broker, sender: Sender) -> None:
    """Make ``sender`` the dispatcher that sends what processors publishing to ``broker``
    decide (in this process: both hold the same broker object)."""
    _SENDERS[broker] = sender


@dataclass(slots=True)
class _Written:
    tickets: list[Ticket] = field(default_factory=list)
    inbox: list[dict[str, Any]] = field(default_factory=list)
    latencies: list[tuple[str, float]] = field(default_factory=list)
    leased: list[Leased] = field(default_factory=list)


def delivery_rows(
    notification_id: str,
    plan_channels: Sequence[str],
    targets: dict[Any, list[Target]],
    *,
    lane: str,
    accepted_at: float,
    due_at: float,
    now: float,
    is_fallback: bool = False,
    order_key: str | None = None,
    seq: float | None = None,
) -> list[dict[str, Any]]:
    """One delivery row per channel target (``push`` fans out to every active device).

    A delivery due later is ``scheduled``: the scheduler fires it (or a cancel cancels it).
    """
    rows = []
    later = due_at > now
    for channel in plan_channels:
        for kind, device_id in targets.get(channel, []):
            inapp = channel == "inapp"
            rows.append(
                {
                    "id": new_id(),
                    "notification_id": notification_id,
                    "channel": channel,
                    "destination_kind": kind,
                    "device_id": device_id,
                    "provider": "inbox" if inapp else None,
                    "lane": lane,
                    "status": "scheduled" if later else ("delivered" if inapp else "pending"),
                    "is_fallback": is_fallback,
                    "attempts": 1 if inapp and not later else 0,
                    "last_error": None,
                    "accepted_at": accepted_at,
                    "created_at": now,
                    "due_at": due_at,
                    "enqueued_at": None if later else now,
                    "lease_until": None,
                    "leased_by": None,
                    "started_at": now if inapp and not later else None,
                    "finished_at": now if inapp and not later else None,
                    "tp": now - accepted_at,
                    "tc": 0.0 if inapp else None,
                    "td": 0.0 if inapp else None,
                    "order_key": order_key,
                    "seq": seq,
                }
            )
    return rows


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

    @property
    def sender(self) -> Sender | None:
        """The dispatcher born-leased deliveries go to (``None``: every one is a ticket)."""
        return self._sender if self._sender is not None else _SENDERS.get(self.broker)

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
            batch = [await self._queue.get()]
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

        async def write(conn: AsyncConnection) -> _Written:
            # "now" is when the transaction runs, not when the batch was taken: time spent
            # waiting for the writer belongs to Tp (accept → decided), not to the queue wait
            return await self._write(conn, batch, recipients, targets, self.clock.now())

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
        recipients: dict[str, Recipient],
        targets: dict[str, dict[Any, list[Target]]],
        now: float,
    ) -> _Written:
        # The decision runs inside the write transaction: the state it reads (subject
        # history, open digests, deferred notifications to cancel) cannot change under it.
        # SQLite has one writer; on PostgreSQL several workers write at once, so the subjects
        # (and digest keys) of this batch are locked for the transaction, in a fixed order.
        if conn.dialect.name == "postgresql":
            await _lock_keys(conn, batch, self.policy)
        fresh = await event_rows.claim(conn, [item.pk for item in batch], now)
        items = [item for item in batch if item.pk in fresh]
        if not items:
            return _Written()  # processed already (a recovered duplicate hand-off)
        settings = self.policy.settings
        matched = {r.id: r for i in items for r in self.policy.rules_for(i.event.type)}.values()
        # only the caps of categories this batch's rules notify in: counting a busy
        # recipient's notifications costs a scan of their rows per category
        used = {r.category for r in matched}
        state = await schedule.load_state(
            conn,
            subjects={i.event.subject for i in items if i.event.subject},
            exclude_pks=[i.pk for i in items],
            subscribers=recipients,
            caps={
                name: c.cap.per for name, c in settings.categories.items() if c.cap and name in used
            },
            cancel_types={t for r in settings.rules for t in r.cancel_on},
            digest_rules={r.id for r in matched if r.digest is not None},
            now=now,
        )
        keys = {
            (i.pk, rule.id, rid): (dedup.key(rule, i.event, i.pk, rid), rule)
            for i in items
            for rule in self.policy.rules_for(i.event.type)
            for rid in recipient_ids(rule, i.event.data)
        }
        taken = await existing_dedup_keys(conn, list({k for k, _ in keys.values()}))
        seen = await notified_by(conn, taken) if taken else {}
        out = _Batch(now, seen, self.sender, keys)
        for item in items:
            made = decide(self.policy, item.event, recipients, now, state)
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


@dataclass(slots=True)
class _Batch:
    """The rows one batch of decisions turns into, built in memory then written at once."""

    now: float
    seen: dict[str, str | None]
    """Dedup keys already notified → the (CloudEvents) id of the event notified."""
    sender: Sender | None
    keys: dict[tuple[str, str, str], tuple[str, RuleSettings]]
    """(event pk, rule, recipient) → the notification's dedup key, and the rule."""
    decisions: dict[str, list[tuple[Decision, list[str]]]] = field(default_factory=dict)
    notes: dict[str, dict[str, Any]] = field(default_factory=dict)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    inbox: list[dict[str, Any]] = field(default_factory=list)
    folds: dict[str, dict[str, Any]] = field(default_factory=dict)
    cancels: list[Cancellation] = field(default_factory=list)
    latencies: list[tuple[str, float]] = field(default_factory=list)
    origin: dict[str, tuple[str, int]] = field(default_factory=dict)
    """notification id → (event pk, index of its decision), for in-batch cancellation."""
    items: dict[str, StoredEvent] = field(default_factory=dict)
    """The batch's events by pk (born-leased deliveries carry their envelopes)."""

    def record(
        self,
        item: StoredEvent,
        decision: Decision,
        targets: dict[str, dict[Any, list[Target]]],
        state: State,
    ) -> None:
        made = self.decisions.setdefault(item.pk, [])
        if decision.fold is not None:
            self._fold(decision, state)
            made.append((decision, [decision.fold.notification_id]))
            return
        plan = decision.plan
        if plan is None:
            made.append((decision, []))
            return
        key, rule = self.keys[(item.pk, plan.rule_id, plan.subscriber_id)]
        if key in self.seen:
            why = dedup.reason(rule, item.event, self.seen[key])
            made.append(
                (Decision(decision.rule_id, decision.recipient_id, "deduplicated", why), [])
            )
            return
        self.seen[key] = item.event.id
        now = self.now
        notification_id = new_id()
        self.origin[notification_id] = (item.pk, len(made))
        self.items[item.pk] = item
        made.append((decision, [notification_id]))
        self.notes[notification_id] = _notification_row(notification_id, item.pk, plan, key, now)
        where = targets.get(plan.subscriber_id, {"inapp": [("inapp", None)]})
        order_key = None if plan.subject is None else f"{plan.subscriber_id}\x1f{plan.subject}"
        seq = item.event.time if item.event.time is not None else item.received_at
        common: dict[str, Any] = {
            "lane": plan.priority,
            "accepted_at": item.received_at,
            "now": now,
            "order_key": order_key,
            "seq": seq,
        }
        self.deliveries += delivery_rows(
            notification_id, plan.channels, where, due_at=plan.due_at, **common
        )
        if plan.fallback_at is not None and plan.fallback:
            self.deliveries += delivery_rows(
                notification_id,
                plan.fallback,
                where,
                due_at=max(plan.fallback_at, now + 1e-3),
                is_fallback=True,
                **common,
            )
        if "inapp" in plan.channels and plan.due_at <= now:
            self.inbox.append(
                schedule.inbox_row(
                    notification_id, plan.subscriber_id, plan.category, plan.content, now
                )
            )
            self.latencies.append(("inapp", now - item.received_at))
        counted = (plan.subscriber_id, plan.category)
        state.sent[counted] = state.sent.get(counted, 0) + 1
        if plan.digest is not None:
            state.digests[(plan.rule_id, plan.subscriber_id)] = OpenDigest(
                notification_id, 1, list(plan.digest), plan.due_at
            )
        if plan.cancel_on and plan.subject is not None:
            state.scheduled.setdefault(plan.subject, []).append(
                Scheduled(
                    notification_id,
                    item.pk,
                    plan.rule_id,
                    plan.subscriber_id,
                    plan.subject,
                    plan.cancel_on,
                )
            )

    def _fold(self, decision: Decision, state: State) -> None:
        fold = decision.fold
        assert fold is not None and decision.recipient_id is not None
        open_digest = state.digests[(decision.rule_id, decision.recipient_id)]
        open_digest.count = fold.count
        open_digest.events = fold.events
        values: dict[str, Any] = {
            "content": fold.content,
            "digest": {"count": fold.count, "events": fold.events},
        }
        if fold.close:
            open_digest.due_at = self.now
            values["due_at"] = self.now
        if fold.notification_id in self.notes:  # opened in this batch: not written yet
            self.notes[fold.notification_id].update(values)
        else:
            self.folds[fold.notification_id] = values

    def cancel(self, found: list[Cancellation], state: State, subject: str) -> None:
        if not found:
            return
        gone = {c.notification_id for c in found}
        state.scheduled[subject] = [
            s for s in state.scheduled[subject] if s.notification_id not in gone
        ]
        for item in found:
            note = self.notes.get(item.notification_id)
            if note is None:
                self.cancels.append(item)
                continue
            note["status"] = "cancelled"
            for row in self.deliveries:
                if row["notification_id"] == item.notification_id and row["status"] == "scheduled":
                    row.update(status="cancelled", finished_at=self.now, last_error=item.reason)
            event_pk, index = self.origin[item.notification_id]
            old, ids = self.decisions[event_pk][index]
            self.decisions[event_pk][index] = (
                Decision(old.rule_id, old.recipient_id, "cancelled", item.reason),
                ids,
            )

    async def commit(self, conn: AsyncConnection) -> _Written:
        await broadcast_rows.fan_out_topics(conn, self.decisions, self.now)  # topic rules
        await event_rows.insert_decision_rows(
            conn,
            [
                row
                for event_pk, made in self.decisions.items()
                for row in event_rows.decision_rows(event_pk, made, self.now)
            ],
        )
        if self.notes:
            await bulk_insert(conn, notifications, list(self.notes.values()))
        leased = await self._lease(conn) if self.sender is not None else []
        if self.deliveries:
            await bulk_insert(conn, deliveries, self.deliveries)
        if self.inbox:
            await bulk_insert(conn, inbox_items, self.inbox)
        await schedule.fold_digests(conn, self.folds)
        await schedule.cancel(conn, self.cancels, self.now)
        subjects = {nid: row["subject"] for nid, row in self.notes.items()}
        written = _Written(latencies=self.latencies, inbox=self.inbox, leased=leased)
        written.tickets = [
            Ticket(row["id"], row["lane"], subjects.get(row["notification_id"]))
            for row in self.deliveries
            if row["status"] == "pending" and row["due_at"] <= self.now
        ]
        return written

    async def _lease(self, conn: AsyncConnection) -> list[Leased]:
        """Turn the due external deliveries that may go at once into born-leased ones.

        Per (subject, channel, destination) only the first of the batch may, and only if no
        delivery of it is open in the store: the rest are ``pending`` and wait their turn
        (see :func:`~tidings.store.deliveries.claim`). At most the sender's room.
        """
        sender = self.sender
        assert sender is not None
        now = self.now
        room = sender.room()
        due = [r for r in self.deliveries if r["status"] == "pending" and r["due_at"] <= now]
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
        owner = sender.owner
        claimed = []
        for row in chosen:
            row["status"] = "sending"
            row["lease_until"] = lease_until
            row["leased_by"] = owner
            row["started_at"] = now
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
                notes[c.notification_id] = self._outgoing(self.notes[c.notification_id])
        owners = {c.id: notes[c.notification_id].subscriber_id for c in claimed}
        found = await sender.destinations(conn, claimed, owners)
        return [(c, notes[c.notification_id], found.get(c.id)) for c in claimed]

    def _outgoing(self, note: dict[str, Any]) -> Outgoing:
        """What :func:`~tidings.store.deliveries.outgoing` would read back for ``note``."""
        item = self.items[note["event_pk"]]
        event = item.event
        return Outgoing(
            note["id"],
            note["subscriber_id"],
            note["category"],
            note["priority"],
            note["subject"],
            note["locale"],
            note["content"],
            note["fallback"],
            note["expires_at"],
            item.pk,
            event.envelope(),
            event.time if event.time is not None else item.received_at,
        )


async def _lock_keys(conn: AsyncConnection, batch: Sequence[StoredEvent], policy: Policy) -> None:
    keys: set[str] = set()
    for item in batch:
        if item.event.subject:
            keys.add(f"subject:{item.event.subject}")
        for rule in policy.rules_for(item.event.type):
            if rule.digest is not None:
                keys.update(f"digest:{rule.id}:{r}" for r in recipient_ids(rule, item.event.data))
    await advisory_lock(conn, *keys)


def _notification_row(
    notification_id: str, event_pk: str, plan: Plan, key: str, now: float
) -> dict[str, Any]:
    return {
        "id": notification_id,
        "event_pk": event_pk,
        "rule_id": plan.rule_id,
        "subscriber_id": plan.subscriber_id,
        "category": plan.category,
        "priority": plan.priority,
        "subject": plan.subject,
        "locale": plan.locale,
        "content": plan.content,
        "channels": list(plan.channels),
        "fallback": list(plan.fallback),
        "status": "scheduled" if plan.due_at > now else "created",
        "dedup_key": key,
        "created_at": now,
        "due_at": plan.due_at,
        "expires_at": plan.expires_at,
        "cancel_on": list(plan.cancel_on) or None,
        "digest": None if plan.digest is None else {"count": 1, "events": plan.digest},
    }
