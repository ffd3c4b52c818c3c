"""The provider seam: a typed :class:`Message` in, a :class:`Receipt` out, ``aclose()``.

Every channel provider implements :class:`Provider`: each kind named in
:data:`tidings.channels.registry.PROVIDER_KINDS` (smtp, twilio, http, aliyun_sms, tencent_sms,
fcm, apns, webpush, hms, xiaomi, oppo, vivo, wechat, webhook, console), which
:mod:`tidings.channels.conformance` proves to mypy. In-app items are no provider's: the
processor writes them to the inbox as it decides them. A provider *raises* on failure — never
returns a bare ``bool``:

- :class:`~tidings.errors.TransientProviderError` (with ``retry_after`` when the provider
  said so) for anything worth retrying: 5xx, 429, timeouts, connection errors;
- :class:`~tidings.errors.PermanentProviderError` for anything retrying cannot fix;
- :class:`~tidings.errors.DestinationGone` when the device token / endpoint is dead.

A provider must be safe to call concurrently and must reuse its connections (one pooled
client per provider instance). ``Message.delivery_id`` is stable across retries: providers
pass it wherever the protocol carries an idempotency id (``apns-id``, ``webhook-id``,
email ``Message-ID``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

from tidings.vocabulary import (
    CHANNELS,
    PUSH_KINDS,
    TEMPLATE_VARIANTS,
    Channel,
    DestinationKind,
    Priority,
)

if TYPE_CHECKING:
    from tidings.config import ProviderSettings

__all__ = [
    "CHANNELS",
    "PUSH_KINDS",
    "TEMPLATE_VARIANTS",
    "Channel",
    "Destination",
    "DestinationKind",
    "Message",
    "Priority",
    "Provider",
    "ProviderContext",
    "ProviderFactory",
    "Receipt",
]


@dataclass(frozen=True, slots=True)
class Destination:
    """Where one delivery goes: an address of one kind.

    ``address`` is the email address, E.164 phone number, device token, web push endpoint,
    webhook URL, or (inapp) the subscriber id. ``secret`` is the webhook signing secret;
    ``keys`` the web push subscription keys (``p256dh``, ``auth``); ``device_id`` names the
    device/endpoint row so a dead one can be deactivated.
    """

    kind: DestinationKind
    address: str
    device_id: str | None = None
    secret: str | None = None
    keys: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # never leak PII into logs or tracebacks
        return f"Destination(kind={self.kind!r}, device_id={self.device_id!r})"


@dataclass(frozen=True, slots=True)
class Message:
    """One rendered message for one destination, as a provider receives it.

    ``content`` holds every rendered template field (``title``, ``body`` and optional
    ``subject``, ``html``, ``text``, ``url``, ``image``, ``android``/``apns``/``webpush``
    overrides …). ``data`` is the event's data for push payloads and webhooks.
    """

    delivery_id: str
    notification_id: str
    channel: Channel
    destination: Destination
    subscriber_id: str
    title: str
    body: str
    event_id: str = ""
    event_type: str = ""
    event_source: str = ""
    subject: str | None = None
    category: str = ""
    category_required: bool = False
    priority: Priority = "normal"
    locale: str = "en-US"
    ttl: float | None = None
    occurred_at: float | None = None
    """When the event happened (its ``time``, else when it was accepted), unix seconds."""
    content: Mapping[str, Any] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"Message(delivery_id={self.delivery_id!r}, channel={self.channel!r}, "
            f"destination={self.destination!r})"
        )


@dataclass(frozen=True, slots=True)
class Receipt:
    """What a provider answers for a message it took.

    ``status`` is ``sent`` (handed to the provider) or ``delivered`` (the provider confirmed
    delivery to the recipient, e.g. a webhook answering 2xx).
    """

    status: Literal["sent", "delivered"] = "sent"
    provider_message_id: str | None = None
    detail: str = ""


@dataclass(slots=True)
class ProviderContext:
    """What a provider may need from its surroundings when it is built."""

    base_dir: Path = field(default_factory=Path.cwd)
    """Relative file names in provider settings (key files) resolve against this."""
    timeout: float = 10.0
    """The delivery timeout (seconds) in force for this provider."""


@runtime_checkable
class Provider(Protocol):
    """A channel provider: sends one message to one destination."""

    kind: ClassVar[str]
    """The config ``kind`` (``smtp``, ``fcm`` …)."""
    channel: ClassVar[Channel]
    """The channel it serves."""
    destinations: ClassVar[frozenset[str]]
    """The destination kinds it can send to (``{"fcm"}`` for FCM, ``{"email"}`` for smtp)."""

    name: str
    """This instance's name (unique per config; ``kind`` unless set)."""

    async def send(self, message: Message) -> Receipt:
        """Send ``message``; raise a :class:`~tidings.errors.ProviderError` on failure."""
        ...

    async def aclose(self) -> None:
        """Release connections; the provider is not used afterwards."""
        ...


class ProviderFactory(Protocol):
    """Builds a provider from its settings (each provider class is one)."""

    def __call__(self, settings: ProviderSettings, context: ProviderContext) -> Provider: ...
