"""Huawei Push Kit (HMS): ``POST {base_url}/v1/{app_id}/messages:send``.

Auth is OAuth 2.0 client credentials: ``client_id`` and ``client_secret`` are traded at
``token_url`` for a bearer token (an hour's lifetime), cached and shared by every send. Answers
carry Huawei's result ``code`` (Push Kit's server API reference, "Response Codes"):
``80000000`` is success; ``80200001`` (OAuth authentication error) and ``80200003`` (OAuth
token expired), both HTTP 401, mean the token was refused (renewed once); ``80300007`` (all
tokens invalid) and a partial success ``80100000`` whose ``msg`` lists the token among the
``illegal_tokens`` mean the device token is dead; HTTP 503 is Huawei's flow control and
``81000001`` an internal error (both retried). Transactional messages carry the
self-classification ``android.category`` Huawei requires for service messages (``EXPRESS``
for shipping, ``FINANCE`` for money, ``ACCOUNT`` otherwise).
"""

from __future__ import annotations

from typing import Any, ClassVar

from tidings.channels.base import Channel, Message, ProviderContext, Receipt
from tidings.channels.makers import (
    Answer,
    Outcomes,
    ServiceProvider,
    base_url,
    click_link,
    notify_id,
    required,
    transactional,
)
from tidings.channels.tokens import AccessTokens, with_token
from tidings.config import ProviderSettings

TOKEN_URL = "https://oauth-login.cloud.huawei.com/oauth2/v3/token"
SUCCESS = "80000000"
PARTIAL = "80100000"
OUTCOMES = Outcomes(
    "Huawei",
    codes={"80200001": "token", "80200003": "token", "80300007": "gone", "81000001": "busy"},
    statuses={401: "token", 429: "limit", 503: "limit"},
)
OAUTH = Outcomes("Huawei", statuses={429: "limit"})


def category(message: Message) -> str:
    """Huawei's self-classification of a transactional e-commerce message."""
    kind = message.event_type
    if kind in ("order.shipped", "order.delivered"):
        return "EXPRESS"
    if kind.startswith(("payment.", "refund.")) or kind == "order.paid":
        return "FINANCE"
    return "ACCOUNT"


class HmsProvider(ServiceProvider):
    """Push to Huawei phones through Push Kit."""

    kind: ClassVar[str] = "hms"
    channel: ClassVar[Channel] = "push"
    destinations: ClassVar[frozenset[str]] = frozenset({"hms"})

    def __init__(self, settings: ProviderSettings, context: ProviderContext) -> None:
        super().__init__(settings, context)
        self.app_id, client_id, client_secret = required(
            settings, self.kind, ("app_id", "client_id", "client_secret")
        )
        self.token_url = str(settings.option("token_url") or TOKEN_URL)
        self._token_form = {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": client_secret,
        }
        base = base_url(settings, "https://push-api.cloud.huawei.com")
        self.send_url = f"{base}/v1/{self.app_id}/messages:send"
        self.tokens = AccessTokens(self._fetch_token)

    async def _fetch_token(self) -> tuple[str, float]:
        answer = await self.client.post_form(self.token_url, self._token_form)
        body = answer.body
        if answer.status == 200 and body.get("access_token"):
            return str(body["access_token"]), float(body.get("expires_in", 3600))
        reason = f"{body.get('error', '')} {body.get('error_description', '')}".strip()
        OAUTH.fail(self.name, answer, "", f"OAuth: {reason}", step="token")

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
        device = message.destination.address

        async def call(token: str) -> Receipt:
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
            answer = await self.client.post_json(self.send_url, payload, headers)
            return self._receipt(answer, device)

        return await with_token(self.tokens, self.name, call)

    def _receipt(self, answer: Answer, device: str) -> Receipt:
        body = answer.body
        code = str(body.get("code", ""))
        if answer.status == 200 and code == SUCCESS:
            request_id = body.get("requestId")
            return Receipt(provider_message_id=str(request_id) if request_id else None)
        msg = str(body.get("msg", ""))
        # one token, named among the illegal ones of a partial success, is dead
        dead = code == PARTIAL and device in msg
        # ... and the error never keeps it
        detail = msg.replace(device, "<token>")[:200]
        OUTCOMES.fail(self.name, answer, code, detail, meaning="gone" if dead else None)
