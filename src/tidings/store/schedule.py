"""Deferred work in the store: the strategy's state, cancellation, firing, timed fallback, expiry.

A deferred notification (delay, digest, quiet hours, mute) is a ``notifications`` row with
status ``scheduled`` and ``scheduled`` deliveries; nothing claims a ``scheduled`` delivery,
so the only ways out are :func:`fire_due` (``scheduled`` → ``created``, deliveries →
``pending``) and :func:`cancel` (→ ``cancelled``). Both flip the notification with a
conditional ``UPDATE … WHERE status = 'scheduled'``, so exactly one of them wins, whatever
runs concurrently; and :func:`fire_due` first looks for a ``cancel_on`` event of the subject
*accepted* (processed or not), so a cancel accepted before the scheduled time always wins,
also after a crash.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.ids import new_id
from tidings.store.deliveries import rows_of
from tidings.store.tables import decisions, deliveries, events, inbox_items, notifications
from tidings.strategy import lifecycle
from tidings.strategy.model import Cancellation, OpenDigest, PastEvent, Scheduled, State

READ_BEFORE_FALLBACK = "read in the in-app inbox before the fallback time"
EXPIRED = "expired before it could be delivered"


def _for_update(conn: AsyncConnection, query: Any, *, skip_locked: bool = False) -> Any:
    # PostgreSQL runs several writer transactions (and workers) at once: lock what we change
    if conn.dialect.name != "postgresql":
        return query
    return query.with_for_update(skip_locked=skip_locked)


async def load_state(
    conn: AsyncConnection,
    *,
    subjects: Iterable[str],
    exclude_pks: Sequence[str],
    subscribers: Iterable[str],
    caps: dict[str, float],
    digest_rules: Iterable[str],
    cancel_types: Iterable[str] = (),
    now: float,
) -> State:
    """The strategy's state for a batch: subject history, cap counts, open digests, deferrals.

    ``caps`` maps each capped category to its window in seconds; ``cancel_types`` are the
    rules' ``cancel_on`` entries (the history holds those and the life cycle's types only, so
    a subject with thousands of custom events costs nothing).
    """
    state = State()
    wanted = sorted(set(subjects))
    people = sorted(set(subscribers))
    if wanted:
        types = lifecycle.TRACKED | set(cancel_types)
        exact = sorted(t for t in types if "*" not in t)
        globs = [g.replace("*", "%") for g in sorted(t for t in types if "*" in t)]
        matching = " OR ".join(["type IN ({})"] * bool(exact) + ["type LIKE {}"] * len(globs))
        excluded = list(exclude_pks)
        history = await rows_of(
            conn,
            _HISTORY.format(" AND id NOT IN ({})" * bool(excluded), matching or "0 = 1"),
            wanted,
            *([excluded] if excluded else []),
            *([exact] if exact else []),
            *globs,
        )
        for _pk, subject, event_type, event_id, time, envelope in history:
            state.history.setdefault(subject, []).append(
                PastEvent(event_type, event_id, time, _refund_id(envelope))
            )
        scheduled = await rows_of(
            conn, _SCHEDULED + (" FOR UPDATE" if conn.dialect.name == "postgresql" else ""), wanted
        )
        for notification_id, event_pk, rule_id, subscriber_id, subject, cancel_on in scheduled:
            cancel_on = _json(cancel_on)
            if cancel_on:
                state.scheduled.setdefault(subject, []).append(
                    Scheduled(
                        notification_id,
                        event_pk,
                        rule_id,
                        subscriber_id,
                        subject,
                        tuple(cancel_on),
                    )
                )
    if people:
        for category, per in caps.items():
            counted = await conn.execute(
                select(notifications.c.subscriber_id, func.count())
                .where(
                    notifications.c.subscriber_id.in_(people),
                    notifications.c.category == category,
                    notifications.c.created_at > now - per,
                    notifications.c.status.not_in(["cancelled", "suppressed"]),
                )
                .group_by(notifications.c.subscriber_id)
            )
            for subscriber_id, count in counted:
                state.sent[(subscriber_id, category)] = int(count)
        rules = sorted(set(digest_rules))
        if rules:
            open_digests = await conn.execute(
                _for_update(
                    conn,
                    select(
                        notifications.c.id,
                        notifications.c.rule_id,
                        notifications.c.subscriber_id,
                        notifications.c.digest,
                        notifications.c.due_at,
                    ).where(
                        notifications.c.rule_id.in_(rules),
                        notifications.c.subscriber_id.in_(people),
                        notifications.c.status == "scheduled",
                        notifications.c.due_at > now,
                    ),
                )
            )
            for row in open_digests:
                digest = row.digest or {}
                state.digests[(row.rule_id, row.subscriber_id)] = OpenDigest(
                    row.id, int(digest.get("count", 1)), list(digest.get("events", [])), row.due_at
                )
    return state


_HISTORY = (
    "SELECT id, subject, type, event_id, time, envelope FROM events"
    " WHERE subject IN ({{}}) AND processed_at IS NOT NULL{} AND ({})"
    " ORDER BY processed_at, id"
)
"""A batch's subjects' processed events of the given types, oldest first (the batch's own
events excluded)."""
_SCHEDULED = (
    "SELECT id, event_pk, rule_id, subscriber_id, subject, cancel_on FROM notifications"
    " WHERE subject IN ({}) AND status = 'scheduled'"
)
"""The deferred notifications of a batch's subjects (a cancel may take them)."""


def _json(value: Any) -> Any:
    """A JSON column's value as read by a plain statement (text on SQLite)."""
    return json.loads(value) if isinstance(value, str) else value


def _refund_id(envelope: Any) -> str | None:
    """``data.refund_id`` of a stored envelope (parsed only if it can be there)."""
    if isinstance(envelope, str):
        if '"refund_id"' not in envelope:
            return None
        envelope = json.loads(envelope)
    refund_id = ((envelope or {}).get("data") or {}).get("refund_id")
    return None if refund_id is None else str(refund_id)


async def cancel(
    conn: AsyncConnection, cancellations: Sequence[Cancellation], now: float
) -> list[str]:
    """Cancel deferred notifications not fired yet, and update their decisions; which were."""
    if not cancellations:
        return []
    by_id = {c.notification_id: c for c in cancellations}
    won = list(
        (
            await conn.execute(
                update(notifications)
                .where(notifications.c.id.in_(list(by_id)), notifications.c.status == "scheduled")
                .values(status="cancelled")
                .returning(notifications.c.id)
            )
        ).scalars()
    )
    for notification_id in won:
        item = by_id[notification_id]
        await conn.execute(
            update(deliveries)
            .where(
                deliveries.c.notification_id == notification_id, deliveries.c.status == "scheduled"
            )
            .values(status="cancelled", finished_at=now, last_error=item.reason)
        )
        await conn.execute(
            update(decisions)
            .where(
                decisions.c.event_pk == item.event_pk,
                decisions.c.rule_id == item.rule_id,
                decisions.c.recipient_id == item.subscriber_id,
            )
            .values(outcome="cancelled", reason=item.reason, until=None)
        )
    return won


async def fold_digests(conn: AsyncConnection, folds: dict[str, dict[str, Any]]) -> None:
    """Write each digest's new content, count and events (``due_at`` now when it is full)."""
    for notification_id, values in folds.items():
        await conn.execute(
            update(notifications)
            .where(notifications.c.id == notification_id, notifications.c.status == "scheduled")
            .values(**values)
        )


def _types(patterns: Iterable[str]) -> Any:
    """``events.type`` matches one of ``patterns`` (exact types, or globs such as ``refund.*``)."""
    exact = sorted(p for p in patterns if "*" not in p)
    globs = sorted(p for p in patterns if "*" in p)
    return or_(events.c.type.in_(exact), *(events.c.type.like(g.replace("*", "%")) for g in globs))


@dataclass(slots=True)
class Fired:
    """What one pass of :func:`fire_due` did."""

    tickets: list[tuple[str, str, str | None]] = field(default_factory=list)
    """``(delivery id, lane, subject)`` of deliveries now pending."""
    inbox: list[dict[str, Any]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    fired: list[str] = field(default_factory=list)


async def _cancel_events(conn: AsyncConnection, notes: Sequence[Any]) -> dict[str, tuple[str, str]]:
    """Per notification id, the accepted ``cancel_on`` event of its subject (type, id)."""
    with_cancel = [n for n in notes if n.cancel_on and n.subject]
    if not with_cancel:
        return {}
    patterns = {p for n in with_cancel for p in n.cancel_on}
    rows = await conn.execute(
        select(events.c.id, events.c.subject, events.c.type, events.c.event_id)
        .where(events.c.subject.in_(sorted({n.subject for n in with_cancel})), _types(patterns))
        .order_by(events.c.received_at, events.c.id)
    )
    by_subject: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        by_subject[row.subject].append(row)
    found: dict[str, tuple[str, str]] = {}
    for note in with_cancel:
        for row in by_subject.get(note.subject, []):
            if row.id != note.event_pk and lifecycle.cancels(note.cancel_on, row.type):
                found[note.id] = (row.type, row.event_id)
                break
    return found


async def fire_due(conn: AsyncConnection, now: float, limit: int = 200) -> Fired:
    """Fire deferred notifications that fell due (or cancel / expire them)."""
    fired = Fired()
    notes = (
        await conn.execute(
            _for_update(
                conn,
                select(notifications)
                .where(notifications.c.status == "scheduled", notifications.c.due_at <= now)
                .order_by(notifications.c.due_at)
                .limit(limit),
                skip_locked=True,  # another worker is firing those
            )
        )
    ).all()
    if not notes:
        return fired
    cancelled_by = await _cancel_events(conn, notes)
    cancels = [
        Cancellation(
            n.id,
            n.event_pk,
            n.rule_id,
            n.subscriber_id,
            f"cancelled by {cancelled_by[n.id][0]} {cancelled_by[n.id][1]}",
        )
        for n in notes
        if n.id in cancelled_by
    ]
    fired.cancelled = await cancel(conn, cancels, now)
    expiring = [
        n.id
        for n in notes
        if n.id not in cancelled_by and n.expires_at is not None and n.expires_at < now
    ]
    if expiring:
        fired.expired = list(
            (
                await conn.execute(
                    update(notifications)
                    .where(notifications.c.id.in_(expiring), notifications.c.status == "scheduled")
                    .values(status="expired")
                    .returning(notifications.c.id)
                )
            ).scalars()
        )
        await conn.execute(
            update(deliveries)
            .where(
                deliveries.c.notification_id.in_(fired.expired), deliveries.c.status == "scheduled"
            )
            .values(status="expired", finished_at=now, last_error=EXPIRED)
        )
    going = [n for n in notes if n.id not in cancelled_by and n.id not in expiring]
    if not going:
        return fired
    won = set(
        (
            await conn.execute(
                update(notifications)
                .where(
                    notifications.c.id.in_([n.id for n in going]),
                    notifications.c.status == "scheduled",
                )
                .values(status="created")
                .returning(notifications.c.id)
            )
        ).scalars()
    )
    going = [n for n in going if n.id in won]
    fired.fired = [n.id for n in going]
    rows = (
        await conn.execute(
            select(
                deliveries.c.id,
                deliveries.c.notification_id,
                deliveries.c.channel,
                deliveries.c.lane,
            ).where(
                deliveries.c.notification_id.in_(fired.fired),
                deliveries.c.status == "scheduled",
                deliveries.c.is_fallback.is_(False),
            )
        )
    ).all()
    inapp = [r.id for r in rows if r.channel == "inapp"]
    external = [r.id for r in rows if r.channel != "inapp"]
    if inapp:
        await conn.execute(
            update(deliveries)
            .where(deliveries.c.id.in_(inapp))
            .values(
                status="delivered",
                attempts=1,
                due_at=now,
                enqueued_at=now,
                started_at=now,
                finished_at=now,
                tc=0.0,
                td=0.0,
            )
        )
    if external:
        await conn.execute(
            update(deliveries)
            .where(deliveries.c.id.in_(external))
            .values(status="pending", due_at=now, enqueued_at=now)
        )
    subjects = {n.id: n.subject for n in going}
    fired.tickets = [
        (r.id, r.lane, subjects.get(r.notification_id)) for r in rows if r.channel != "inapp"
    ]
    with_inbox = {r.notification_id for r in rows if r.channel == "inapp"}
    fired.inbox = [
        inbox_row(n.id, n.subscriber_id, n.category, dict(n.content), now)
        for n in going
        if n.id in with_inbox
    ]
    if fired.inbox:
        await conn.execute(insert(inbox_items), fired.inbox)
    return fired


async def fallback_due(
    conn: AsyncConnection, now: float, limit: int = 500, skipped: list[str] | None = None
) -> list[tuple[str, str, str | None]]:
    """Timed fallbacks now due: ``pending`` if the in-app item is unread, else ``suppressed``
    (their ids added to ``skipped`` when given)."""
    rows = (
        await conn.execute(
            select(
                deliveries.c.id,
                deliveries.c.notification_id,
                deliveries.c.lane,
                notifications.c.subject,
                notifications.c.status.label("note_status"),
            )
            .join(notifications, notifications.c.id == deliveries.c.notification_id)
            .where(
                deliveries.c.status == "scheduled",
                deliveries.c.is_fallback.is_(True),
                deliveries.c.due_at <= now,
                notifications.c.status != "scheduled",
            )
            .limit(limit)
        )
    ).all()
    if not rows:
        return []
    read = set(
        (
            await conn.execute(
                select(inbox_items.c.notification_id).where(
                    inbox_items.c.notification_id.in_([r.notification_id for r in rows]),
                    inbox_items.c.read_at.is_not(None),
                )
            )
        ).scalars()
    )
    skip = [r.id for r in rows if r.notification_id in read]
    if skipped is not None:
        skipped += skip
    send = [r for r in rows if r.notification_id not in read]
    if skip:
        await conn.execute(
            update(deliveries)
            .where(deliveries.c.id.in_(skip), deliveries.c.status == "scheduled")
            .values(status="suppressed", finished_at=now, last_error=READ_BEFORE_FALLBACK)
        )
    if send:
        await conn.execute(
            update(deliveries)
            .where(deliveries.c.id.in_([r.id for r in send]), deliveries.c.status == "scheduled")
            .values(status="pending", due_at=now, enqueued_at=now)
        )
    return [(r.id, r.lane, r.subject) for r in send]


async def expire_due(conn: AsyncConnection, now: float, limit: int = 500) -> list[str]:
    """Undelivered deliveries of notifications past ``expires_at`` → ``expired``; which.

    Only those waiting for a later time (a retry's backoff, a fallback timer): a due one is
    expired by the dispatcher when it is attempted, so the sweep stays an index range scan.
    """
    rows = (
        await conn.execute(
            select(deliveries.c.id, deliveries.c.notification_id)
            .join(notifications, notifications.c.id == deliveries.c.notification_id)
            .where(
                deliveries.c.status.in_(["pending", "scheduled"]),
                deliveries.c.due_at > now,
                notifications.c.expires_at.is_not(None),
                notifications.c.expires_at < now,
                notifications.c.status != "scheduled",
            )
            .limit(limit)
        )
    ).all()
    if not rows:
        return []
    ids = [r.id for r in rows]
    await conn.execute(
        update(deliveries)
        .where(deliveries.c.id.in_(ids), deliveries.c.status.in_(["pending", "scheduled"]))
        .values(status="expired", finished_at=now, last_error=EXPIRED, enqueued_at=None)
    )
    notes = sorted({r.notification_id for r in rows})
    delivered = select(deliveries.c.notification_id).where(
        deliveries.c.notification_id.in_(notes),
        deliveries.c.status.in_(["sent", "delivered", "pending", "sending", "scheduled"]),
    )
    await conn.execute(
        update(notifications)
        .where(
            notifications.c.id.in_(notes),
            notifications.c.id.not_in(delivered),
            notifications.c.status == "created",
        )
        .values(status="expired")
    )
    return ids


def inbox_row(
    notification_id: str, subscriber_id: str, category: str, content: dict[str, Any], now: float
) -> dict[str, Any]:
    """An inbox item for a notification's in-app delivery."""
    return {
        "id": new_id(),
        "subscriber_id": subscriber_id,
        "notification_id": notification_id,
        "category": category,
        "title": str(content.get("title", "")),
        "body": str(content.get("body", "")),
        "data": {k: v for k, v in content.items() if k not in ("title", "body")},
        "created_at": now,
        "seen_at": None,
        "read_at": None,
        "archived_at": None,
    }
