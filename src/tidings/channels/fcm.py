"""Firebase Cloud Messaging, HTTP v1 API, with the OAuth2 service-account flow.

An RS256 JWT assertion signed with the service account's key is traded at its ``token_uri``
for an access token, which is cached until shortly before it expires. Each message is one
``POST {base_url}/v1/projects/{project_id}/messages:send``. Errors follow FCM's documented
``FcmError`` codes: ``UNREGISTERED`` (or 404) and an ``INVALID_ARGUMENT`` about the token mean
the device is gone; ``QUOTA_EXCEEDED``/429 and ``UNAVAILABLE``/``INTERNAL``/5xx are transient;
a 401 refreshes the access token once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import httpx
import jwt
from cryptography.hazmat.primitives import serialization

from tidings.channels.base import Channel, Message, ProviderContext, Receipt
from tidings.channels.common import merge, resolve_path
from tidings.channels.http import make_client, retry_after_seconds, transport_errors
from tidings.channels.tokens import AccessTokens
from tidings.config import ProviderSettings
from tidings.errors import (
    ConfigError,
    DestinationGone,
    PermanentProviderError,
    TransientProviderError,
)

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_LIFETIME = 3600
QUOTA_BACKOFF = 60.0
"""FCM asks for at least a minute before retrying a quota error that names no Retry-After."""


def string_map(data: Mapping[str, Any]) -> dict[str, str]:
    """FCM ``data`` is ``map<string, string>``: non-strings go as JSON."""
    return {
        str(key): value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        for key, value in data.items()
    }


class ServiceAccountTokens:
    """Access tokens for one Google service account, minted on demand and cached
    (:class:`~tidings.channels.tokens.AccessTokens` keeps the current one)."""

    def __init__(
        self, info: Mapping[str, Any], client: httpx.AsyncClient, *, token_uri: str, name: str
    ) -> None:
        try:
            self.client_email: str = info["client_email"]
            key = serialization.load_pem_private_key(info["private_key"].encode(), None)
        except (KeyError, ValueError, TypeError) as exc:
            raise ConfigError("service account needs client_email and private_key") from exc
        self.key_id: str | None = info.get("private_key_id")
        self.key = key
        self.token_uri = token_uri
        self.name = name
        self.client = client
        self.clock: Callable[[], float] = time.time
        self.cache = AccessTokens(self._mint, clock=lambda: self.clock())

    @property
    def tokens_minted(self) -> int:
        """How many access tokens were minted."""
        return self.cache.fetched

    def assertion(self) -> str:
        """The signed JWT the token endpoint trades for an access token."""
        now = int(self.clock())
        claims = {
            "iss": self.client_email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        }
        headers = {"kid": self.key_id} if self.key_id else None
        return jwt.encode(claims, self.key, algorithm="RS256", headers=headers)  # type: ignore[arg-type]

    async def get(self) -> str:
        """A valid access token, minting one only when the cached one is (nearly) expired."""
        return await self.cache.get()

    def invalidate(self, token: str) -> None:
        """Forget ``token`` (FCM refused it) unless a newer one already replaced it."""
        self.cache.invalidate(token)

    async def _mint(self) -> tuple[str, float]:
        async with transport_errors(self.name):
            response = await self.client.post(
                self.token_uri,
                data={"grant_type": GRANT_TYPE, "assertion": self.assertion()},
                headers={"Accept": "application/json"},
            )
        if response.status_code != 200:
            reason = _oauth_error(response)
            message = f"{self.name}: OAuth token endpoint answered {response.status_code} {reason}"
            if response.status_code == 429 or response.status_code >= 500:
                raise TransientProviderError(
                    message,
                    retry_after=retry_after_seconds(response.headers.get("retry-after")),
                    code="oauth",
                )
            raise PermanentProviderError(message, code="oauth")
        try:
            body = response.json()
            return str(body["access_token"]), float(body.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError) as exc:
            raise TransientProviderError(
                f"{self.name}: malformed OAuth token response", code="oauth"
            ) from exc


def _oauth_error(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("error", "")) if isinstance(body, dict) else ""


class FcmError:
    """The parts of an FCM v1 error body a decision needs."""

    def __init__(self, response: httpx.Response) -> None:
        self.http_status = response.status_code
        self.status = ""
        self.error_code = ""
        self.message = ""
        self.token_field = False
        try:
            error = response.json().get("error", {})
        except (ValueError, AttributeError):
            return
        if not isinstance(error, dict):
            return
        self.status = str(error.get("status", ""))
        self.message = str(error.get("message", ""))[:200]
        for detail in error.get("details") or []:
            if not isinstance(detail, dict):
                continue
            if str(detail.get("@type", "")).endswith("FcmError"):
                self.error_code = str(detail.get("errorCode", ""))
            for violation in detail.get("fieldViolations") or []:
                if isinstance(violation, dict) and violation.get("field") == "message.token":
                    self.token_field = True

    @property
    def code(self) -> str:
        """FCM's ``errorCode`` if it gave one, else the canonical status."""
        return self.error_code or self.status or str(self.http_status)

    @property
    def about_token(self) -> bool:
        """Whether an INVALID_ARGUMENT blames the registration token (not the payload)."""
        return self.token_field or "registration token" in self.message.lower()


class FcmProvider:
    """Push to Android/iOS/web apps through FCM HTTP v1."""

    kind: ClassVar[str] = "fcm"
    channel: ClassVar[Channel] = "push"
    destinations: ClassVar[frozenset[str]] = frozenset({"fcm"})

    def __init__(self, settings: ProviderSettings, context: ProviderContext) -> None:
        self.name = settings.name or self.kind
        account_file = settings.option("service_account_file")
        if not account_file:
            raise ConfigError("fcm needs service_account_file", "service_account_file")
        path = resolve_path(str(account_file), context.base_dir)
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot read service account file {path}", "service_account_file"
            ) from exc
        self.project_id = str(settings.option("project_id") or info.get("project_id") or "")
        if not self.project_id:
            raise ConfigError("service account has no project_id", "service_account_file")
        token_uri = str(
            settings.option("token_uri")
            or info.get("token_uri")
            or "https://oauth2.googleapis.com/token"
        )
        base_url = str(settings.option("base_url", "https://fcm.googleapis.com")).rstrip("/")
        self.send_url = f"{base_url}/v1/projects/{self.project_id}/messages:send"
        self.client = make_client(
            timeout=settings.timeout or context.timeout,
            http2=bool(settings.option("http2", False)),
            max_connections=int(settings.option("connections", 100)),
        )
        self.tokens = ServiceAccountTokens(info, self.client, token_uri=token_uri, name=self.name)

    @property
    def tokens_minted(self) -> int:
        """How many OAuth access tokens this provider has minted."""
        return self.tokens.tokens_minted

    def payload(self, message: Message) -> dict[str, Any]:
        """The ``messages:send`` body for ``message``."""
        high = message.priority == "high"
        notification: dict[str, Any] = {"title": message.title, "body": message.body}
        if image := message.content.get("image"):
            notification["image"] = str(image)
        android: dict[str, Any] = {"priority": "HIGH" if high else "NORMAL"}
        apns_headers = {"apns-priority": "10" if high else "5"}
        webpush_headers: dict[str, str] = {"Urgency": "high" if high else message.priority}
        if message.subject:
            android["collapse_key"] = message.subject
            apns_headers["apns-collapse-id"] = message.subject[:64]
            webpush_headers["Topic"] = message.subject[:32]
        if message.ttl is not None:
            android["ttl"] = f"{max(0, int(message.ttl))}s"
            apns_headers["apns-expiration"] = str(int(time.time() + message.ttl))
            webpush_headers["TTL"] = str(max(0, int(message.ttl)))
        apns: dict[str, Any] = {"headers": apns_headers}
        if message.category:
            apns["payload"] = {"aps": {"thread-id": message.category}}
        webpush: dict[str, Any] = {"headers": webpush_headers}
        if url := message.content.get("url"):
            webpush["fcm_options"] = {"link": str(url)}
        body: dict[str, Any] = {
            "token": message.destination.address,
            "notification": notification,
            "android": merge(android, message.content.get("android") or {}),
            "apns": merge(apns, message.content.get("apns") or {}),
            "webpush": merge(webpush, message.content.get("webpush") or {}),
        }
        if message.data:
            body["data"] = string_map(message.data)
        return {"message": body}

    async def send(self, message: Message) -> Receipt:
        """Send one message to one registration token."""
        body = self.payload(message)
        for attempt in (1, 2):
            access = await self.tokens.get()
            async with transport_errors(self.name):
                response = await self.client.post(
                    self.send_url, json=body, headers={"Authorization": f"Bearer {access}"}
                )
            if response.status_code == 200:
                name = response.json().get("name")
                return Receipt(status="sent", provider_message_id=str(name) if name else None)
            error = FcmError(response)
            if response.status_code == 401 and error.code != "THIRD_PARTY_AUTH_ERROR":
                if attempt == 1:  # the access token was revoked or expired early: mint, retry
                    self.tokens.invalidate(access)
                    continue
            self._raise(response, error, message.destination.address)
        raise AssertionError("unreachable")  # pragma: no cover

    def _raise(self, response: httpx.Response, error: FcmError, token: str) -> None:
        status = response.status_code
        text = f"{self.name}: FCM {status} {error.code}"
        detail = error.message.replace(token, "<token>") if token else error.message
        if error.error_code == "UNREGISTERED" or status == 404:
            raise DestinationGone(f"{text}: registration token is no longer valid", code=error.code)
        if status == 400 and error.status == "INVALID_ARGUMENT" and error.about_token:
            raise DestinationGone(f"{text}: invalid registration token", code=error.code)
        retry_after = retry_after_seconds(response.headers.get("retry-after"))
        if status == 429 or error.error_code == "QUOTA_EXCEEDED":
            raise TransientProviderError(
                f"{text}: quota exceeded",
                retry_after=retry_after if retry_after is not None else QUOTA_BACKOFF,
                code=error.code,
            )
        if status >= 500 or error.code in ("UNAVAILABLE", "INTERNAL"):
            raise TransientProviderError(
                f"{text}: {detail}", retry_after=retry_after, code=error.code
            )
        raise PermanentProviderError(f"{text}: {detail}", code=error.code)

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self.client.aclose()
