"""The subscriber-facing inbox (SPEC §6): JWT-authenticated, with a live SSE stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, Literal

import jwt
from fastapi import APIRouter, Depends, Request
from starlette.responses import StreamingResponse

from tidings.api.deps import page, page_limit, service
from tidings.api.problems import ApiError
from tidings.errors import NotFound
from tidings.store import inbox as inbox_rows

router = APIRouter(tags=["inbox"])
KEEPALIVE = 15.0


def mint_token(secret: str, subscriber_id: str, ttl: float, now: float) -> str:
    """An inbox token (HS256 JWT, ``sub`` = subscriber id) valid for ``ttl`` seconds."""
    return jwt.encode(
        {"sub": subscriber_id, "iat": int(now), "exp": int(now + ttl)}, secret, algorithm="HS256"
    )


async def subscriber(request: Request) -> str:
    """The subscriber a valid inbox token names (``401`` otherwise)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        token = request.query_params.get("token", "")  # EventSource cannot set headers
    if not token:
        raise ApiError(401, "missing inbox token", {"WWW-Authenticate": "Bearer"})
    try:
        claims = jwt.decode(
            token.strip(),
            service(request).inbox_secret,
            algorithms=["HS256"],
            options={"require": ["sub", "exp"]},
        )
    except jwt.PyJWTError as exc:
        raise ApiError(401, f"invalid inbox token: {exc}", {"WWW-Authenticate": "Bearer"}) from exc
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise ApiError(401, "the inbox token names no subscriber")
    return sub


@router.get("/v1/inbox", summary="The subscriber's inbox")
async def list_inbox(
    request: Request,
    status: Literal["unread", "all"] = "all",
    cursor: str | None = None,
    limit: int | None = None,
    me: str = Depends(subscriber),
) -> dict[str, Any]:
    """Items newest first (archived ones hidden)."""
    svc = service(request)
    size = page_limit(limit, 20, 100)
    async with svc.store.read() as conn:
        found = await inbox_rows.list_items(conn, me, status, cursor, size + 1)
    shown, next_cursor = page(found, size)
    return {"items": [inbox_rows.item_json(r) for r in shown], "next_cursor": next_cursor}


@router.get("/v1/inbox/count", summary="Unread and unseen counts")
async def count(request: Request, me: str = Depends(subscriber)) -> dict[str, int]:
    """``{unread, unseen}``."""
    svc = service(request)
    async with svc.store.read() as conn:
        return await inbox_rows.counts(conn, me)


async def _mark(request: Request, me: str, item_id: str | None, column: str) -> dict[str, Any]:
    svc = service(request)
    now = svc.clock.now()
    if item_id is not None:
        async with svc.store.read() as conn:
            if not await inbox_rows.exists(conn, me, item_id):
                raise NotFound(f"no inbox item {item_id!r}")
    changed = await svc.store.write(lambda conn: inbox_rows.mark(conn, me, item_id, column, now))
    async with svc.store.read() as conn:
        counts = await inbox_rows.counts(conn, me)
    svc.hub.publish(me, {"type": "count", "count": counts})
    return {"updated": changed, **counts}


@router.post("/v1/inbox/read-all", summary="Mark everything read")
async def read_all(request: Request, me: str = Depends(subscriber)) -> dict[str, Any]:
    """Mark every item read."""
    return await _mark(request, me, None, "read_at")


@router.post("/v1/inbox/seen-all", summary="Mark everything seen")
async def seen_all(request: Request, me: str = Depends(subscriber)) -> dict[str, Any]:
    """Mark every item seen (the badge was opened)."""
    return await _mark(request, me, None, "seen_at")


@router.post("/v1/inbox/{item_id}/read", summary="Mark one item read")
async def read_one(item_id: str, request: Request, me: str = Depends(subscriber)) -> dict[str, Any]:
    """Mark one item read."""
    return await _mark(request, me, item_id, "read_at")


@router.post("/v1/inbox/{item_id}/archive", summary="Archive one item")
async def archive(item_id: str, request: Request, me: str = Depends(subscriber)) -> dict[str, Any]:
    """Archive one item (it leaves the list)."""
    return await _mark(request, me, item_id, "archived_at")


@router.get("/v1/inbox/stream", summary="Live inbox (Server-Sent Events)")
async def stream(request: Request, me: str = Depends(subscriber)) -> StreamingResponse:
    """``event: item`` for each new item and ``event: count`` with fresh counts, live."""
    svc = service(request)
    queue = svc.hub.subscribe(me)

    async def events() -> AsyncIterator[str]:
        try:
            async with svc.store.read() as conn:
                counts = await inbox_rows.counts(conn, me)
            yield _sse("count", counts)
            while True:
                try:
                    message = await asyncio.wait_for(queue.get(), KEEPALIVE)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if message["type"] == "item":
                    yield _sse(
                        "item", inbox_rows.item_json(_Row(message["item"])), message["item"]["id"]
                    )
                    async with svc.store.read() as conn:
                        counts = await inbox_rows.counts(conn, me)
                    yield _sse("count", counts)
                else:
                    yield _sse("count", message["count"])
        finally:
            svc.hub.unsubscribe(me, queue)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            # which of the service's processes holds this stream (``--processes N``)
            "X-Tidings-Process": str(svc.share.index),
        },
    )


class _Row:
    """Attribute access over an inbox row dict (as the processor wrote it)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


def _sse(event: str, data: Any, event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"
