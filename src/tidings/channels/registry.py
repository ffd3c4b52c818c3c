"""The explicit registry of provider kinds: config ``kind`` → implementing class.

Classes are named by import path and imported on first use, so a provider's dependencies
(h2, http-ece …) load only when it is configured.
"""

from __future__ import annotations

from importlib import import_module
from typing import cast

from tidings.channels.base import Provider, ProviderContext, ProviderFactory
from tidings.config import ProviderSettings
from tidings.errors import ConfigError

PROVIDER_KINDS: dict[str, str] = {
    "console": "tidings.channels.console:ConsoleProvider",
    "smtp": "tidings.channels.smtp:SmtpProvider",
    "webhook": "tidings.channels.webhook:WebhookProvider",
    "fcm": "tidings.channels.fcm:FcmProvider",
    "apns": "tidings.channels.apns:ApnsProvider",
    "webpush": "tidings.channels.webpush:WebPushProvider",
    "twilio": "tidings.channels.twilio:TwilioProvider",
    "http": "tidings.channels.http_sms:HttpSmsProvider",
    "hms": "tidings.channels.hms:HmsProvider",
    "xiaomi": "tidings.channels.xiaomi:XiaomiProvider",
    "oppo": "tidings.channels.oppo:OppoProvider",
    "vivo": "tidings.channels.vivo:VivoProvider",
    "aliyun_sms": "tidings.channels.aliyun_sms:AliyunSmsProvider",
    "tencent_sms": "tidings.channels.tencent_sms:TencentSmsProvider",
    "wechat": "tidings.channels.wechat:WeChatProvider",
}


def provider_class(kind: str) -> ProviderFactory:
    """The class registered for ``kind``; :class:`ConfigError` if there is none."""
    target = PROVIDER_KINDS.get(kind)
    if target is None:
        known = ", ".join(sorted(PROVIDER_KINDS))
        raise ConfigError(f"unknown provider kind {kind!r} (known: {known})", "kind")
    module_name, _, attr = target.partition(":")
    return cast(ProviderFactory, getattr(import_module(module_name), attr))


def build_provider(settings: ProviderSettings, context: ProviderContext) -> Provider:
    """Instantiate the provider ``settings`` describe."""
    return provider_class(settings.kind)(settings, context)
