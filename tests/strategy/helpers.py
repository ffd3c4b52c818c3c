"""Building blocks for the pure decision tests: a policy from a small config, events, people."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from tidings.config import build_settings
from tidings.events.cloudevents import Event
from tidings.strategy.decide import Policy
from tidings.strategy.model import Recipient
from tidings.templates import Templates

TEMPLATES = {
    "plain": {"en-US": {"title": "{{ event.type }}", "body": "order {{ order_id }}"}},
    "digest": {
        "en-US": {
            "title": "You have {{ count }} new paid orders",
            "body": "{% for e in events %}{{ e.order_id }} {% endfor %}",
        }
    },
}
CATEGORIES = {
    "order_updates": {"required": True},
    "marketing": {"quiet_hours": True, "cap": {"count": 3, "per": "1d"}},
    "reviews": {"quiet_hours": True},
}


def policy(*rules: dict[str, Any], categories: dict[str, Any] | None = None) -> Policy:
    """A policy with ``rules`` (template ``plain`` unless given)."""
    raw = {
        "categories": categories or CATEGORIES,
        "rules": [{"template": "plain", "to": "buyer", "channels": ["inapp"], **r} for r in rules],
        "templates": TEMPLATES,
    }
    settings = build_settings(raw, {}, "test")
    return Policy(settings, Templates(settings.templates, settings.default_locale))


def event(event_type: str, event_id: str = "evt-1", subject: str = "o-1", **data: Any) -> Event:
    """An event of ``subject`` for buyer-1 / seller-1."""
    body = {"order_id": subject, "buyer_id": "buyer-1", "seller_id": "seller-1", **data}
    return Event(id=event_id, source="/shop", type=event_type, data=body, subject=subject)


def buyer(tz: str | None = None, **prefs: Any) -> dict[str, Recipient]:
    """buyer-1 with a time zone and preferences."""
    return {
        "buyer-1": Recipient(
            id="buyer-1",
            known=True,
            timezone=tz,
            preferences=prefs,
            reachable=frozenset({"inapp", "email", "push"}),
        )
    }


def at(text: str, tz: str) -> float:
    """Wall time ``2026-03-08 01:30`` in ``tz`` as epoch seconds."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp()
