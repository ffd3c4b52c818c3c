"""``GET /v1/subscribers/{id}/export``: everything held about a subscriber (SPEC §11).

The erasure half (``DELETE /v1/subscribers/{id}``) is :func:`tidings.store.privacy.erase`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from tidings.api.deps import Admin
from tidings.api.views import notifications_json
from tidings.clock import iso
from tidings.errors import NotFound
from tidings.store import privacy

router = APIRouter(tags=["subscribers"])


@router.get("/v1/subscribers/{subscriber_id}/export", summary="Export a subscriber's data")
async def export_subscriber(subscriber_id: str, svc: Admin) -> dict[str, Any]:
    """Profile, preferences, devices (tokens), webhooks, inbox, decisions and notifications
    with their deliveries and attempts — PII decrypted (a data subject's access request)."""
    now = svc.clock.now()
    async with svc.store.read() as conn:
        found = await privacy.export(conn, svc.store.cipher, subscriber_id)
        notes = await privacy.notifications_of(conn, subscriber_id)
        if found["subscriber"] is None and not (notes or found["decisions"] or found["inbox"]):
            raise NotFound(f"nothing is held about {subscriber_id!r}")
        shown = await notifications_json(conn, notes, now, with_attempts=True)
    return {
        "subscriber_id": subscriber_id,
        "exported_at": iso(now),
        **found,
        "notifications": shown,
    }
