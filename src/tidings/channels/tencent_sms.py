"""SMS through Tencent Cloud SMS, API 2021-01-11 ``SendSms``, signed with TC3-HMAC-SHA256.

The signature, as Tencent Cloud documents it: a canonical request (``POST``, ``/``, an empty
query, the signed headers ``content-type;host`` and the hex SHA-256 of the JSON body), a
string to sign (``TC3-HMAC-SHA256``, the timestamp, ``{date}/sms/tc3_request`` and the hex
SHA-256 of the canonical request), and a key derived from ``"TC3" + secret_key`` by HMAC-SHA256
over the UTC date, the service (``sms``) and ``tc3_request``. The template's ``sms`` variant
gives ``TemplateId`` and ``TemplateParamSet`` (its params' values, in order).
An answer's ``SendStatusSet[0].Code`` is ``Ok`` on success; ``LimitExceeded.*`` are rate
limits, ``InvalidParameterValue.IncorrectPhoneNumber`` a number that cannot take SMS; an
``Error`` answer (``AuthFailure.*``, ``RequestLimitExceeded``, ``InternalError``) is mapped
the same way.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx

from tidings.channels.base import Channel, Message, ProviderContext, Receipt
from tidings.channels.http import json_object, make_client, transport_errors
from tidings.channels.variants import sms_template
from tidings.config import ProviderSettings
from tidings.errors import (
    ConfigError,
    DestinationGone,
    PermanentProviderError,
    RateLimited,
    TransientProviderError,
)

SERVICE = "sms"
VERSION = "2021-01-11"
CONTENT_TYPE = "application/json; charset=utf-8"
GONE = frozenset({"InvalidParameterValue.IncorrectPhoneNumber"})


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def tc3_authorization(
    secret_id: str, secret_key: str, host: str, body: bytes, timestamp: int
) -> str:
    """The ``Authorization`` header of a TC3-HMAC-SHA256 signed ``POST /`` with ``body``."""
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    signed_headers = "content-type;host"
    canonical = "\n".join(
        [
            "POST",
            "/",
            "",
            f"content-type:{CONTENT_TYPE}\nhost:{host}\n",
            signed_headers,
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = f"{date}/{SERVICE}/tc3_request"
    to_sign = "\n".join(
        ["TC3-HMAC-SHA256", str(timestamp), scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _hmac(_hmac(_hmac(f"TC3{secret_key}".encode(), date), SERVICE), "tc3_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return (
        f"TC3-HMAC-SHA256 Credential={secret_id}/{scope}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )


class TencentSmsProvider:
    """Send SMS through Tencent Cloud SMS."""

    kind: ClassVar[str] = "tencent_sms"
    channel: ClassVar[Channel] = "sms"
    destinations: ClassVar[frozenset[str]] = frozenset({"phone"})

    def __init__(self, settings: ProviderSettings, context: ProviderContext) -> None:
        self.name = settings.name or self.kind
        needed = ("secret_id", "secret_key", "sdk_app_id", "sign_name")
        missing = [k for k in needed if not settings.option(k)]
        if missing:
            raise ConfigError(f"tencent_sms needs {', '.join(missing)}", missing[0])
        self.secret_id = str(settings.option("secret_id"))
        self.secret_key = str(settings.option("secret_key"))
        self.sdk_app_id = str(settings.option("sdk_app_id"))
        self.sign_name = str(settings.option("sign_name"))
        self.region = str(settings.option("region", "ap-guangzhou"))
        self.url = (
            str(settings.option("base_url", "https://sms.tencentcloudapi.com")).rstrip("/") + "/"
        )
        self.host = httpx.URL(self.url).netloc.decode()
        self.client = make_client(
            timeout=settings.timeout or context.timeout,
            max_connections=int(settings.option("connections", 100)),
        )

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
        content = json.dumps(self.body(message), ensure_ascii=False).encode()
        timestamp = int(time.time())
        headers = {
            "Authorization": tc3_authorization(
                self.secret_id, self.secret_key, self.host, content, timestamp
            ),
            "Content-Type": CONTENT_TYPE,
            "Host": self.host,
            "X-TC-Action": "SendSms",
            "X-TC-Timestamp": str(timestamp),
            "X-TC-Version": VERSION,
            "X-TC-Region": self.region,
        }
        return content, headers

    async def send(self, message: Message) -> Receipt:
        """Send one templated SMS to one number."""
        content, headers = self.request(message)
        async with transport_errors(self.name):
            response = await self.client.post(self.url, content=content, headers=headers)
        answer = json_object(response).get("Response") or {}
        error = answer.get("Error") if isinstance(answer, dict) else None
        if isinstance(error, dict):
            self._raise(str(error.get("Code", "")), response.status_code)
        statuses = answer.get("SendStatusSet") if isinstance(answer, dict) else None
        if response.status_code != 200 or not statuses:
            raise TransientProviderError(
                f"{self.name}: Tencent answered {response.status_code} without a status",
                code=str(response.status_code),
            )
        status = statuses[0]
        code = str(status.get("Code", ""))
        if code == "Ok":
            serial = status.get("SerialNo")
            return Receipt(provider_message_id=str(serial) if serial else None)
        self._raise(code, response.status_code)
        raise AssertionError("unreachable")  # pragma: no cover

    def _raise(self, code: str, http_status: int) -> None:
        # Tencent's messages may quote the number: keep them out of the error
        text = f"{self.name}: Tencent {http_status} {code or '-'}"
        if code.startswith("LimitExceeded.") or code == "RequestLimitExceeded":
            daily = "Daily" in code
            raise RateLimited(
                f"{text} (rate limited)", retry_after=3600.0 if daily else 30.0, code=code
            )
        if code in GONE:
            raise DestinationGone(f"{text} (the number cannot take SMS)", code=code)
        if code.startswith("InternalError") or http_status >= 500:
            raise TransientProviderError(text, code=code or str(http_status))
        raise PermanentProviderError(text, code=code or str(http_status))

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self.client.aclose()
