"""vivo Push: a signed ``/message/auth`` call for an ``authToken``, then ``/message/send``.

``POST {base_url}/message/auth`` takes ``{appId, appKey, timestamp, sign}`` with
``sign = md5(app_id + app_key + timestamp + app_secret)`` (lower-case hex, the timestamp in
milliseconds); the ``authToken`` it returns lives a day and is cached.
``POST {base_url}/message/send`` carries it in the ``authToken`` header and one message:
``regId``, ``title``/``content`` (vivo's lengths), ``skipType`` (``1`` opens the app, ``4``
an intent URI in ``skipContent``), ``classification 1`` with ``category ORDER`` for
transactional messages (vivo's system messages, not quota'd as marketing), ``timeToLive``
and ``requestId`` (vivo drops a repeated one: the delivery id). Results: ``0`` success,
``10000`` a refused token (renewed once), ``10302`` a dead regId, ``10070`` (daily total)
and ``10072`` (too fast) rate limits.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, ClassVar

import httpx

from tidings.channels.base import Channel, Message, ProviderContext, Receipt
from tidings.channels.http import json_object, make_client, transport_errors
from tidings.channels.makers import click_link, clip, transactional
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
AUTH_FAILED = 10000
INVALID_REG_ID = 10302
TOTAL_LIMIT = 10070
TOO_FAST = 10072
TTL_RANGE = (60, 7 * 24 * 3600)


def auth_sign(app_id: str, app_key: str, timestamp: str, app_secret: str) -> str:
    """vivo's auth signature: lower-case hex md5 of ``app_id + app_key + timestamp + secret``."""
    text = f"{app_id}{app_key}{timestamp}{app_secret}"
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


class VivoProvider:
    """Push to vivo (and iQOO) phones through vivo Push."""

    kind: ClassVar[str] = "vivo"
    channel: ClassVar[Channel] = "push"
    destinations: ClassVar[frozenset[str]] = frozenset({"vivo"})

    def __init__(self, settings: ProviderSettings, context: ProviderContext) -> None:
        self.name = settings.name or self.kind
        missing = [k for k in ("app_id", "app_key", "app_secret") if not settings.option(k)]
        if missing:
            raise ConfigError(f"vivo needs {', '.join(missing)}", missing[0])
        self.app_id = str(settings.option("app_id"))
        self.app_key = str(settings.option("app_key"))
        self.app_secret = str(settings.option("app_secret"))
        base_url = str(settings.option("base_url", "https://api-push.vivo.com.cn")).rstrip("/")
        self.auth_url = f"{base_url}/message/auth"
        self.send_url = f"{base_url}/message/send"
        self.client = make_client(
            timeout=settings.timeout or context.timeout,
            max_connections=int(settings.option("connections", 100)),
        )
        self.tokens = AccessTokens(self._fetch_token)

    @property
    def _app_id(self) -> int | str:
        return int(self.app_id) if self.app_id.isdigit() else self.app_id

    async def _fetch_token(self) -> tuple[str, float]:
        timestamp = str(int(time.time() * 1000))
        body = {
            "appId": self._app_id,
            "appKey": self.app_key,
            "timestamp": int(timestamp),
            "sign": auth_sign(self.app_id, self.app_key, timestamp, self.app_secret),
        }
        async with transport_errors(self.name):
            response = await self.client.post(self.auth_url, json=body)
        answer = json_object(response)
        if answer.get("result") == 0 and answer.get("authToken"):
            return str(answer["authToken"]), TOKEN_LIFETIME
        self._raise(response, answer, "auth")
        raise AssertionError("unreachable")  # pragma: no cover

    def payload(self, message: Message) -> dict[str, Any]:
        """The ``/message/send`` body for one regId."""
        link = click_link(message)
        body: dict[str, Any] = {
            "appId": self._app_id,
            "regId": message.destination.address,
            "notifyType": 4,  # sound and vibration
            "title": clip(message.title, 40),
            "content": clip(message.body, 100),
            "skipType": 4 if link else 1,
            "networkType": -1,
            "classification": 1 if transactional(message) else 0,
            "requestId": message.delivery_id,
            "pushMode": 0,
        }
        if link:
            body["skipContent"] = link
        if transactional(message):
            body["category"] = "ORDER"
        if message.ttl is not None:
            low, high = TTL_RANGE
            body["timeToLive"] = min(high, max(low, int(message.ttl)))
        return body

    async def send(self, message: Message) -> Receipt:
        """Send one notification to one regId."""
        payload = self.payload(message)

        async def call(token: str) -> Receipt:
            async with transport_errors(self.name):
                response = await self.client.post(
                    self.send_url, json=payload, headers={"authToken": token}
                )
            answer = json_object(response)
            if response.status_code == 200 and answer.get("result") == 0:
                task = answer.get("taskId")
                return Receipt(provider_message_id=str(task) if task else None)
            self._raise(response, answer, "send")
            raise AssertionError("unreachable")  # pragma: no cover

        return await with_token(self.tokens, self.name, call)

    def _raise(self, response: httpx.Response, answer: dict[str, Any], step: str) -> None:
        result = answer.get("result")
        text = f"{self.name}: vivo {step} {response.status_code} result {result}"
        text = f"{text} {answer.get('desc', '')}".rstrip()[:300]
        if result == AUTH_FAILED and step == "send":
            raise TokenRejected(text)
        if result == INVALID_REG_ID:
            raise DestinationGone(f"{text} (regId no longer valid)", code=str(result))
        if result in (TOTAL_LIMIT, TOO_FAST) or response.status_code == 429:
            wait = 3600.0 if result == TOTAL_LIMIT else 10.0
            raise RateLimited(text, retry_after=wait, code=str(result))
        if response.status_code >= 500:
            raise TransientProviderError(text, code=str(result or response.status_code))
        raise PermanentProviderError(text, code=str(result or response.status_code))

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self.client.aclose()
