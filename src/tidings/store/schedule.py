"""Deferred work in the store: cancellation, firing, timed fallback, expiry (and the
strategy's state, :func:`load_state`, from :mod:`tidings.store.strategy_state`).

A deferred notification (delay, digest, quiet hours, mute) is a ``notifications`` row with
status ``scheduled`` and ``scheduled`` deliveries; nothing claims a ``scheduled`` delivery,
so the only ways out are :func:`fire_due` (``scheduled`` → ``created``, deliveries →
``pending``) and :func:`cancel` (→ ``cancelled``). Both flip the notification with a
conditional ``UPDATE … WHERE status = 'scheduled'``, so exactly one of them wins, whatever
runs concurrently; and :func:`fire_due` first looks for a ``cancel_on`` event of the subject
*accepted* (processed or not), so a cancel accepted before the scheduled time always wins,
also after a crash. A broadcast's deferred recipients wait while it is paused, are
cancelled with it, and their decisions move on as they fire
(:mod:`tidings.store.broadcast_recipients`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, not_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.ids import new_id
from tidings.store import broadcast_recipients
from tidings.store.strategy_state import load_state as load_state
from tidings.store.tables import decisions, deliveries, events, inbox_items, notifications
from tidings.strategy import lifecycle
from tidings.strategy.model import Cancellation
from tidings.strategy.model import State as State

READ_BEFORE_FALLBACK = "read in the in-app inbox before the fallback time"
EXPIRED = "expired before it could be delivered"


def _for_update(conn: AsyncConnection, query: Any, *, skip_locked: bool = False) -> Any:
    # PostgreSQL runs several writer transactions (and workers) at once: lock what we change
    if conn.dialect.name != "postgresql":
        return query
    return query.with_for_update(skip_locked=skip_locked)


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
    settled: Counter[str] = field(default_factory=Counter)
    """Broadcast recipients whose deferred decision moved on, by their new outcome."""


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
    """Fire deferred notifications that fell due (or cancel / expire them).

    Those of a paused broadcast wait for its resume; those of a cancelled one are cancelled.
    A broadcast's recipients' decisions and counts move on with their notifications.
    """
    fired = Fired()
    notes = await _due(conn, now, limit)
    if not notes:
        return fired
    owners = await broadcast_recipients.of_notes(conn, notes)
    reasons = await _cancel_reasons(conn, notes, owners)
    fired.cancelled = await cancel(
        conn,
        [
            Cancellation(n.id, n.event_pk, n.rule_id, n.subscriber_id, reasons[n.id])
            for n in notes
            if n.id in reasons
        ],
        now,
    )
    for reason in set(reasons.values()):
        won = [n for n in notes if reasons.get(n.id) == reason and n.id in fired.cancelled]
        fired.settled += await broadcast_recipients.settle_notes(
            conn, won, owners, "cancelled", reason
        )
    expiring = [
        n for n in notes if n.id not in reasons and n.expires_at is not None and n.expires_at < now
    ]
    stale = {n.id for n in expiring}
    fired.expired = await _expire(conn, sorted(stale), now)
    expired = set(fired.expired)
    fired.settled += await broadcast_recipients.settle_notes(
        conn, [n for n in expiring if n.id in expired], owners, "expired", EXPIRED
    )
    going = [n for n in notes if n.id not in reasons and n.id not in stale]
    if going:
        await _fire(conn, going, now, fired)
        gone = set(fired.fired)
        fired.settled += await broadcast_recipients.settle_notes(
            conn,
            [n for n in going if n.id in gone],
            owners,
            "sent",
            broadcast_recipients.SENT_LATER,
        )
    return fired


async def _due(conn: AsyncConnection, now: float, limit: int) -> list[Any]:
    """Deferred notifications due now, oldest first, none of a paused broadcast (locked on
    PostgreSQL, skipping those another worker is firing)."""
    held = await broadcast_recipients.held(conn)
    query = (
        select(notifications)
        .where(notifications.c.status == "scheduled", notifications.c.due_at <= now, not_(held))
        .order_by(notifications.c.due_at)
        .limit(limit)
    )
    return list((await conn.execute(_for_update(conn, query, skip_locked=True))).all())


async def _cancel_reasons(
    conn: AsyncConnection, notes: Sequence[Any], owners: dict[str, tuple[str, str]]
) -> dict[str, str]:
    """Per notification to cancel instead of firing, why: a cancelled broadcast, or a
    ``cancel_on`` event of its subject."""
    reasons = {
        n.id: f"broadcast {owners[n.id][0]} cancelled"
        for n in notes
        if n.id in owners and owners[n.id][1] == "cancelled"
    }
    cancelled_by = await _cancel_events(conn, [n for n in notes if n.id not in reasons])
    for notification_id, (event_type, event_id) in cancelled_by.items():
        reasons[notification_id] = f"cancelled by {event_type} {event_id}"
    return reasons


async def _expire(conn: AsyncConnection, ids: list[str], now: float) -> list[str]:
    """Deferred notifications past ``expires_at`` → ``expired`` with their deliveries; which."""
    if not ids:
        return []
    expired = list(
        (
            await conn.execute(
                update(notifications)
                .where(notifications.c.id.in_(ids), notifications.c.status == "scheduled")
                .values(status="expired")
                .returning(notifications.c.id)
            )
        ).scalars()
    )
    await conn.execute(
        update(deliveries)
        .where(deliveries.c.notification_id.in_(expired), deliveries.c.status == "scheduled")
        .values(status="expired", finished_at=now, last_error=EXPIRED)
    )
    return expired


async def _fire(conn: AsyncConnection, going: list[Any], now: float, fired: Fired) -> None:
    """``scheduled`` → ``created`` for those still scheduled; their deliveries go (in-app ones
    delivered at once with an inbox item, the others ``pending`` as tickets)."""
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
    await _release(conn, rows, now)
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


async def _release(conn: AsyncConnection, rows: Sequence[Any], now: float) -> None:
    """Fired deliveries: in-app ones ``delivered`` now, the others ``pending`` now."""
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
