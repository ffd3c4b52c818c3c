"""OPPO Push: a signed ``/server/v1/auth`` call for an ``auth_token``, then unicast messages.

``POST {base_url}/server/v1/auth`` takes ``app_key``, ``timestamp`` (milliseconds) and
``sign = sha256(app_key + timestamp + master_secret)`` in hex; the ``auth_token`` it returns
lives 24 hours and is cached. ``POST {base_url}/server/v1/message/notification/unicast``
carries it in the ``auth_token`` header and the message as the ``message`` form field (JSON):
``target_type 2`` (a registration id), the notification with its click action
(``click_action_type 0`` opens the app, ``5`` an intent URI), the ``category`` and
``notify_level`` OPPO requires of transactional messages (``ORDER``, shade + lock screen),
``off_line_ttl`` and ``app_message_id`` (OPPO drops a repeated one: the delivery id).
Codes (OPPO PUSH's "call addresses, common parameters and return codes"): ``0`` success,
``11`` an invalid auth token (renewed once), ``-2`` flow control, ``13`` and ``55`` call
limits and ``33`` the daily message quota (rate limited), ``-1`` unavailable (retried);
``10000`` a dead registration id.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, ClassVar

from tidings.channels.base import Channel, Message, ProviderContext, Receipt
from tidings.channels.makers import (
    FORM,
    Outcomes,
    ServiceProvider,
    base_url,
    click_link,
    clip,
    compact,
    form_body,
    required,
    transactional,
)
from tidings.channels.tokens import AccessTokens, with_token
from tidings.config import ProviderSettings

TOKEN_LIFETIME = 24 * 3600.0
OUTCOMES = Outcomes(
    "OPPO",
    codes={
        "11": "token",  # Invalid AuthToken
        "10000": "gone",  # Invalid RegistrationId
        "-2": "limit",  # Service in Flow Control
        "13": "limit",  # App Call Limited
        "33": "limit",  # The number of messages exceeds the daily limit
        "55": "limit",  # App Call Frequency Limit
        "-1": "busy",  # Service Currently Unavailable
    },
    statuses={429: "limit"},
    backoff={"-2": 10.0, "55": 10.0, "33": 3600.0},
    gone_reason="registration id no longer valid",
)


def auth_sign(app_key: str, timestamp: str, master_secret: str) -> str:
    """OPPO's auth signature: hex sha256 of ``app_key + timestamp + master_secret``."""
    return hashlib.sha256(f"{app_key}{timestamp}{master_secret}".encode()).hexdigest()


class OppoProvider(ServiceProvider):
    """Push to OPPO (and OnePlus, realme) phones through OPPO Push."""

    kind: ClassVar[str] = "oppo"
    channel: ClassVar[Channel] = "push"
    destinations: ClassVar[frozenset[str]] = frozenset({"oppo"})

    def __init__(self, settings: ProviderSettings, context: ProviderContext) -> None:
        super().__init__(settings, context)
        self.app_key, self.master_secret = required(
            settings, self.kind, ("app_key", "master_secret")
        )
        self.channel_id = settings.option("channel_id")
        base = base_url(settings, "https://api.push.oppomobile.com")
        self.auth_url = f"{base}/server/v1/auth"
        self.send_url = f"{base}/server/v1/message/notification/unicast"
        self.tokens = AccessTokens(self._fetch_token)

    async def _fetch_token(self) -> tuple[str, float]:
        timestamp = str(int(time.time() * 1000))
        form = {
            "app_key": self.app_key,
            "timestamp": timestamp,
            "sign": auth_sign(self.app_key, timestamp, self.master_secret),
        }
        answer = await self.client.post_form(self.auth_url, form)
        body, data = answer.body, answer.body.get("data")
        if body.get("code") == 0 and isinstance(data, dict) and data.get("auth_token"):
            return str(data["auth_token"]), TOKEN_LIFETIME
        code = str(body.get("code", ""))
        OUTCOMES.fail(self.name, answer, code, str(body.get("message", "")), step="auth")

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
        body = form_body({"message": compact(self.message_json(message))})

        async def call(token: str) -> Receipt:
            headers = {"Content-Type": FORM, "auth_token": token}
            answer = await self.client.post(self.send_url, body, headers)
            code = answer.body.get("code")
            if answer.status == 200 and code == 0:
                data = answer.body.get("data") or {}
                message_id = data.get("messageId") if isinstance(data, dict) else None
                return Receipt(provider_message_id=str(message_id) if message_id else None)
            detail = str(answer.body.get("message", ""))
            OUTCOMES.fail(self.name, answer, "" if code is None else str(code), detail)

        return await with_token(self.tokens, self.name, call)
