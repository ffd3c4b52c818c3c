"""Template variants for China's providers: rendered beside the locale, checked by check."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tidings.channels.base import Destination, Message
from tidings.channels.variants import sms_template
from tidings.config import build_settings
from tidings.config_check import check_settings
from tidings.errors import ConfigError
from tidings.templates import Templates

ORDER_PAID: dict[str, Any] = {
    "zh-CN": {"title": "支付成功", "body": "订单 {{ order_id }} 已支付"},
    "en-US": {"title": "Paid", "body": "Order {{ order_id }} paid"},
    "sms": {
        "template_code": "SMS_100001",
        "params": {"order": "{{ order_id }}", "amount": "{{ amount | money(currency) }}"},
    },
    "wechat": {
        "template_id": "tmpl-order-paid",
        "page": "pages/order/detail?id={{ order_id }}",
        "data": {"character_string1": "{{ order_id }}", "amount2": "{{ amount }}"},
    },
}


def config(template: dict[str, Any], channels: list[str], **providers: Any) -> dict[str, Any]:
    return {
        "categories": {"order_updates": {"required": True}},
        "providers": providers,
        "rules": [
            {"id": "paid", "on": "order.paid", "channels": channels, "template": "order_paid"}
        ],
        "templates": {"order_paid": template},
    }


ALIYUN = [{"kind": "aliyun_sms", "access_key_id": "k", "access_key_secret": "s", "sign_name": "店"}]
WECHAT = [{"kind": "wechat", "app_id": "wx1", "app_secret": "s"}]


def test_variants_render_beside_the_locale_and_are_never_picked_as_one() -> None:
    templates = Templates({"order_paid": ORDER_PAID}, "en-US")
    context = {"order_id": "ord-42", "amount": "99.00", "currency": "CNY"}
    locale, fields = templates.render("order_paid", "zh-CN", context)
    assert locale == "zh-CN" and fields["title"] == "支付成功"
    assert fields["variants"]["sms"] == {
        "template_code": "SMS_100001",
        "params": {"order": "ord-42", "amount": "¥99.00"},
        "param_names": ["order", "amount"],
    }
    assert fields["variants"]["wechat"]["page"] == "pages/order/detail?id=ord-42"
    assert templates.locales("order_paid") == ["zh-CN", "en-US"]
    assert templates.render("order_paid", "fr-FR", context)[0] == "en-US"


def test_sms_params_keep_the_config_order_through_stored_json() -> None:
    templates = Templates({"order_paid": ORDER_PAID}, "en-US")
    _, fields = templates.render("order_paid", "zh-CN", {"order_id": "o-1", "amount": "1"})
    stored = json.loads(json.dumps(fields, sort_keys=True))  # as PostgreSQL's jsonb may
    message = Message(
        "d-1", "n-1", "sms", Destination("phone", "+8613800138000"), "b-1", "t", "b",
        content=stored,
    )  # fmt: skip
    code, params = sms_template(message, "tencent_sms")
    assert code == "SMS_100001"
    assert list(params) == ["order", "amount"]


def test_a_config_with_variants_loads_and_checks() -> None:
    raw = config(ORDER_PAID, ["sms", "wechat"], sms=ALIYUN, wechat=WECHAT)
    check_settings(build_settings(raw, {}, "test"))


@pytest.mark.parametrize("channel", ["sms", "wechat"])
def test_a_rule_through_a_template_only_provider_needs_the_variant(channel: str) -> None:
    template = {k: v for k, v in ORDER_PAID.items() if k != channel}
    raw = config(template, [channel], sms=ALIYUN, wechat=WECHAT)
    with pytest.raises(ConfigError) as caught:
        check_settings(build_settings(raw, {}, "test"))
    assert "rules[0].template" in str(caught.value)
    assert f"needs a `{channel}` variant" in str(caught.value)


def test_sms_through_twilio_needs_no_variant() -> None:
    twilio = [{"kind": "twilio", "account_sid": "AC1", "auth_token": "t", "from": "+15550000000"}]
    template = {k: v for k, v in ORDER_PAID.items() if k != "sms"}
    check_settings(build_settings(config(template, ["sms"], sms=twilio), {}, "test"))


def test_a_malformed_variant_is_named() -> None:
    template = {**ORDER_PAID, "sms": {"params": {"order": "{{ order_id }}"}}}
    with pytest.raises(ConfigError) as caught:
        check_settings(build_settings(config(template, ["inapp"]), {}, "test"))
    assert "templates.order_paid.sms" in str(caught.value)
    assert "template_code" in str(caught.value)
