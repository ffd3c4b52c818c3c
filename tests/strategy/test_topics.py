"""Rules addressed to a topic: the key from the event, the fan-out decision, ``tidings check``."""

from __future__ import annotations

from typing import Any

import pytest

from tests.strategy.helpers import buyer, event, policy
from tidings.config import build_settings
from tidings.config_check import problems
from tidings.strategy.decide import decide
from tidings.strategy.topics import topic_key


@pytest.mark.parametrize(
    ("to", "data", "key"),
    [
        ("topic:product.{sku}.restock", {"sku": "SKU-1"}, "product.SKU-1.restock"),
        ("topic:seller.{seller_id}.followers", {"seller_id": 7}, "seller.7.followers"),
        ("topic:newsletter", {}, "newsletter"),
        ("topic:product.{sku}.restock", {}, None),
        ("topic:product.{sku}.restock", {"sku": ""}, None),
        ("topic:product.{sku}.restock", {"sku": "a b"}, None),  # not a key's characters
        ("topic:product.{sku}.restock", {"sku": {"nested": 1}}, None),
    ],
)
def test_the_key_comes_from_the_event(to: str, data: dict[str, Any], key: str | None) -> None:
    assert topic_key(to, data) == key


def test_a_topic_rule_fans_out_instead_of_naming_recipients() -> None:
    rules = policy({"id": "restock", "on": "product.restocked", "to": "topic:p.{sku}.restock"})
    (made,) = decide(rules, event("product.restocked", sku="SKU-9"), buyer(), 0.0)
    assert (made.rule_id, made.recipient_id, made.outcome, made.fanout) == (
        "restock",
        None,
        "sent",
        "p.SKU-9.restock",
    )
    assert made.reason == "fanned out to the subscribers of topic p.SKU-9.restock"
    (missing,) = decide(rules, event("product.restocked"), buyer(), 0.0)
    assert (missing.outcome, missing.fanout) == ("suppressed", None)
    assert missing.reason == "the event gives no topic for topic:p.{sku}.restock (needs data.sku)"


def test_check_names_a_topic_rule_it_cannot_run() -> None:
    rule = {"on": "x.happened", "channels": ["inapp"], "template": "p", "category": "m"}
    raw = {
        "categories": {"m": {}},
        "templates": {"p": {"en-US": {"title": "t", "body": "b"}}},
        "rules": [
            {**rule, "id": "fixed", "to": "topic:newsletter"},
            {**rule, "id": "unknown-field", "to": "topic:p.{colour}"},
            {**rule, "id": "digest", "to": "topic:p.{sku}", "digest": {"window": "5m"}},
            {**rule, "id": "cancel", "to": "topic:p.{sku}", "cancel_on": ["x.undone"]},
        ],
    }
    found = {e.path for e in problems(build_settings(raw, {}, "test", check=False))}
    assert found == {"rules[1].to", "rules[2].digest", "rules[3].cancel_on"}
