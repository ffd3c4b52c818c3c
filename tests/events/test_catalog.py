"""The e-commerce catalog: required fields, money, currency, rating."""

from __future__ import annotations

import pytest

from tidings.errors import InvalidInput
from tidings.events.catalog import CATALOG, SAMPLE_DATA, default_subject, validate


@pytest.mark.parametrize("event_type", sorted(CATALOG))
def test_sample_data_satisfies_every_type(event_type: str) -> None:
    validate(event_type, dict(SAMPLE_DATA))


@pytest.mark.parametrize(
    ("event_type", "data", "field"),
    [
        (
            "order.paid",
            {"order_id": "o", "buyer_id": "b", "seller_id": "s", "currency": "CNY"},
            "/data/amount",
        ),
        (
            "order.paid",
            {"order_id": "o", "buyer_id": "b", "seller_id": "s", "amount": 99, "currency": "CNY"},
            "/data/amount",
        ),
        (
            "order.paid",
            {
                "order_id": "o",
                "buyer_id": "b",
                "seller_id": "s",
                "amount": "9.9",
                "currency": "yuan",
            },
            "/data/currency",
        ),
        (
            "review.created",
            {"order_id": "o", "review_id": "r", "buyer_id": "b", "seller_id": "s", "rating": 6},
            "/data/rating",
        ),
        (
            "refund.approved",
            {"order_id": "o", "buyer_id": "b", "seller_id": "s"},
            "/data/refund_id",
        ),
        ("payment.failed", {"order_id": "o"}, "/data/buyer_id"),
    ],
)
def test_violations_name_the_field(event_type: str, data: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate(event_type, data)
    assert caught.value.field == field


def test_other_types_take_any_data() -> None:
    validate("loyalty.points_added", {"anything": [1, 2, 3]})


def test_subject_defaults_to_order_id() -> None:
    assert default_subject({"order_id": 42}) == "42"
    assert default_subject({}) is None


@pytest.mark.parametrize(
    ("event_type", "data", "field"),
    [
        ("product.restocked", {"name": "Tea set"}, "/data/sku"),
        ("product.restocked", {"sku": "SKU-1", "price": "cheap"}, "/data/price"),
        (
            "price.dropped",
            {"sku": "SKU-1", "old_price": "99.00", "currency": "CNY"},
            "/data/new_price",
        ),
        (
            "price.dropped",
            {"sku": "SKU-1", "old_price": 99, "new_price": "89.00", "currency": "CNY"},
            "/data/old_price",
        ),
        ("promotion.started", {"name": "Double 11"}, "/data/campaign_id"),
    ],
)
def test_audience_events_name_the_bad_field(
    event_type: str, data: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate(event_type, data)
    assert caught.value.field == field
