"""``tidings check``: every rule, category and template validated, templates rendered."""

from __future__ import annotations

from tidings.config import Settings
from tidings.errors import ConfigError
from tidings.events.catalog import CATALOG, SAMPLE_DATA
from tidings.strategy import lifecycle
from tidings.strategy.variants import variant_problems
from tidings.templates import Templates


def check_settings(settings: Settings) -> None:
    """Raise :class:`ConfigError` (naming the key path) on the first problem found."""
    settings.check_references()
    templates = Templates(settings.templates, settings.default_locale)
    context = {
        **SAMPLE_DATA,
        "count": 3,
        "events": [SAMPLE_DATA] * 3,
        "event": {
            "id": "evt-1",
            "type": "order.paid",
            "source": "/shop",
            "subject": "ord-1001",
            "time": "2026-01-01T12:00:00Z",
        },
        "recipient": {"id": "buyer-1"},
        "timezone": "UTC",
        "data": SAMPLE_DATA,
    }
    for name in settings.templates:
        templates.check(name, context)
    _check_strategy(settings)
    for problem in variant_problems(settings):
        raise problem
    for index, rule in enumerate(settings.rules):
        if rule.on not in CATALOG and "." not in rule.on:
            raise ConfigError(
                f"event type {rule.on!r} looks wrong (expected e.g. order.paid)",
                f"rules[{index}].on",
            )
        for position, event_type in enumerate(rule.cancel_on):
            if "." not in event_type:
                raise ConfigError(
                    f"event type {event_type!r} looks wrong",
                    f"rules[{index}].cancel_on[{position}]",
                )
    from tidings.channels.registry import provider_class

    for channel, entries in settings.providers.items():
        for position, entry in enumerate(entries):
            try:
                cls = provider_class(entry.kind)
            except ConfigError as exc:
                raise ConfigError(
                    str(exc).split(": ", 1)[-1], f"providers.{channel}[{position}].kind"
                ) from exc
            served = getattr(cls, "channel", None)
            if served is not None and served != channel and entry.kind != "console":
                raise ConfigError(
                    f"a {entry.kind} provider serves {served}, not {channel}",
                    f"providers.{channel}[{position}].kind",
                )


def _check_strategy(settings: Settings) -> None:
    """The timing keys: delay, cancel_on, digest, ttl, fallback_after, quiet hours, caps."""
    for name, category in settings.categories.items():
        path = f"categories.{name}"
        if category.required and category.quiet_hours:
            raise ConfigError("a required category ignores quiet hours", f"{path}.quiet_hours")
        if category.cap is not None and category.cap.per <= 0:
            raise ConfigError("the cap needs a window longer than 0", f"{path}.cap.per")
    for index, rule in enumerate(settings.rules):
        path = f"rules[{index}]"
        for key in ("delay", "ttl", "fallback_after"):
            value = getattr(rule, key)
            if value is not None and value <= 0:
                raise ConfigError(f"`{key}` must be longer than 0", f"{path}.{key}")
        if rule.digest is not None and rule.digest.window <= 0:
            raise ConfigError("the digest window must be longer than 0", f"{path}.digest.window")
        for position, pattern in enumerate(rule.cancel_on):
            if lifecycle.type_matches(pattern, rule.on):
                raise ConfigError(
                    f"{pattern!r} matches the rule's own event type {rule.on!r}",
                    f"{path}.cancel_on[{position}]",
                )
            if "*" in pattern and not pattern.endswith(".*"):
                raise ConfigError(
                    "a wildcard is only allowed as a last segment (refund.*)",
                    f"{path}.cancel_on[{position}]",
                )
        if rule.fallback_after is not None and "inapp" not in rule.channels:
            raise ConfigError(
                "fallback_after waits for the in-app item to be read: add inapp to channels",
                f"{path}.fallback_after",
            )
