"""The audit trail of writes through the API (and the CLI): ``GET /v1/audit`` (SPEC §11).

:class:`AuditTrail` records every successful write request (any method but GET/HEAD/OPTIONS
under ``/v1/``) before its answer leaves: the key's id, the route (``DELETE
/v1/subscribers/{subscriber_id}``) and the resource (``/v1/subscribers/buyer-1``). Two kinds
of writes are left out: ``POST /v1/events`` — an event is its own record (``GET /v1/events``
lists them, with when they were received), and an audit row per event would double the
intake's writes — and the subscriber-facing inbox routes, which carry no API key.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tidings.api.deps import Listing, listing
from tidings.api.events import since_time
from tidings.clock import iso
from tidings.crypto import hash_api_key
from tidings.store import audit as audit_rows
from tidings.store.keys import key_id

log = logging.getLogger(__name__)
router = APIRouter(tags=["audit"])
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


def audited(method: str, path: str) -> bool:
    """Whether a request is a write the trail records."""
    if method in _READS or not path.startswith("/v1/"):
        return False
    return path != "/v1/events" and not path.startswith("/v1/inbox")


def actor(headers: list[tuple[bytes, bytes]]) -> str:
    """The id of the API key a request carries (``-`` for none)."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, key = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and key.strip():
                return key_id(hash_api_key(key.strip()))
    return "-"


class AuditTrail:
    """ASGI middleware: a successful write is in the trail before its answer is sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not audited(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return

        async def answer(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                await self._record(scope)
            await send(message)

        await self.app(scope, receive, answer)

    @staticmethod
    async def _record(scope: Scope) -> None:
        svc = scope["app"].state.service
        route = scope.get("route")
        template = getattr(route, "path", scope["path"])
        action = f"{scope['method']} {template}"
        who = actor(scope["headers"])
        now = svc.clock.now()
        try:
            await svc.store.write(
                lambda conn: audit_rows.record(conn, who, action, scope["path"], now)
            )
        except Exception:  # noqa: BLE001 - the write itself is done; say so loudly
            log.error("audit: recording %s failed", action, exc_info=True)


@router.get("/v1/audit", summary="The audit trail")
async def list_audit(
    listed: Annotated[Listing, Depends(listing("admin"))],
    key_id: str | None = None,
    resource: str | None = None,
    since: str | None = None,
) -> dict[str, Any]:
    """Who (key id, or ``cli``) did what (method and route) to which resource, when."""
    found = await listed.rows(
        audit_rows.listed, key_id=key_id, resource=resource, since=since_time(since)
    )
    return listed.answer(found, _entry_json)


def _entry_json(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "key_id": row.key_id,
        "action": row.action,
        "resource": row.resource,
        "at": iso(row.at),
    }
