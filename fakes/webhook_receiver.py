"""A webhook endpoint that verifies Standard Webhooks signatures like a careful receiver does.

Every request is checked with the reference ``standardwebhooks`` library
(``Webhook(secret).verify``: headers present, timestamp within five minutes, HMAC matches);
a request that fails is answered ``401`` and recorded as such. Tests script the answers:
``receiver.script(Reply(500), Reply(500), Reply(200))``; once the script is used up the
receiver answers ``200``.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fakes.tls import BackgroundServer


def new_secret() -> str:
    """A fresh ``whsec_`` secret (24 random bytes, as Standard Webhooks suggests)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


@dataclass(frozen=True)
class Reply:
    """One scripted answer: a status, headers, and an optional delay before answering."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Delivery:
    """One request the receiver got."""

    webhook_id: str
    headers: dict[str, str]
    body: bytes
    payload: Any
    verified: bool
    status: int
    peer: tuple[str, int] | None


class WebhookReceiver:
    """A uvicorn-served Starlette app on 127.0.0.1 that verifies and records webhooks."""

    def __init__(self, secret: str | None = None, *, verify: bool = True) -> None:
        self.secret = secret or new_secret()
        self.verify = verify
        self._webhook = Webhook(self.secret)
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self.deliveries: list[Delivery] = []
        self.in_flight = 0
        self.max_in_flight = 0
        app = Starlette(routes=[Route("/hooks/{name}", self._receive, methods=["POST"])])
        self.server = BackgroundServer(app)
        self._running = False

    @property
    def url(self) -> str:
        """The endpoint URL to register."""
        return f"{self.server.url}/hooks/erp"

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with ``replies``, in order."""
        with self._lock:
            self._script.extend(replies)

    @property
    def ids(self) -> list[str]:
        """``webhook-id`` of every request, in arrival order."""
        with self._lock:
            return [delivery.webhook_id for delivery in self.deliveries]

    async def _receive(self, request: Request) -> Response:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(request)
        finally:
            with self._lock:
                self.in_flight -= 1

    async def _answer(self, request: Request) -> Response:
        body = await request.body()
        headers = dict(request.headers)
        payload: Any = None
        verified = False
        if self.verify:
            try:
                payload = self._webhook.verify(body, headers)
                verified = True
            except WebhookVerificationError:
                verified = False
        with self._lock:
            reply = self._script.popleft() if self._script else Reply()
            status = reply.status if verified or not self.verify else 401
            self.deliveries.append(
                Delivery(
                    headers.get("webhook-id", ""),
                    headers,
                    body,
                    payload,
                    verified,
                    status,
                    (request.client.host, request.client.port) if request.client else None,
                )
            )
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if status == 401:
            return JSONResponse({"error": "invalid signature"}, status_code=401)
        return Response(status_code=status, headers=reply.headers)

    def start(self) -> WebhookReceiver:
        """Start serving on 127.0.0.1."""
        self.server.start()
        self._running = True
        return self

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        if self._running:
            self._running = False
            self.server.stop()

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
