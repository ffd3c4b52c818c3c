"""The rows a decided plan turns into: its notification and one delivery per destination.

Pure builders (no I/O): the processor writes what they return for a batch of decisions, the
dispatcher for a fallback, the broadcaster for each chunk of recipients.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tidings.ids import new_id
from tidings.store.subscribers import Target
from tidings.strategy.model import Plan


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


def notification_row(
    notification_id: str, event_pk: str, plan: Plan, key: str, now: float
) -> dict[str, Any]:
    """The ``notifications`` row of ``plan``, unique by ``key`` (:mod:`tidings.strategy.dedup`)."""
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
