"""``tidings check``: every rule, category and template validated, templates rendered.

Beside :mod:`tidings.config` (which checks each key's shape as it loads), and above the
layers it asks: the strategy's timing keys, the templates rendered with the catalog's sample
data, and each provider ``kind`` against the provider registry.
"""

from __future__ import annotations

from tidings.channels.registry import provider_class
from tidings.config import Settings
from tidings.errors import ConfigError, raise_problems
from tidings.events.catalog import CATALOG, SAMPLE_DATA
from tidings.strategy import lifecycle, topics
from tidings.strategy.variants import variant_problems
from tidings.templates import Templates


def check_settings(settings: Settings) -> None:
    """Raise every problem found at once: one :class:`ConfigError` (naming the key path) or
    :class:`~tidings.errors.ConfigProblems` listing each."""
    raise_problems(problems(settings))


def problems(settings: Settings) -> list[ConfigError]:
    """Every problem of the config: references, templates, timing keys, event types, providers."""
    found: list[ConfigError] = []
    try:
        settings.check_references()
    except ConfigError as exc:
        found.append(exc)
    names = list(settings.templates) if not found else _well_formed(settings)
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
    for name in names:
        try:
            templates.check(name, context)
        except ConfigError as exc:
            found.append(exc)
    found += _strategy_problems(settings)
    found += variant_problems(settings)
    found += topics.problems(settings)
    for index, rule in enumerate(settings.rules):
        if rule.on not in CATALOG and "." not in rule.on:
            found.append(
                ConfigError(
                    f"event type {rule.on!r} looks wrong (expected e.g. order.paid)",
                    f"rules[{index}].on",
                )
            )
        for position, event_type in enumerate(rule.cancel_on):
            if "." not in event_type:
                found.append(
                    ConfigError(
                        f"event type {event_type!r} looks wrong",
                        f"rules[{index}].cancel_on[{position}]",
                    )
                )
    return found + _provider_problems(settings)


def _well_formed(settings: Settings) -> list[str]:
    """The templates worth rendering: each locale has a string title and body."""
    return [
        name
        for name, locales in settings.templates.items()
        if locales
        and all(isinstance(v.get(k), str) for v in locales.values() for k in ("title", "body"))
    ]


def _provider_problems(settings: Settings) -> list[ConfigError]:
    found: list[ConfigError] = []
    for channel, entries in settings.providers.items():
        for position, entry in enumerate(entries):
            try:
                cls = provider_class(entry.kind)
            except ConfigError as exc:
                where = f"providers.{channel}[{position}].kind"
                found.append(ConfigError(str(exc).split(": ", 1)[-1], where))
                continue
            served = getattr(cls, "channel", None)
            if served is not None and served != channel and entry.kind != "console":
                found.append(
                    ConfigError(
                        f"a {entry.kind} provider serves {served}, not {channel}",
                        f"providers.{channel}[{position}].kind",
                    )
                )
    return found


def _strategy_problems(settings: Settings) -> list[ConfigError]:
    """The timing keys: delay, cancel_on, digest, ttl, fallback_after, quiet hours, caps."""
    found: list[ConfigError] = []
    for name, category in settings.categories.items():
        path = f"categories.{name}"
        if category.required and category.quiet_hours:
            found.append(
                ConfigError("a required category ignores quiet hours", f"{path}.quiet_hours")
            )
        if category.cap is not None and category.cap.per <= 0:
            found.append(ConfigError("the cap needs a window longer than 0", f"{path}.cap.per"))
    for index, rule in enumerate(settings.rules):
        path = f"rules[{index}]"
        for key in ("delay", "ttl", "fallback_after"):
            value = getattr(rule, key)
            if value is not None and value <= 0:
                found.append(ConfigError(f"`{key}` must be longer than 0", f"{path}.{key}"))
        if rule.digest is not None and rule.digest.window <= 0:
            found.append(
                ConfigError("the digest window must be longer than 0", f"{path}.digest.window")
            )
        for position, pattern in enumerate(rule.cancel_on):
            if lifecycle.type_matches(pattern, rule.on):
                found.append(
                    ConfigError(
                        f"{pattern!r} matches the rule's own event type {rule.on!r}",
                        f"{path}.cancel_on[{position}]",
                    )
                )
            if "*" in pattern and not pattern.endswith(".*"):
                found.append(
                    ConfigError(
                        "a wildcard is only allowed as a last segment (refund.*)",
                        f"{path}.cancel_on[{position}]",
                    )
                )
        if rule.fallback_after is not None and "inapp" not in rule.channels:
            found.append(
                ConfigError(
                    "fallback_after waits for the in-app item to be read: add inapp to channels",
                    f"{path}.fallback_after",
                )
            )
    return found
