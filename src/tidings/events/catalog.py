"""The e-commerce event catalog (SPEC §2): required fields, money and rating checks.

Types outside the catalog are accepted with any object ``data``.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from tidings.errors import InvalidInput

_ORDER = ("order_id", "buyer_id", "seller_id")
_REFUND = ("order_id", "refund_id", "buyer_id", "seller_id")
_REVIEW = ("order_id", "review_id", "buyer_id", "seller_id")

CATALOG: dict[str, tuple[str, ...]] = {
    "order.created": (*_ORDER, "amount", "currency"),
    "order.paid": (*_ORDER, "amount", "currency"),
    "payment.failed": ("order_id", "buyer_id"),
    "order.cancelled": _ORDER,
    "order.shipped": _ORDER,
    "order.delivered": _ORDER,
    "refund.requested": (*_REFUND, "amount", "currency"),
    "refund.approved": _REFUND,
    "refund.rejected": _REFUND,
    "refund.completed": _REFUND,
    "review.created": _REVIEW,
    "review.replied": _REVIEW,
    # audiences (SPEC §10): their rules address topics
    "product.restocked": ("sku",),
    "price.dropped": ("sku", "old_price", "new_price", "currency"),
    "promotion.started": ("campaign_id",),
}
"""Event type → required ``data`` fields."""

_CURRENCY = re.compile(r"^[A-Z]{3}$")
_MONEY = re.compile(r"^-?\d+(\.\d+)?$")


_ID_FIELDS = {name: tuple(f.endswith("_id") for f in fields) for name, fields in CATALOG.items()}


def validate(event_type: str, data: dict[str, Any], prefix: str = "") -> None:
    """Raise :class:`InvalidInput` naming the field when ``data`` breaks the catalog."""
    required = CATALOG.get(event_type)
    if required is None:
        return
    for name, is_id in zip(required, _ID_FIELDS[event_type], strict=True):
        value = data.get(name)
        if value is None or value == "":
            raise InvalidInput(
                f"`data.{name}` is required for {event_type}", f"{prefix}/data/{name}"
            )
        if is_id and not isinstance(value, (str, int)):
            raise InvalidInput(f"`data.{name}` must be a string", f"{prefix}/data/{name}")
    for money in _MONEY_FIELDS:
        if money in data and data[money] is not None:
            _check_money(money, data[money], prefix)
    if "currency" in data and data["currency"] is not None:
        if not isinstance(data["currency"], str) or not _CURRENCY.match(data["currency"]):
            raise InvalidInput(
                "`data.currency` must be an ISO-4217 code such as CNY", f"{prefix}/data/currency"
            )
    if "rating" in data and data["rating"] is not None:
        rating = data["rating"]
        if isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5:
            raise InvalidInput(
                "`data.rating` must be an integer from 1 to 5", f"{prefix}/data/rating"
            )
    if "items" in data and not isinstance(data["items"], list):
        raise InvalidInput("`data.items` must be an array", f"{prefix}/data/items")


_MONEY_FIELDS = ("amount", "price", "old_price", "new_price")


def _check_money(name: str, amount: Any, prefix: str) -> None:
    if not isinstance(amount, str) or not _MONEY.match(amount):
        raise InvalidInput(
            f'`data.{name}` must be a decimal string such as "99.00"', f"{prefix}/data/{name}"
        )
    try:
        Decimal(amount)
    except InvalidOperation as exc:
        raise InvalidInput(f"`data.{name}` is not a number", f"{prefix}/data/{name}") from exc


def default_subject(data: dict[str, Any]) -> str | None:
    """The subject of an event that names none: its ``order_id``."""
    order_id = data.get("order_id")
    return None if order_id is None else str(order_id)


SAMPLE_DATA: dict[str, Any] = {
    "order_id": "ord-1001",
    "buyer_id": "buyer-1",
    "seller_id": "seller-1",
    "refund_id": "ref-1",
    "review_id": "rev-1",
    "amount": "99.00",
    "currency": "CNY",
    "items": [{"sku": "SKU-1", "name": "Tea set", "qty": 1, "price": "99.00"}],
    "pay_deadline": "2026-01-01T12:00:00Z",
    "payment_method": "card",
    "reason": "card declined",
    "carrier": "SF Express",
    "tracking_no": "SF1234567890",
    "rating": 5,
    "text": "Great!",
    "sku": "SKU-1",
    "name": "Tea set",
    "price": "89.00",
    "old_price": "99.00",
    "new_price": "89.00",
    "campaign_id": "1111",
    "starts_at": "2026-11-11T00:00:00Z",
    "ends_at": "2026-11-12T00:00:00Z",
}
"""Data that satisfies every catalog type (``tidings check`` renders templates with it)."""
