"""Apple Push Notification service over HTTP/2 with provider-token (ES256 JWT) auth.

Every send is one stream ``POST {base_url}/3/device/{token}`` on a single multiplexed
connection. The provider token is reused for 50 minutes and never refreshed more often than
every 20 (APNs answers ``TooManyProviderTokenUpdates`` otherwise). ``apns-id`` carries the
delivery id, so APNs can tell a retry from a new notification.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from typing import Any, ClassVar

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tidings import json_output
from tidings.channels.base import Channel, Message, ProviderContext, Receipt
from tidings.channels.common import merge, resolve_path
from tidings.channels.http import make_client, retry_after_seconds, transport_errors
from tidings.config import ProviderSettings
from tidings.errors import (
    ConfigError,
    DestinationGone,
    PermanentProviderError,
    TransientProviderError,
)

MAX_PAYLOAD = 4096
TOKEN_REFRESH_AFTER = 50 * 60
TOKEN_MIN_AGE = 20 * 60
ID_NAMESPACE = uuid.UUID("6f1c8e1e-5d43-4a8e-9a51-1f0f3c1c2a77")
"""Namespace for apns-ids derived from delivery ids that are not UUIDs."""
GONE_REASONS = frozenset({"BadDeviceToken", "Unregistered", "ExpiredToken"})
TRANSIENT_STATUSES = frozenset({429, 500, 503})


def apns_id(delivery_id: str) -> str:
    """``delivery_id`` as the UUID APNs wants: itself if it is one, else a stable uuid5."""
    try:
        return str(uuid.UUID(delivery_id))
    except ValueError:
        return str(uuid.uuid5(ID_NAMESPACE, delivery_id))


def collapse_id(subject: str) -> str:
    """An ``apns-collapse-id`` of at most 64 bytes; longer subjects collapse by digest."""
    if len(subject.encode()) <= 64:
        return subject
    return hashlib.sha256(subject.encode()).hexdigest()


class ProviderToken:
    """The ES256 provider token, minted from the .p8 key and reused for 50 minutes."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, *, team_id: str, key_id: str) -> None:
        self.key = key
        self.team_id = team_id
        self.key_id = key_id
        self.clock: Callable[[], float] = time.time
        self.tokens_minted = 0
        self._token: str | None = None
        self._issued_at = 0.0

    def get(self) -> str:
        """The current token, minted afresh only when it is older than 50 minutes."""
        if self._token is None or self.clock() - self._issued_at >= TOKEN_REFRESH_AFTER:
            return self._mint()
        return self._token

    def refresh(self, rejected: str) -> str | None:
        """A new token after APNs called ``rejected`` expired; ``None`` if it is too soon."""
        if self._token != rejected:  # another stream already replaced it
            return self._token
        if self.clock() - self._issued_at < TOKEN_MIN_AGE:
            return None
        return self._mint()

    def retry_in(self) -> float:
        """Seconds until the token may be refreshed."""
        return max(0.0, TOKEN_MIN_AGE - (self.clock() - self._issued_at))

    def _mint(self) -> str:
        now = self.clock()
        self._token = jwt.encode(
            {"iss": self.team_id, "iat": int(now)},
            self.key,
            algorithm="ES256",
            headers={"kid": self.key_id},
        )
        self._issued_at = now
        self.tokens_minted += 1
        return self._token


class ApnsProvider:
    """Push to iOS/macOS apps through APNs (HTTP/2, token auth)."""

    kind: ClassVar[str] = "apns"
    channel: ClassVar[Channel] = "push"
    destinations: ClassVar[frozenset[str]] = frozenset({"apns"})

    def __init__(self, settings: ProviderSettings, context: ProviderContext) -> None:
        self.name = settings.name or self.kind
        missing = [
            key
            for key in ("team_id", "key_id", "private_key_file", "topic")
            if not settings.option(key)
        ]
        if missing:
            raise ConfigError(f"apns needs {', '.join(missing)}", missing[0])
        path = resolve_path(str(settings.option("private_key_file")), context.base_dir)
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), None)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read .p8 key {path}", "private_key_file") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError("the .p8 key must be an EC P-256 key", "private_key_file")
        self.topic = str(settings.option("topic"))
        self.base_url = str(settings.option("base_url", "https://api.push.apple.com")).rstrip("/")
        self.token = ProviderToken(
            key, team_id=str(settings.option("team_id")), key_id=str(settings.option("key_id"))
        )
        # one connection multiplexes up to the server's stream limit (1000 at Apple)
        self.client = make_client(
            timeout=settings.timeout or context.timeout,
            http2=True,
            max_connections=int(settings.option("connections", 1)),
        )

    @property
    def tokens_minted(self) -> int:
        """How many provider tokens this provider has signed."""
        return self.token.tokens_minted

    def request(self, message: Message) -> tuple[dict[str, str], bytes]:
        """Headers (without authorization) and the JSON payload for ``message``."""
        overrides: dict[str, Any] = dict(message.content.get("apns") or {})
        aps: dict[str, Any] = {
            "alert": {"title": message.title, "body": message.body},
            "sound": "default",
        }
        if message.category:
            aps["thread-id"] = message.category
        payload: dict[str, Any] = {
            key: value for key, value in message.data.items() if key != "aps"
        }
        payload["aps"] = aps
        payload = merge(payload, overrides.get("payload") or {})
        headers = {
            "apns-topic": self.topic,
            "apns-push-type": "alert",
            "apns-priority": "10" if message.priority == "high" else "5",
            "apns-expiration": str(int(time.time() + message.ttl)) if message.ttl else "0",
            "apns-id": apns_id(message.delivery_id),
        }
        if message.subject:
            headers["apns-collapse-id"] = collapse_id(message.subject)
        headers.update({str(k): str(v) for k, v in (overrides.get("headers") or {}).items()})
        body = json_output.utf8(payload)
        return headers, body

    async def send(self, message: Message) -> Receipt:
        """Send one alert to one device token."""
        headers, body = self.request(message)
        if len(body) > MAX_PAYLOAD:
            raise PermanentProviderError(
                f"{self.name}: payload is {len(body)} bytes, APNs allows {MAX_PAYLOAD}",
                code="PayloadTooLarge",
            )
        url = f"{self.base_url}/3/device/{message.destination.address}"
        token = self.token.get()
        for attempt in (1, 2):
            async with transport_errors(self.name):
                response = await self.client.post(
                    url, content=body, headers={**headers, "authorization": f"bearer {token}"}
                )
            if response.status_code == 200:
                return Receipt(status="sent", provider_message_id=response.headers.get("apns-id"))
            reason = _reason(response)
            if response.status_code == 403 and reason == "ExpiredProviderToken" and attempt == 1:
                fresh = self.token.refresh(token)
                if fresh is None:
                    raise TransientProviderError(
                        f"{self.name}: APNs says the provider token expired, refresh allowed "
                        "in a while (check the clock)",
                        retry_after=self.token.retry_in(),
                        code=reason,
                    )
                token = fresh
                continue
            self._raise(response, reason)
        raise AssertionError("unreachable")  # pragma: no cover

    def _raise(self, response: httpx.Response, reason: str) -> None:
        status = response.status_code
        text = f"{self.name}: APNs {status} {reason}"
        if status == 410 or (status == 400 and reason in GONE_REASONS):
            raise DestinationGone(text, code=reason or str(status))
        if status in TRANSIENT_STATUSES or status >= 500:
            raise TransientProviderError(
                text,
                retry_after=retry_after_seconds(response.headers.get("retry-after")),
                code=reason or str(status),
            )
        raise PermanentProviderError(text, code=reason or str(status))

    async def aclose(self) -> None:
        """Close the HTTP/2 connection."""
        await self.client.aclose()


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("reason", "")) if isinstance(body, dict) else ""
