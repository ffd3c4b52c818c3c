"""The processor: accepted events → decisions → notifications, deliveries and inbox items.

Events are processed in batches: one read for every recipient's state, the pure
:func:`~tidings.strategy.decide.decide`, then one write that claims the events (so a
recovered event is never processed twice), stores decisions, notifications (unique per
event × rule × recipient), deliveries and inbox items. After the commit the due deliveries
are published to the broker and new inbox items to the live streams.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.clock import Clock
from tidings.ids import new_id
from tidings.metrics import Metrics
from tidings.queue.base import Broker, Ticket
from tidings.runtime.inbox_hub import InboxHub
from tidings.store import Store
from tidings.store import events as event_rows
from tidings.store import subscribers as subscriber_rows
from tidings.store.deliveries import existing_dedup_keys
from tidings.store.events import StoredEvent
from tidings.store.subscribers import Target
from tidings.store.tables import deliveries, events, inbox_items, notifications
from tidings.strategy.decide import Policy, decide, recipients_of
from tidings.strategy.model import Decision, Plan

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Written:
    tickets: list[Ticket] = field(default_factory=list)
    inbox: list[dict[str, Any]] = field(default_factory=list)
    latencies: list[tuple[str, float]] = field(default_factory=list)


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
) -> list[dict[str, Any]]:
    """One delivery row per channel target (``push`` fans out to every active device)."""
    rows = []
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
                    "status": "delivered" if inapp and due_at <= now else "pending",
                    "is_fallback": is_fallback,
                    "attempts": 1 if inapp and due_at <= now else 0,
                    "accepted_at": accepted_at,
                    "created_at": now,
                    "due_at": due_at,
                    "enqueued_at": now if due_at <= now else None,
                    "started_at": now if inapp else None,
                    "finished_at": now if inapp and due_at <= now else None,
                    "tp": now - accepted_at,
                    "tc": 0.0 if inapp else None,
                    "td": 0.0 if inapp else None,
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
        batch: int = 256,
    ) -> None:
        self.store = store
        self.broker = broker
        self.policy = policy
        self.clock = clock
        self.metrics = metrics
        self.hub = hub
        self._queue: asyncio.Queue[StoredEvent] = asyncio.Queue()
        self._batch = batch

    def submit(self, accepted: Sequence[StoredEvent]) -> None:
        """Hand freshly committed events over (the recovery loop finds any lost here)."""
        for item in accepted:
            self._queue.put_nowait(item)

    def backlog(self) -> int:
        """Events waiting for a decision in this process."""
        return self._queue.qsize()

    async def run(self) -> None:
        """Process submitted events in batches, forever."""
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self.process(batch)
            except Exception:
                # the events stay unprocessed in the store; the recovery loop retries them
                log.exception("processing a batch of %d events failed", len(batch))
                await asyncio.sleep(1)

    async def recover(self, older_than: float) -> int:
        """Re-process events accepted but never processed (after a crash); how many."""
        total = 0
        while True:
            async with self.store.read() as conn:
                found = await event_rows.unprocessed(conn, self._batch, older_than)
            if not found:
                return total
            await self.process(found)
            total += len(found)

    async def process(self, batch: Sequence[StoredEvent]) -> None:
        """Decide on ``batch`` and commit the outcome."""
        now = self.clock.now()
        wanted: set[str] = set()
        for item in batch:
            wanted |= recipients_of(self.policy, item.event)
        async with self.store.read() as conn:
            recipients, targets = await subscriber_rows.recipients(conn, wanted)
        decided = [(item, decide(self.policy, item.event, recipients, now)) for item in batch]

        async def write(conn: AsyncConnection) -> _Written:
            return await self._write(conn, decided, targets, now)

        written = await self.store.write(write)
        if written.tickets:
            await self.broker.publish(written.tickets)
        for item in written.inbox:
            self.hub.publish(item["subscriber_id"], {"type": "item", "item": item})
        for item in batch:
            self.metrics.events.labels(item.event.type, "processed").inc()
        for channel, seconds in written.latencies:
            self.metrics.latency.labels("total", channel).observe(seconds)
            self.metrics.latency.labels("produce", channel).observe(seconds)

    async def _write(
        self,
        conn: AsyncConnection,
        decided: Sequence[tuple[StoredEvent, list[Decision]]],
        targets: dict[str, dict[Any, list[Target]]],
        now: float,
    ) -> _Written:
        written = _Written()
        claimed = await conn.execute(
            update(events)
            .where(events.c.id.in_([item.pk for item, _ in decided]), events.c.processed_at.is_(None))
            .values(processed_at=now)
            .returning(events.c.id)
        )
        fresh = set(claimed.scalars())
        keys = [
            _dedup_key(item.pk, d.plan)
            for item, made in decided
            if item.pk in fresh
            for d in made
            if d.plan is not None
        ]
        seen = await existing_dedup_keys(conn, keys)
        notification_rows: list[dict[str, Any]] = []
        all_deliveries: list[dict[str, Any]] = []
        inbox_rows: list[dict[str, Any]] = []
        for item, made in decided:
            if item.pk not in fresh:
                continue  # processed already (a recovered duplicate hand-off)
            recorded: list[tuple[Decision, list[str]]] = []
            for decision in made:
                plan = decision.plan
                if plan is None:
                    recorded.append((decision, []))
                    continue
                key = _dedup_key(item.pk, plan)
                if key in seen:
                    recorded.append(
                        (Decision(decision.rule_id, decision.recipient_id, "deduplicated",
                                  "already notified for this event and rule"), [])
                    )
                    continue
                seen.add(key)
                notification_id = new_id()
                recorded.append((decision, [notification_id]))
                notification_rows.append(_notification_row(notification_id, item.pk, plan, key, now))
                rows = delivery_rows(
                    notification_id,
                    plan.channels,
                    targets.get(plan.subscriber_id, {"inapp": [("inapp", None)]}),
                    lane=plan.priority,
                    accepted_at=item.received_at,
                    due_at=plan.due_at,
                    now=now,
                )
                all_deliveries.extend(rows)
                if "inapp" in plan.channels and plan.due_at <= now:
                    inbox_rows.append(_inbox_row(notification_id, plan, now))
                    written.latencies.append(("inapp", now - item.received_at))
            await event_rows.insert_decisions(conn, item.pk, recorded, now)
        if notification_rows:
            await conn.execute(insert(notifications), notification_rows)
        if all_deliveries:
            await conn.execute(insert(deliveries), all_deliveries)
        if inbox_rows:
            await conn.execute(insert(inbox_items), inbox_rows)
        subjects = {row["id"]: row["subject"] for row in notification_rows}
        written.tickets = [
            Ticket(row["id"], row["lane"], subjects.get(row["notification_id"]))
            for row in all_deliveries
            if row["status"] == "pending" and row["due_at"] <= now
        ]
        written.inbox = inbox_rows
        return written


def _dedup_key(event_pk: str, plan: Plan) -> str:
    return f"{event_pk}:{plan.rule_id}:{plan.subscriber_id}"


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
    }


def _inbox_row(notification_id: str, plan: Plan, now: float) -> dict[str, Any]:
    content = plan.content
    return {
        "id": new_id(),
        "subscriber_id": plan.subscriber_id,
        "notification_id": notification_id,
        "category": plan.category,
        "title": str(content.get("title", "")),
        "body": str(content.get("body", "")),
        "data": {k: v for k, v in content.items() if k not in ("title", "body")},
        "created_at": now,
        "seen_at": None,
        "read_at": None,
        "archived_at": None,
    }
