"""vivo Push: a signed ``/message/auth`` call for an ``authToken``, then ``/message/send``.

``POST {base_url}/message/auth`` takes ``{appId, appKey, timestamp, sign}`` with
``sign = md5(app_id + app_key + timestamp + app_secret)`` (lower-case hex, the timestamp in
milliseconds); the ``authToken`` it returns lives a day and is cached.
``POST {base_url}/message/send`` carries it in the ``authToken`` header and one message:
``regId``, ``title``/``content`` (vivo's lengths), ``skipType`` (``1`` opens the app, ``4``
an intent URI in ``skipContent``), ``classification 1`` with ``category ORDER`` for
transactional messages (vivo's system messages, not quota'd as marketing), ``timeToLive``
and ``requestId`` (vivo drops a repeated one: the delivery id). Results (vivo's server API):
``0`` success, ``10000`` a refused token (renewed once), ``10302`` a regId that cannot be
reached (with ``invalidUser``), ``10070`` the day's total (do not call again today) and
``10072`` too fast: rate limits.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, ClassVar

from tidings.channels.base import Channel, Message, ProviderContext, Receipt
from tidings.channels.makers import (
    JSON,
    Outcomes,
    ServiceProvider,
    base_url,
    click_link,
    clip,
    required,
    transactional,
)
from tidings.channels.tokens import AccessTokens, with_token
from tidings.config import ProviderSettings

TOKEN_LIFETIME = 24 * 3600.0
TTL_RANGE = (60, 7 * 24 * 3600)
OUTCOMES = Outcomes(
    "vivo",
    codes={"10000": "token", "10302": "gone", "10070": "limit", "10072": "limit"},
    statuses={429: "limit"},
    backoff={"10070": 3600.0, "10072": 10.0},
    gone_reason="regId no longer valid",
)


def auth_sign(app_id: str, app_key: str, timestamp: str, app_secret: str) -> str:
    """vivo's auth signature: lower-case hex md5 of ``app_id + app_key + timestamp + secret``."""
    text = f"{app_id}{app_key}{timestamp}{app_secret}"
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


class VivoProvider(ServiceProvider):
    """Push to vivo (and iQOO) phones through vivo Push."""

    kind: ClassVar[str] = "vivo"
    channel: ClassVar[Channel] = "push"
    destinations: ClassVar[frozenset[str]] = frozenset({"vivo"})

    def __init__(self, settings: ProviderSettings, context: ProviderContext) -> None:
        super().__init__(settings, context)
        self.app_id, self.app_key, self.app_secret = required(
            settings, self.kind, ("app_id", "app_key", "app_secret")
        )
        # vivo's app ids are numbers, sent as such
        self._app_id: int | str = int(self.app_id) if self.app_id.isdigit() else self.app_id
        base = base_url(settings, "https://api-push.vivo.com.cn")
        self.auth_url = f"{base}/message/auth"
        self.send_url = f"{base}/message/send"
        self.tokens = AccessTokens(self._fetch_token)

    async def _fetch_token(self) -> tuple[str, float]:
        timestamp = str(int(time.time() * 1000))
        body = {
            "appId": self._app_id,
            "appKey": self.app_key,
            "timestamp": int(timestamp),
            "sign": auth_sign(self.app_id, self.app_key, timestamp, self.app_secret),
        }
        answer = await self.client.post_json(self.auth_url, body)
        if answer.body.get("result") == 0 and answer.body.get("authToken"):
            return str(answer.body["authToken"]), TOKEN_LIFETIME
        result = str(answer.body.get("result", ""))
        OUTCOMES.fail(self.name, answer, result, str(answer.body.get("desc", "")), step="auth")

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
            headers = {"Content-Type": JSON, "authToken": token}
            answer = await self.client.post_json(self.send_url, payload, headers)
            result = answer.body.get("result")
            if answer.status == 200 and result == 0:
                task = answer.body.get("taskId")
                return Receipt(provider_message_id=str(task) if task else None)
            # desc names a field, never the regId (invalidUser, which does, is not kept)
            detail = str(answer.body.get("desc", ""))
            OUTCOMES.fail(self.name, answer, "" if result is None else str(result), detail)

        return await with_token(self.tokens, self.name, call)
