"""The strategy's vocabulary: recipients, the state a decision reads, plans and decisions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from tidings.vocabulary import Channel, Priority

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
class PastEvent:
    """An event already processed for a subject (what stale suppression compares with)."""

    type: str
    id: str
    time: float | None = None
    refund_id: str | None = None


@dataclass(frozen=True, slots=True)
class Scheduled:
    """A deferred notification not fired yet (what ``cancel_on`` events cancel)."""

    notification_id: str
    event_pk: str
    rule_id: str
    subscriber_id: str
    subject: str | None
    cancel_on: tuple[str, ...]


@dataclass(slots=True)
class OpenDigest:
    """A digest notification still collecting events for one rule and recipient."""

    notification_id: str
    count: int
    events: list[dict[str, Any]]
    due_at: float


@dataclass(slots=True)
class State:
    """What the decision needs beyond the event and its recipients, loaded by the processor.

    ``history``: subject → events processed before; ``sent``: (subscriber, category) → the
    notifications counted against the category's cap; ``digests``: (rule, subscriber) → the
    open digest; ``scheduled``: subject → deferred notifications a ``cancel_on`` may cancel.
    """

    history: dict[str, list[PastEvent]] = field(default_factory=dict)
    sent: dict[tuple[str, str], int] = field(default_factory=dict)
    digests: dict[tuple[str, str], OpenDigest] = field(default_factory=dict)
    scheduled: dict[str, list[Scheduled]] = field(default_factory=dict)
    rendered: dict[tuple[str, str, str, str], tuple[str, dict[str, Any]]] = field(
        default_factory=dict
    )
    """(event source, event id, rule, subscriber) → (locale, content) rendered ahead
    (:func:`~tidings.strategy.decide.prerender`); a plan not found here is rendered when made."""


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
    fallback_at: float | None = None
    """When set, the fallback channels go out then, only if the in-app item is still unread."""
    cancel_on: tuple[str, ...] = ()
    digest: list[dict[str, Any]] | None = None
    """The events collected so far, for a digest notification."""


@dataclass(frozen=True, slots=True)
class Fold:
    """An event folded into an open digest: its new content, count and events."""

    notification_id: str
    content: dict[str, Any]
    count: int
    events: list[dict[str, Any]]
    close: bool
    """The digest is full (``max``): it goes out now."""


@dataclass(frozen=True, slots=True)
class Cancellation:
    """A deferred notification that an event cancels."""

    notification_id: str
    event_pk: str
    rule_id: str
    subscriber_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Decision:
    """One matched rule × recipient, with the reason a support agent can read."""

    rule_id: str
    recipient_id: str | None
    outcome: Outcome
    reason: str
    until: float | None = None
    plan: Plan | None = None
    fold: Fold | None = None
    fanout: str | None = None
    """A topic rule's decision: the topic whose followers its broadcast decides for."""
