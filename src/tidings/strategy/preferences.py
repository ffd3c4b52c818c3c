"""Subscriber preferences: the stored document and the checks the decision makes on it.

The document (SPEC §3)::

    {"channels": {"email": true, "sms": false},
     "categories": {"marketing": {"enabled": false},
                    "order_updates": {"channels": {"email": false}}},
     "quiet_hours": {"start": "22:00", "end": "08:00"},
     "muted_until": "2026-12-01T00:00:00Z"}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from tidings.config import CategorySettings
from tidings.errors import Conflict, InvalidInput
from tidings.vocabulary import CHANNELS

_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def validate(document: Any, categories: Mapping[str, CategorySettings]) -> dict[str, Any]:
    """Check a preferences document; ``409`` when it switches off a required category."""
    if not isinstance(document, dict):
        raise InvalidInput("preferences must be a JSON object", "/")
    unknown = set(document) - {"channels", "categories", "quiet_hours", "muted_until"}
    if unknown:
        name = sorted(unknown)[0]
        raise InvalidInput(f"unknown preference {name!r}", f"/{name}")
    _channel_map(document.get("channels", {}), "/channels")
    cats = document.get("categories", {})
    if not isinstance(cats, dict):
        raise InvalidInput("`categories` must be an object", "/categories")
    for name, entry in cats.items():
        path = f"/categories/{name}"
        if name not in categories:
            raise InvalidInput(f"unknown category {name!r}", path)
        if not isinstance(entry, dict) or set(entry) - {"enabled", "channels"}:
            raise InvalidInput("a category takes `enabled` and `channels`", path)
        enabled = entry.get("enabled", True)
        if not isinstance(enabled, bool):
            raise InvalidInput("`enabled` must be true or false", f"{path}/enabled")
        if enabled is False and categories[name].required:
            raise Conflict(f"category {name!r} is required and cannot be switched off")
        _channel_map(entry.get("channels", {}), f"{path}/channels")
    quiet = document.get("quiet_hours")
    if quiet is not None:
        if not isinstance(quiet, dict):
            raise InvalidInput("`quiet_hours` must be {start, end}", "/quiet_hours")
        for key in ("start", "end"):
            if not isinstance(quiet.get(key), str) or not _HHMM.match(quiet[key]):
                raise InvalidInput(f"`quiet_hours.{key}` must be HH:MM", f"/quiet_hours/{key}")
    muted = document.get("muted_until")
    if muted is not None and not isinstance(muted, str):
        raise InvalidInput("`muted_until` must be an RFC 3339 timestamp", "/muted_until")
    if isinstance(muted, str):
        from tidings.events.cloudevents import parse_time

        parse_time(muted, "muted_until")
    return document


def _channel_map(value: Any, path: str) -> None:
    if not isinstance(value, dict):
        raise InvalidInput("must be an object of channel: true|false", path)
    for channel, flag in value.items():
        if channel not in CHANNELS:
            raise InvalidInput(f"unknown channel {channel!r}", f"{path}/{channel}")
        if not isinstance(flag, bool):
            raise InvalidInput("must be true or false", f"{path}/{channel}")


def category_enabled(prefs: Mapping[str, Any], category: str) -> bool:
    """Whether the subscriber left ``category`` on."""
    entry = prefs.get("categories", {}).get(category, {})
    return bool(entry.get("enabled", True))


def channel_opt_out(prefs: Mapping[str, Any], category: str, channel: str) -> str | None:
    """Why ``channel`` is off for ``category`` (words for the explain view), or ``None``."""
    if prefs.get("channels", {}).get(channel) is False:
        return f"opted out of {channel}"
    entry = prefs.get("categories", {}).get(category, {})
    if entry.get("channels", {}).get(channel) is False:
        return f"opted out of {channel} for {category}"
    return None
