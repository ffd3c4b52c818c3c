"""Signed webhooks (Standard Webhooks): a JSON POST to a subscriber's endpoint.

Each request carries ``webhook-id`` (the delivery id, stable across retries so the receiver
can deduplicate), ``webhook-timestamp`` (unix seconds) and ``webhook-signature``
(``v1,`` + base64 HMAC-SHA256 over ``{id}.{timestamp}.{body}`` with the endpoint's
``whsec_`` secret). See https://www.standardwebhooks.com/.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

from tidings import json_output
from tidings.channels.base import Channel, Message, Priority, ProviderContext, Receipt
from tidings.channels.http import retry_after_seconds, tls_context
from tidings.channels.http1 import Http1Pool, InvalidResponse, Reply
from tidings.channels.ssrf import guard
from tidings.config import ProviderSettings
from tidings.errors import DestinationGone, PermanentProviderError, TransientProviderError
from tidings.ratelimit import Gate

SECRET_PREFIX = "whsec_"
_CACHED = 4096
"""Entries per cache of a provider (cleared when full: a bound, not an LRU)."""


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret (the prefix is optional)."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PermanentProviderError("webhook secret is not base64", code="secret") from exc
    if not key:
        raise PermanentProviderError("webhook secret is empty", code="secret")
    return key


def sign(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one request."""
    to_sign = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, to_sign, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def payload(message: Message, now: datetime | None = None) -> dict[str, Any]:
    """The Standard Webhooks envelope for ``message``."""
    if now is not None:
        when = now
    elif message.occurred_at is not None:
        when = datetime.fromtimestamp(message.occurred_at, UTC)
    else:
        when = datetime.now(UTC)
    return {
        "type": message.event_type,
        "timestamp": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "data": {
            **message.data,
            "notification": {
                "id": message.notification_id,
                "title": message.title,
                "body": message.body,
                "category": message.category,
            },
            "event_id": message.event_id,
            "subject": message.subject,
        },
    }


class _EndpointLimits:
    """At most ``limit`` requests in flight per endpoint origin (scheme, host, port).

    A seller's ERP is not a CDN; and httpx's pool scans every connection and queued request
    on each hand-off, so letting hundreds of sends queue inside it costs more than waiting
    here (see bench/providers_mail_webhook.py). A freed place goes to the highest-priority
    message waiting, so a backlog of low-priority sends never delays a high one.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._gates: dict[str, _Place] = {}

    async def acquire(self, origin: str, priority: Priority) -> _Place:
        """Wait for a place at ``origin``; hand it back with :meth:`release`."""
        place = self._gates.get(origin)
        if place is None:
            place = self._gates[origin] = _Place(Gate(self.limit))
        place.users += 1
        try:
            await place.gate.acquire(priority)
        except BaseException:
            self._leave(origin, place)
            raise
        return place

    def release(self, origin: str, place: _Place) -> None:
        """Give the place back."""
        place.gate.release()
        self._leave(origin, place)

    def _leave(self, origin: str, place: _Place) -> None:
        place.users -= 1
        if not place.users:
            del self._gates[origin]  # no growth with the number of endpoints ever seen

    @asynccontextmanager
    async def hold(self, origin: str, priority: Priority) -> AsyncIterator[None]:
        """Hold a place at ``origin`` for the duration of the block."""
        place = await self.acquire(origin, priority)
        try:
            yield
        finally:
            self.release(origin, place)


@dataclass(slots=True)
class _Place:
    gate: Gate
    users: int = 0


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{(parts.hostname or '').lower()}:{parts.port}"


class WebhookProvider:
    """Posts signed JSON to ``destination.address`` over a pooled keep-alive client."""

    kind: ClassVar[str] = "webhook"
    channel: ClassVar[Channel] = "webhook"
    destinations: ClassVar[frozenset[str]] = frozenset({"webhook"})

    def __init__(self, settings: ProviderSettings, context: ProviderContext) -> None:
        self.name = settings.name or self.kind
        self.timeout = float(settings.timeout or context.timeout)
        self.allow_private = bool(settings.option("allow_private_networks", False))
        max_connections = int(settings.option("max_connections", settings.concurrency or 100))
        per_endpoint = int(settings.option("per_endpoint_concurrency", 4))
        self._limits = _EndpointLimits(min(per_endpoint, max_connections))
        # a lean keep-alive client: httpx cost ~1 ms CPU a request here (see channels/http1.py)
        self._pool = Http1Pool(
            timeout=self.timeout,
            ssl_context=tls_context(),
            max_idle_per_origin=max_connections,
            user_agent="tidings-webhooks",
        )
        self._keys: dict[str, bytes] = {}
        """HMAC keys by endpoint secret (decoding one per send showed in profiles)."""
        self._checked: dict[str, str] = {}
        """Origins of URLs that passed the address guard for good (no DNS to redo)."""

    async def send(self, message: Message) -> Receipt:
        """POST the signed event; 2xx is delivered, 410 means the endpoint is gone."""
        destination = message.destination
        if not destination.secret:
            raise PermanentProviderError(
                f"{self.name}: the endpoint has no signing secret", code="secret"
            )
        key = self._keys.get(destination.secret)
        if key is None:
            key = secret_key(destination.secret)
            if len(self._keys) >= _CACHED:
                self._keys.clear()
            self._keys[destination.secret] = key
        url = destination.address
        addresses: tuple[str, ...] = ()
        origin = self._checked.get(url)
        if origin is None:
            # the request goes to an address the guard approved: no second lookup to rebind
            addresses = await guard(url, self.allow_private)
            origin = _origin(url)
            if self.allow_private:  # nothing to resolve: the verdict holds for this URL
                if len(self._checked) >= _CACHED:
                    self._checked.clear()
                self._checked[url] = origin
        body = json_output.utf8(payload(message), default=str)
        place = await self._limits.acquire(origin, message.priority)
        try:
            timestamp = int(time.time())  # signed after any wait: receivers allow 5 minutes
            headers = {
                "content-type": "application/json",
                "webhook-id": message.delivery_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": sign(key, message.delivery_id, timestamp, body),
            }
            # redirects are not followed: a 3xx could lead past the address guard
            reply = await self._post(url, body, headers, addresses)
        finally:
            self._limits.release(origin, place)
        if reply.status == 410:
            raise DestinationGone(f"{self.name}: endpoint answered 410 Gone", code="410")
        _raise_for_status(self.name, reply)
        return Receipt(status="delivered", provider_message_id=message.delivery_id)

    async def _post(
        self, url: str, body: bytes, headers: dict[str, str], addresses: tuple[str, ...]
    ) -> Reply:
        """One POST (to one of ``addresses`` when given), transport failures mapped to
        provider errors."""
        try:
            return await self._pool.post(url, body, headers, addresses=addresses)
        except TimeoutError as exc:
            raise TransientProviderError(f"{self.name}: timed out", code="timeout") from exc
        except ValueError as exc:
            raise PermanentProviderError(f"{self.name}: invalid URL", code="invalid_url") from exc
        except InvalidResponse as exc:
            raise TransientProviderError(
                f"{self.name}: invalid HTTP response: {exc}", code="protocol"
            ) from exc
        except OSError as exc:  # refused, reset, TLS failures (ssl.SSLError is an OSError)
            raise TransientProviderError(
                f"{self.name}: {type(exc).__name__}", code="transport"
            ) from exc

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._pool.aclose()


def _raise_for_status(provider: str, reply: Reply) -> None:
    """2xx passes; 408/425/429/5xx are transient (with ``Retry-After``); other 4xx permanent."""
    status = reply.status
    if 200 <= status < 300:
        return
    text = reply.body[:300].decode("utf-8", "replace")
    if status in (408, 425, 429) or status >= 500:
        raise TransientProviderError(
            f"{provider}: HTTP {status}: {text}",
            retry_after=retry_after_seconds(reply.headers.get("retry-after")),
            code=str(status),
        )
    raise PermanentProviderError(f"{provider}: HTTP {status}: {text}", code=str(status))
