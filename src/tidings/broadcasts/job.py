"""What every recipient of a broadcast is decided with: a rule, templates and an event.

A broadcast posted to the API carries its own rule (category, channels, template or inline
content); a topic rule's broadcast names the configured rule that made it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

from tidings.config import RuleSettings
from tidings.events.cloudevents import Event
from tidings.strategy import timing
from tidings.strategy.decide import Policy
from tidings.templates import Templates

INLINE = "broadcast"
"""The template name of a broadcast's inline ``content``."""
SOURCE = "/tidings/broadcasts"
"""The CloudEvents source of the event a posted broadcast is stored as."""
EVENT_TYPE = "broadcast"


@dataclass(frozen=True, slots=True)
class Job:
    """A running broadcast, ready to decide recipients."""

    broadcast_id: str
    event_pk: str
    event: Event
    accepted_at: float
    rule: RuleSettings
    policy: Policy
    local_time: str | None = None
    rate: float | None = None


class SharedRender(Templates):
    """A broadcast's templates: rendered once per locale and time zone, not per recipient.

    Every recipient of a broadcast gets the same event data; only the locale, the time zone
    (dates) and the recipient's id could differ. A template that names ``recipient`` is
    rendered for each one; any other is rendered once per (locale, zone) and shared.
    """

    def __init__(
        self, templates: Mapping[str, Mapping[str, Mapping[str, Any]]], default_locale: str
    ) -> None:
        super().__init__(templates, default_locale)
        self._personal = {
            name: "recipient" in json.dumps(variants, ensure_ascii=False)
            for name, variants in templates.items()
        }
        self._memo: dict[tuple[str, str | None, Any], tuple[str, dict[str, Any]]] = {}

    def personal(self, name: str) -> bool:
        """Whether template ``name`` reads the recipient (so it differs between them)."""
        return self._personal.get(name, True)

    def render(
        self, name: str, locale: str | None, context: Mapping[str, Any], *, strict: bool = False
    ) -> tuple[str, dict[str, Any]]:
        """As :meth:`Templates.render`, shared between recipients who would get the same."""
        if strict or self.personal(name):
            return super().render(name, locale, context, strict=strict)
        key = (name, locale, context.get("timezone"))
        found = self._memo.get(key)
        if found is None:
            found = super().render(name, locale, context)
            if len(self._memo) < 4096:
                self._memo[key] = found
        return found


def message(
    rule: RuleSettings, content: dict[str, Any] | None, local_time: str | None
) -> dict[str, Any]:
    """The ``message`` column of a posted broadcast."""
    return {"rule": rule.model_dump(mode="json"), "content": content, "local_time": local_time}


def event_of(envelope: Any, received_at: float) -> Event:
    """The event a broadcast's recipients are decided on, from its stored envelope."""
    if isinstance(envelope, str | bytes):
        envelope = json.loads(envelope)
    data = envelope.get("data")
    return Event(
        id=str(envelope["id"]),
        source=str(envelope["source"]),
        type=str(envelope["type"]),
        data=data if isinstance(data, dict) else {},
        subject=envelope.get("subject"),
        time=received_at,
        time_text=envelope.get("time"),
    )


def job_of(row: Any, event: Event, accepted_at: float, policy: Policy) -> Job | str:
    """The job of a broadcast row, or why it cannot run (its rule left the config)."""
    stored = row.message if isinstance(row.message, dict) else json.loads(row.message)
    if "rule" in stored:
        rule = RuleSettings.model_validate(stored["rule"])
    else:
        found = [r for r in policy.settings.rules if r.id == stored.get("rule_id")]
        if not found:
            return f"rule {stored.get('rule_id')} is no longer configured"
        rule = found[0]
    if rule.category not in policy.settings.categories:
        return f"category {rule.category} is no longer configured"
    content = stored.get("content")
    if content:
        sources: Mapping[str, Any] = {INLINE: content}
    elif rule.template not in policy.settings.templates:
        return f"template {rule.template} is no longer configured"
    else:
        sources = {rule.template: policy.settings.templates[rule.template]}
    policy = Policy(policy.settings, SharedRender(sources, policy.settings.default_locale))
    return Job(
        row.id,
        row.event_pk,
        event,
        accepted_at,
        rule,
        policy,
        stored.get("local_time"),
        row.rate,
    )


def next_local(hhmm: str, tz_name: str | None, now: float) -> float:
    """The next moment (at or after ``now``) the recipient's clock shows ``hhmm``."""
    tz = timing.zone(tz_name)
    hours, minutes = (int(part) for part in hhmm.split(":"))
    today = datetime.fromtimestamp(now, tz).date()
    for days in range(3):
        moment = datetime.combine(today + timedelta(days=days), time(hours, minutes), tzinfo=tz)
        if moment.timestamp() >= now:
            return moment.timestamp()
    return now  # unreachable: a wall time recurs within two days
