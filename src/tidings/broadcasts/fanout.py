"""One chunk of a broadcast's audience: each recipient decided, the rows to write built.

Every recipient goes through :func:`~tidings.strategy.decide.decide_for`, the decision any
notification gets (preferences, required categories, quiet hours, mute, caps, ttl, channel
fallback); ``local_time`` delays each one to that wall-clock time in their own zone. A
recipient reached in-app only and at once is one inbox item (no notification or delivery
row: it is delivered as it is written, and counts towards its category's cap as an item
without a notification); any other plan gives the rows the processor writes for any decision
— a notification unique per event × rule × recipient, its deliveries (deferred ones
``scheduled`` for the scheduler), an inbox item if in-app now. Every recipient's decision is
a ``broadcast_recipients`` row.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings import json_output
from tidings.broadcasts.job import Job, SharedRender, next_local
from tidings.delivery.handoff import Leased, Sender, born_leased
from tidings.ids import new_id, new_ids
from tidings.queue.base import Ticket
from tidings.store import broadcast_recipients
from tidings.store.db import bulk_insert, sqlite_many
from tidings.store.deliveries import Outgoing
from tidings.store.outgoing import outgoing_of_row
from tidings.store.planned import delivery_rows
from tidings.store.subscribers import Target
from tidings.store.tables import deliveries, inbox_items, notifications
from tidings.strategy import timing
from tidings.strategy.decide import decide_for
from tidings.strategy.model import Decision, Plan, Recipient, State


@dataclass(slots=True)
class ChunkRows:
    """What one chunk's decisions turn into."""

    now: float
    outcomes: Counter[str] = field(default_factory=Counter)
    recipients: list[tuple[Any, ...]] = field(default_factory=list)
    """Each recipient's decision (:data:`~tidings.store.broadcast_recipients.RECIPIENT_COLUMNS`)."""
    notes: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    inbox: list[dict[str, Any]] = field(default_factory=list)
    leased: list[Leased] = field(default_factory=list)
    """Deliveries born leased to this process's dispatcher: sent once the chunk commits."""

    def tickets(self) -> list[Ticket]:
        """The deliveries due now for the dispatcher (in-app ones are done already)."""
        return [
            Ticket(row["id"], row["lane"], None)
            for row in self.deliveries
            if row["status"] == "pending" and row["due_at"] <= self.now
        ]

    async def lease(self, conn: AsyncConnection, sender: Sender, job: Job) -> None:
        """Make the due external deliveries that ``sender`` has room for born leased (before
        :meth:`write`): no ticket, no claim transaction, no read of what they carry."""
        notes = {row["id"]: row for row in self.notes}
        event = job.event
        envelope = event.envelope()
        occurred_at = event.time if event.time is not None else job.accepted_at

        def outgoing_of(notification_id: str) -> Outgoing:
            return outgoing_of_row(notes[notification_id], envelope, occurred_at)

        self.leased = await born_leased(conn, sender, self.deliveries, self.now, outgoing_of)

    async def write(self, conn: AsyncConnection) -> None:
        """Insert every row (in the caller's transaction)."""
        await bulk_insert(conn, notifications, self.notes)
        await bulk_insert(conn, deliveries, self.deliveries)
        await _insert_inbox(conn, self.inbox)
        await broadcast_recipients.insert_recipients(conn, self.recipients)


_INBOX_COLUMNS = (
    "id",
    "subscriber_id",
    "notification_id",
    "category",
    "title",
    "body",
    "data",
    "created_at",
)
_INBOX_SQL = (
    f"INSERT INTO inbox_items ({', '.join(_INBOX_COLUMNS)})"
    f" VALUES ({', '.join('?' * len(_INBOX_COLUMNS))})"
)


async def _insert_inbox(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """Insert inbox items; on SQLite each distinct ``data`` is encoded once (recipients who
    got the same message share it)."""
    if not rows:
        return
    if conn.dialect.name != "sqlite":
        await bulk_insert(conn, inbox_items, rows)
        return
    encoded: dict[int, str] = {}
    values = []
    for row in rows:
        data = row["data"]
        text = encoded.get(id(data))
        if text is None:
            text = encoded[id(data)] = json_output.text(data)
        values.append(
            (
                row["id"],
                row["subscriber_id"],
                row["notification_id"],
                row["category"],
                row["title"],
                row["body"],
                text,
                row["created_at"],
            )
        )
    await sqlite_many(conn, _INBOX_SQL, values)


def decide_chunk(
    job: Job,
    ids: Sequence[str],
    recipients: Mapping[str, Recipient],
    targets: Mapping[str, dict[Any, list[Target]]],
    state: State,
    now: float,
) -> ChunkRows:
    """Decide for each of ``ids`` and build the rows (pure: no I/O)."""
    out = ChunkRows(now)
    alike: dict[tuple[Any, ...], Decision] = {}
    parts: dict[int, tuple[dict[str, Any], str, str, dict[str, Any]]] = {}
    shapes: dict[int, tuple[Plan, bool, dict[str, Any]]] = {}
    # an inbox item a recipient at most; ids not before ``now`` (its created_at): the caps
    # count such items from the window's floor id (tidings.store.strategy_state)
    item_ids = iter(new_ids(len(ids), not_before=now))
    shared = isinstance(job.policy.templates, SharedRender) and not job.policy.templates.personal(
        job.rule.template
    )
    sent = state.sent
    for subscriber_id in ids:
        recipient = recipients.get(subscriber_id)
        if shared:
            decision = _decide_alike(job, subscriber_id, recipient, now, state, alike)
        else:
            decision = _decide(job, recipient or Recipient(id=subscriber_id), now, state)
        notification_id = None
        plan = decision.plan
        if plan is not None:
            shape = shapes.get(id(plan))
            if shape is None:  # once per decision shared by recipients who look alike
                shape = shapes[id(plan)] = _shape(plan, now, parts)
            _, inbox_only, item = shape
            if inbox_only:
                out.inbox.append({"id": next(item_ids), "subscriber_id": subscriber_id, **item})
            else:
                notification_id = new_id()
                where = targets.get(subscriber_id)
                _plan_rows(out, job, plan, subscriber_id, notification_id, where, now)
                if "inapp" in plan.channels and plan.due_at <= now:
                    out.inbox.append(
                        {
                            "id": next(item_ids),
                            "subscriber_id": subscriber_id,
                            **item,
                            "notification_id": notification_id,
                        }
                    )
            counted = (subscriber_id, plan.category)
            sent[counted] = sent.get(counted, 0) + 1
        out.recipients.append(
            (
                job.broadcast_id,
                subscriber_id,
                decision.outcome,
                decision.reason,
                decision.until,
                notification_id,
                now,
            )
        )
    out.outcomes.update(map(_OUTCOME, out.recipients))
    return out


_OUTCOME = itemgetter(broadcast_recipients.RECIPIENT_COLUMNS.index("outcome"))


def _decide_alike(
    job: Job,
    subscriber_id: str,
    recipient: Recipient | None,
    now: float,
    state: State,
    alike: dict[tuple[Any, ...], Decision],
) -> Decision:
    """The decision of an earlier recipient who looked the same to it.

    A broadcast's decision reads of a recipient only its locale, zone, preferences,
    reachable channels and cap count (the event and content are the same for all), so most
    of a large audience falls into a few such shapes: each is decided once a chunk. A
    subscriber ``None`` stands for is unknown and reachable in-app only (made only if its
    shape is new).
    """
    sent = state.sent.get((subscriber_id, job.rule.category), 0)
    if recipient is None:
        key: tuple[Any, ...] = (None, None, "", _IN_APP, sent)
    else:
        prefs = recipient.preferences
        key = (
            recipient.locale,
            recipient.timezone,
            json.dumps(prefs, sort_keys=True) if prefs else "",
            recipient.reachable,
            sent,
        )
    found = alike.get(key)
    if found is None:
        found = alike[key] = _decide(job, recipient or Recipient(id=subscriber_id), now, state)
    return found  # its plan names the first recipient: rows take the subscriber id apart


_IN_APP = frozenset({"inapp"})


def _decide(job: Job, recipient: Recipient, now: float, state: State) -> Decision:
    rule = job.rule
    if job.local_time is None:
        return decide_for(job.policy, rule, job.event, recipient, now, state)
    wait = next_local(job.local_time, recipient.timezone, now) - now
    if wait <= 0:
        return decide_for(job.policy, rule, job.event, recipient, now, state)
    made = decide_for(
        job.policy, rule.model_copy(update={"delay": wait}), job.event, recipient, now, state
    )
    said = f"delayed {timing.duration(wait)} until "
    return Decision(
        made.rule_id,
        made.recipient_id,
        made.outcome,
        made.reason.replace(said, f"waiting for {job.local_time} local time: "),
        made.until,
        made.plan,
    )


def _plan_rows(
    out: ChunkRows,
    job: Job,
    plan: Plan,
    subscriber_id: str,
    notification_id: str,
    where: dict[Any, list[Target]] | None,
    now: float,
) -> None:
    later = plan.due_at > now
    out.notes.append(
        {
            "id": notification_id,
            "event_pk": job.event_pk,
            "rule_id": plan.rule_id,
            "subscriber_id": subscriber_id,
            "category": plan.category,
            "priority": plan.priority,
            "subject": None,
            "locale": plan.locale,
            "content": plan.content,
            "channels": list(plan.channels),
            "fallback": list(plan.fallback),
            "status": "scheduled" if later else "created",
            "dedup_key": f"{job.event_pk}:{plan.rule_id}:{subscriber_id}",
            "created_at": now,
            "due_at": plan.due_at,
            "expires_at": plan.expires_at,
            "cancel_on": None,
            "digest": None,
        }
    )
    targets = where or {"inapp": [("inapp", None)]}
    common: dict[str, Any] = {"lane": plan.priority, "accepted_at": job.accepted_at, "now": now}
    out.deliveries += delivery_rows(
        notification_id, plan.channels, targets, due_at=plan.due_at, **common
    )
    if plan.fallback_at is not None and plan.fallback:
        out.deliveries += delivery_rows(
            notification_id,
            plan.fallback,
            targets,
            due_at=max(plan.fallback_at, now + 1e-3),
            is_fallback=True,
            **common,
        )


def _shape(
    plan: Plan, now: float, parts: dict[int, tuple[dict[str, Any], str, str, dict[str, Any]]]
) -> tuple[Plan, bool, dict[str, Any]]:
    """``(plan, in-app now and nothing else, its inbox item's fields but id and subscriber)``.

    The item's title, body and data are split once per shared content; ``parts`` and the
    tuple hold the content and the plan, so their ids are not reused while the chunk is
    built.
    """
    content = plan.content
    found = parts.get(id(content))
    if found is None:
        found = parts[id(content)] = (
            content,
            str(content.get("title", "")),
            str(content.get("body", "")),
            {k: v for k, v in content.items() if k not in ("title", "body")},
        )
    _, title, body, data = found
    inbox_only = plan.channels == ("inapp",) and not plan.fallback and plan.due_at <= now
    item = {
        "notification_id": None,
        "category": plan.category,
        "title": title,
        "body": body,
        "data": data,
        "created_at": now,
        "seen_at": None,
        "read_at": None,
        "archived_at": None,
    }
    return plan, inbox_only, item
