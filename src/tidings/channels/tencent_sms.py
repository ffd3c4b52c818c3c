"""SMS through Tencent Cloud SMS, API 2021-01-11 ``SendSms``, signed with TC3-HMAC-SHA256.

The signature, as Tencent Cloud documents it: a canonical request (``POST``, ``/``, an empty
query, the signed headers ``content-type;host`` and the hex SHA-256 of the JSON body), a
string to sign (``TC3-HMAC-SHA256``, the timestamp, ``{date}/sms/tc3_request`` and the hex
SHA-256 of the canonical request), and a key derived from ``"TC3" + secret_key`` by HMAC-SHA256
over the UTC date, the service (``sms``) and ``tc3_request``. The template's ``sms`` variant
gives ``TemplateId`` and ``TemplateParamSet`` (its params' values, in order).
An answer's ``SendStatusSet[0].Code`` is ``Ok`` on success; ``LimitExceeded.*`` are rate
limits, ``InvalidParameterValue.IncorrectPhoneNumber`` a number that cannot take SMS and
``FailedOperation.PhoneNumberInBlacklist`` one on the do-not-disturb list (suppressed); an
``Error`` answer (``AuthFailure.*``, ``RequestLimitExceeded``, ``InternalError``) is mapped the
same way (Tencent Cloud SMS's error codes): of the ``InternalError`` family only the bare code
and ``InternalError.Timeout`` are retried — ``InternalError.SigVerificationFail`` and the
like are faults of the request.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any, ClassVar
from urllib.parse import urlsplit

from tidings.channels.base import Channel, Message, ProviderContext, Receipt
from tidings.channels.makers import Outcomes, ServiceProvider, base_url, compact, required
from tidings.channels.variants import sms_template
from tidings.config import ProviderSettings

SERVICE = "sms"
VERSION = "2021-01-11"
CONTENT_TYPE = "application/json; charset=utf-8"
OUTCOMES = Outcomes(
    "Tencent",
    codes={
        "LimitExceeded.": "limit",
        "RequestLimitExceeded": "limit",
        "RequestLimitExceeded.": "limit",
        "InvalidParameterValue.IncorrectPhoneNumber": "gone",
        # the number is on the do-not-disturb list (the buyer unsubscribed, or the carrier's)
        "FailedOperation.PhoneNumberInBlacklist": "suppressed",
        "InternalError": "busy",
        "InternalError.Timeout": "busy",
        # any other InternalError.* (SigVerificationFail, RestApiInterfaceNotExist …) is ours
    },
    statuses={429: "limit"},
    default_backoff=30.0,
    backoff={"LimitExceeded.PhoneNumberDailyLimit": 3600.0, "LimitExceeded.DailyLimit": 3600.0},
    gone_reason="the number cannot take SMS",
)


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signing_key(secret_key: str, date: str) -> bytes:
    """TC3's key for one UTC ``date``: ``"TC3" + secret`` through the date, service, request."""
    return _hmac(_hmac(_hmac(f"TC3{secret_key}".encode(), date), SERVICE), "tc3_request")


def tc3_authorization(
    secret_id: str, secret_key: str, host: str, body: bytes, timestamp: int
) -> str:
    """The ``Authorization`` header of a TC3-HMAC-SHA256 signed ``POST /`` with ``body``."""
    date = time.strftime("%Y-%m-%d", time.gmtime(timestamp))
    return _authorization(secret_id, signing_key(secret_key, date), host, body, timestamp, date)


def _authorization(
    secret_id: str, key: bytes, host: str, body: bytes, timestamp: int, date: str
) -> str:
    canonical = (
        f"POST\n/\n\ncontent-type:{CONTENT_TYPE}\nhost:{host}\n\ncontent-type;host\n"
        + hashlib.sha256(body).hexdigest()
    )
    scope = f"{date}/{SERVICE}/tc3_request"
    to_sign = (
        f"TC3-HMAC-SHA256\n{timestamp}\n{scope}\n" + hashlib.sha256(canonical.encode()).hexdigest()
    )
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return (
        f"TC3-HMAC-SHA256 Credential={secret_id}/{scope}, "
        f"SignedHeaders=content-type;host, Signature={signature}"
    )


class TencentSmsProvider(ServiceProvider):
    """Send SMS through Tencent Cloud SMS."""

    kind: ClassVar[str] = "tencent_sms"
    channel: ClassVar[Channel] = "sms"
    destinations: ClassVar[frozenset[str]] = frozenset({"phone"})

    def __init__(self, settings: ProviderSettings, context: ProviderContext) -> None:
        super().__init__(settings, context)
        self.secret_id, self.secret_key, self.sdk_app_id, self.sign_name = required(
            settings, self.kind, ("secret_id", "secret_key", "sdk_app_id", "sign_name")
        )
        self.region = str(settings.option("region", "ap-guangzhou"))
        self.url = base_url(settings, "https://sms.tencentcloudapi.com") + "/"
        self.host = urlsplit(self.url).netloc
        self._key: tuple[str, bytes] = ("", b"")
        """The signing key of the last UTC date signed for (derived once a day)."""

    def body(self, message: Message) -> dict[str, Any]:
        """The ``SendSms`` request body for one message."""
        code, values = sms_template(message, self.name)
        return {
            "PhoneNumberSet": [message.destination.address],
            "SmsSdkAppId": self.sdk_app_id,
            "SignName": self.sign_name,
            "TemplateId": code,
            "TemplateParamSet": list(values.values()),
            "SessionContext": message.delivery_id,
        }

    def request(self, message: Message) -> tuple[bytes, dict[str, str]]:
        """The signed ``SendSms`` request for one message: its body and headers."""
        content = compact(self.body(message)).encode()
        timestamp = int(time.time())
        date = time.strftime("%Y-%m-%d", time.gmtime(timestamp))
        if self._key[0] != date:
            self._key = (date, signing_key(self.secret_key, date))
        key = self._key[1]
        headers = {
            "Authorization": _authorization(
                self.secret_id, key, self.host, content, timestamp, date
            ),
            "Content-Type": CONTENT_TYPE,
            "X-TC-Action": "SendSms",
            "X-TC-Timestamp": str(timestamp),
            "X-TC-Version": VERSION,
            "X-TC-Region": self.region,
        }
        return content, headers

    async def send(self, message: Message) -> Receipt:
        """Send one templated SMS to one number."""
        content, headers = self.request(message)
        answer = await self.client.post(self.url, content, headers)
        response = answer.body.get("Response")
        response = response if isinstance(response, dict) else {}
        error = response.get("Error")
        # Tencent's messages may quote the number: keep them out of the error
        if isinstance(error, dict):
            OUTCOMES.fail(self.name, answer, str(error.get("Code", "")))
        statuses = response.get("SendStatusSet")
        if answer.status != 200 or not statuses or not isinstance(statuses[0], dict):
            OUTCOMES.fail(self.name, answer, "", "an answer without a status", meaning="busy")
        status = statuses[0]
        code = str(status.get("Code", ""))
        if code == "Ok":
            serial = status.get("SerialNo")
            return Receipt(provider_message_id=str(serial) if serial else None)
        OUTCOMES.fail(self.name, answer, code)
