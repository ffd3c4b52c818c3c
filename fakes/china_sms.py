"""Fake domestic SMS APIs: Alibaba Cloud Dysmsapi ``SendSms`` and Tencent Cloud SMS ``SendSms``.

Both verify the request signature as the cloud documents it, from the request as received
(Aliyun's RPC HMAC-SHA1 over the sorted, percent-encoded parameters; Tencent's
TC3-HMAC-SHA256 over the canonical request and its signed headers), then the approved sign
name, template and its parameters, and the number; they answer with the real bodies
(``{"Code", "Message", "RequestId", "BizId"}``; ``{"Response": {"SendStatusSet" | "Error"}}``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fakes.maker_push import form_of

MAINLAND = re.compile(r"^1\d{10}$")
E164 = re.compile(r"^\+[1-9]\d{6,14}$")


@dataclass
class SmsState:
    """Approved sign names and templates (code → parameter names), marked numbers, sent SMS."""

    sign_names: set[str] = field(default_factory=lambda: {"好店"})
    templates: dict[str, list[str]] = field(
        default_factory=lambda: {"SMS_100001": ["order", "amount"]}
    )
    limited: set[str] = field(default_factory=set)
    answers: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Number → the error code and message the service answers a send to it with."""
    signature_failures: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)
    sends: int = 0

    def record(self, sms: dict[str, Any]) -> None:
        """Count (and keep the first 10,000 of) the accepted messages."""
        self.sends += 1
        if len(self.sent) < 10_000:
            self.sent.append(sms)


# --- Alibaba Cloud -------------------------------------------------------------------------


def aliyun_answer(code: str, message: str, status: int = 200, **extra: Any) -> JSONResponse:
    """Dysmsapi's answer body."""
    body = {"Code": code, "Message": message, "RequestId": secrets.token_hex(16).upper(), **extra}
    return JSONResponse(body, status_code=status)


@dataclass
class AliyunSmsServer(SmsState):
    """Dysmsapi ``SendSms`` (RPC, POST form)."""

    access_key_id: str = "LTAI5tExampleKeyId"
    access_key_secret: str = "aliyun-secret-0123456789abcdef"
    nonces: set[str] = field(default_factory=set)

    def signature(self, method: str, params: dict[str, str]) -> str:
        """Dysmsapi's RPC signature of ``params`` as documented (computed from what arrived)."""
        pairs = sorted((k, v) for k, v in params.items() if k != "Signature")
        query = urlencode(pairs, quote_via=quote, safe="")
        to_sign = method + "&" + quote("/", safe="") + "&" + quote(query, safe="")
        key = (self.access_key_secret + "&").encode()
        return base64.b64encode(hmac.new(key, to_sign.encode(), hashlib.sha1).digest()).decode()

    async def rpc(self, request: Request) -> Response:
        params = await form_of(request)
        if params.get("Action") != "SendSms" or params.get("Version") != "2017-05-25":
            return aliyun_answer("InvalidAction.NotFound", "Specified api is not found", 404)
        if params.get("AccessKeyId") != self.access_key_id:
            return aliyun_answer(
                "InvalidAccessKeyId.NotFound", "Specified access key is not found.", 404
            )
        if params.get("SignatureMethod") != "HMAC-SHA1" or params.get("SignatureVersion") != "1.0":
            return aliyun_answer("InvalidParameter", "SignatureMethod or SignatureVersion", 400)
        try:
            stamp = datetime.strptime(params.get("Timestamp", ""), "%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            return aliyun_answer("MissingTimestamp", "Timestamp is mandatory for this action.", 400)
        if abs(stamp.replace(tzinfo=UTC).timestamp() - time.time()) > 900:
            return aliyun_answer(
                "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.", 400
            )
        if params.get("Signature") != self.signature(request.method, params):
            self.signature_failures += 1
            return aliyun_answer(
                "SignatureDoesNotMatch",
                "Specified signature is not matched with our calculation.",
                400,
            )
        nonce = params.get("SignatureNonce", "")
        if not nonce or nonce in self.nonces:
            return aliyun_answer(
                "SignatureNonceUsed", "Specified signature nonce was used already.", 400
            )
        self.nonces.add(nonce)
        return self.send_sms(params)

    def send_sms(self, params: dict[str, str]) -> Response:
        """The business checks after the signature."""
        if params.get("SignName") not in self.sign_names:
            return aliyun_answer("isv.SMS_SIGNATURE_ILLEGAL", "该账号下找不到对应签名")
        wanted = self.templates.get(params.get("TemplateCode", ""))
        if wanted is None:
            return aliyun_answer("isv.SMS_TEMPLATE_ILLEGAL", "该账号下找不到对应模板")
        try:
            values = json.loads(params.get("TemplateParam") or "{}")
        except ValueError:
            return aliyun_answer("isv.INVALID_JSON_PARAM", "JSON参数不合法，只接受字符串值")
        if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
            return aliyun_answer("isv.INVALID_JSON_PARAM", "JSON参数不合法，只接受字符串值")
        if set(wanted) - set(values):
            return aliyun_answer("isv.TEMPLATE_MISSING_PARAMETERS", "模板变量缺少对应参数值")
        number = params.get("PhoneNumbers", "")
        if not MAINLAND.match(number) and not (number.isdigit() and 7 <= len(number) <= 15):
            return aliyun_answer("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号")
        if number in self.limited:
            return aliyun_answer("isv.BUSINESS_LIMIT_CONTROL", "触发分钟级流控Permits:1")
        if number in self.answers:
            return aliyun_answer(*self.answers[number])
        self.record(params)
        return aliyun_answer("OK", "OK", BizId=f"{secrets.randbelow(10**15)}^0")

    def app(self) -> Starlette:
        """The ASGI app: the RPC endpoint ``/``."""
        return Starlette(routes=[Route("/", self.rpc, methods=["POST"])])


# --- Tencent Cloud -------------------------------------------------------------------------

_CREDENTIAL = re.compile(
    r"^TC3-HMAC-SHA256 Credential=([^/]+)/(\d{4}-\d{2}-\d{2})/sms/tc3_request, "
    r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$"
)


def tencent_error(code: str, message: str) -> JSONResponse:
    """Tencent Cloud's API 3.0 error answer (HTTP 200)."""
    return JSONResponse(
        {
            "Response": {
                "Error": {"Code": code, "Message": message},
                "RequestId": secrets.token_hex(16),
            }
        }
    )


@dataclass
class TencentSmsServer(SmsState):
    """Tencent Cloud SMS ``SendSms`` 2021-01-11 (TC3-HMAC-SHA256)."""

    secret_id: str = "AKIDexampleSecretId0123456789"
    secret_key: str = "tencent-secret-key-0123456789ab"
    sdk_app_id: str = "1400006666"
    templates: dict[str, list[str]] = field(default_factory=lambda: {"449739": ["order", "amount"]})

    def expected(self, request: Request, body: bytes, date: str, signed: list[str]) -> str:
        """The signature Tencent computes for the request as it arrived."""
        # canonical headers: names and values lower-cased, values trimmed
        headers = "".join(f"{n}:{request.headers.get(n, '').strip().lower()}\n" for n in signed)
        canonical = "\n".join(
            ["POST", "/", "", headers, ";".join(signed), hashlib.sha256(body).hexdigest()]
        )
        stamp = request.headers.get("x-tc-timestamp", "")
        to_sign = "\n".join(
            ["TC3-HMAC-SHA256", stamp, f"{date}/sms/tc3_request",
             hashlib.sha256(canonical.encode()).hexdigest()]
        )  # fmt: skip
        key = ("TC3" + self.secret_key).encode()
        for part in (date, "sms", "tc3_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()

    async def api(self, request: Request) -> Response:
        body = await request.body()
        if request.headers.get("x-tc-action") != "SendSms":
            return tencent_error("InvalidAction", "The action is not found")
        if request.headers.get("x-tc-version") != "2021-01-11":
            return tencent_error("NoSuchVersion", "The version is not found")
        found = _CREDENTIAL.match(request.headers.get("authorization", ""))
        if found is None:
            return tencent_error("AuthFailure.InvalidAuthorization", "Authorization is invalid")
        secret_id, date, signed_headers, signature = found.groups()
        if secret_id != self.secret_id:
            return tencent_error("AuthFailure.SecretIdNotFound", "The SecretId is not found")
        stamp = request.headers.get("x-tc-timestamp", "")
        if not stamp.isdigit() or abs(int(stamp) - time.time()) > 300:
            return tencent_error("AuthFailure.SignatureExpire", "Signature expired")
        if datetime.fromtimestamp(int(stamp), UTC).strftime("%Y-%m-%d") != date:
            return tencent_error(
                "AuthFailure.SignatureFailure", "The credential date does not match"
            )
        signed = signed_headers.split(";")
        if "content-type" not in signed or "host" not in signed:
            return tencent_error(
                "AuthFailure.SignatureFailure", "content-type and host must be signed"
            )
        if signature != self.expected(request, body, date, signed):
            self.signature_failures += 1
            return tencent_error(
                "AuthFailure.SignatureFailure", "The provided credentials could not be validated."
            )
        return self.send_sms(json.loads(body))

    def send_sms(self, body: dict[str, Any]) -> Response:
        """The business checks after the signature."""
        if body.get("SmsSdkAppId") != self.sdk_app_id:
            return tencent_error(
                "FailedOperation.SmsSdkAppIdVerifyFail", "SmsSdkAppId verify failed"
            )
        if body.get("SignName") not in self.sign_names:
            return tencent_error(
                "FailedOperation.SignatureIncorrectOrUnapproved", "signature unapproved"
            )
        wanted = self.templates.get(str(body.get("TemplateId")))
        if wanted is None:
            return tencent_error(
                "FailedOperation.TemplateIncorrectOrUnapproved", "template unapproved"
            )
        values = body.get("TemplateParamSet") or []
        if len(values) != len(wanted) or not all(isinstance(v, str) for v in values):
            return tencent_error(
                "InvalidParameterValue.TemplateParameterFormatError", "template params"
            )
        numbers = body.get("PhoneNumberSet") or []
        for number in numbers:  # a failure of the whole request is an Error answer
            code, text = self.answers.get(number, ("", ""))
            if code.startswith(("InternalError", "RequestLimitExceeded", "UnauthorizedOperation")):
                return tencent_error(code, text)
        statuses = []
        for number in numbers:
            code, text = "Ok", "send success"
            if not E164.match(number):
                code, text = "InvalidParameterValue.IncorrectPhoneNumber", "incorrect phone number"
            elif number in self.limited:
                code, text = "LimitExceeded.PhoneNumberThirtySecondLimit", "30 second limit"
            elif number in self.answers:
                code, text = self.answers[number]
            else:
                self.record(body)
            statuses.append(
                {"SerialNo": f"2028:{secrets.token_hex(10)}", "PhoneNumber": number, "Fee": 1,
                 "SessionContext": body.get("SessionContext", ""), "Code": code, "Message": text,
                 "IsoCode": "CN"}
            )  # fmt: skip
        return JSONResponse(
            {"Response": {"SendStatusSet": statuses, "RequestId": secrets.token_hex(16)}}
        )

    def app(self) -> Starlette:
        """The ASGI app: the API endpoint ``/``."""
        return Starlette(routes=[Route("/", self.api, methods=["POST"])])
