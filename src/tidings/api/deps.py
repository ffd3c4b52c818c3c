"""Request plumbing shared by the routers: the service, API-key auth, bounded JSON bodies."""

from __future__ import annotations

import base64
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect
from starlette.types import Receive

from tidings import json_input
from tidings.api.problems import ApiError
from tidings.channels.ssrf import ForbiddenDestination, check_url
from tidings.crypto import hash_api_key
from tidings.errors import InvalidInput, PayloadTooLarge
from tidings.runtime.service import Service

MAX_BODY = 1024 * 1024


def service(request: Request) -> Service:
    """The service behind this app."""
    found: Service = request.app.state.service
    return found


class _Bucket:
    __slots__ = ("tokens", "stamp")

    def __init__(self, tokens: float) -> None:
        self.tokens = tokens
        self.stamp = time.monotonic()


def require(scope: str) -> Callable[[Request], Awaitable[str]]:
    """A dependency that checks ``Authorization: Bearer <key>`` for ``scope``; the key hash.

    The key's scopes are left in ``request.state.api_scopes`` (see :func:`reveals_pii`).
    """

    async def check(request: Request) -> str:
        svc = service(request)
        digest = authorize(svc, request.headers.get("authorization", ""), scope)
        request.state.api_scopes = svc.api_keys[digest].scopes
        return digest

    return check


def scoped(scope: str) -> Callable[..., Awaitable[Service]]:
    """A dependency: the service, once the request's key has ``scope`` (see :func:`require`)."""

    async def scoped_service(request: Request, _: str = Depends(require(scope))) -> Service:
        return service(request)

    return scoped_service


Reader = Annotated[Service, Depends(scoped("read"))]
"""A route parameter: the service, for a key with the ``read`` scope."""
Admin = Annotated[Service, Depends(scoped("admin"))]
"""A route parameter: the service, for a key with the ``admin`` scope."""


def reveals_pii(request: Request) -> bool:
    """Whether this request's key may see PII unmasked (scope ``pii`` or ``admin``)."""
    scopes: frozenset[str] = getattr(request.state, "api_scopes", frozenset())
    return "pii" in scopes or "admin" in scopes


def authorize(svc: Service, header: str, scope: str) -> str:
    """Check an ``Authorization`` header for ``scope`` (and the key's rate); the key hash.

    ``401`` for a missing, unknown, revoked or expired key; ``403`` for a key without
    ``scope`` (``admin`` has every scope).
    """
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(
            401,
            "missing API key: send Authorization: Bearer <key>",
            {"WWW-Authenticate": "Bearer"},
        )
    digest = hash_api_key(key.strip())
    found = svc.api_keys.get(digest)
    if found is None:
        raise ApiError(401, "invalid API key", {"WWW-Authenticate": "Bearer"})
    now = svc.clock.now()
    if found.expired(now):
        raise ApiError(401, "this API key has expired", {"WWW-Authenticate": "Bearer"})
    if not found.allows(scope):
        raise ApiError(403, f"this API key lacks the {scope!r} scope")
    svc.api_keys.used(digest, now)
    _rate_limit(svc, digest)
    return digest


def _rate_limit(svc: Service, digest: str) -> None:
    limits = svc.settings.api
    if limits.rate_limit is None:
        return
    buckets: dict[str, _Bucket] = svc.rate_buckets
    capacity = float(limits.burst or max(1, int(limits.rate_limit)))
    bucket = buckets.setdefault(digest, _Bucket(capacity))
    now = time.monotonic()
    bucket.tokens = min(capacity, bucket.tokens + (now - bucket.stamp) * limits.rate_limit)
    bucket.stamp = now
    if bucket.tokens < 1:
        wait = math.ceil((1 - bucket.tokens) / limits.rate_limit)
        raise ApiError(429, "rate limit exceeded for this API key", {"Retry-After": str(wait)})
    bucket.tokens -= 1


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The request body, refusing more than ``limit`` bytes with ``413``."""
    return await bounded_body(request.headers.get("content-length"), request.stream(), limit)


async def receive_body(
    headers: Mapping[str, str], receive: Receive, limit: int = MAX_BODY
) -> bytes:
    """The body of a plain ASGI request, as :func:`read_body` reads a :class:`Request`'s.

    Raises :class:`~starlette.requests.ClientDisconnect` if the client goes away first.
    """
    return await bounded_body(headers.get("content-length"), _chunks(receive), limit)


async def _chunks(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


async def bounded_body(declared: str | None, chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """``chunks`` joined, refusing more than ``limit`` bytes (``declared`` first) with ``413``."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body is larger than {limit} bytes", "/")
    parts = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is larger than {limit} bytes", "/")
        parts.append(chunk)
    return b"".join(parts)


async def read_json(request: Request, limit: int = MAX_BODY) -> Any:
    """The body decoded strictly (:func:`tidings.json_input.decode`): ``400`` naming where."""
    return json_input.decode(await read_body(request, limit))


Model = TypeVar("Model", bound=BaseModel)


def parsed(model: type[Model], body: Any) -> Model:
    """``body`` as ``model``; the first validation error as :class:`InvalidInput` (``422``)
    naming its field."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidInput(first["msg"], "/" + "/".join(str(p) for p in first["loc"])) from exc


def private_allowed(svc: Service) -> bool:
    """Whether webhook and callback URLs may name private addresses: a configured
    ``webhook`` provider has ``allow_private_networks``."""
    return any(
        bool(entry.option("allow_private_networks", False))
        for entry in svc.settings.providers.get("webhook") or []
    )


def reachable_url(svc: Service, url: str) -> str:
    """``url`` if the webhook providers may call it (:func:`private_allowed`); ``422`` at
    ``/url`` otherwise. The send-time guard re-checks the DNS answer."""
    try:
        check_url(url, private_allowed(svc))
    except ForbiddenDestination as exc:
        raise InvalidInput(str(exc), "/url") from exc
    return url


def signing_secret(given: str | None) -> str:
    """``given``, or a new ``whsec_`` secret (24 random bytes) to sign with."""
    return given or "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


T = TypeVar("T")


def page(
    found: Sequence[T], size: int, cursor: Callable[[T], str] | None = None
) -> tuple[list[T], str | None]:
    """The first ``size`` of ``found`` (fetched with ``limit=size + 1``) and the next cursor.

    The cursor is the last shown row's ``id`` (or what ``cursor`` makes of it), or ``None``
    when nothing follows.
    """
    if len(found) <= size:
        return list(found), None
    last: Any = found[size - 1]
    return list(found[:size]), (cursor(last) if cursor else str(last.id))


@dataclass(frozen=True, slots=True)
class Listing:
    """One page of a list endpoint: the service, the page's size and its ``cursor``."""

    svc: Service
    size: int
    cursor: str | None

    @property
    def fetch(self) -> int:
        """How many rows to fetch: one more than the page, to know whether another follows."""
        return self.size + 1

    def page(
        self, found: Sequence[T], cursor: Callable[[T], str] | None = None
    ) -> tuple[list[T], str | None]:
        """The rows shown and the next cursor (:func:`page`)."""
        return page(found, self.size, cursor)

    async def rows(self, query: Callable[..., Awaitable[Sequence[T]]], **filters: Any) -> list[T]:
        """``query(conn, after=cursor, limit=fetch, **filters)`` on a read connection."""
        async with self.svc.store.read() as conn:
            return list(await query(conn, after=self.cursor, limit=self.fetch, **filters))

    def answer(self, found: Sequence[T], item: Callable[[T], Any]) -> dict[str, Any]:
        """The list endpoint's answer: ``{"items": [...], "next_cursor": ...}``."""
        shown, next_cursor = page(found, self.size)
        return {"items": [item(row) for row in shown], "next_cursor": next_cursor}


def listing(scope: str = "read") -> Callable[..., Awaitable[Listing]]:
    """A dependency: ``?cursor=`` and ``?limit=`` of a list endpoint for a key with ``scope``."""

    async def listed(
        svc: Service = Depends(scoped(scope)), cursor: str | None = None, limit: int | None = None
    ) -> Listing:
        return Listing(svc, page_limit(limit), cursor)

    return listed


Listed = Annotated[Listing, Depends(listing())]
"""A route parameter: the page a ``read`` key asks of a list endpoint."""


def page_limit(value: int | None, default: int = 50, maximum: int = 500) -> int:
    """A list endpoint's ``limit``, clamped."""
    if value is None:
        return default
    if value < 1:
        raise InvalidInput("`limit` must be at least 1", "limit", status=400)
    return min(value, maximum)
