"""SMS through Alibaba Cloud's Dysmsapi ``SendSms`` (RPC style, version 2017-05-25).

Every call is signed as Alibaba Cloud's RPC APIs document: the parameters (``AccessKeyId``,
``Action``, ``SignName``, ``TemplateCode``, ``TemplateParam`` …, a fresh ``SignatureNonce``
and a UTC ``Timestamp``) sorted by name, each name and value percent-encoded (RFC 3986:
space ``%20``, ``*`` ``%2A``, ``~`` kept), joined with ``&``; the string to sign is
``POST&%2F&`` + the encoded query; ``Signature`` is base64(HMAC-SHA1(secret + "&", it)).
The template's ``sms`` variant gives ``TemplateCode`` and the ``TemplateParam`` JSON.
Answers are ``{"Code", "Message", "RequestId", "BizId"}``: ``OK`` is success;
``isv.BUSINESS_LIMIT_CONTROL`` / ``isv.DAY_LIMIT_CONTROL`` / ``Throttling.User`` are rate
limits; ``isv.MOBILE_NUMBER_ILLEGAL`` a number that cannot take SMS; ``isp.*`` transient.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime
from typing import ClassVar
from urllib.parse import quote

from tidings.channels.base import Channel, Message, ProviderContext, Receipt
from tidings.channels.http import json_object, make_client, transport_errors
from tidings.channels.variants import mainland_number, sms_template
from tidings.config import ProviderSettings
from tidings.errors import (
    ConfigError,
    DestinationGone,
    PermanentProviderError,
    RateLimited,
    TransientProviderError,
)

RATE_LIMITS = {
    "isv.BUSINESS_LIMIT_CONTROL": 60.0,  # per number per minute/hour/day, or the account
    "Throttling.User": 1.0,
    "isv.DAY_LIMIT_CONTROL": 3600.0,
}
GONE = frozenset({"isv.MOBILE_NUMBER_ILLEGAL", "isv.MOBILE_COUNT_OVER_LIMIT"})


def percent_encode(value: str) -> str:
    """Alibaba Cloud's RFC 3986 encoding (``quote`` keeps ``-_.~`` and encodes the rest)."""
    return quote(value, safe="")


def rpc_signature(method: str, params: dict[str, str], secret: str) -> str:
    """The ``Signature`` of an RPC call with ``params`` (everything but ``Signature``)."""
    query = "&".join(f"{percent_encode(k)}={percent_encode(params[k])}" for k in sorted(params))
    to_sign = f"{method}&{percent_encode('/')}&{percent_encode(query)}"
    digest = hmac.new(f"{secret}&".encode(), to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


class AliyunSmsProvider:
    """Send SMS through Alibaba Cloud SMS (Dysmsapi)."""

    kind: ClassVar[str] = "aliyun_sms"
    channel: ClassVar[Channel] = "sms"
    destinations: ClassVar[frozenset[str]] = frozenset({"phone"})

    def __init__(self, settings: ProviderSettings, context: ProviderContext) -> None:
        self.name = settings.name or self.kind
        needed = ("access_key_id", "access_key_secret", "sign_name")
        missing = [k for k in needed if not settings.option(k)]
        if missing:
            raise ConfigError(f"aliyun_sms needs {', '.join(missing)}", missing[0])
        self.access_key_id = str(settings.option("access_key_id"))
        self.secret = str(settings.option("access_key_secret"))
        self.sign_name = str(settings.option("sign_name"))
        self.region = str(settings.option("region", "cn-hangzhou"))
        self.url = (
            str(settings.option("base_url", "https://dysmsapi.aliyuncs.com")).rstrip("/") + "/"
        )
        self.client = make_client(
            timeout=settings.timeout or context.timeout,
            max_connections=int(settings.option("connections", 100)),
        )

    def params(self, message: Message) -> dict[str, str]:
        """The signed ``SendSms`` parameters for one message."""
        code, values = sms_template(message, self.name)
        params = {
            "AccessKeyId": self.access_key_id,
            "Action": "SendSms",
            "Format": "JSON",
            "OutId": message.delivery_id,
            "PhoneNumbers": mainland_number(message.destination.address),
            "RegionId": self.region,
            "SignName": self.sign_name,
            "SignatureMethod": "HMAC-SHA1",
            "SignatureNonce": uuid.uuid4().hex,
            "SignatureVersion": "1.0",
            "TemplateCode": code,
            "TemplateParam": json.dumps(values, ensure_ascii=False, separators=(",", ":")),
            "Timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "Version": "2017-05-25",
        }
        params["Signature"] = rpc_signature("POST", params, self.secret)
        return params

    async def send(self, message: Message) -> Receipt:
        """Send one templated SMS to one number."""
        params = self.params(message)
        async with transport_errors(self.name):
            response = await self.client.post(self.url, data=params)
        body = json_object(response)
        code = str(body.get("Code", ""))
        if response.status_code == 200 and code == "OK":
            biz = body.get("BizId")
            return Receipt(provider_message_id=str(biz) if biz else None)
        # Aliyun's messages may quote the number: keep them out of the error
        text = f"{self.name}: Aliyun {response.status_code} {code or '-'}"
        if code in RATE_LIMITS:
            raise RateLimited(f"{text} (rate limited)", retry_after=RATE_LIMITS[code], code=code)
        if code in GONE:
            raise DestinationGone(f"{text} (the number cannot take SMS)", code=code)
        if code.startswith("isp.") or response.status_code >= 500:
            raise TransientProviderError(text, code=code or str(response.status_code))
        raise PermanentProviderError(text, code=code or str(response.status_code))

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self.client.aclose()
