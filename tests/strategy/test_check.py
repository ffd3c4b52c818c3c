"""``tidings check`` validates the strategy keys and names the key path."""

from __future__ import annotations

from typing import Any

import pytest

from tidings.config import build_settings, builtin_config_text, parse_yaml
from tidings.config_check import check_settings
from tidings.errors import ConfigError

BASE: dict[str, Any] = {
    "id": "r",
    "on": "order.created",
    "to": "buyer",
    "channels": ["inapp"],
    "template": "t",
}


def settings(rule: dict[str, Any], categories: dict[str, Any] | None = None) -> Any:
    raw = {
        "categories": categories or {"order_updates": {"required": True}},
        "rules": [{**BASE, **rule}],
        "templates": {"t": {"en-US": {"title": "{{ count }}", "body": "x"}}},
    }
    return build_settings(raw, {}, "test")


def test_the_builtin_pack_passes() -> None:
    check_settings(build_settings(parse_yaml(builtin_config_text()), {}, "built-in"))


def test_the_builtin_pack_has_the_timed_rules() -> None:
    pack = build_settings(parse_yaml(builtin_config_text()), {}, "built-in")
    rules = {r.id: r for r in pack.rules}
    assert rules["unpaid-reminder"].delay == 900
    assert rules["unpaid-reminder"].cancel_on == ["order.paid", "order.cancelled"]
    assert rules["review-request"].delay == 3 * 86400
    assert rules["review-request"].cancel_on == ["review.created", "refund.*"]
    assert rules["refund-pending-seller"].delay == 86400
    assert rules["refund-pending-seller"].cancel_on == ["refund.approved", "refund.rejected"]
    assert rules["seller-paid-orders-digest"].digest is not None
    for name in (
        "unpaid_reminder",
        "review_request",
        "refund_pending_seller",
        "seller_paid_orders_digest",
    ):
        assert set(pack.templates[name]) == {"en-US", "zh-CN"}


@pytest.mark.parametrize(
    ("rule", "categories", "path", "message"),
    [
        ({"cancel_on": ["order.created"]}, None, "rules[0].cancel_on[0]", "own event type"),
        ({"cancel_on": ["order.*"]}, None, "rules[0].cancel_on[0]", "own event type"),
        ({"cancel_on": ["re*und.paid"]}, None, "rules[0].cancel_on[0]", "wildcard"),
        ({"cancel_on": ["paid"]}, None, "rules[0].cancel_on[0]", "looks wrong"),
        ({"delay": "0s"}, None, "rules[0].delay", "longer than 0"),
        ({"ttl": 0}, None, "rules[0].ttl", "longer than 0"),
        ({"digest": {"window": "0s"}}, None, "rules[0].digest.window", "longer than 0"),
        (
            {"channels": ["push"], "fallback": ["email"], "fallback_after": "10m"},
            None,
            "rules[0].fallback_after",
            "add inapp",
        ),
        (
            {},
            {"order_updates": {"required": True, "quiet_hours": True}},
            "categories.order_updates.quiet_hours",
            "ignores quiet hours",
        ),
    ],
)
def test_strategy_keys_are_validated(
    rule: dict[str, Any], categories: dict[str, Any] | None, path: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        check_settings(settings(rule, categories))
    assert caught.value.path == path
    assert message in str(caught.value)


def test_a_digest_with_a_delay_is_refused_at_load() -> None:
    with pytest.raises(ConfigError):
        settings({"delay": "1m", "digest": {"window": "1m"}})
