"""A fake FCM HTTP v1 endpoint and Google OAuth token endpoint that check what Google checks.

The token endpoint verifies the RS256 JWT assertion with the service account's public key
(signature, ``iss``, ``aud``, ``scope``, a lifetime of at most an hour); ``messages:send``
verifies the bearer token and the message schema, and answers with FCM's documented error
bodies for tokens a test marks as dead, invalid, over quota or unavailable.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
TOKEN_RE = re.compile(r"^[A-Za-z0-9_:\-]{20,}$")
MESSAGE_FIELDS = {
    "name", "token", "topic", "condition", "data", "notification", "android", "apns", "webpush",
    "fcm_options",
}  # fmt: skip


@dataclass
class ServiceAccount:
    """A generated service account: the JSON file a provider reads, and the public key."""

    path: Path
    project_id: str
    client_email: str
    public_pem: bytes


def write_service_account(
    path: Path, token_uri: str, project_id: str = "shop-test"
) -> ServiceAccount:
    """Generate an RSA key and write a Google service-account JSON file to ``path``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    email = f"tidings@{project_id}.iam.gserviceaccount.com"
    info = {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": secrets.token_hex(20),
        "private_key": key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
        "client_email": email,
        "client_id": "1234567890",
        "token_uri": token_uri,
    }
    path.write_text(json.dumps(info))
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return ServiceAccount(path, project_id, email, public)


def fcm_error(
    http: int, status: str, message: str, code: str | None = None, **extra: Any
) -> JSONResponse:
    """An FCM v1 error body (google.rpc.Status with an FcmError detail)."""
    details: list[dict[str, Any]] = []
    if code:
        details.append({"@type": FCM_ERROR, "errorCode": code})
    details.extend(extra.pop("more_details", []))
    body = {"error": {"code": http, "message": message, "status": status}}
    if details:
        body["error"]["details"] = details
    return JSONResponse(body, status_code=http, headers=extra.pop("headers", None))


def bad_request(message: str, field_name: str) -> JSONResponse:
    """The INVALID_ARGUMENT answer FCM gives for a malformed message."""
    violation = {
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        "fieldViolations": [{"field": field_name, "description": message}],
    }
    return fcm_error(400, "INVALID_ARGUMENT", message, "INVALID_ARGUMENT", more_details=[violation])


@dataclass
class FcmServer:
    """State and ASGI app of the fake; tests mark tokens and read what was sent."""

    account: ServiceAccount
    token_lifetime: int = 3600
    latency: float = 0.0
    retry_after: int = 30
    dead: set[str] = field(default_factory=set)
    quota: set[str] = field(default_factory=set)
    unavailable: set[str] = field(default_factory=set)
    access_tokens: dict[str, float] = field(default_factory=dict)
    tokens_issued: int = 0
    token_rejections: list[str] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    sends: int = 0

    def revoke_access_tokens(self) -> None:
        """Make every issued access token invalid (FCM will answer 401)."""
        self.access_tokens.clear()

    async def token(self, request: Request) -> Response:
        # parsed by hand: python-multipart is not a dependency
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        if form.get("grant_type") != GRANT_TYPE:
            return JSONResponse(
                {"error": "unsupported_grant_type", "error_description": "Invalid grant_type"},
                status_code=400,
            )
        assertion = str(form.get("assertion", ""))
        try:
            claims = jwt.decode(
                assertion,
                self.account.public_pem,
                algorithms=["RS256"],
                audience=str(request.url.replace(query="")),
                issuer=self.account.client_email,
                options={"require": ["iss", "aud", "exp", "iat", "scope"]},
            )
            if SCOPE not in str(claims["scope"]).split():
                raise jwt.InvalidTokenError("scope")
            if claims["exp"] - claims["iat"] > 3600:
                raise jwt.InvalidTokenError("Token must be a short-lived token (60 minutes)")
        except jwt.InvalidTokenError as exc:
            self.token_rejections.append(f"{type(exc).__name__}: {exc}")
            return JSONResponse(
                {"error": "invalid_grant", "error_description": f"Invalid JWT: {exc}"},
                status_code=400,
            )
        access = "ya29." + secrets.token_urlsafe(48)
        self.access_tokens[access] = time.time() + self.token_lifetime
        self.tokens_issued += 1
        return JSONResponse(
            {"access_token": access, "expires_in": self.token_lifetime, "token_type": "Bearer"}
        )

    async def send(self, request: Request) -> Response:
        if self.latency:
            await asyncio.sleep(self.latency)
        auth = request.headers.get("authorization", "")
        access = auth[7:] if auth.startswith("Bearer ") else ""
        if self.access_tokens.get(access, 0) < time.time():
            return fcm_error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token, "
                "login cookie or other valid authentication credential.",
            )
        if request.path_params["project_id"] != self.account.project_id:
            return fcm_error(
                403, "PERMISSION_DENIED", "Permission 'cloudmessaging.messages.create' denied"
            )
        try:
            body = json.loads(await request.body())
        except ValueError:
            return bad_request("Invalid JSON payload received.", "message")
        problem = self.check(body)
        if problem is not None:
            return problem
        message = body["message"]
        token = message["token"]
        if token in self.dead:
            return fcm_error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")
        if token in self.quota:
            return fcm_error(
                429,
                "RESOURCE_EXHAUSTED",
                "Quota exceeded for quota metric 'Send requests' and limit 'Send requests per "
                "minute' of service 'fcm.googleapis.com'.",
                "QUOTA_EXCEEDED",
                headers={"Retry-After": str(self.retry_after)},
            )
        if token in self.unavailable:
            return fcm_error(
                503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE"
            )
        self.sends += 1
        if len(self.sent) < 10_000:
            self.sent.append(message)
        return JSONResponse(
            {"name": f"projects/{self.account.project_id}/messages/0:{secrets.token_hex(12)}"}
        )

    def check(self, body: Any) -> Response | None:
        """FCM's schema checks; ``None`` when the message is acceptable."""
        if not isinstance(body, dict) or not isinstance(body.get("message"), dict):
            return bad_request("Request contains an invalid argument.", "message")
        message = body["message"]
        unknown = set(message) - MESSAGE_FIELDS
        if unknown:
            name = sorted(unknown)[0]
            return bad_request(
                f"Invalid JSON payload received. Unknown name \"{name}\" at 'message': "
                "Cannot find field.",
                "message",
            )
        token = message.get("token")
        if not isinstance(token, str) or not token:
            return bad_request("Recipient of the message is not set.", "message.token")
        if not TOKEN_RE.match(token):
            return fcm_error(
                400,
                "INVALID_ARGUMENT",
                "The registration token is not a valid FCM registration token",
                "INVALID_ARGUMENT",
            )
        data = message.get("data", {})
        if not isinstance(data, dict):
            return bad_request("Invalid value at 'message.data'", "message.data")
        for index, (key, value) in enumerate(data.items()):
            if not isinstance(value, str):
                return bad_request(
                    f"Invalid value at 'message.data[{index}].value' (TYPE_STRING), {value!r}",
                    f"message.data[{index}].value",
                )
            if key in ("from", "notification", "message_type") or key.startswith("google."):
                return bad_request(f"Invalid data key {key!r}", f"message.data[{index}].key")
        notification = message.get("notification", {})
        if not isinstance(notification, dict) or set(notification) - {"title", "body", "image"}:
            return bad_request("Invalid JSON payload received.", "message.notification")
        android = message.get("android", {})
        if android.get("priority", "NORMAL") not in ("NORMAL", "HIGH"):
            return bad_request("Invalid value at 'message.android.priority'", "message.android")
        if "ttl" in android and not re.fullmatch(r"\d+(\.\d{1,9})?s", str(android["ttl"])):
            return bad_request("Invalid value at 'message.android.ttl'", "message.android.ttl")
        size = len(json.dumps({"notification": notification, "data": data}).encode())
        if size > 4096:
            return bad_request("Android message is too big", "message")
        return None

    async def stats(self, request: Request) -> Response:
        return JSONResponse({"tokens_issued": self.tokens_issued, "sends": self.sends})

    def app(self) -> Starlette:
        """The ASGI app: the token endpoint and ``messages:send``."""
        return Starlette(
            routes=[
                Route("/token", self.token, methods=["POST"]),
                Route("/v1/projects/{project_id}/messages:send", self.send, methods=["POST"]),
                Route("/_fake/stats", self.stats),
            ]
        )
