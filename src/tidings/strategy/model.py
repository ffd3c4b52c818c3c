"""The strategy's vocabulary: recipients as the decision sees them, plans and decisions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from tidings.channels.base import Channel, Priority

Outcome = Literal["sent", "deferred", "suppressed", "cancelled", "digested", "deduplicated"]


@dataclass(frozen=True, slots=True)
class Recipient:
    """What the decision knows of one subscriber (loaded before deciding)."""

    id: str
    known: bool = False
    """Registered through the subscribers API."""
    locale: str | None = None
    timezone: str | None = None
    preferences: dict[str, Any] = field(default_factory=dict)
    reachable: frozenset[Channel] = frozenset({"inapp"})
    """Channels with an address on file (inapp always; push needs an active device …)."""


@dataclass(frozen=True, slots=True)
class Plan:
    """A notification the decision wants created."""

    rule_id: str
    subscriber_id: str
    category: str
    priority: Priority
    channels: tuple[Channel, ...]
    fallback: tuple[Channel, ...]
    locale: str
    content: dict[str, Any]
    due_at: float
    expires_at: float | None = None
    subject: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """One matched rule × recipient, with the reason a support agent can read."""

    rule_id: str
    recipient_id: str | None
    outcome: Outcome
    reason: str
    until: float | None = None
    plan: Plan | None = None
