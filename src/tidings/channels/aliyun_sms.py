"""SMS through Alibaba Cloud's Dysmsapi ``SendSms`` (RPC style, version 2017-05-25).

Every call is signed as Alibaba Cloud's RPC APIs document: the parameters (``AccessKeyId``,
``Action``, ``SignName``, ``TemplateCode``, ``TemplateParam`` …, a fresh ``SignatureNonce``
and a UTC ``Timestamp``) sorted by name, each name and value percent-encoded (RFC 3986:
space ``%20``, ``*`` ``%2A``, ``~`` kept), joined with ``&``; the string to sign is
``POST&%2F&`` + the encoded query; ``Signature`` is base64(HMAC-SHA1(secret + "&", it)).
The template's ``sms`` variant gives ``TemplateCode`` and the ``TemplateParam`` JSON.
Answers are ``{"Code", "Message", "RequestId", "BizId"}`` (the SMS API error codes):
``OK`` is success; ``isv.BUSINESS_LIMIT_CONTROL`` (the per-number and account throttles),
``isv.DAY_LIMIT_CONTROL`` (the day's total set in the console) and ``Throttling.User`` are
rate limits; ``isv.MOBILE_NUMBER_ILLEGAL`` a number that cannot take SMS;
``isp.SYSTEM_ERROR`` is retried; anything else (``isp.RAM_PERMISSION_DENY``, a template or
sign name not approved, ``isv.MOBILE_COUNT_OVER_LIMIT`` …) fails for good.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from typing import ClassVar
from urllib.parse import quote

from tidings.channels.base import Channel, Message, ProviderContext, Receipt
from tidings.channels.makers import (
    FORM,
    Outcomes,
    ServiceProvider,
    base_url,
    compact,
    required,
)
from tidings.channels.variants import mainland_number, sms_template
from tidings.config import ProviderSettings

OUTCOMES = Outcomes(
    "Aliyun",
    codes={
        "isv.BUSINESS_LIMIT_CONTROL": "limit",
        "isv.DAY_LIMIT_CONTROL": "limit",
        "Throttling.User": "limit",
        "isv.MOBILE_NUMBER_ILLEGAL": "gone",
        "isp.SYSTEM_ERROR": "busy",
        "isp.UNKNOWN_ERR_CODE": "busy",
    },
    statuses={429: "limit"},
    backoff={
        "isv.BUSINESS_LIMIT_CONTROL": 60.0,  # per number per minute/hour/day, or the account
        "Throttling.User": 1.0,
        "isv.DAY_LIMIT_CONTROL": 3600.0,
    },
    gone_reason="the number cannot take SMS",
)
_HEADERS = {"Content-Type": FORM}


def percent_encode(value: str) -> str:
    """Alibaba Cloud's RFC 3986 encoding (``quote`` keeps ``-_.~`` and encodes the rest)."""
    return quote(value, safe="")


def rpc_signature(method: str, params: dict[str, str], secret: str) -> str:
    """The ``Signature`` of an RPC call with ``params`` (everything but ``Signature``)."""
    query = "&".join(f"{percent_encode(k)}={percent_encode(params[k])}" for k in sorted(params))
    return _sign(hmac.new(f"{secret}&".encode(), digestmod=hashlib.sha1), method, query)


def _sign(key: hmac.HMAC, method: str, query: str) -> str:
    # the query holds only unreserved characters, "%XX", "&" and "=": encoding it again is
    # percent_encode(query), without quoting it byte by byte
    again = query.replace("%", "%25").replace("&", "%26").replace("=", "%3D")
    mac = key.copy()
    mac.update(f"{method}&%2F&{again}".encode())
    return base64.b64encode(mac.digest()).decode()


class AliyunSmsProvider(ServiceProvider):
    """Send SMS through Alibaba Cloud SMS (Dysmsapi)."""

    kind: ClassVar[str] = "aliyun_sms"
    channel: ClassVar[Channel] = "sms"
    destinations: ClassVar[frozenset[str]] = frozenset({"phone"})

    def __init__(self, settings: ProviderSettings, context: ProviderContext) -> None:
        super().__init__(settings, context)
        self.access_key_id, self.secret, self.sign_name = required(
            settings, self.kind, ("access_key_id", "access_key_secret", "sign_name")
        )
        self.region = str(settings.option("region", "cn-hangzhou"))
        self.url = base_url(settings, "https://dysmsapi.aliyuncs.com") + "/"
        self._key = hmac.new(f"{self.secret}&".encode(), digestmod=hashlib.sha1)
        """The HMAC state after the key: copied per request, not keyed again."""
        self._fixed = {
            "AccessKeyId": self.access_key_id,
            "Action": "SendSms",
            "Format": "JSON",
            "RegionId": self.region,
            "SignName": self.sign_name,
            "SignatureMethod": "HMAC-SHA1",
            "SignatureVersion": "1.0",
            "Version": "2017-05-25",
        }
        self._encoded = {
            k: f"{percent_encode(k)}={percent_encode(v)}" for k, v in self._fixed.items()
        }
        """The fixed parameters, each encoded once."""

    def params(self, message: Message) -> dict[str, str]:
        """The ``SendSms`` parameters for one message, without ``Signature``."""
        code, values = sms_template(message, self.name)
        return {
            **self._fixed,
            "OutId": message.delivery_id,
            "PhoneNumbers": mainland_number(message.destination.address),
            "SignatureNonce": os.urandom(16).hex(),
            "TemplateCode": code,
            "TemplateParam": compact(values),
            "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def body(self, message: Message) -> bytes:
        """The signed ``SendSms`` form for one message: its sorted, encoded parameters and
        their ``Signature`` (the form is the string the signature covers)."""
        params = self.params(message)
        pairs = [self._encoded.get(k) or f"{k}={percent_encode(params[k])}" for k in sorted(params)]
        query = "&".join(pairs)
        signature = _sign(self._key, "POST", query)
        return f"{query}&Signature={percent_encode(signature)}".encode()

    async def send(self, message: Message) -> Receipt:
        """Send one templated SMS to one number."""
        answer = await self.client.post(self.url, self.body(message), _HEADERS)
        code = str(answer.body.get("Code", ""))
        if answer.status == 200 and code == "OK":
            biz = answer.body.get("BizId")
            return Receipt(provider_message_id=str(biz) if biz else None)
        # Aliyun's messages may quote the number: keep them out of the error
        OUTCOMES.fail(self.name, answer, code)
