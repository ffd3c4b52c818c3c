"""A fake APNs: HTTP/2 over TLS (hypercorn) that checks what Apple checks.

It verifies the ES256 provider token against the key's public half (``kid``, ``iss``, age
under an hour, refreshed no more than every 20 minutes), the request headers, the device
token format and the 4 KB payload limit, and answers with APNs' documented ``reason`` bodies.
It also records how many streams were in flight at once on one connection.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

DEVICE_TOKEN_RE = re.compile(r"^[0-9a-fA-F]{64,200}$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
PUSH_TYPES = {
    "alert", "background", "location", "voip", "complication", "fileprovider", "mdm",
    "liveactivity", "pushtotalk",
}  # fmt: skip


def write_p8(path: Path) -> bytes:
    """Write a fresh P-256 key as an Apple ``.p8`` (PKCS#8 PEM); return the public PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def device_token() -> str:
    """A well-formed random device token (32 bytes, hex)."""
    return secrets.token_hex(32)


def reason(status: int, why: str, **extra: Any) -> JSONResponse:
    """An APNs error answer: ``{"reason": …}`` and the request's apns-id."""
    headers = {"apns-id": extra.pop("apns_id")} if extra.get("apns_id") else None
    extra.pop("apns_id", None)
    return JSONResponse({"reason": why, **extra}, status_code=status, headers=headers)


@dataclass
class ApnsServer:
    """State and ASGI app of the fake; tests mark device tokens and read what arrived."""

    public_pem: bytes
    team_id: str = "TEAM123456"
    key_id: str = "KEY1234567"
    topic: str = "com.shop.app"
    latency: float = 0.0
    unregistered: set[str] = field(default_factory=set)
    busy: set[str] = field(default_factory=set)
    down: set[str] = field(default_factory=set)
    expired_before: float | None = None
    """Provider tokens with an ``iat`` before this answer ExpiredProviderToken."""
    received: list[dict[str, Any]] = field(default_factory=list)
    sends: int = 0
    tokens_seen: list[int] = field(default_factory=list)
    """``iat`` of every distinct provider token, in arrival order."""
    max_streams: int = 0
    connections: set[tuple[str, int]] = field(default_factory=set)
    http_versions: set[str] = field(default_factory=set)
    _inflight: dict[tuple[str, int], int] = field(default_factory=dict)
    _token_iat: dict[str, int] = field(default_factory=dict)

    def check_token(self, authorization: str) -> str | None:
        """The reason the provider token is refused, or ``None``."""
        if not authorization.startswith("bearer "):
            return "MissingProviderToken"
        token = authorization[7:]
        if token in self._token_iat:
            iat = self._token_iat[token]
        else:
            try:
                header = jwt.get_unverified_header(token)
                if header.get("alg") != "ES256":
                    return "InvalidProviderToken"
                if header.get("kid") != self.key_id:
                    return "InvalidProviderToken"
                claims = jwt.decode(
                    token,
                    self.public_pem,
                    algorithms=["ES256"],
                    issuer=self.team_id,
                    options={"require": ["iss", "iat"], "verify_iat": False},
                )
            except jwt.InvalidTokenError:
                return "InvalidProviderToken"
            iat = int(claims["iat"])
            if self.tokens_seen and iat - self.tokens_seen[-1] < 20 * 60:
                return "TooManyProviderTokenUpdates"
            self._token_iat[token] = iat
            self.tokens_seen.append(iat)
        if iat > time.time() + 60:
            return "InvalidProviderToken"
        if time.time() - iat > 3600 or (
            self.expired_before is not None and iat < self.expired_before
        ):
            return "ExpiredProviderToken"
        return None

    async def push(self, request: Request) -> Response:
        conn = request.scope.get("client") or ("?", 0)
        self.connections.add(conn)
        self.http_versions.add(str(request.scope.get("http_version")))
        self._inflight[conn] = self._inflight.get(conn, 0) + 1
        self.max_streams = max(self.max_streams, self._inflight[conn])
        try:
            body = await request.body()
            if self.latency:
                await asyncio.sleep(self.latency)
            return self.answer(request, body)
        finally:
            self._inflight[conn] -= 1

    def answer(self, request: Request, body: bytes) -> Response:
        """Apple's checks, in Apple's order: auth, headers, token, payload, then delivery."""
        headers = request.headers
        apns_id = headers.get("apns-id") or str(uuid.uuid4())
        if request.scope.get("http_version") != "2":
            return reason(405, "MethodNotAllowed", apns_id=apns_id)
        refused = self.check_token(headers.get("authorization", ""))
        if refused == "TooManyProviderTokenUpdates":
            return reason(429, refused, apns_id=apns_id)
        if refused:
            return reason(403, refused, apns_id=apns_id)
        if "apns-id" in headers and not UUID_RE.match(headers["apns-id"]):
            return reason(400, "BadMessageId")
        topic = headers.get("apns-topic")
        if not topic:
            return reason(400, "MissingTopic", apns_id=apns_id)
        if topic != self.topic:
            return reason(400, "DeviceTokenNotForTopic", apns_id=apns_id)
        if headers.get("apns-push-type", "alert") not in PUSH_TYPES:
            return reason(400, "InvalidPushType", apns_id=apns_id)
        if headers.get("apns-priority", "10") not in ("1", "5", "10"):
            return reason(400, "BadPriority", apns_id=apns_id)
        if not headers.get("apns-expiration", "0").isdigit():
            return reason(400, "BadExpirationDate", apns_id=apns_id)
        if len(headers.get("apns-collapse-id", "").encode()) > 64:
            return reason(400, "BadCollapseId", apns_id=apns_id)
        token = request.path_params["token"]
        if not DEVICE_TOKEN_RE.match(token):
            return reason(400, "BadDeviceToken", apns_id=apns_id)
        if not body:
            return reason(400, "PayloadEmpty", apns_id=apns_id)
        if len(body) > 4096:
            return reason(413, "PayloadTooLarge", apns_id=apns_id)
        try:
            payload = json.loads(body)
        except ValueError:
            return reason(400, "PayloadEmpty", apns_id=apns_id)
        if not isinstance(payload, dict) or not isinstance(payload.get("aps"), dict):
            return reason(400, "PayloadEmpty", apns_id=apns_id)
        if token in self.unregistered:
            return reason(
                410, "Unregistered", apns_id=apns_id, timestamp=int(time.time() * 1000) - 60_000
            )
        if token in self.busy:
            return reason(429, "TooManyRequests", apns_id=apns_id)
        if token in self.down:
            return reason(503, "ServiceUnavailable", apns_id=apns_id)
        self.sends += 1
        if len(self.received) < 10_000:
            self.received.append(
                {"token": token, "headers": dict(headers.items()), "payload": payload}
            )
        return Response(status_code=200, headers={"apns-id": apns_id})

    async def stats(self, request: Request) -> Response:
        return JSONResponse(
            {
                "sends": self.sends,
                "provider_tokens": len(self.tokens_seen),
                "max_streams": self.max_streams,
                "connections": len(self.connections),
            }
        )

    def app(self) -> Starlette:
        """The ASGI app: ``POST /3/device/{token}``."""
        return Starlette(
            routes=[
                Route("/3/device/{token}", self.push, methods=["POST"]),
                Route("/_fake/stats", self.stats),
            ]
        )
