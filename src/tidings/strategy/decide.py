"""The decision step: an event and the state it needs in, decisions with reasons out.

``recipients_of`` says whose state to load; ``decide`` is pure — no I/O, no clock of its own
(``now`` and the :class:`~tidings.strategy.model.State` are passed in) — so it runs in
microseconds and every outcome can be explained. The order of the checks is the order a
support agent would ask: opted out? already cancelled? stale? reachable? then *when*:
digest, cap, delay, mute, quiet hours, ttl.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tidings.config import CategorySettings, RuleSettings, Settings
from tidings.events.cloudevents import Event
from tidings.strategy import lifecycle, preferences, timing, topics
from tidings.strategy.model import (
    Cancellation,
    Decision,
    Fold,
    OpenDigest,
    Plan,
    Recipient,
    Scheduled,
    State,
)
from tidings.templates import Templates
from tidings.vocabulary import Channel

_NOUNS = {
    "inapp": "in-app inbox",
    "email": "email address",
    "sms": "phone number",
    "push": "active device",
    "webhook": "webhook endpoint",
    "wechat": "WeChat openid",
}
DIGEST_KEEP = 100
"""Events a digest keeps for its template (``count`` still counts them all)."""
NO_RULE = ""
"""The ``rule_id`` of the decision that says why no rule took an event."""


@dataclass(frozen=True, slots=True)
class Policy:
    """The parts of the config the decision reads, prepared once."""

    settings: Settings
    templates: Templates
    _by_type: dict[str, list[RuleSettings]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    """``rules_for`` per event type, built on first use (asked several times per event)."""

    def rules_for(self, event_type: str) -> list[RuleSettings]:
        """The rules listening to ``event_type``."""
        found = self._by_type.get(event_type)
        if found is None:
            found = [rule for rule in self.settings.rules if rule.on == event_type]
            if len(self._by_type) < 4096:  # event types are open-ended: keep the map bounded
                self._by_type[event_type] = found
        return list(found)


def matches(rule: RuleSettings, data: Mapping[str, Any]) -> bool:
    """Whether the event's data satisfies the rule's ``when`` conditions."""
    return all(data.get(key) == value for key, value in rule.when.items())


def recipient_ids(rule: RuleSettings, data: Mapping[str, Any]) -> list[str]:
    """Who ``rule.to`` names: ``buyer`` → ``data.buyer_id``; ``data.x`` → ``data.x``."""
    value = data.get(_target_field(rule.to))
    if value is None or value == "":
        return []
    if not isinstance(value, list):
        return [str(value)]
    return list(dict.fromkeys(str(v) for v in value if v not in (None, "")))


@functools.lru_cache(maxsize=1024)
def _target_field(to: str) -> str:
    return to.removeprefix("data.") if to.startswith("data.") else f"{to}_id"


def recipients_of(policy: Policy, event: Event) -> set[str]:
    """Every subscriber id the decision for ``event`` will ask about."""
    ids: set[str] = set()
    for rule in policy.rules_for(event.type):
        if matches(rule, event.data):
            ids.update(recipient_ids(rule, event.data))
    return ids


def decide(
    policy: Policy,
    event: Event,
    recipients: Mapping[str, Recipient],
    now: float,
    state: State | None = None,
) -> list[Decision]:
    """One decision per matched rule and recipient."""
    state = state if state is not None else State()
    decisions: list[Decision] = []
    for rule in policy.rules_for(event.type):
        if not matches(rule, event.data):
            continue
        if topics.addresses_topic(rule):  # its followers are decided by its broadcast
            decisions.append(topics.fan_out(rule, event.data))
            continue
        ids = recipient_ids(rule, event.data)
        if not ids:
            decisions.append(
                Decision(
                    rule.id, None, "suppressed", f"the event names no {rule.to} (data.{rule.to}_id)"
                )
            )
            continue
        for recipient_id in ids:
            recipient = recipients.get(recipient_id) or Recipient(id=recipient_id)
            decisions.append(decide_for(policy, rule, event, recipient, now, state))
    return decisions or [unmatched(policy, event)]


def unmatched(policy: Policy, event: Event) -> Decision:
    """Why no rule took the event: none listens to its type, or their conditions failed."""
    rules = policy.rules_for(event.type)
    if not rules:
        return Decision(NO_RULE, None, "suppressed", f"no rule listens to {event.type}")
    unmet = []
    for rule in rules:
        failed = [f"{k}={v}" for k, v in rule.when.items() if event.data.get(k) != v]
        unmet.append(f"rule {rule.id}: condition {' and '.join(failed)} not met")
    return Decision(NO_RULE, None, "suppressed", "; ".join(unmet))


def cancellations(
    event: Event, event_pk: str, scheduled: Sequence[Scheduled]
) -> list[Cancellation]:
    """The deferred notifications of the event's subject that it cancels (``cancel_on``)."""
    return [
        Cancellation(
            s.notification_id,
            s.event_pk,
            s.rule_id,
            s.subscriber_id,
            f"cancelled by {event.type} {event.id}",
        )
        for s in scheduled
        if s.event_pk != event_pk
        and s.subject == event.subject
        and lifecycle.cancels(s.cancel_on, event.type)
    ]


def decide_for(
    policy: Policy,
    rule: RuleSettings,
    event: Event,
    recipient: Recipient,
    now: float,
    state: State,
) -> Decision:
    """One rule × recipient (how :func:`decide` and a broadcast decide each one): whether
    (opted out? cancelled? stale? reachable?), then how and when."""
    category = policy.settings.categories[rule.category]
    refused = _refused(rule, category, event, recipient, state)
    if refused is not None:
        return refused
    route = _route(rule, recipient)
    if isinstance(route, Decision):
        return route
    open_digest = state.digests.get((rule.id, recipient.id)) if rule.digest is not None else None
    if open_digest is not None and open_digest.due_at > now:
        return _fold(policy, rule, recipient, event, open_digest)
    if category.cap is not None and (
        state.sent.get((recipient.id, rule.category), 0) >= category.cap.count
    ):
        return _suppressed(
            rule,
            recipient,
            f"over the cap of {category.cap.count} per "
            f"{timing.duration(category.cap.per)} for {rule.category}",
        )
    due, why = _when(rule, category, recipient, now)
    intended = now + (rule.delay or 0.0) + (rule.digest.window if rule.digest else 0.0)
    expires_at = None if rule.ttl is None else intended + rule.ttl
    if expires_at is not None and due > expires_at:
        ttl = timing.duration(rule.ttl or 0)
        return _suppressed(rule, recipient, f"would expire (ttl {ttl}) before {why[-1]}")
    plan = _plan(policy, rule, event, recipient, route, due, expires_at, now, state)
    where = route.described(rule)
    if due > now:
        reason = "; ".join(why) + f"; then on {where}"
        return Decision(rule.id, recipient.id, "deferred", reason, until=due, plan=plan)
    return Decision(rule.id, recipient.id, "sent", "sent on " + where, plan=plan)


def _suppressed(rule: RuleSettings, recipient: Recipient, reason: str) -> Decision:
    return Decision(rule.id, recipient.id, "suppressed", reason)


def _refused(
    rule: RuleSettings,
    category: CategorySettings,
    event: Event,
    recipient: Recipient,
    state: State,
) -> Decision | None:
    """The decision when the recipient opted out, or the subject's history cancelled or
    superseded the event; ``None`` when none of these holds."""
    if not category.required and not preferences.category_enabled(
        recipient.preferences, rule.category
    ):
        return _suppressed(rule, recipient, f"opted out of {rule.category}")
    history = state.history.get(event.subject or "", []) if event.subject else []
    cancelled_by = next((p for p in history if lifecycle.cancels(rule.cancel_on, p.type)), None)
    if cancelled_by is not None:
        return Decision(
            rule.id,
            recipient.id,
            "cancelled",
            f"cancelled by {cancelled_by.type} {cancelled_by.id} (processed earlier)",
        )
    refund_id = event.data.get("refund_id")
    newer = lifecycle.obsoleted_by(
        event.type, None if refund_id is None else str(refund_id), history
    )
    if newer is not None:
        return _suppressed(
            rule,
            recipient,
            f"stale: {newer.type} {newer.id} was already processed for "
            f"{event.subject}, so this {event.type} is no longer news",
        )
    return None


@dataclass(slots=True)
class _Route:
    """The channels a notification goes on, its fallback, and the channels skipped (why)."""

    channels: list[Channel]
    fallback: list[Channel]
    skipped: list[str]
    timed_fallback: bool
    """The fallback waits ``rule.fallback_after`` for the in-app item to be read."""

    def described(self, rule: RuleSettings) -> str:
        """``inapp; sms after 10m if still unread (no email address on file for email)``."""
        where = ", ".join(self.channels)
        if self.timed_fallback and rule.fallback_after and self.fallback:
            where += (
                f"; {', '.join(self.fallback)} after {timing.duration(rule.fallback_after)}"
                " if still unread"
            )
        if self.skipped:
            where += " (" + "; ".join(self.skipped) + ")"
        return where


def _route(rule: RuleSettings, recipient: Recipient) -> _Route | Decision:
    """Where the notification goes; a suppression when no channel reaches the recipient.

    When none of the rule's external channels can be reached and the fallback is not timed,
    the fallback channels join at once.
    """
    channels, skipped = _channels(rule.channels, rule.category, recipient)
    fallback, _ = _channels(rule.fallback, rule.category, recipient)
    if not channels and not fallback:
        return _suppressed(rule, recipient, "; ".join(skipped) or "no channel left")
    external = [c for c in rule.channels if c != "inapp"]
    timed_fallback = rule.fallback_after is not None and "inapp" in channels
    if (
        not timed_fallback
        and fallback
        and (not channels or (external and not set(external) & set(channels)))
    ):
        channels = [*channels, *fallback]
        fallback = []
        skipped.append("falling back to " + ", ".join(rule.fallback))
    return _Route(channels, fallback, skipped, timed_fallback)


def _plan(
    policy: Policy,
    rule: RuleSettings,
    event: Event,
    recipient: Recipient,
    route: _Route,
    due: float,
    expires_at: float | None,
    now: float,
    state: State,
) -> Plan:
    """The notification to create: its content rendered, its channels and times."""
    digest: list[dict[str, Any]] | None = None
    if rule.digest is not None:
        digest = [dict(event.data)]
        context = {**_context(event, recipient), "count": 1, "events": digest}
        locale, content = policy.templates.render(rule.template, recipient.locale, context)
    else:
        ahead = state.rendered.get((event.source, event.id, rule.id, recipient.id))
        locale, content = ahead if ahead is not None else _render(policy, rule, event, recipient)
    return Plan(
        rule_id=rule.id,
        subscriber_id=recipient.id,
        category=rule.category,
        priority=rule.priority,
        channels=tuple(route.channels),
        fallback=tuple(route.fallback),
        locale=locale,
        content=content,
        due_at=due,
        expires_at=expires_at,
        subject=event.subject,
        fallback_at=(
            due + rule.fallback_after if route.timed_fallback and rule.fallback_after else None
        ),
        cancel_on=tuple(rule.cancel_on) if due > now else (),
        digest=digest,
    )


def prerender(
    policy: Policy, event: Event, recipients: Mapping[str, Recipient]
) -> dict[tuple[str, str, str, str], tuple[str, dict[str, Any]]]:
    """The content of every notification ``event`` may make, rendered ahead (for
    :attr:`State.rendered`): it depends on the event, the rule and the recipient's profile
    only — not on the state — so the processor renders it before its write transaction, not
    while it holds the write lock. Digests (whose content counts the open digest's events)
    and topic rules are left to the decision."""
    rendered: dict[tuple[str, str, str, str], tuple[str, dict[str, Any]]] = {}
    for rule in policy.rules_for(event.type):
        if rule.digest is not None or topics.addresses_topic(rule) or not matches(rule, event.data):
            continue
        for recipient_id in recipient_ids(rule, event.data):
            recipient = recipients.get(recipient_id) or Recipient(id=recipient_id)
            key = (event.source, event.id, rule.id, recipient_id)
            rendered[key] = _render(policy, rule, event, recipient)
    return rendered


def _render(
    policy: Policy, rule: RuleSettings, event: Event, recipient: Recipient
) -> tuple[str, dict[str, Any]]:
    """A notification's (locale, content) from ``rule``'s template for ``recipient``."""
    return policy.templates.render(rule.template, recipient.locale, _context(event, recipient))


def _when(
    rule: RuleSettings, category: CategorySettings, recipient: Recipient, now: float
) -> tuple[float, list[str]]:
    """When the notification may go out, and why it waits (empty when it goes now)."""
    due = now
    why: list[str] = []
    tz = recipient.timezone
    if rule.delay:
        due += rule.delay
        text = (
            f"delayed {timing.duration(rule.delay)} until {timing.local_time(due, tz, today=now)}"
        )
        if rule.cancel_on:
            text += " unless " + " or ".join(rule.cancel_on) + " arrives first"
        why.append(text)
    if rule.digest is not None:
        due += rule.digest.window
        why.append(
            f"collecting a digest for {timing.duration(rule.digest.window)} until "
            f"{timing.local_time(due, tz, today=now)}"
        )
    if category.required:
        return due, why
    muted = timing.muted_until(recipient.preferences, due)
    if muted is not None:
        due = muted
        why.append(f"muted until {timing.local_time(due, tz, today=now)}")
    if category.quiet_hours:
        quiet = timing.quiet_until(recipient.preferences, tz, due)
        if quiet is not None:
            due = quiet
            why.append(f"quiet hours until {timing.local_time(due, tz, today=now)}")
    return due, why


def _fold(
    policy: Policy,
    rule: RuleSettings,
    recipient: Recipient,
    event: Event,
    digest: OpenDigest,
) -> Decision:
    count = digest.count + 1
    events = [*digest.events, dict(event.data)][-DIGEST_KEEP:]
    context = {**_context(event, recipient), "count": count, "events": events}
    _, content = policy.templates.render(rule.template, recipient.locale, context)
    limit = rule.digest.max if rule.digest is not None else None
    close = limit is not None and count >= limit
    reason = f"folded into digest {digest.notification_id} ({count} events so far"
    reason += ", full: sending now)" if close else ")"
    fold = Fold(digest.notification_id, content, count, events, close)
    return Decision(
        rule.id, recipient.id, "digested", reason, until=None if close else digest.due_at, fold=fold
    )


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
        "event": {
            "id": event.id,
            "type": event.type,
            "source": event.source,
            "subject": event.subject,
            "time": event.time_text,
        },
        "recipient": {"id": recipient.id},
        "timezone": recipient.timezone or "UTC",
        "data": event.data,
    }
