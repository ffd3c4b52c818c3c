"""Fake push services of the Android makers of mainland China: Huawei, Xiaomi, OPPO, vivo.

Each checks what its service checks (credentials, the signed auth call, the token on every
send, the message fields and lengths, the classification of transactional messages) and
answers with the service's own bodies: Huawei's ``{"code": "800…", "msg"}``, Xiaomi's
``{"result", "code", "reason", "description"}``, OPPO's ``{"code", "message", "data"}`` and
vivo's ``{"result", "desc"}``. Tests mark tokens dead or rate limited and read what was sent.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


async def form_of(request: Request) -> dict[str, str]:
    """An urlencoded form (parsed by hand: python-multipart is not a dependency)."""
    return {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}


@dataclass
class MakerState:
    """What every maker fake keeps: issued tokens, marked devices, what was sent."""

    token_lifetime: float = 3600.0
    dead: set[str] = field(default_factory=set)
    limited: set[str] = field(default_factory=set)
    answers: dict[str, tuple[int, str]] = field(default_factory=dict)
    """Device token → the result code and message the service answers a send to it with."""
    access_tokens: dict[str, float] = field(default_factory=dict)
    tokens_issued: int = 0
    auth_rejections: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)
    sends: int = 0

    def issue(self) -> str:
        """A new access token, valid for :attr:`token_lifetime`."""
        token = secrets.token_urlsafe(32)
        self.access_tokens[token] = time.time() + self.token_lifetime
        self.tokens_issued += 1
        return token

    def valid(self, token: str | None) -> bool:
        """Whether ``token`` was issued and has not expired."""
        return self.access_tokens.get(token or "", 0.0) > time.time()

    def expire_all(self) -> None:
        """Make every issued token expired (the next send is refused)."""
        self.access_tokens = dict.fromkeys(self.access_tokens, 0.0)

    def record(self, message: dict[str, Any]) -> None:
        """Count (and keep the first 10,000 of) the accepted messages."""
        self.sends += 1
        if len(self.sent) < 10_000:
            self.sent.append(message)


# --- Huawei Push Kit ---------------------------------------------------------------------

HMS_CATEGORIES = frozenset(
    {"IM", "VOIP", "SUBSCRIPTION", "TRAVEL", "HEALTH", "WORK", "ACCOUNT", "EXPRESS", "FINANCE",
     "DEVICE_REMINDER", "SYSTEM_REMINDER", "MAIL", "PLAY_VOICE", "MARKETING"}
)  # fmt: skip


def hms_answer(code: str, msg: str, status: int = 400) -> JSONResponse:
    """Huawei's answer body."""
    return JSONResponse(
        {"code": code, "msg": msg, "requestId": secrets.token_hex(8)}, status_code=status
    )


@dataclass
class HmsServer(MakerState):
    """Huawei's OAuth endpoint and Push Kit ``messages:send``."""

    app_id: str = "104000001"
    client_id: str = "104000001"
    client_secret: str = "hms-client-secret-0123456789"
    partial: set[str] = field(default_factory=set)

    async def token(self, request: Request) -> Response:
        form = await form_of(request)
        if form.get("grant_type") != "client_credentials":
            return JSONResponse(
                {"error": 1102, "error_description": "unsupported grant_type"}, status_code=400
            )
        if (
            form.get("client_id") != self.client_id
            or form.get("client_secret") != self.client_secret
        ):
            self.auth_rejections += 1
            return JSONResponse(
                {"error": 1101, "sub_error": 20152, "error_description": "invalid client"},
                status_code=400,
            )
        return JSONResponse(
            {
                "access_token": self.issue(),
                "expires_in": int(self.token_lifetime),
                "token_type": "Bearer",
            }
        )

    async def send(self, request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return hms_answer("80200001", "Oauth authentication error", 401)
        if not self.valid(auth[7:]):
            return hms_answer("80200003", "Oauth Token expired.", 401)
        if request.path_params["app_id"] != self.app_id:
            return hms_answer(
                "80300002", "There is no permission to send a message to a specified device", 403
            )
        try:
            body = json.loads(await request.body())
            message = body["message"]
        except (ValueError, KeyError, TypeError):
            return hms_answer("80100003", "Incorrect message structure")
        problem = self.check(message)
        if problem:
            return hms_answer("80100003", f"Illegal payload, {problem}")
        token = message["token"][0]
        if token in self.dead:
            return hms_answer("80300007", "All the tokens are invalid")
        if token in self.partial:  # one of several tokens illegal: Huawei names it in msg
            body = {"success": 0, "failure": 1, "illegal_tokens": [token]}
            return hms_answer("80100000", json.dumps(body), 200)
        if token in self.limited:  # flow control is HTTP 503, whatever the body says
            return Response("Service Unavailable", status_code=503, media_type="text/plain")
        self.record(message)
        return hms_answer("80000000", "Success", 200)

    def check(self, message: Any) -> str | None:
        """Push Kit's checks of a notification message; ``None`` when it is acceptable."""
        tokens = message.get("token")
        if not isinstance(tokens, list) or not 1 <= len(tokens) <= 1000:
            return "the number of tokens must be 1 to 1000"
        android = message.get("android") or {}
        notification = android.get("notification") or {}
        if not notification.get("title") or not notification.get("body"):
            return "title and body are mandatory"
        click = notification.get("click_action") or {}
        kind = click.get("type")
        if kind not in (1, 2, 3, 4):
            return "click_action.type must be 1 to 4"
        if kind == 1 and not (click.get("intent") or click.get("action")):
            return "click_action type 1 needs intent or action"
        notify = notification.get("notify_id", 0)
        if not isinstance(notify, int) or not 0 <= notify <= 2**31 - 1:
            return "notify_id must be a non-negative int32"
        importance = notification.get("importance", "NORMAL")
        if importance not in ("LOW", "NORMAL"):
            return "importance must be LOW or NORMAL"
        if importance == "NORMAL" and android.get("category") not in HMS_CATEGORIES:
            return "a NORMAL message needs a self-classification category"
        if android.get("urgency", "NORMAL") not in ("HIGH", "NORMAL"):
            return "urgency must be HIGH or NORMAL"
        ttl = str(android.get("ttl", "86400s"))
        if not ttl.endswith("s") or not ttl[:-1].isdigit():
            return "ttl must be like 86400s"
        return None

    def app(self) -> Starlette:
        """The ASGI app: the OAuth token endpoint and ``messages:send``."""
        return Starlette(
            routes=[
                Route("/oauth2/v3/token", self.token, methods=["POST"]),
                Route("/v1/{app_id}/messages:send", self.send, methods=["POST"]),
            ]
        )


# --- Xiaomi MiPush -----------------------------------------------------------------------


def mi_error(code: int, reason: str, description: str) -> JSONResponse:
    """MiPush's error body."""
    return JSONResponse(
        {"result": "error", "reason": reason, "trace_id": secrets.token_hex(10), "code": code,
         "description": description}
    )  # fmt: skip


@dataclass
class XiaomiServer(MakerState):
    """MiPush ``/v3/message/regid``."""

    app_secret: str = "mi-app-secret-0123456789=="
    package_name: str = "com.shop.app"
    channels: set[str] = field(default_factory=lambda: {"orders"})

    async def send(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"key={self.app_secret}":
            self.auth_rejections += 1
            return mi_error(21301, "Invalid app secret", "认证失败")
        form = await form_of(request)
        problem = self.check(form)
        if problem:
            return mi_error(10017, problem, "非法参数")
        regid = form["registration_id"]
        if regid in self.dead:
            return mi_error(20301, "No valid targets!", "发送消息失败")
        if regid in self.limited:
            return mi_error(200002, "Exceeded the daily message limit for this app", "发送消息失败")
        if regid in self.answers:
            code, description = self.answers[regid]
            return mi_error(code, description, description)
        self.record(form)
        return JSONResponse(
            {"result": "ok", "trace_id": secrets.token_hex(10), "code": 0,
             "data": {"id": "scm01" + secrets.token_hex(10)}, "description": "成功",
             "info": "Received push messages for 1 REGID"}
        )  # fmt: skip

    def check(self, form: dict[str, str]) -> str | None:
        """MiPush's parameter checks; ``None`` when acceptable."""
        if not form.get("registration_id"):
            return "registration_id is required"
        if form.get("restricted_package_name") != self.package_name:
            return "restricted_package_name does not match the app"
        if form.get("pass_through", "0") not in ("0", "1"):
            return "pass_through must be 0 or 1"
        title, description = form.get("title", ""), form.get("description", "")
        if (
            not title.strip()
            or len(title) >= 50 + 1
            or not description.strip()
            or len(description) > 128
        ):
            return "title (< 50) and description (< 128) are required"
        if not form.get("notify_id", "0").isdigit():
            return "notify_id must be a non-negative int"
        effect = form.get("extra.notify_effect", "1")
        if effect not in ("1", "2", "3"):
            return "extra.notify_effect must be 1, 2 or 3"
        if effect == "2" and not form.get("extra.intent_uri"):
            return "extra.notify_effect 2 needs extra.intent_uri"
        channel = form.get("extra.channel_id")
        if channel is not None and channel not in self.channels:
            return f"channel_id {channel} is not registered"
        return None

    def app(self) -> Starlette:
        """The ASGI app: ``/v3/message/regid``."""
        return Starlette(routes=[Route("/v3/message/regid", self.send, methods=["POST"])])


# --- OPPO Push ---------------------------------------------------------------------------

OPPO_CATEGORIES = frozenset(
    {"IM", "ACCOUNT", "DEVICE_REMINDER", "ORDER", "TODO", "SUBSCRIPTION", "NEWS", "CONTENT",
     "MARKETING", "SOCIAL"}
)  # fmt: skip


def oppo_answer(code: int, message: str, data: Any = None) -> JSONResponse:
    """OPPO's answer body."""
    body: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        body["data"] = data
    return JSONResponse(body)


@dataclass
class OppoServer(MakerState):
    """OPPO Push ``/server/v1/auth`` and ``…/message/notification/unicast``."""

    app_key: str = "oppo-app-key-0123"
    master_secret: str = "oppo-master-secret-456789"
    token_lifetime: float = 24 * 3600.0

    async def auth(self, request: Request) -> Response:
        form = await form_of(request)
        if form.get("app_key") != self.app_key:
            return oppo_answer(14, "Invalid App Key")
        timestamp = form.get("timestamp", "")
        if not timestamp.isdigit() or abs(int(timestamp) / 1000 - time.time()) > 600:
            return oppo_answer(19, "Invalid Timestamp")
        expected = hashlib.sha256((self.app_key + timestamp + self.master_secret).encode())
        if form.get("sign") != expected.hexdigest():
            self.auth_rejections += 1
            return oppo_answer(16, "Invalid Signature")
        return oppo_answer(
            0, "Success", {"auth_token": self.issue(), "create_time": int(time.time() * 1000)}
        )

    async def unicast(self, request: Request) -> Response:
        if not self.valid(request.headers.get("auth_token")):
            return oppo_answer(11, "Invalid AuthToken")
        try:
            message = json.loads((await form_of(request))["message"])
        except (KeyError, ValueError):
            return oppo_answer(40, "Missing Required Arguments: message")
        problem = self.check(message)
        if problem:
            return oppo_answer(41, f"Invalid Arguments: {problem}")
        target = message["target_value"]
        if target in self.dead:
            return oppo_answer(10000, "Invalid RegistrationId")
        if target in self.limited:
            return oppo_answer(-2, "Service in Flow Control")
        if target in self.answers:
            return oppo_answer(*self.answers[target])
        self.record(message)
        return oppo_answer(0, "Success", {"messageId": secrets.token_hex(12)})

    def check(self, message: Any) -> str | None:
        """OPPO's message checks; ``None`` when acceptable."""
        if message.get("target_type") != 2 or not message.get("target_value"):
            return "target_type 2 with a target_value"
        n = message.get("notification") or {}
        if not n.get("title") or len(n["title"]) > 50:
            return "title (1-50)"
        if not n.get("content") or len(n["content"]) > 200:
            return "content (1-200)"
        click = n.get("click_action_type", 0)
        if click not in (0, 1, 2, 4, 5):
            return "click_action_type"
        if click in (2, 5) and not n.get("click_action_url"):
            return "click_action_url"
        if "category" in n and n["category"] not in OPPO_CATEGORIES:
            return "category"
        if "category" in n and n.get("notify_level") not in (1, 2, 16):
            return "notify_level (1, 2 or 16) is required with category"
        return None

    def app(self) -> Starlette:
        """The ASGI app: auth and unicast."""
        return Starlette(
            routes=[
                Route("/server/v1/auth", self.auth, methods=["POST"]),
                Route("/server/v1/message/notification/unicast", self.unicast, methods=["POST"]),
            ]
        )


# --- vivo Push ---------------------------------------------------------------------------

VIVO_SYSTEM_CATEGORIES = frozenset(
    {"IM", "ACCOUNT", "TODO", "DEVICE_REMINDER", "ORDER", "SUBSCRIPTION"}
)


def vivo_answer(result: int, desc: str, **extra: Any) -> JSONResponse:
    """vivo's answer body."""
    return JSONResponse({"result": result, "desc": desc, **extra})


@dataclass
class VivoServer(MakerState):
    """vivo Push ``/message/auth`` and ``/message/send``."""

    app_id: str = "10004"
    app_key: str = "25509283-3767-4b9e-83fe-b6e55ac6243e"
    app_secret: str = "vivo-app-secret-abcdef"
    token_lifetime: float = 24 * 3600.0

    async def auth(self, request: Request) -> Response:
        body = json.loads(await request.body())
        if str(body.get("appId")) != self.app_id or body.get("appKey") != self.app_key:
            return vivo_answer(10101, "appId或appKey不合法")
        timestamp = str(body.get("timestamp", ""))
        if not timestamp.isdigit() or abs(int(timestamp) / 1000 - time.time()) > 600:
            return vivo_answer(10102, "timestamp不合法")
        text = self.app_id + self.app_key + timestamp + self.app_secret
        if body.get("sign") != hashlib.md5(text.encode(), usedforsecurity=False).hexdigest():
            self.auth_rejections += 1
            return vivo_answer(10103, "sign不正确")
        return vivo_answer(0, "请求成功", authToken=self.issue())

    async def send(self, request: Request) -> Response:
        if not self.valid(request.headers.get("authtoken")):
            return vivo_answer(10000, "权限认证失败")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return vivo_answer(10055, "请求体不合法")
        problem = self.check(body)
        if problem:
            return vivo_answer(10055, problem)
        if body["regId"] in self.dead:
            return vivo_answer(
                10302, "regId不合法", invalidUser={"status": 1, "userid": body["regId"]}
            )
        if body["regId"] in self.limited:
            return vivo_answer(10070, "发送总量超出限制")
        self.record(body)
        return vivo_answer(0, "请求成功", taskId=secrets.token_hex(8))

    def check(self, body: Any) -> str | None:
        """vivo's checks of one message; ``None`` when acceptable."""
        if str(body.get("appId")) != self.app_id:
            return "appId与鉴权信息不一致"
        if not body.get("regId"):
            return "regId不能为空"
        if body.get("notifyType") not in (1, 2, 3, 4):
            return "notifyType不合法"
        if not body.get("title") or len(body["title"]) > 40:
            return "title长度不合法"
        if not body.get("content") or len(body["content"]) > 100:
            return "content长度不合法"
        if body.get("skipType") not in (1, 2, 3, 4):
            return "skipType不合法"
        if body["skipType"] in (2, 3, 4) and not body.get("skipContent"):
            return "skipContent不能为空"
        if not body.get("requestId"):
            return "requestId不能为空"
        if body.get("classification", 0) not in (0, 1):
            return "classification不合法"
        if body.get("classification") == 1 and body.get("category") not in VIVO_SYSTEM_CATEGORIES:
            return "系统消息需要合法的category"
        ttl = body.get("timeToLive", 86400)
        if not isinstance(ttl, int) or not 60 <= ttl <= 7 * 86400:
            return "timeToLive不合法"
        return None

    def app(self) -> Starlette:
        """The ASGI app: auth and send."""
        return Starlette(
            routes=[
                Route("/message/auth", self.auth, methods=["POST"]),
                Route("/message/send", self.send, methods=["POST"]),
            ]
        )
