"""Every registered provider class, as mypy proves it: a :class:`~tidings.channels.base.Provider`.

The registry names its classes by import path (imported on first use), which no type checker
follows; this module imports each one and types it as a
:class:`~tidings.channels.base.ProviderFactory`, so ``mypy`` fails when a provider's ``send``,
``aclose``, ``kind``, ``channel``, ``destinations`` or constructor drifts from the protocol.
``tests/channels/test_conformance.py`` checks that it lists exactly the registry's kinds, each
the class the registry loads. The service never imports it (it would load every provider).
"""

from __future__ import annotations

from tidings.channels.aliyun_sms import AliyunSmsProvider
from tidings.channels.apns import ApnsProvider
from tidings.channels.base import ProviderFactory
from tidings.channels.console import ConsoleProvider
from tidings.channels.fcm import FcmProvider
from tidings.channels.hms import HmsProvider
from tidings.channels.http_sms import HttpSmsProvider
from tidings.channels.oppo import OppoProvider
from tidings.channels.smtp import SmtpProvider
from tidings.channels.tencent_sms import TencentSmsProvider
from tidings.channels.twilio import TwilioProvider
from tidings.channels.vivo import VivoProvider
from tidings.channels.webhook import WebhookProvider
from tidings.channels.webpush import WebPushProvider
from tidings.channels.wechat import WeChatProvider
from tidings.channels.xiaomi import XiaomiProvider

CONFORMING: dict[str, ProviderFactory] = {
    "console": ConsoleProvider,
    "smtp": SmtpProvider,
    "webhook": WebhookProvider,
    "fcm": FcmProvider,
    "apns": ApnsProvider,
    "webpush": WebPushProvider,
    "twilio": TwilioProvider,
    "http": HttpSmsProvider,
    "hms": HmsProvider,
    "xiaomi": XiaomiProvider,
    "oppo": OppoProvider,
    "vivo": VivoProvider,
    "aliyun_sms": AliyunSmsProvider,
    "tencent_sms": TencentSmsProvider,
    "wechat": WeChatProvider,
}
"""Config ``kind`` → provider class, each checked against the protocol by mypy."""
