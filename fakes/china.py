"""What the China provider tests share: a message builder and each provider against its fake."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fakes.china_sms import AliyunSmsServer, TencentSmsServer
from fakes.maker_push import HmsServer, OppoServer, VivoServer, XiaomiServer
from fakes.wechat_server import WeChatServer
from tidings.channels.base import Destination, Message

OPENID = "oABCD1234efgh5678ijkl9012mno"
TOKEN = "maker-token-" + "0123456789abcdef" * 4


def message(kind: str, address: str = TOKEN, **overrides: Any) -> Message:
    """An order-paid message for one destination of ``kind``."""
    channel = {"phone": "sms", "wechat": "wechat"}.get(kind, "push")
    fields: dict[str, Any] = {
        "delivery_id": "dlv-1",
        "notification_id": "ntf-1",
        "channel": channel,
        "destination": Destination(kind=kind, address=address, device_id="dev-1"),  # type: ignore[arg-type]
        "subscriber_id": "buyer-1",
        "title": "支付成功",
        "body": "订单 ord-42 已支付 ¥99.00。",
        "event_type": "order.paid",
        "subject": "ord-42",
        "category": "order_updates",
        "category_required": True,
        "priority": "high",
        "locale": "zh-CN",
        "ttl": 3600,
        "content": {
            "url": "shop://orders/ord-42",
            "variants": {
                "sms": {
                    "template_code": "SMS_100001",
                    "params": {"order": "ord-42", "amount": "¥99.00"},
                },
                "wechat": {
                    "template_id": "tmpl-order-paid",
                    "page": "pages/order/detail?id=ord-42",
                    "data": {
                        "character_string1": "ord-42",
                        "amount2": "¥99.00",
                        "thing3": "支付成功",
                    },
                },
            },
        },
    }
    fields.update(overrides)
    return Message(**fields)


@dataclass
class Maker:
    """One push provider kind with its fake and the settings that point at it."""

    kind: str
    fake: Callable[[], Any]
    settings: Callable[[Any, str], dict[str, Any]]
    """(fake, base url) → provider options."""
    wrong_secret: str
    """The settings key whose value is made one byte wrong to test the auth check."""


MAKERS = [
    Maker(
        "hms",
        HmsServer,
        lambda f, url: {"app_id": f.app_id, "client_id": f.client_id,
                        "client_secret": f.client_secret, "base_url": url,
                        "token_url": f"{url}/oauth2/v3/token"},
        "client_secret",
    ),
    Maker(
        "xiaomi",
        XiaomiServer,
        lambda f, url: {"app_secret": f.app_secret, "package_name": f.package_name, "base_url": url,
                        "channel_id": "orders"},
        "app_secret",
    ),
    Maker(
        "oppo",
        OppoServer,
        lambda f, url: {"app_key": f.app_key, "master_secret": f.master_secret, "base_url": url},
        "master_secret",
    ),
    Maker(
        "vivo",
        VivoServer,
        lambda f, url: {"app_id": f.app_id, "app_key": f.app_key, "app_secret": f.app_secret,
                        "base_url": url},
        "app_secret",
    ),
]  # fmt: skip


def aliyun_settings(fake: AliyunSmsServer, url: str) -> dict[str, Any]:
    """aliyun_sms options pointing at ``fake``."""
    return {
        "access_key_id": fake.access_key_id,
        "access_key_secret": fake.access_key_secret,
        "sign_name": "好店",
        "base_url": url,
    }


def tencent_settings(fake: TencentSmsServer, url: str) -> dict[str, Any]:
    """tencent_sms options pointing at ``fake``."""
    return {
        "secret_id": fake.secret_id,
        "secret_key": fake.secret_key,
        "sdk_app_id": fake.sdk_app_id,
        "sign_name": "好店",
        "region": "ap-guangzhou",
        "base_url": url,
    }


def wechat_settings(fake: WeChatServer, url: str) -> dict[str, Any]:
    """wechat options pointing at ``fake``."""
    return {"app_id": fake.app_id, "app_secret": fake.app_secret, "base_url": url}


def one_byte_off(value: str) -> str:
    """``value`` with its last character changed."""
    return value[:-1] + ("x" if value[-1] != "x" else "y")
