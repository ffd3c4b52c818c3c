"""One batch of decisions, as rows: built in memory, then written in one transaction.

:class:`Batch` collects what the processor's decisions make — decision rows, notifications,
deliveries, inbox items, digest folds, cancellations — and :meth:`Batch.commit` writes them.
Due external deliveries that this process's dispatcher (a
:class:`~tidings.delivery.handoff.Sender`) can take are
*born leased* in the same transaction (see :mod:`tidings.runtime.processor`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.config import RuleSettings
from tidings.delivery.handoff import Leased, Sender, born_leased
from tidings.ids import new_id
from tidings.queue.base import Ticket
from tidings.store import broadcasts as broadcast_rows
from tidings.store import events as event_rows
from tidings.store import schedule
from tidings.store.db import bulk_insert
from tidings.store.deliveries import Outgoing
from tidings.store.events import StoredEvent
from tidings.store.outgoing import outgoing_of_row
from tidings.store.planned import delivery_rows, notification_row
from tidings.store.subscribers import Target
from tidings.store.tables import deliveries, inbox_items, notifications
from tidings.strategy import dedup
from tidings.strategy.model import Cancellation, Decision, OpenDigest, Scheduled, State


@dataclass(slots=True)
class Written:
    """What a committed batch hands on: tickets to publish, inbox items to stream,
    latencies to observe, born-leased deliveries to send."""

    tickets: list[Ticket] = field(default_factory=list)
    inbox: list[dict[str, Any]] = field(default_factory=list)
    latencies: list[tuple[str, float]] = field(default_factory=list)
    leased: list[Leased] = field(default_factory=list)


@dataclass(slots=True)
class Batch:
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
        self.notes[notification_id] = notification_row(notification_id, item.pk, plan, key, now)
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

    async def commit(self, conn: AsyncConnection) -> Written:
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
        written = Written(latencies=self.latencies, inbox=self.inbox, leased=leased)
        written.tickets = [
            Ticket(row["id"], row["lane"], subjects.get(row["notification_id"]))
            for row in self.deliveries
            if row["status"] == "pending" and row["due_at"] <= self.now
        ]
        return written

    async def _lease(self, conn: AsyncConnection) -> list[Leased]:
        """The due external deliveries born leased to this process's dispatcher."""
        assert self.sender is not None
        return await born_leased(
            conn,
            self.sender,
            self.deliveries,
            self.now,
            lambda notification_id: self._outgoing(self.notes[notification_id]),
        )

    def _outgoing(self, note: dict[str, Any]) -> Outgoing:
        """What :func:`~tidings.store.deliveries.outgoing` would read back for ``note``."""
        item = self.items[note["event_pk"]]
        event = item.event
        occurred_at = event.time if event.time is not None else item.received_at
        return outgoing_of_row(note, event.envelope(), occurred_at)
