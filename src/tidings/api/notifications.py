"""``GET /v1/notifications`` and ``GET /v1/notifications/{id}``: per-channel delivery status."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from tidings.api.deps import Listed, Reader
from tidings.api.views import notifications_json
from tidings.errors import NotFound
from tidings.store import deliveries as delivery_rows
from tidings.store import events as event_rows

router = APIRouter(tags=["notifications"])


@router.get("/v1/notifications", summary="List notifications")
async def list_notifications(
    listed: Listed,
    subscriber_id: str | None = None,
    event_id: str | None = None,
    source: str | None = None,
    status: str | None = None,
) -> dict[str, Any]:
    """Notifications, filtered by subscriber, event (CloudEvents id) or status."""
    svc = listed.svc
    async with svc.store.read() as conn:
        event_pk = None
        if event_id:
            found = await event_rows.find(conn, event_id, source)
            if not found:
                return {"items": [], "next_cursor": None}
            event_pk = found[0].id
        rows = await delivery_rows.list_notifications(
            conn,
            subscriber_id=subscriber_id,
            event_pk=event_pk,
            status=status,
            after=listed.cursor,
            limit=listed.fetch,
        )
        shown, next_cursor = listed.page(rows)
        items = await notifications_json(conn, shown, svc.clock.now())
    return {"items": items, "next_cursor": next_cursor}


@router.get("/v1/notifications/{notification_id}", summary="One notification")
async def get_notification(notification_id: str, svc: Reader) -> dict[str, Any]:
    """A notification with every delivery, attempt and the Tp/Tc/Td latency split."""
    async with svc.store.read() as conn:
        rows = await delivery_rows.notifications_by_id(conn, [notification_id])
        if notification_id not in rows:
            raise NotFound(f"no notification {notification_id!r}")
        (item,) = await notifications_json(
            conn, [rows[notification_id]], svc.clock.now(), with_attempts=True
        )
    return item
