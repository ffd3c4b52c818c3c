"""A fake Web Push service that checks VAPID and decrypts what it is given, like a browser would.

``subscribe()`` plays the browser: it makes the subscription's P-256 key pair and auth secret
and returns the ``{endpoint, keys}`` a page would hand to the server. Each push is checked as
a push service does (VAPID JWT signed by the ``k=`` key, ``aud`` = the endpoint's origin,
``exp`` within 24 hours, a ``mailto:``/``https:`` ``sub``; ``TTL``, ``Urgency``, ``Topic``;
4096-byte bodies) and then decrypted with the subscription's private key (RFC 8291), the
plaintext kept for the test. Errors use autopush's JSON body (``code``, ``errno``, ``error``,
``message``, ``more_info``).
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import http_ece
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

TOPIC_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
URGENCIES = {"very-low", "low", "normal", "high"}
REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    410: "Gone",
    413: "Payload Too Large",
    429: "Too Many Requests",
    503: "Service Unavailable",
}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def autopush_error(status: int, errno: int, message: str, **headers: str) -> JSONResponse:
    """The error body Mozilla's autopush answers with."""
    return JSONResponse(
        {
            "code": status,
            "errno": errno,
            "error": REASONS.get(status, "Error"),
            "message": message,
            "more_info": "https://mozilla-services.github.io/autopush-rs/errors.html",
        },
        status_code=status,
        headers=headers or None,
    )


@dataclass
class Subscription:
    """The browser side of one push subscription."""

    key: ec.EllipticCurvePrivateKey
    auth: bytes
    application_server_key: str | None
    gone: bool = False


@dataclass
class WebPushService:
    """State and ASGI app of the fake push service."""

    base_url: str
    max_body: int = 4096
    latency: float = 0.0
    decrypt: bool = True
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    throttled: set[str] = field(default_factory=set)
    failing: set[str] = field(default_factory=set)
    received: list[dict[str, Any]] = field(default_factory=list)
    sends: int = 0
    vapid_tokens: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)

    def subscribe(self, application_server_key: str | None = None) -> dict[str, Any]:
        """A new subscription, as ``PushSubscription.toJSON()`` gives it to a page."""
        sub_id = secrets.token_urlsafe(16)
        key = ec.generate_private_key(ec.SECP256R1())
        auth = secrets.token_bytes(16)
        self.subscriptions[sub_id] = Subscription(key, auth, application_server_key)
        public = key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": f"{self.base_url}/wpush/v2/{sub_id}",
            "keys": {"p256dh": b64url(public), "auth": b64url(auth)},
        }

    def unsubscribe(self, endpoint: str) -> None:
        """The user revoked permission: the endpoint answers 410 from now on."""
        self.subscriptions[endpoint.rsplit("/", 1)[1]].gone = True

    def check_vapid(self, request: Request, sub: Subscription) -> str | None:
        """Why the VAPID credentials are refused, or ``None``."""
        value = request.headers.get("authorization", "")
        if not value.lower().startswith("vapid "):
            return "Missing vapid authorization"
        params = dict(part.strip().split("=", 1) for part in value[6:].split(",") if "=" in part)
        token, k = params.get("t", ""), params.get("k", "")
        try:
            public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(k))
            claims = jwt.decode(
                token,
                public,
                algorithms=["ES256"],
                audience=f"{request.url.scheme}://{request.url.netloc}",
                options={"require": ["aud", "exp", "sub"]},
            )
        except (ValueError, jwt.InvalidTokenError) as exc:
            return f"Invalid VAPID token: {type(exc).__name__}"
        if claims["exp"] > time.time() + 24 * 3600:
            return "VAPID exp is more than 24 hours in the future"
        if not str(claims["sub"]).startswith(("mailto:", "https:")):
            return "VAPID sub must be a mailto: or https: URL"
        if sub.application_server_key and k != sub.application_server_key:
            return "VAPID key does not match the subscription's applicationServerKey"
        self.vapid_tokens.add(token)
        return None

    async def push(self, request: Request) -> Response:
        if self.latency:
            await asyncio.sleep(self.latency)
        sub_id = request.path_params["sub_id"]
        sub = self.subscriptions.get(sub_id)
        if sub is None:
            return autopush_error(404, 102, "Request did not validate invalid token")
        if sub.gone:
            return autopush_error(
                410, 103, "Request did not validate Subscription is no longer valid"
            )
        refused = self.check_vapid(request, sub)
        if refused:
            self.problems.append(refused)
            return autopush_error(401, 109, refused)
        headers = request.headers
        ttl = headers.get("ttl")
        if ttl is None or not ttl.isdigit():
            return autopush_error(400, 111, "Missing TTL header")
        if headers.get("urgency", "normal") not in URGENCIES:
            return autopush_error(400, 110, "Invalid Urgency header")
        if "topic" in headers and not TOPIC_RE.match(headers["topic"]):
            return autopush_error(400, 110, "Topic must be at most 32 url-safe characters")
        body = await request.body()
        if len(body) > self.max_body:
            return autopush_error(413, 104, "This message is intended for a constrained device "
                                  "and is limited in size. Converted buffer is too long by "
                                  f"{len(body) - self.max_body} bytes")  # fmt: skip
        if headers.get("content-encoding") != "aes128gcm":
            return autopush_error(400, 110, "Unknown Content-Encoding")
        if sub_id in self.throttled:
            return autopush_error(429, 999, "Too many requests", **{"Retry-After": "120"})
        if sub_id in self.failing:
            return autopush_error(503, 202, "Service unavailable")
        plaintext: bytes | None = None
        if self.decrypt:
            try:
                plaintext = http_ece.decrypt(
                    body, private_key=sub.key, auth_secret=sub.auth, version="aes128gcm"
                )
            except Exception as exc:  # a browser would drop it; make it visible to the test
                self.problems.append(f"decrypt failed: {type(exc).__name__}: {exc}")
                return autopush_error(400, 110, "Invalid crypto: cannot decrypt")
        self.sends += 1
        if len(self.received) < 10_000:
            self.received.append(
                {"sub_id": sub_id, "headers": dict(headers.items()), "plaintext": plaintext}
            )
        return Response(
            status_code=201,
            headers={"Location": f"{self.base_url}/m/{secrets.token_urlsafe(12)}", "TTL": ttl},
        )

    async def stats(self, request: Request) -> Response:
        return JSONResponse({"sends": self.sends, "vapid_tokens": len(self.vapid_tokens)})

    async def new_subscription(self, request: Request) -> Response:
        """``subscribe()`` over HTTP, for a service running in another process (the bench)."""
        return JSONResponse(self.subscribe())

    def app(self) -> Starlette:
        """The ASGI app: ``POST /wpush/v2/{sub_id}``."""
        return Starlette(
            routes=[
                Route("/wpush/v2/{sub_id}", self.push, methods=["POST"]),
                Route("/_fake/stats", self.stats),
                Route("/_fake/subscribe", self.new_subscription, methods=["POST"]),
            ]
        )
