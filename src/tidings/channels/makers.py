"""What the providers for mainland China share: the makers' push services (Huawei, Xiaomi,
OPPO, vivo), the domestic SMS APIs (Alibaba Cloud, Tencent Cloud) and WeChat.

Each maker's message carries the same few things, spelt its own way: a title and a body, a
click action that opens the app (on the order's page when the template gives a ``url``), a
notify id per order (a later message about the same order replaces the earlier one in the
shade) and the classification each maker requires before it lets a transactional message
through unthrottled. A message of a ``required`` category (orders, payments, refunds) is
transactional; any other is marketing, which the makers quota and may hold back at night.

Every one of these services answers a small JSON object with a result code of its own, and
:class:`ServiceClient` posts to it over the lean keep-alive pool of
:mod:`tidings.channels.http1` (httpx cost ~1 ms of client CPU a request, most of a send).
:class:`Outcomes` is a service's table of what its codes mean — a refused access token, a
dead device token or number, a rate limit, a passing failure — and raises accordingly.
"""

from __future__ import annotations

import asyncio
import json
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, NoReturn
from urllib.parse import quote_plus

from tidings import json_output
from tidings.channels.base import Message, ProviderContext
from tidings.channels.http import retry_after_seconds, tls_context
from tidings.channels.http1 import Http1Pool, InvalidResponse
from tidings.channels.tokens import TokenRejected
from tidings.config import ProviderSettings
from tidings.errors import (
    ConfigError,
    DestinationGone,
    PermanentProviderError,
    RateLimited,
    Suppressed,
    TransientProviderError,
)

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
_FORM_HEADERS = {"Content-Type": FORM}
_JSON_HEADERS = {"Content-Type": JSON}


_PLAIN = re.compile(r"[A-Za-z0-9_.~-]*").fullmatch
"""A value ``quote_plus`` would leave as it is."""


def form_body(fields: Mapping[str, str]) -> bytes:
    """``fields`` urlencoded as ``urlencode`` does, the names (the API's own ASCII names) as
    they are and plain values not quoted again: a third of ``urlencode``'s time."""
    return "&".join(
        [f"{k}={v if _PLAIN(v) else quote_plus(v)}" for k, v in fields.items()]
    ).encode()


def notify_id(message: Message) -> int:
    """A stable non-negative 31-bit id per order (subject), else per notification."""
    key = message.subject or message.notification_id
    return zlib.crc32(key.encode()) & 0x7FFFFFFF


def click_link(message: Message) -> str | None:
    """The deep link a tap opens (the template's ``intent`` or ``url``), if any."""
    link = message.content.get("intent") or message.content.get("url")
    return str(link) if link else None


def transactional(message: Message) -> bool:
    """Whether the makers should treat ``message`` as a service (not marketing) message."""
    return message.category_required


def compact(value: Any) -> str:
    """JSON without spaces (request bodies, and form fields that carry JSON)."""
    return json_output.text(value)


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters (with an ellipsis when cut)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def required(settings: ProviderSettings, kind: str, keys: tuple[str, ...]) -> list[str]:
    """The values of ``keys`` in ``settings`` as strings; a ConfigError naming the missing."""
    missing = [key for key in keys if not settings.option(key)]
    if missing:
        raise ConfigError(f"{kind} needs {', '.join(missing)}", missing[0])
    return [str(settings.option(key)) for key in keys]


def base_url(settings: ProviderSettings, default: str) -> str:
    """The service's base URL (``base_url`` points a provider at a fake), without a final /."""
    return str(settings.option("base_url", default)).rstrip("/")


# --- answers -------------------------------------------------------------------------------


@dataclass(slots=True)
class Answer:
    """A service's answer: the HTTP status, its JSON object (``{}`` when it sent anything
    else) and the ``Retry-After`` it asked for, in seconds."""

    status: int
    body: dict[str, Any]
    retry_after: float | None = None


def _json_object(content: bytes) -> dict[str, Any]:
    try:
        body = json.loads(content)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


class ServiceClient:
    """One provider's keep-alive HTTP/1.1 connections to its service, at most ``connections``
    requests in flight; transport failures become transient provider errors."""

    def __init__(self, name: str, settings: ProviderSettings, context: ProviderContext) -> None:
        self.name = name
        connections = int(settings.option("connections", 100))
        self._pool = Http1Pool(
            timeout=float(settings.timeout or context.timeout),
            ssl_context=tls_context(),
            max_idle_per_origin=connections,
            user_agent="tidings",
        )
        self._places = asyncio.Semaphore(connections)

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        """POST ``body`` (``headers`` name its ``Content-Type``); the answer, whatever it is."""
        async with self._places:
            try:
                reply = await self._pool.post(url, body, headers)
            except TimeoutError as exc:
                raise TransientProviderError(f"{self.name}: timed out", code="timeout") from exc
            except ValueError as exc:  # not an http(s) URL, or control characters in a header
                raise PermanentProviderError(
                    f"{self.name}: invalid URL or header", code="invalid_request"
                ) from exc
            except InvalidResponse as exc:
                raise TransientProviderError(
                    f"{self.name}: invalid HTTP response: {exc}", code="protocol"
                ) from exc
            except OSError as exc:  # refused, reset, TLS failures
                raise TransientProviderError(
                    f"{self.name}: {type(exc).__name__}", code="transport"
                ) from exc
        wait = reply.headers.get("retry-after")
        return Answer(reply.status, _json_object(reply.body), retry_after_seconds(wait))

    async def post_form(
        self, url: str, fields: Mapping[str, str], headers: Mapping[str, str] | None = None
    ) -> Answer:
        """POST ``fields`` urlencoded."""
        return await self.post(url, form_body(fields), headers or _FORM_HEADERS)

    async def post_json(
        self, url: str, value: Any, headers: Mapping[str, str] | None = None
    ) -> Answer:
        """POST ``value`` as JSON."""
        return await self.post(url, json_output.utf8(value), headers or _JSON_HEADERS)

    async def aclose(self) -> None:
        """Close the idle connections."""
        await self._pool.aclose()


class ServiceProvider:
    """What every provider for mainland China has: a name and its :class:`ServiceClient`."""

    kind: ClassVar[str]

    def __init__(self, settings: ProviderSettings, context: ProviderContext) -> None:
        self.name = settings.name or self.kind
        self.client = ServiceClient(self.name, settings, context)

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self.client.aclose()


# --- what the codes mean -------------------------------------------------------------------

Meaning = Literal["token", "gone", "limit", "busy", "suppressed"]
"""``token``: the access token was refused (renewed once); ``gone``: the device token, openid
or number is dead; ``limit``: rate or quota (retried later); ``busy``: a passing failure;
``suppressed``: no fault, nothing to deliver (a WeChat buyer with no subscription left)."""


@dataclass(frozen=True)
class Outcomes:
    """What a service's result codes mean; any other failure is permanent (5xx: transient)."""

    service: str
    """The service's name in error texts (``OPPO``, ``Aliyun`` …)."""
    codes: Mapping[str, Meaning] = field(default_factory=dict)
    """Result code (as text) → meaning; a key ending in ``.`` or ``*`` matches a prefix."""
    statuses: Mapping[int, Meaning] = field(default_factory=dict)
    """HTTP status → meaning, when the code says nothing more."""
    backoff: Mapping[str, float] = field(default_factory=dict)
    """Rate-limit code → seconds to wait when the service gives no ``Retry-After``."""
    default_backoff: float = 60.0
    gone_reason: str = "the device token is no longer valid"

    def meaning(self, code: str, status: int) -> Meaning | None:
        """The meaning of ``code`` (exact, then prefix), else of the HTTP status."""
        found = self.codes.get(code)
        if found is None and code:
            for key, value in self.codes.items():
                if key[-1] in ".*" and code.startswith(key.rstrip("*")):
                    found = value
                    break
        return found if found is not None else self.statuses.get(status)

    def fail(
        self,
        name: str,
        answer: Answer,
        code: str,
        detail: str = "",
        *,
        step: str = "send",
        meaning: Meaning | None = None,
    ) -> NoReturn:
        """Raise what ``code`` in ``answer`` means (or ``meaning``, when the caller knows).
        ``detail`` must hold no device token, openid or phone number: the error text is
        stored with the delivery. A refused token means something only to a ``send`` (the
        auth call itself fails permanently)."""
        where = f"{self.service} {step}" if step != "send" else self.service
        text = f"{name}: {where} {answer.status} {code or '-'} {detail}".rstrip()[:300]
        meaning = meaning or self.meaning(code, answer.status)
        label = code or str(answer.status)
        if meaning == "token" and step == "send":
            raise TokenRejected(text)
        if meaning == "gone":
            raise DestinationGone(f"{text} ({self.gone_reason})", code=label)
        if meaning == "suppressed":  # no failure: the reason alone, as the delivery shows it
            raise Suppressed(detail or text, code=label)
        if meaning == "limit":
            wait = answer.retry_after
            if wait is None:
                wait = self.backoff.get(code, self.default_backoff)
            raise RateLimited(f"{text} (rate limited)", retry_after=wait, code=label)
        if meaning == "busy" or answer.status >= 500:
            raise TransientProviderError(text, code=label)
        raise PermanentProviderError(text, code=label)
