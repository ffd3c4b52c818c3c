"""Rules addressed to a topic: ``to: topic:product.{sku}.restock`` (SPEC §10).

The key is built from the event's data; the rule's recipients are the topic's followers,
decided one by one when its broadcast fans out (see :mod:`tidings.broadcasts`). Here, pure:
whether a rule addresses a topic, which key an event gives it, and the decision that says so.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any

from tidings.config import RuleSettings, Settings
from tidings.errors import ConfigError
from tidings.events.catalog import SAMPLE_DATA
from tidings.strategy.model import Decision

PREFIX = "topic:"
_FIELD = re.compile(r"\{([A-Za-z0-9_]+)\}")
KEY = re.compile(r"^[A-Za-z0-9_.:@-]{1,256}$")
"""What a topic key may be made of."""


def addresses_topic(rule: RuleSettings) -> bool:
    """Whether ``rule.to`` names a topic."""
    return rule.to.startswith(PREFIX)


def fields(to: str) -> list[str]:
    """The data fields a topic address needs (``topic:product.{sku}.restock`` → ``[sku]``)."""
    return _FIELD.findall(to)


def topic_key(to: str, data: Mapping[str, Any]) -> str | None:
    """The topic an event's data gives ``to`` (``None`` when a field is missing or unfit)."""
    missing = False

    def value(match: re.Match[str]) -> str:
        nonlocal missing
        found = data.get(match.group(1))
        if found is None or found == "" or isinstance(found, dict | list):
            missing = True
            return ""
        return str(found)

    key = _FIELD.sub(value, to.removeprefix(PREFIX))
    return None if missing or not KEY.match(key) else key


@functools.lru_cache(maxsize=256)
def _shape(to: str) -> re.Pattern[str]:
    """The keys ``to`` can give: its text with each ``{field}`` standing for any key part."""
    parts = _FIELD.split(to.removeprefix(PREFIX))
    # split() alternates text and field names: text, field, text, …
    return re.compile(
        "".join(re.escape(p) if i % 2 == 0 else "[A-Za-z0-9_.:@-]+" for i, p in enumerate(parts))
    )


def addressed(rules: Iterable[RuleSettings], key: str) -> str | None:
    """The address of a topic rule that can give ``key`` (``topic:product.{sku}.restock`` for
    ``product.sku-1.restock``), or ``None``."""
    for rule in rules:
        if addresses_topic(rule) and _shape(rule.to).fullmatch(key):
            return rule.to
    return None


def fan_out(rule: RuleSettings, data: Mapping[str, Any]) -> Decision:
    """The event's decision for a topic rule: fanned out to the topic, or why not."""
    key = topic_key(rule.to, data)
    if key is None:
        names = ", ".join(f"data.{name}" for name in fields(rule.to))
        return Decision(
            rule.id, None, "suppressed", f"the event gives no topic for {rule.to} (needs {names})"
        )
    return Decision(
        rule.id, None, "sent", f"fanned out to the subscribers of topic {key}", fanout=key
    )


def problems(settings: Settings) -> list[ConfigError]:
    """What ``tidings check`` finds wrong with the topic rules.

    The key must come out of the catalog's sample data (the fields it names are the event's),
    and a topic's followers are decided one by one by its broadcast: no digest, no ``cancel_on``.
    """
    found: list[ConfigError] = []
    for index, rule in enumerate(settings.rules):
        if not addresses_topic(rule):
            continue
        path = f"rules[{index}]"
        if topic_key(rule.to, SAMPLE_DATA) is None:
            found.append(
                ConfigError(
                    f"{rule.to!r} does not make a topic key from the event's data", f"{path}.to"
                )
            )
        if rule.digest is not None:
            found.append(ConfigError("a topic rule cannot digest", f"{path}.digest"))
        if rule.cancel_on:
            found.append(
                ConfigError("a topic rule cannot be cancelled by later events", f"{path}.cancel_on")
            )
    return found
