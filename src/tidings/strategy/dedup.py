"""One notice per life-cycle step: the key that makes two events one notification.

A payment gateway that re-sends its callback makes the shop emit a second ``order.paid``
with a new id for the same order: notifying again reads as a double charge. So a rule's
notifications are unique per *key*, stored with each notification (a unique column, so two
processes or two events of one batch can never both notify):

- ``dedup: event`` — per event × rule × recipient (a replayed event never notifies twice);
- ``dedup: {by: [subject, type]}`` — per subject and event type × rule × recipient: one
  notice per step of an order. The default for rules on the order life cycle's events
  (:data:`~tidings.strategy.lifecycle.TRACKED`; a refund's steps also by ``refund_id``); an
  event without the parts (no subject) falls back to the per-event key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from tidings.config import DedupSettings, RuleSettings
from tidings.events.cloudevents import Event
from tidings.strategy import lifecycle

STEP = DedupSettings(by=["subject", "type"])
"""The life-cycle rules' default."""
REFUND_STEP = DedupSettings(by=["subject", "type", "data.refund_id"])
"""A refund's steps: an order may see several refunds, each notified."""


def policy_of(rule: RuleSettings) -> DedupSettings | None:
    """The rule's dedup parts, or ``None`` for one notice per event."""
    if rule.dedup == "event":
        return None
    if rule.dedup is not None:
        return rule.dedup
    if rule.on in lifecycle.REFUND_STEPS:
        return REFUND_STEP
    return STEP if rule.on in lifecycle.TRACKED else None


def event_key(event_pk: str, rule_id: str, recipient_id: str) -> str:
    """The per-event key (one notification per event × rule × recipient, ever)."""
    return f"{event_pk}:{rule_id}:{recipient_id}"


def key(rule: RuleSettings, event: Event, event_pk: str, recipient_id: str) -> str:
    """The key a notification of ``rule`` for ``event`` to ``recipient_id`` is unique by."""
    parts = _parts(policy_of(rule), event)
    if parts is None:
        return event_key(event_pk, rule.id, recipient_id)
    text = "\x1f".join((rule.id, recipient_id, *parts))
    # hashed: a subject and a subscriber id together may be longer than the column
    return "step:" + hashlib.sha256(text.encode()).hexdigest()


def reason(rule: RuleSettings, event: Event, earlier_event_id: str | None) -> str:
    """Why a decision was ``deduplicated``, naming the event that was notified."""
    parts = _parts(policy_of(rule), event)
    if parts is None or earlier_event_id in (None, event.id):
        return "already notified for this event and rule"
    by = policy_of(rule)
    assert by is not None
    what = event.type if "type" in by.by else f"rule {rule.id}"
    named = [value for part, value in zip(by.by, parts, strict=True) if part != "type"]
    where = f" for {', '.join(named)}" if named else ""
    return f"{what} was already notified{where} (event {earlier_event_id})"


def _parts(by: DedupSettings | None, event: Event) -> list[str] | None:
    if by is None:
        return None
    parts: list[str] = []
    for part in by.by:
        value = _value(part, event.type, event.subject, event.data)
        if value is None:
            return None
        parts.append(value)
    return parts


def _value(part: str, event_type: str, subject: str | None, data: Mapping[str, Any]) -> str | None:
    if part == "type":
        return event_type
    if part == "subject":
        return subject or None
    value = data.get(part.removeprefix("data."))
    return None if value is None or value == "" else str(value)
