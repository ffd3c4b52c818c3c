"""``tidings check``: every rule, category and template validated, templates rendered."""

from __future__ import annotations

from tidings.config import Settings
from tidings.errors import ConfigError
from tidings.events.catalog import CATALOG, SAMPLE_DATA
from tidings.templates import Templates


def check_settings(settings: Settings) -> None:
    """Raise :class:`ConfigError` (naming the key path) on the first problem found."""
    settings.check_references()
    templates = Templates(settings.templates, settings.default_locale)
    context = {**SAMPLE_DATA, "count": 3, "events": [SAMPLE_DATA] * 3,
               "event": {"id": "evt-1", "type": "order.paid", "source": "/shop", "subject": "ord-1001",
                         "time": "2026-01-01T12:00:00Z"},
               "recipient": {"id": "buyer-1"}, "timezone": "UTC", "data": SAMPLE_DATA}
    for name in settings.templates:
        templates.check(name, context)
    for index, rule in enumerate(settings.rules):
        if rule.on not in CATALOG and "." not in rule.on:
            raise ConfigError(f"event type {rule.on!r} looks wrong (expected e.g. order.paid)",
                              f"rules[{index}].on")
        for position, event_type in enumerate(rule.cancel_on):
            if "." not in event_type:
                raise ConfigError(f"event type {event_type!r} looks wrong",
                                  f"rules[{index}].cancel_on[{position}]")
    from tidings.channels.registry import provider_class

    for channel, entries in settings.providers.items():
        for position, entry in enumerate(entries):
            try:
                cls = provider_class(entry.kind)
            except ConfigError as exc:
                raise ConfigError(str(exc).split(": ", 1)[-1],
                                  f"providers.{channel}[{position}].kind") from exc
            served = getattr(cls, "channel", None)
            if served is not None and served != channel and entry.kind != "console":
                raise ConfigError(f"a {entry.kind} provider serves {served}, not {channel}",
                                  f"providers.{channel}[{position}].kind")
