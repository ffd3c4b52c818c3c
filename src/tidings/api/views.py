"""JSON views of notifications and deliveries, shared by the API and the dashboard."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.clock import iso
from tidings.store import deliveries as delivery_rows

_SUCCESS = {"sent", "delivered"}


def notification_status(own: str, statuses: Sequence[str], *, not_yet_due: bool = False) -> str:
    """A notification's status, from its own (set by the strategy) and its deliveries'."""
    if own in ("cancelled", "expired", "suppressed"):
        return own
    if not_yet_due and all(s == "pending" for s in statuses):
        return "scheduled"
    if not statuses:
        return "pending"
    if any(s in ("pending", "sending") for s in statuses):
        return "sending" if any(s == "sending" for s in statuses) else "pending"
    if all(s == "delivered" for s in statuses):
        return "delivered"
    if any(s in _SUCCESS for s in statuses):
        return "sent"
    for final in ("dead", "failed", "expired", "cancelled", "suppressed"):
        if any(s == final for s in statuses):
            return final
    return statuses[0]


def delivery_json(row: Any, attempts: Sequence[Any] | None = None) -> dict[str, Any]:
    """One delivery with its latency split (seconds)."""
    total = None
    if row.finished_at is not None:
        total = row.finished_at - row.accepted_at
    body: dict[str, Any] = {
        "id": row.id,
        "channel": row.channel,
        "destination": row.destination_kind,
        "device_id": row.device_id,
        "provider": row.provider,
        "status": row.status,
        "fallback": row.is_fallback,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "due_at": iso(row.due_at),
        "finished_at": iso(row.finished_at),
        "latency": {"tp": row.tp, "tc": row.tc, "td": row.td, "total": total},
    }
    if attempts is not None:
        body["attempt_log"] = [
            {
                "number": a.number,
                "provider": a.provider,
                "started_at": iso(a.started_at),
                "finished_at": iso(a.finished_at),
                "outcome": a.outcome,
                "error": a.error,
            }
            for a in attempts
        ]
    return body


async def notifications_json(
    conn: AsyncConnection, rows: Sequence[Any], now: float, *, with_attempts: bool = False
) -> list[dict[str, Any]]:
    """Notifications with their deliveries (and attempts when asked)."""
    found = await delivery_rows.deliveries_of(conn, [r.id for r in rows])
    by_note: dict[str, list[Any]] = defaultdict(list)
    for d in found:
        by_note[d.notification_id].append(d)
    attempts_by: dict[str, list[Any]] = defaultdict(list)
    if with_attempts:
        for a in await delivery_rows.attempts_of(conn, [d.id for d in found]):
            attempts_by[a.delivery_id].append(a)
    result = []
    for row in rows:
        ds = by_note.get(row.id, [])
        result.append(
            {
                "id": row.id,
                "event_pk": row.event_pk,
                "rule": row.rule_id,
                "subscriber_id": row.subscriber_id,
                "category": row.category,
                "priority": row.priority,
                "subject": row.subject,
                "locale": row.locale,
                "status": notification_status(
                    row.status, [d.status for d in ds], not_yet_due=row.due_at > now
                ),
                "title": row.content.get("title"),
                "body": row.content.get("body"),
                "created_at": iso(row.created_at),
                "due_at": iso(row.due_at),
                "expires_at": iso(row.expires_at),
                "deliveries": [
                    delivery_json(d, attempts_by[d.id] if with_attempts else None) for d in ds
                ],
            }
        )
    return result


def mask_email(value: str | None) -> str | None:
    """``li@shop.test`` → ``l***@shop.test``: recognisable, not harvestable."""
    if not value:
        return value
    local, _, domain = value.partition("@")
    return f"{local[:1]}***@{domain}" if domain else local[:1] + "***"


def mask_phone(value: str | None) -> str | None:
    """``+8613800138000`` → ``+86******8000``."""
    if not value:
        return value
    if len(value) <= 7:
        return value[:1] + "******"
    return value[:3] + "******" + value[-4:]


def mask_name(value: str | None) -> str | None:
    """``Li Wei`` → ``L***``."""
    if not value:
        return value
    return value[:1] + "***"


def profile_json(profile: dict[str, Any], reveal: bool) -> dict[str, Any]:
    """A subscriber profile as a key sees it: PII masked unless ``reveal`` (scope ``pii``)."""
    if reveal:
        return profile
    masked = {
        **profile,
        "name": mask_name(profile.get("name")),
        "email": mask_email(profile.get("email")),
        "phone": mask_phone(profile.get("phone")),
    }
    if profile.get("wechat_openid"):
        masked["wechat_openid"] = str(profile["wechat_openid"])[:4] + "***"
    return masked
