"""The subscriber-facing inbox (SPEC §6): JWT-authenticated, with a live SSE stream."""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import jwt
from fastapi import APIRouter, Depends, Request
from starlette.responses import StreamingResponse

from tidings.api.deps import page, page_limit, read_json, require, service
from tidings.api.openapi import PREFERENCES_BODY
from tidings.api.problems import ApiError
from tidings.clock import iso
from tidings.config import Settings
from tidings.durations import parse_duration
from tidings.errors import Conflict, InvalidInput, NotFound
from tidings.store import inbox as inbox_rows
from tidings.store import subscribers as subscriber_rows
from tidings.strategy import preferences

router = APIRouter(tags=["inbox"])
KEEPALIVE = 15.0
DEFAULT_TTL = 3600.0
"""Seconds an inbox token minted without a ``ttl`` lives (capped by ``inbox.max_ttl``)."""
LEEWAY = 5.0
"""Seconds a token's ``iat`` may lie ahead of this service's clock (the shop's signer)."""
_ID = re.compile(r"^[A-Za-z0-9_.:@-]{1,256}$")
_TOKEN_BODY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "ttl": {
                            "description": "seconds, or a duration such as 15m or 1h",
                            "oneOf": [
                                {"type": "number", "exclusiveMinimum": 0},
                                {"type": "string", "pattern": r"^\d+(\.\d+)?(ms|s|m|h|d)$"},
                            ],
                        }
                    },
                }
            }
        },
    }
}


def mint_token(secret: str, subscriber_id: str, ttl: float, now: float) -> str:
    """An inbox token (HS256 JWT, ``sub`` = subscriber id) valid for ``ttl`` seconds."""
    return jwt.encode(
        {"sub": subscriber_id, "iat": int(now), "exp": int(now + ttl)}, secret, algorithm="HS256"
    )


def verify_token(secret: str, token: str, max_ttl: float, now: float) -> tuple[str, float]:
    """The subscriber id and expiry (epoch seconds) of a valid inbox token.

    Raises ``jwt.PyJWTError`` for a bad signature, a missing ``sub``/``exp``, an expired
    token, or one that lives longer than ``max_ttl`` (``exp - iat``, or from ``now`` when the
    token has no ``iat``).
    """
    claims = jwt.decode(
        token,
        secret,
        algorithms=["HS256"],
        leeway=LEEWAY,
        options={"require": ["sub", "exp"]},
    )
    expires = float(claims["exp"])
    if expires <= now:  # the leeway is for a signer whose clock runs ahead, not for expiry
        raise jwt.ExpiredSignatureError("Signature has expired")
    issued = claims.get("iat")
    start = float(issued) if isinstance(issued, int | float) else now
    if expires - min(start, now) > max_ttl + LEEWAY:
        raise jwt.InvalidTokenError("the token lives longer than inbox.max_ttl allows")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise jwt.InvalidTokenError("the inbox token names no subscriber")
    return sub, expires


async def subscriber(request: Request) -> str:
    """The subscriber a valid inbox token names (``401`` otherwise).

    The token's expiry is kept in ``request.state.inbox_expires`` (a stream ends there).
    """
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        token = request.query_params.get("token", "")  # EventSource cannot set headers
    if not token:
        raise ApiError(401, "missing inbox token", {"WWW-Authenticate": "Bearer"})
    svc = service(request)
    try:
        sub, expires = verify_token(
            svc.inbox_secret, token.strip(), svc.settings.inbox.max_ttl, time.time()
        )
    except jwt.PyJWTError as exc:
        raise ApiError(401, f"invalid inbox token: {exc}", {"WWW-Authenticate": "Bearer"}) from exc
    request.state.inbox_expires = expires
    return sub


@router.post(
    "/v1/subscribers/{subscriber_id}/inbox-token",
    summary="Mint an inbox token",
    tags=["subscribers"],
    openapi_extra=_TOKEN_BODY,
)
async def inbox_token(
    subscriber_id: str, request: Request, _: str = Depends(require("tokens"))
) -> dict[str, Any]:
    """``{ttl?}`` (seconds or ``15m``, ``1h`` …; default 1h, capped by ``inbox.max_ttl``) →
    ``{token, expires_at}``: the HS256 JWT the subscriber's widget or app sends."""
    if not _ID.match(subscriber_id):
        raise InvalidInput("a subscriber id is 1-256 of A-Z a-z 0-9 _ . : @ -", "subscriber_id")
    svc = service(request)
    empty = request.headers.get("content-length", "0") == "0"
    body: Any = {} if empty and "transfer-encoding" not in request.headers else None
    if body is None:
        body = await read_json(request)
    if not isinstance(body, dict) or set(body) - {"ttl"}:
        raise InvalidInput("the body is {ttl?}", "/")
    ttl = DEFAULT_TTL
    if body.get("ttl") is not None:
        try:
            ttl = parse_duration(body["ttl"])
        except ValueError as exc:
            raise InvalidInput(str(exc), "/ttl") from exc
        if not math.isfinite(ttl) or ttl <= 0:
            raise InvalidInput("`ttl` must be a positive number of seconds", "/ttl")
    now = time.time()
    ttl = min(ttl, svc.settings.inbox.max_ttl)
    token = mint_token(svc.inbox_secret, subscriber_id, ttl, now)
    return {"token": token, "expires_at": iso(float(int(now + ttl)))}


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


@router.get("/v1/inbox/preferences", summary="The subscriber's own preferences")
async def my_preferences(request: Request, me: str = Depends(subscriber)) -> dict[str, Any]:
    """The preferences document of SPEC §3 (empty when none were set)."""
    svc = service(request)
    async with svc.store.read() as conn:
        found = await subscriber_rows.get_preferences(conn, me)
    return found or {}


@router.put(
    "/v1/inbox/preferences",
    summary="Replace the subscriber's own preferences",
    openapi_extra=PREFERENCES_BODY,
)
async def put_my_preferences(request: Request, me: str = Depends(subscriber)) -> dict[str, Any]:
    """Replace them (the body of SPEC §3); switching off a ``required`` category is ``409``."""
    svc = service(request)
    body = await read_json(request)
    try:
        document = preferences.validate(body, svc.settings.categories)
    except Conflict as exc:  # the problem points at the required category, for the widget
        raise InvalidInput(str(exc), _required_off(body, svc.settings), status=409) from exc
    now = svc.clock.now()
    await svc.store.write(lambda conn: subscriber_rows.put_preferences(conn, me, document, now))
    return document


def _required_off(body: Any, settings: Settings) -> str | None:
    """The pointer to the first required category ``body`` switches off."""
    for name, entry in (body.get("categories") or {}).items():
        category = settings.categories.get(name)
        if category is not None and category.required and entry.get("enabled") is False:
            return f"/categories/{name}"
    return None


@router.get("/v1/inbox/categories", summary="What a preference centre offers")
async def categories(request: Request, _: str = Depends(subscriber)) -> dict[str, Any]:
    """The notification categories (``required`` ones cannot be switched off) with the
    channels their rules use, and every channel any rule uses."""
    settings = service(request).settings
    used: dict[str, set[str]] = {name: set() for name in settings.categories}
    for rule in settings.rules:
        used.setdefault(rule.category, set()).update(rule.channels, rule.fallback)
    items = [
        {
            "key": name,
            "description": category.description,
            "required": category.required,
            "channels": sorted(used.get(name, ())),
        }
        for name, category in settings.categories.items()
    ]
    channels = sorted(set().union(*used.values())) if used else []
    return {"items": items, "channels": channels, "next_cursor": None}


@router.get("/v1/inbox/stream", summary="Live inbox (Server-Sent Events)")
async def stream(request: Request, me: str = Depends(subscriber)) -> StreamingResponse:
    """``event: item`` for each new item and ``event: count`` with fresh counts, live.

    The stream ends with ``event: expired`` when its token expires; a subscriber holds at
    most ``inbox.max_streams`` streams at once (``429`` past it): counted across the
    processes of one machine, and per API process in scale-out.
    """
    svc = service(request)
    queue = svc.hub.open_stream(me, svc.settings.inbox.max_streams)
    if queue is None:
        raise ApiError(
            429,
            f"this subscriber already has {svc.settings.inbox.max_streams} open inbox streams",
            {"Retry-After": "5"},
        )
    expires: float = request.state.inbox_expires
    return _Stream(
        _events(request, me, queue, expires),
        lambda: svc.hub.unsubscribe(me, queue),
        media_type="text/event-stream",
        headers={
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            # which of the service's processes holds this stream (``--processes N``)
            "X-Tidings-Process": str(svc.share.index),
        },
    )


async def _events(
    request: Request, me: str, queue: asyncio.Queue[dict[str, Any]], expires: float
) -> AsyncIterator[str]:
    svc = service(request)
    async with svc.store.read() as conn:
        counts = await inbox_rows.counts(conn, me)
    yield _sse("count", counts)
    while True:
        left = expires - time.time()
        if left <= 0:
            yield _sse("expired", {"expired_at": iso(expires)})
            return
        try:
            message = await asyncio.wait_for(queue.get(), min(KEEPALIVE, left))
        except TimeoutError:
            if expires > time.time():
                yield ": keep-alive\n\n"
            continue
        if message["type"] == "item":
            yield _sse("item", inbox_rows.item_json(_Row(message["item"])), message["item"]["id"])
            async with svc.store.read() as conn:
                counts = await inbox_rows.counts(conn, me)
            yield _sse("count", counts)
        else:
            yield _sse("count", message["count"])


class _Stream(StreamingResponse):
    """A streaming response that lets go of its stream however it ends (finished, client
    gone, cancelled): the hub's queue and the generator are released at once, not when the
    garbage collector finds them."""

    def __init__(
        self, content: AsyncIterator[str], on_close: Callable[[], None], **kwargs: Any
    ) -> None:
        super().__init__(content, **kwargs)
        self._content = content
        self._on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()
            aclose = getattr(self._content, "aclose", None)
            if aclose is not None:
                await aclose()


class _Row:
    """Attribute access over an inbox row dict (as the processor wrote it)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


def _sse(event: str, data: Any, event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"
