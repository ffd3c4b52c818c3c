"""A fake Twilio Messages API that checks what Twilio checks and answers Twilio's JSON.

HTTP basic auth (account SID + auth token), a form body with ``To``/``From``/``Body``,
E.164 numbers, the sender being one of the account's numbers, the 1600-character limit.
Errors are Twilio's ``{"code", "message", "more_info", "status"}`` bodies.
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

E164 = re.compile(r"^\+[1-9]\d{6,14}$")


def twilio_error(status: int, code: int, message: str, **headers: str) -> JSONResponse:
    """Twilio's REST error body."""
    return JSONResponse(
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        status_code=status,
        headers=headers or None,
    )


@dataclass
class TwilioServer:
    """State and ASGI app of the fake; tests mark numbers and read the sent messages."""

    account_sid: str = "AC" + "0" * 32
    auth_token: str = "secret-token"
    numbers: set[str] = field(default_factory=lambda: {"+15550000000"})
    latency: float = 0.0
    landlines: set[str] = field(default_factory=set)
    throttled: set[str] = field(default_factory=set)
    failing: set[str] = field(default_factory=set)
    sent: list[dict[str, str]] = field(default_factory=list)
    sends: int = 0

    def authorized(self, request: Request) -> bool:
        value = request.headers.get("authorization", "")
        if not value.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(value[6:]).decode().partition(":")
        except ValueError:
            return False
        return secrets.compare_digest(user, self.account_sid) and secrets.compare_digest(
            password, self.auth_token
        )

    async def messages(self, request: Request) -> Response:
        if self.latency:
            await asyncio.sleep(self.latency)
        if request.path_params["sid"] != self.account_sid or not self.authorized(request):
            return twilio_error(401, 20003, "Authenticate")
        if not request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            return twilio_error(400, 20001, "Unsupported content type")
        # parsed by hand: python-multipart is not a dependency
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        to, sender, body = form.get("To"), form.get("From"), form.get("Body")
        if not to:
            return twilio_error(400, 21604, "A 'To' phone number is required.")
        if not E164.match(to):
            return twilio_error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if not sender or sender not in self.numbers:
            return twilio_error(
                400,
                21606,
                f"The From phone number {sender} is not a valid, SMS-capable inbound phone "
                "number or short code for your account.",
            )
        if not body:
            return twilio_error(400, 21602, "Message body is required.")
        if len(body) > 1600:
            return twilio_error(
                400, 21617, "The concatenated message body exceeds the 1600 character limit."
            )
        if to in self.landlines:
            return twilio_error(400, 21614, f"'To' number {to} is not a valid mobile number")
        if to in self.throttled:
            return twilio_error(429, 20429, "Too Many Requests", **{"Retry-After": "5"})
        if to in self.failing:
            return twilio_error(500, 20500, "An internal server error has occurred")
        sid = "SM" + secrets.token_hex(16)
        self.sends += 1
        if len(self.sent) < 10_000:
            self.sent.append(form)
        return JSONResponse(self.resource(sid, to, sender, body), status_code=201)

    def resource(self, sid: str, to: str, sender: str, body: str) -> dict[str, Any]:
        """The Message resource Twilio answers a create with."""
        now = formatdate(usegmt=True)
        return {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": sender,
            "messaging_service_sid": None,
            "num_media": "0",
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued",
            "to": to,
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
        }

    async def stats(self, request: Request) -> Response:
        return JSONResponse({"sends": self.sends})

    def app(self) -> Starlette:
        """The ASGI app: ``POST /2010-04-01/Accounts/{sid}/Messages.json``."""
        return Starlette(
            routes=[
                Route("/2010-04-01/Accounts/{sid}/Messages.json", self.messages, methods=["POST"]),
                Route("/_fake/stats", self.stats),
            ]
        )
