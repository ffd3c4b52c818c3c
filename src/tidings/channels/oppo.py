"""OPPO Push: a signed ``/server/v1/auth`` call for an ``auth_token``, then unicast messages.

``POST {base_url}/server/v1/auth`` takes ``app_key``, ``timestamp`` (milliseconds) and
``sign = sha256(app_key + timestamp + master_secret)`` in hex; the ``auth_token`` it returns
lives 24 hours and is cached. ``POST {base_url}/server/v1/message/notification/unicast``
carries it in the ``auth_token`` header and the message as the ``message`` form field (JSON):
``target_type 2`` (a registration id), the notification with its click action
(``click_action_type 0`` opens the app, ``5`` an intent URI), the ``category`` and
``notify_level`` OPPO requires of transactional messages (``ORDER``, shade + lock screen),
``off_line_ttl`` and ``app_message_id`` (OPPO drops a repeated one: the delivery id).
Codes: ``0`` success, ``11`` a refused token (renewed once), ``10000`` a dead registration
id, ``-2`` flow control and ``33`` the daily quota (rate limited), ``-1`` unavailable.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, ClassVar

import httpx

from tidings.channels.base import Channel, Message, ProviderContext, Receipt
from tidings.channels.http import json_object, make_client, transport_errors
from tidings.channels.makers import click_link, clip, compact, transactional
from tidings.channels.tokens import AccessTokens, TokenRejected, with_token
from tidings.config import ProviderSettings
from tidings.errors import (
    ConfigError,
    DestinationGone,
    PermanentProviderError,
    RateLimited,
    TransientProviderError,
)

TOKEN_LIFETIME = 24 * 3600.0
INVALID_AUTH_TOKEN = 11
INVALID_REGISTRATION_ID = 10000
FLOW_CONTROL = -2
DAILY_LIMIT = 33
UNAVAILABLE = -1
FLOW_BACKOFF = 10.0
DAILY_BACKOFF = 3600.0


def auth_sign(app_key: str, timestamp: str, master_secret: str) -> str:
    """OPPO's auth signature: hex sha256 of ``app_key + timestamp + master_secret``."""
    return hashlib.sha256(f"{app_key}{timestamp}{master_secret}".encode()).hexdigest()


class OppoProvider:
    """Push to OPPO (and OnePlus, realme) phones through OPPO Push."""

    kind: ClassVar[str] = "oppo"
    channel: ClassVar[Channel] = "push"
    destinations: ClassVar[frozenset[str]] = frozenset({"oppo"})

    def __init__(self, settings: ProviderSettings, context: ProviderContext) -> None:
        self.name = settings.name or self.kind
        missing = [k for k in ("app_key", "master_secret") if not settings.option(k)]
        if missing:
            raise ConfigError(f"oppo needs {', '.join(missing)}", missing[0])
        self.app_key = str(settings.option("app_key"))
        self.master_secret = str(settings.option("master_secret"))
        self.channel_id = settings.option("channel_id")
        base_url = str(settings.option("base_url", "https://api.push.oppomobile.com")).rstrip("/")
        self.auth_url = f"{base_url}/server/v1/auth"
        self.send_url = f"{base_url}/server/v1/message/notification/unicast"
        self.client = make_client(
            timeout=settings.timeout or context.timeout,
            max_connections=int(settings.option("connections", 100)),
        )
        self.tokens = AccessTokens(self._fetch_token)

    async def _fetch_token(self) -> tuple[str, float]:
        timestamp = str(int(time.time() * 1000))
        form = {
            "app_key": self.app_key,
            "timestamp": timestamp,
            "sign": auth_sign(self.app_key, timestamp, self.master_secret),
        }
        async with transport_errors(self.name):
            response = await self.client.post(self.auth_url, data=form)
        body = json_object(response)
        data = body.get("data")
        if body.get("code") == 0 and isinstance(data, dict) and data.get("auth_token"):
            return str(data["auth_token"]), TOKEN_LIFETIME
        self._raise(response, body, "auth")
        raise AssertionError("unreachable")  # pragma: no cover

    def message_json(self, message: Message) -> dict[str, Any]:
        """The ``message`` form field: target and notification."""
        link = click_link(message)
        notification: dict[str, Any] = {
            "title": clip(message.title, 50),
            "content": clip(message.body, 200),
            "click_action_type": 5 if link else 0,
            "app_message_id": message.delivery_id,
        }
        if link:
            notification["click_action_url"] = link
        if transactional(message):
            notification["category"] = "ORDER"
            notification["notify_level"] = 2  # shade and lock screen
        else:
            notification["category"] = "MARKETING"
            notification["notify_level"] = 1  # shade only
        if self.channel_id:
            notification["channel_id"] = str(self.channel_id)
        if message.ttl is not None:
            notification["off_line_ttl"] = max(1, int(message.ttl))
        return {
            "target_type": 2,
            "target_value": message.destination.address,
            "notification": notification,
        }

    async def send(self, message: Message) -> Receipt:
        """Send one notification to one registration id."""
        form = {"message": compact(self.message_json(message))}

        async def call(token: str) -> Receipt:
            async with transport_errors(self.name):
                response = await self.client.post(
                    self.send_url, data=form, headers={"auth_token": token}
                )
            body = json_object(response)
            if response.status_code == 200 and body.get("code") == 0:
                data = body.get("data") or {}
                message_id = data.get("messageId") if isinstance(data, dict) else None
                return Receipt(provider_message_id=str(message_id) if message_id else None)
            self._raise(response, body, "send")
            raise AssertionError("unreachable")  # pragma: no cover

        return await with_token(self.tokens, self.name, call)

    def _raise(self, response: httpx.Response, body: dict[str, Any], step: str) -> None:
        code = body.get("code")
        text = (
            f"{self.name}: OPPO {step} {response.status_code} code {code} {body.get('message', '')}"
        )
        text = text.rstrip()[:300]
        if code == INVALID_AUTH_TOKEN and step == "send":
            raise TokenRejected(text)
        if code == INVALID_REGISTRATION_ID:
            raise DestinationGone(f"{text} (registration id no longer valid)", code=str(code))
        if code in (FLOW_CONTROL, DAILY_LIMIT) or response.status_code == 429:
            backoff = DAILY_BACKOFF if code == DAILY_LIMIT else FLOW_BACKOFF
            raise RateLimited(text, retry_after=backoff, code=str(code))
        if code == UNAVAILABLE or response.status_code >= 500:
            raise TransientProviderError(text, code=str(code))
        raise PermanentProviderError(text, code=str(code))

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self.client.aclose()
