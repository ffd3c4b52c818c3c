"""Huawei Push Kit (HMS): ``POST {base_url}/v1/{app_id}/messages:send``.

Auth is OAuth 2.0 client credentials: ``client_id`` and ``client_secret`` are traded at
``token_url`` for a bearer token (an hour's lifetime), cached and shared by every send. Answers
carry Huawei's result ``code``: ``80000000`` is success; ``80200001``/``80200003`` (HTTP 401)
mean the token was refused (renewed once); ``80300007`` (and a partial success naming the
token illegal) means the device token is dead; HTTP 503 is Huawei's flow control.
Transactional messages carry the self-classification ``android.category`` Huawei requires
for service messages (``EXPRESS`` for shipping, ``FINANCE`` for money, ``ACCOUNT`` otherwise).
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx

from tidings.channels.base import Channel, Message, ProviderContext, Receipt
from tidings.channels.http import json_object, make_client, retry_after_seconds, transport_errors
from tidings.channels.makers import click_link, notify_id, transactional
from tidings.channels.tokens import AccessTokens, TokenRejected, with_token
from tidings.config import ProviderSettings
from tidings.errors import (
    ConfigError,
    DestinationGone,
    PermanentProviderError,
    RateLimited,
    TransientProviderError,
)

TOKEN_URL = "https://oauth-login.cloud.huawei.com/oauth2/v3/token"
SUCCESS = "80000000"
PARTIAL = "80100000"
TOKEN_REFUSED = frozenset({"80200001", "80200003"})
DEAD_TOKEN = "80300007"
INTERNAL = "81000001"
FLOW_CONTROL_BACKOFF = 60.0


def category(message: Message) -> str:
    """Huawei's self-classification of a transactional e-commerce message."""
    kind = message.event_type
    if kind in ("order.shipped", "order.delivered"):
        return "EXPRESS"
    if kind.startswith(("payment.", "refund.")) or kind == "order.paid":
        return "FINANCE"
    return "ACCOUNT"


class HmsProvider:
    """Push to Huawei phones through Push Kit."""

    kind: ClassVar[str] = "hms"
    channel: ClassVar[Channel] = "push"
    destinations: ClassVar[frozenset[str]] = frozenset({"hms"})

    def __init__(self, settings: ProviderSettings, context: ProviderContext) -> None:
        self.name = settings.name or self.kind
        missing = [k for k in ("app_id", "client_id", "client_secret") if not settings.option(k)]
        if missing:
            raise ConfigError(f"hms needs {', '.join(missing)}", missing[0])
        self.app_id = str(settings.option("app_id"))
        self.client_id = str(settings.option("client_id"))
        self.client_secret = str(settings.option("client_secret"))
        self.token_url = str(settings.option("token_url") or TOKEN_URL)
        base_url = str(settings.option("base_url", "https://push-api.cloud.huawei.com"))
        self.send_url = f"{base_url.rstrip('/')}/v1/{self.app_id}/messages:send"
        self.client = make_client(
            timeout=settings.timeout or context.timeout,
            max_connections=int(settings.option("connections", 100)),
        )
        self.tokens = AccessTokens(self._fetch_token)

    async def _fetch_token(self) -> tuple[str, float]:
        form = {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self.client_secret,
        }
        async with transport_errors(self.name):
            response = await self.client.post(self.token_url, data=form)
        body = json_object(response)
        if response.status_code != 200 or "access_token" not in body:
            reason = f"{body.get('error', '')} {body.get('error_description', '')}".strip()
            text = f"{self.name}: OAuth token endpoint answered {response.status_code} {reason}"
            if response.status_code == 429 or response.status_code >= 500:
                raise TransientProviderError(text, code="oauth")
            raise PermanentProviderError(text, code="oauth")
        return str(body["access_token"]), float(body.get("expires_in", 3600))

    def payload(self, message: Message) -> dict[str, Any]:
        """The ``messages:send`` body for one device token."""
        link = click_link(message)
        notification: dict[str, Any] = {
            "title": message.title,
            "body": message.body,
            "click_action": {"type": 1, "intent": link} if link else {"type": 3},
            "notify_id": notify_id(message),
            "importance": "NORMAL" if transactional(message) else "LOW",
        }
        android: dict[str, Any] = {
            "urgency": "HIGH" if message.priority == "high" else "NORMAL",
            "bi_tag": message.delivery_id,
            "notification": notification,
        }
        if transactional(message):
            android["category"] = category(message)
        if message.ttl is not None:
            android["ttl"] = f"{max(1, int(message.ttl))}s"
        return {
            "validate_only": False,
            "message": {"token": [message.destination.address], "android": android},
        }

    async def send(self, message: Message) -> Receipt:
        """Send one notification to one Huawei device token."""
        payload = self.payload(message)

        async def call(token: str) -> Receipt:
            async with transport_errors(self.name):
                response = await self.client.post(
                    self.send_url, json=payload, headers={"Authorization": f"Bearer {token}"}
                )
            return self._receipt(response, message.destination.address)

        return await with_token(self.tokens, self.name, call)

    def _receipt(self, response: httpx.Response, token: str) -> Receipt:
        body = json_object(response)
        # a partial success's msg lists the illegal tokens: never keep one in an error
        msg = str(body.get("msg", "")).replace(token, "<token>")[:200]
        code = str(body.get("code", ""))
        status = response.status_code
        if status == 200 and code == SUCCESS:
            request_id = body.get("requestId")
            return Receipt(provider_message_id=str(request_id) if request_id else None)
        text = f"{self.name}: Huawei {status} {code or '-'} {msg}".rstrip()
        if code in TOKEN_REFUSED or status == 401:
            raise TokenRejected(text)
        if code in (DEAD_TOKEN, PARTIAL):  # one token: a partial success failed it
            raise DestinationGone(text, code=code)
        if status in (429, 503):
            retry_after = retry_after_seconds(response.headers.get("retry-after"))
            raise RateLimited(
                f"{text} (flow control)",
                retry_after=retry_after if retry_after is not None else FLOW_CONTROL_BACKOFF,
                code=code or str(status),
            )
        if status >= 500 or code == INTERNAL:
            raise TransientProviderError(text, code=code or str(status))
        raise PermanentProviderError(text, code=code or str(status))

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self.client.aclose()
