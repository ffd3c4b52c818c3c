"""The decision step: an event and the state it needs in, decisions with reasons out.

``recipients_of`` says whose state to load; ``decide`` is pure — no I/O, no clock of its own
(``now`` is passed in) — so it runs in microseconds and every outcome can be explained.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tidings.channels.base import Channel
from tidings.config import RuleSettings, Settings
from tidings.events.cloudevents import Event
from tidings.strategy import preferences
from tidings.strategy.model import Decision, Plan, Recipient
from tidings.templates import Templates

_NOUNS = {"inapp": "in-app inbox", "email": "email address", "sms": "phone number",
          "push": "active device", "webhook": "webhook endpoint"}


@dataclass(frozen=True, slots=True)
class Policy:
    """The parts of the config the decision reads, prepared once."""

    settings: Settings
    templates: Templates

    def rules_for(self, event_type: str) -> list[RuleSettings]:
        """The rules listening to ``event_type``."""
        return [rule for rule in self.settings.rules if rule.on == event_type]


def matches(rule: RuleSettings, data: Mapping[str, Any]) -> bool:
    """Whether the event's data satisfies the rule's ``when`` conditions."""
    return all(data.get(key) == value for key, value in rule.when.items())


def recipient_ids(rule: RuleSettings, data: Mapping[str, Any]) -> list[str]:
    """Who ``rule.to`` names: ``buyer`` → ``data.buyer_id``; ``data.x`` → ``data.x``."""
    field = rule.to.removeprefix("data.") if rule.to.startswith("data.") else f"{rule.to}_id"
    value = data.get(field)
    if value is None or value == "":
        return []
    values = value if isinstance(value, list) else [value]
    return list(dict.fromkeys(str(v) for v in values if v not in (None, "")))


def recipients_of(policy: Policy, event: Event) -> set[str]:
    """Every subscriber id the decision for ``event`` will ask about."""
    ids: set[str] = set()
    for rule in policy.rules_for(event.type):
        if matches(rule, event.data):
            ids.update(recipient_ids(rule, event.data))
    return ids


def decide(
    policy: Policy, event: Event, recipients: Mapping[str, Recipient], now: float
) -> list[Decision]:
    """One decision per matched rule and recipient."""
    decisions: list[Decision] = []
    for rule in policy.rules_for(event.type):
        if not matches(rule, event.data):
            continue
        ids = recipient_ids(rule, event.data)
        if not ids:
            decisions.append(
                Decision(rule.id, None, "suppressed", f"the event names no {rule.to} (data.{rule.to}_id)")
            )
            continue
        for recipient_id in ids:
            recipient = recipients.get(recipient_id) or Recipient(id=recipient_id)
            decisions.append(_decide_one(policy, rule, event, recipient, now))
    return decisions


def _decide_one(
    policy: Policy, rule: RuleSettings, event: Event, recipient: Recipient, now: float
) -> Decision:
    category = policy.settings.categories[rule.category]
    prefs = recipient.preferences
    if not category.required and not preferences.category_enabled(prefs, rule.category):
        return Decision(rule.id, recipient.id, "suppressed", f"opted out of {rule.category}")
    channels, skipped = _channels(rule.channels, rule.category, recipient)
    fallback, _ = _channels(rule.fallback, rule.category, recipient)
    if not channels and not fallback:
        reason = "; ".join(skipped) or "no channel left"
        return Decision(rule.id, recipient.id, "suppressed", reason)
    external = [c for c in rule.channels if c != "inapp"]
    if fallback and (not channels or (external and not set(external) & set(channels))):
        # the channels the rule relies on cannot be reached: fall back at once
        channels = [*channels, *fallback]
        fallback = []
        skipped.append("falling back to " + ", ".join(rule.fallback))
    locale, content = policy.templates.render(rule.template, recipient.locale, _context(event, recipient))
    plan = Plan(
        rule_id=rule.id,
        subscriber_id=recipient.id,
        category=rule.category,
        priority=rule.priority,
        channels=tuple(channels),
        fallback=tuple(fallback),
        locale=locale,
        content=content,
        due_at=now,
        expires_at=None if rule.ttl is None else now + rule.ttl,
        subject=event.subject,
    )
    reason = "sent on " + ", ".join(channels)
    if skipped:
        reason += " (" + "; ".join(skipped) + ")"
    return Decision(rule.id, recipient.id, "sent", reason, plan=plan)


def _channels(
    wanted: Iterable[Channel], category: str, recipient: Recipient
) -> tuple[list[Channel], list[str]]:
    kept: list[Channel] = []
    skipped: list[str] = []
    for channel in wanted:
        opt_out = preferences.channel_opt_out(recipient.preferences, category, channel)
        if opt_out:
            skipped.append(opt_out)
        elif channel not in recipient.reachable:
            skipped.append(f"no {_NOUNS[channel]} on file for {channel}")
        else:
            kept.append(channel)
    return kept, skipped


def _context(event: Event, recipient: Recipient) -> dict[str, Any]:
    return {
        **event.data,
        "event": {"id": event.id, "type": event.type, "source": event.source,
                  "subject": event.subject, "time": event.time_text},
        "recipient": {"id": recipient.id},
        "timezone": recipient.timezone or "UTC",
        "data": event.data,
    }
