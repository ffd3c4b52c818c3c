"""A fake WeChat API: ``/cgi-bin/stable_token``, ``/cgi-bin/token`` and
``/cgi-bin/message/subscribe/send``.

The token endpoints check ``appid`` and ``secret`` and issue access tokens of two hours (the
stable one answers the same token while it is valid, a new one once it expired or when
``force_refresh`` asks for one);
a send checks its token (``40001`` unknown, ``42001`` expired), the openid (``40003``), the
template and its data keys (``40037``, ``47003``), and takes one of the buyer's one-time
subscriptions to the template — none left is ``43101``. Bodies are WeChat's
``{"errcode", "errmsg"}`` with the ``rid`` suffix.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

OPENID = re.compile(r"^[A-Za-z0-9_-]{28}$")


def wx_error(code: int, message: str) -> JSONResponse:
    """WeChat's error body (HTTP 200)."""
    return JSONResponse({"errcode": code, "errmsg": f"{message} rid: {secrets.token_hex(12)}"})


@dataclass
class WeChatServer:
    """State and ASGI app of the fake."""

    app_id: str = "wx1234567890abcdef"
    app_secret: str = "wechat-app-secret-0123456789abcd"
    templates: dict[str, set[str]] = field(
        default_factory=lambda: {"tmpl-order-paid": {"character_string1", "amount2", "thing3"}}
    )
    subscriptions: dict[tuple[str, str], int] = field(default_factory=dict)
    """(openid, template id) → one-time subscriptions left; ``unlimited`` ignores it."""
    unlimited: bool = False
    token_lifetime: int = 7200
    access_tokens: dict[str, float] = field(default_factory=dict)
    tokens_issued: int = 0
    limited: set[str] = field(default_factory=set)
    sent: list[dict[str, Any]] = field(default_factory=list)
    sends: int = 0

    def subscribe(self, openid: str, template_id: str, times: int = 1) -> None:
        """The buyer accepted ``times`` one-time subscriptions to ``template_id``."""
        key = (openid, template_id)
        self.subscriptions[key] = self.subscriptions.get(key, 0) + times

    stable: str | None = None
    """The current stable access token."""

    def expire_all(self) -> None:
        """Expire every issued access token (the next send gets 42001)."""
        self.access_tokens = dict.fromkeys(self.access_tokens, 0.0)

    async def token(self, request: Request) -> Response:
        query = request.query_params
        if query.get("grant_type") != "client_credential":
            return wx_error(40002, "invalid grant_type")
        if query.get("appid") != self.app_id:
            return wx_error(40013, "invalid appid")
        if query.get("secret") != self.app_secret:
            return wx_error(40125, "invalid appsecret")
        return JSONResponse({"access_token": self._issue(), "expires_in": self.token_lifetime})

    def _issue(self) -> str:
        token = secrets.token_urlsafe(48)
        self.access_tokens[token] = time.time() + self.token_lifetime
        self.tokens_issued += 1
        return token

    async def stable_token(self, request: Request) -> Response:
        """``getStableAccessToken``: POST JSON, the same token while it is valid."""
        try:
            body = json.loads(await request.body())
        except ValueError:
            return wx_error(47001, "data format error")
        if body.get("grant_type") != "client_credential":
            return wx_error(40002, "invalid grant_type")
        if body.get("appid") != self.app_id:
            return wx_error(40013, "invalid appid")
        if body.get("secret") != self.app_secret:
            return wx_error(40125, "invalid appsecret")
        current = self.stable or ""
        if body.get("force_refresh") or self.access_tokens.get(current, 0.0) < time.time():
            self.access_tokens.pop(current, None)
            current = self.stable = self._issue()
        left = int(self.access_tokens[current] - time.time())
        return JSONResponse({"access_token": current, "expires_in": left})

    async def send(self, request: Request) -> Response:
        token = request.query_params.get("access_token", "")
        if token not in self.access_tokens:
            return wx_error(40001, "invalid credential, access_token is invalid or not latest")
        if self.access_tokens[token] < time.time():
            return wx_error(42001, "access_token expired")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return wx_error(47001, "data format error")
        openid = str(body.get("touser", ""))
        if not OPENID.match(openid):
            return wx_error(40003, "invalid openid")
        template_id = str(body.get("template_id", ""))
        keys = self.templates.get(template_id)
        if keys is None:
            return wx_error(40037, "invalid template_id")
        data = body.get("data")
        if not isinstance(data, dict) or set(data) != keys:
            return wx_error(47003, f"argument invalid! data keys must be {sorted(keys)}")
        for key, value in data.items():
            if not isinstance(value, dict) or not str(value.get("value", "")).strip():
                return wx_error(47003, f"argument invalid! data.{key}.value is empty")
        if body.get("miniprogram_state", "formal") not in ("developer", "trial", "formal"):
            return wx_error(47003, "argument invalid! miniprogram_state")
        if openid in self.limited:
            return wx_error(45009, "reach max api daily quota limit")
        if not self.unlimited:
            left = self.subscriptions.get((openid, template_id), 0)
            if left <= 0:
                return wx_error(43101, "user refuse to accept the msg")
            self.subscriptions[(openid, template_id)] = left - 1
        self.sends += 1
        if len(self.sent) < 10_000:
            self.sent.append(body)
        return JSONResponse({"errcode": 0, "errmsg": "ok", "msgid": secrets.randbelow(10**18)})

    def app(self) -> Starlette:
        """The ASGI app."""
        return Starlette(
            routes=[
                Route("/cgi-bin/stable_token", self.stable_token, methods=["POST"]),
                Route("/cgi-bin/token", self.token, methods=["GET"]),
                Route("/cgi-bin/message/subscribe/send", self.send, methods=["POST"]),
            ]
        )
