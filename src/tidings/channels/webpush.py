"""Web Push: RFC 8291 (aes128gcm message encryption) with RFC 8292 VAPID authentication.

The payload is encrypted to the subscription's ``p256dh`` key and ``auth`` secret with a
fresh ephemeral key per message, and POSTed to the subscription's endpoint with
``Authorization: vapid t=<ES256 JWT>, k=<public key>``. The VAPID JWT is cached per push
service origin for 12 hours (services refuse ones valid for more than 24).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import time
from collections.abc import Callable
from typing import Any, ClassVar
from urllib.parse import urlsplit

import http_ece
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tidings import json_output
from tidings.channels.base import Channel, Message, ProviderContext, Receipt
from tidings.channels.common import resolve_path
from tidings.channels.http import make_client, retry_after_seconds, transport_errors
from tidings.config import ProviderSettings
from tidings.errors import (
    ConfigError,
    DestinationGone,
    PermanentProviderError,
    TransientProviderError,
)

MAX_BODY = 4096
HEADER_OVERHEAD = 16 + 4 + 1 + 65  # salt, record size, key id length, sender key (RFC 8188)
RECORD_OVERHEAD = 1 + 16  # padding delimiter and the AEAD tag
MAX_PLAINTEXT = MAX_BODY - HEADER_OVERHEAD - RECORD_OVERHEAD
VAPID_LIFETIME = 12 * 3600
VAPID_MARGIN = 3600
DEFAULT_TTL = 86400
TOPIC_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


def b64url(data: bytes) -> str:
    """Unpadded base64url, as Web Push writes keys."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    """Decode base64url with or without padding."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def topic_for(subject: str) -> str:
    """A ``Topic`` header (≤ 32 url-safe characters) standing for ``subject``."""
    if TOPIC_RE.match(subject):
        return subject
    return b64url(hashlib.sha256(subject.encode()).digest())[:32]


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a push endpoint: the VAPID audience."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def load_vapid_key(
    settings: ProviderSettings, context: ProviderContext
) -> ec.EllipticCurvePrivateKey:
    """The VAPID key from ``vapid_private_key_file`` (PEM) or ``vapid_private_key`` (raw b64url)."""
    inline = settings.option("vapid_private_key")
    if inline:
        try:
            scalar = int.from_bytes(b64url_decode(str(inline)), "big")
            return ec.derive_private_key(scalar, ec.SECP256R1())
        except ValueError as exc:
            raise ConfigError("vapid_private_key is not a P-256 key", "vapid_private_key") from exc
    file = settings.option("vapid_private_key_file")
    if not file:
        raise ConfigError("webpush needs vapid_private_key_file", "vapid_private_key_file")
    path = resolve_path(str(file), context.base_dir)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), None)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read VAPID key {path}", "vapid_private_key_file") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ConfigError("the VAPID key must be an EC P-256 key", "vapid_private_key_file")
    return key


class WebPushProvider:
    """Push to browsers through their push services (VAPID + aes128gcm)."""

    kind: ClassVar[str] = "webpush"
    channel: ClassVar[Channel] = "push"
    destinations: ClassVar[frozenset[str]] = frozenset({"webpush"})

    def __init__(self, settings: ProviderSettings, context: ProviderContext) -> None:
        self.name = settings.name or self.kind
        self.key = load_vapid_key(settings, context)
        self.subject = str(settings.option("subject", ""))
        if not self.subject.startswith(("mailto:", "https:")):
            raise ConfigError("subject must be a mailto: or https: URL", "subject")
        self.public_key = b64url(
            self.key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
        )
        self.default_ttl = int(settings.option("ttl", DEFAULT_TTL))
        self.clock: Callable[[], float] = time.time
        self.tokens_minted = 0
        self._vapid: dict[str, tuple[str, float]] = {}
        self.client = make_client(
            timeout=settings.timeout or context.timeout,
            max_connections=int(settings.option("connections", 100)),
        )

    def vapid_header(self, endpoint: str) -> str:
        """``Authorization`` for ``endpoint``'s push service, reusing a cached JWT."""
        audience = origin_of(endpoint)
        now = self.clock()
        cached = self._vapid.get(audience)
        if cached is None or now > cached[1] - VAPID_MARGIN:
            expires = int(now) + VAPID_LIFETIME
            token = jwt.encode(
                {"aud": audience, "exp": expires, "sub": self.subject},
                self.key,
                algorithm="ES256",
                headers={"typ": "JWT"},
            )
            cached = (token, float(expires))
            self._vapid[audience] = cached
            self.tokens_minted += 1
        return f"vapid t={cached[0]}, k={self.public_key}"

    def plaintext(self, message: Message) -> bytes:
        """The JSON the service worker receives."""
        payload: dict[str, Any] = {
            "title": message.title,
            "body": message.body,
            "data": dict(message.data),
            "url": message.content.get("url"),
        }
        return json_output.utf8(payload)

    def encrypt(self, message: Message, plaintext: bytes) -> bytes:
        """RFC 8291 aes128gcm body for the subscription of ``message``."""
        keys = message.destination.keys
        try:
            receiver = b64url_decode(keys["p256dh"])
            auth = b64url_decode(keys["auth"])
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), receiver)
        except (KeyError, ValueError) as exc:
            # the subscription can never be delivered to: deactivate it
            raise DestinationGone(
                f"{self.name}: subscription has no valid p256dh/auth keys",
                code="invalid_subscription",
            ) from exc
        sender = ec.generate_private_key(ec.SECP256R1())
        body: bytes = http_ece.encrypt(
            plaintext,
            salt=os.urandom(16),
            private_key=sender,
            dh=receiver,
            auth_secret=auth,
            version="aes128gcm",
            rs=MAX_BODY,
        )
        return body

    async def send(self, message: Message) -> Receipt:
        """Encrypt and send one message to one push subscription."""
        plaintext = self.plaintext(message)
        if len(plaintext) > MAX_PLAINTEXT:
            raise PermanentProviderError(
                f"{self.name}: payload is {len(plaintext)} bytes, at most {MAX_PLAINTEXT} fit",
                code="payload_too_large",
            )
        body = self.encrypt(message, plaintext)
        endpoint = message.destination.address
        ttl = self.default_ttl if message.ttl is None else max(0, int(message.ttl))
        headers = {
            "Authorization": self.vapid_header(endpoint),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "TTL": str(ttl),
            "Urgency": message.priority,
        }
        if message.subject:
            headers["Topic"] = topic_for(message.subject)
        async with transport_errors(self.name):
            response = await self.client.post(endpoint, content=body, headers=headers)
        status = response.status_code
        if 200 <= status < 300:
            return Receipt(status="sent", provider_message_id=response.headers.get("location"))
        text = f"{self.name}: push service answered {status}"
        if status in (404, 410):
            raise DestinationGone(f"{text}: subscription expired", code=str(status))
        if status in (408, 429) or status >= 500:
            raise TransientProviderError(
                text,
                retry_after=retry_after_seconds(response.headers.get("retry-after")),
                code=str(status),
            )
        raise PermanentProviderError(f"{text}: {_errno(response)}", code=str(status))

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self.client.aclose()


def _errno(response: Any) -> str:
    """The push service's short reason (autopush ``errno``/``message``) without echoing URLs."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    return f"errno {body.get('errno', '?')}: {str(body.get('message', ''))[:120]}"
