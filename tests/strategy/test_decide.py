"""The pure decision: delay + cancel_on, digests, caps, stale events, ttl, timed fallback."""

from __future__ import annotations

from typing import Any

import pytest

from tests.strategy.helpers import buyer, event, policy
from tidings.strategy.decide import cancellations, decide, prerender
from tidings.strategy.model import OpenDigest, PastEvent, Scheduled, State

NOW = 1_800_000_000.0  # 2027-01-15 08:00 UTC
UNPAID = {
    "id": "unpaid-reminder",
    "on": "order.created",
    "category": "order_updates",
    "delay": "15m",
    "cancel_on": ["order.paid", "order.cancelled"],
}
REVIEW = {
    "id": "review-request",
    "on": "order.delivered",
    "category": "reviews",
    "delay": "3d",
    "cancel_on": ["review.created", "refund.*"],
}


def history(*types: str, subject: str = "o-1") -> State:
    return State(history={subject: [PastEvent(t, f"evt-{t}") for t in types]})


def test_a_delay_defers_with_the_time_and_what_cancels_it() -> None:
    (decision,) = decide(policy(UNPAID), event("order.created"), buyer("Asia/Shanghai"), NOW)
    assert decision.outcome == "deferred"
    assert decision.until == NOW + 900
    assert decision.reason == (
        "delayed 15m until 16:15 Asia/Shanghai unless order.paid or "
        "order.cancelled arrives first; then on inapp"
    )
    assert decision.plan is not None
    assert decision.plan.due_at == NOW + 900 and decision.plan.cancel_on == (
        "order.paid",
        "order.cancelled",
    )


@pytest.mark.parametrize(
    ("rule", "event_type", "seen", "outcome", "reason"),
    [
        (UNPAID, "order.created", (), "deferred", "delayed 15m"),
        (
            UNPAID,
            "order.created",
            ("order.paid",),
            "cancelled",
            "cancelled by order.paid evt-order.paid (processed earlier)",
        ),
        (
            UNPAID,
            "order.created",
            ("order.cancelled",),
            "cancelled",
            "cancelled by order.cancelled",
        ),
        (
            REVIEW,
            "order.delivered",
            ("refund.requested",),
            "cancelled",
            "cancelled by refund.requested",
        ),
        (REVIEW, "order.delivered", ("review.replied",), "deferred", "delayed 3d"),
    ],
    ids=[
        "nothing yet",
        "paid arrived first (out of order)",
        "cancelled first",
        "refund.* glob",
        "an unrelated type",
    ],
)
def test_cancel_on_already_processed(
    rule: dict[str, Any], event_type: str, seen: tuple[str, ...], outcome: str, reason: str
) -> None:
    (decision,) = decide(policy(rule), event(event_type), buyer(), NOW, history(*seen))
    assert decision.outcome == outcome
    assert decision.reason.startswith(reason), decision.reason


@pytest.mark.parametrize(
    ("cancel_type", "subject", "cancelled"),
    [
        ("order.paid", "o-1", True),
        ("order.cancelled", "o-1", True),
        ("order.paid", "o-2", False),
        ("order.shipped", "o-1", False),
    ],
)
def test_cancellations_match_type_and_subject(
    cancel_type: str, subject: str, cancelled: bool
) -> None:
    waiting = [
        Scheduled(
            "n-1",
            "pk-created",
            "unpaid-reminder",
            "buyer-1",
            "o-1",
            ("order.paid", "order.cancelled"),
        )
    ]
    found = cancellations(event(cancel_type, "evt-9", subject=subject), "pk-9", waiting)
    assert [c.notification_id for c in found] == (["n-1"] if cancelled else [])
    if cancelled:
        assert found[0].reason == f"cancelled by {cancel_type} evt-9"


def test_an_event_never_cancels_its_own_notification() -> None:
    waiting = [Scheduled("n-1", "pk-1", "r", "buyer-1", "o-1", ("order.*",))]
    assert cancellations(event("order.created"), "pk-1", waiting) == []


@pytest.mark.parametrize(
    ("event_type", "seen", "extra", "stale_by"),
    [
        ("order.shipped", ("refund.completed",), {}, "refund.completed"),
        ("payment.failed", ("order.paid",), {}, "order.paid"),
        ("order.paid", ("order.shipped",), {}, "order.shipped"),
        ("order.shipped", ("order.delivered",), {}, "order.delivered"),
        ("order.created", ("order.cancelled",), {}, "order.cancelled"),
        ("order.shipped", ("order.paid", "order.created"), {}, None),
        ("order.shipped", ("order.shipped",), {}, None),
        ("refund.requested", ("refund.approved",), {"refund_id": "r-1"}, None),
        ("refund.approved", ("refund.completed",), {"refund_id": "r-1"}, None),
        ("review.created", ("refund.completed",), {}, None),
        ("shop.custom", ("order.cancelled",), {}, None),
    ],
    ids=[
        "shipped after refund completed",
        "payment failed after paid",
        "paid after shipped",
        "shipped after delivered",
        "created after cancelled",
        "in order",
        "a second shipment",
        "refund events of another refund",
        "refund events without ids on the past",
        "reviews never go stale",
        "custom types never go stale",
    ],
)
def test_stale_events_are_suppressed(
    event_type: str, seen: tuple[str, ...], extra: dict[str, Any], stale_by: str | None
) -> None:
    rules = policy({"id": "r", "on": event_type})
    (decision,) = decide(rules, event(event_type, **extra), buyer(), NOW, history(*seen))
    if stale_by is None:
        assert decision.outcome == "sent"
    else:
        assert decision.outcome == "suppressed"
        assert decision.reason == (
            f"stale: {stale_by} evt-{stale_by} was already processed for "
            f"o-1, so this {event_type} is no longer news"
        )


def test_refund_steps_compare_within_one_refund() -> None:
    rules = policy({"id": "r", "on": "refund.requested"})
    state = State(history={"o-1": [PastEvent("refund.approved", "e-1", refund_id="r-1")]})
    same = decide(rules, event("refund.requested", refund_id="r-1"), buyer(), NOW, state)
    other = decide(rules, event("refund.requested", refund_id="r-2"), buyer(), NOW, state)
    assert same[0].outcome == "suppressed" and other[0].outcome == "sent"


@pytest.mark.parametrize(
    ("already", "outcome", "reason"),
    [
        (0, "sent", "sent on inapp"),
        (2, "sent", "sent on inapp"),
        (3, "suppressed", "over the cap of 3 per 1d for marketing"),
    ],
)
def test_caps_per_category_and_subscriber(already: int, outcome: str, reason: str) -> None:
    rules = policy({"id": "promo", "on": "promo.sent", "category": "marketing"})
    state = State(sent={("buyer-1", "marketing"): already, ("buyer-2", "marketing"): 99})
    (decision,) = decide(rules, event("promo.sent"), buyer(), NOW, state)
    assert (decision.outcome, decision.reason) == (outcome, reason)


DIGEST = {
    "id": "seller-digest",
    "on": "order.paid",
    "to": "seller",
    "category": "order_updates",
    "template": "digest",
    "digest": {"window": "5m", "max": 3},
}


def test_the_first_event_opens_a_digest() -> None:
    (decision,) = decide(policy(DIGEST), event("order.paid", subject="o-1"), {}, NOW)
    assert decision.outcome == "deferred" and decision.until == NOW + 300
    assert decision.reason.startswith("collecting a digest for 5m until 08:05 UTC")
    assert decision.plan is not None and decision.plan.digest == [event("order.paid").data]
    assert decision.plan.content["title"] == "You have 1 new paid orders"


@pytest.mark.parametrize(
    ("count", "close", "reason"),
    [
        (1, False, "folded into digest n-1 (2 events so far)"),
        (2, True, "folded into digest n-1 (3 events so far, full: sending now)"),
    ],
)
def test_later_events_fold_into_the_open_digest(count: int, close: bool, reason: str) -> None:
    events = [{"order_id": f"o-{n}"} for n in range(count)]
    state = State(
        digests={("seller-digest", "seller-1"): OpenDigest("n-1", count, events, NOW + 100)}
    )
    (decision,) = decide(policy(DIGEST), event("order.paid", subject="o-9"), {}, NOW, state)
    assert decision.outcome == "digested" and decision.reason == reason
    assert decision.fold is not None and decision.fold.close is close
    assert decision.fold.content["title"] == f"You have {count + 1} new paid orders"
    assert decision.fold.content["body"].split() == [e["order_id"] for e in events] + ["o-9"]


def test_a_digest_past_its_window_is_not_folded_into() -> None:
    state = State(digests={("seller-digest", "seller-1"): OpenDigest("n-1", 1, [], NOW - 1)})
    (decision,) = decide(policy(DIGEST), event("order.paid"), {}, NOW, state)
    assert decision.outcome == "deferred" and decision.plan is not None


def test_timed_fallback_waits_for_the_inapp_item() -> None:
    rule = {
        "id": "r",
        "on": "order.shipped",
        "channels": ["push", "inapp"],
        "fallback": ["email"],
        "fallback_after": "10m",
    }
    people = buyer()
    (decision,) = decide(policy(rule), event("order.shipped"), people, NOW)
    assert decision.outcome == "sent"
    assert decision.reason == "sent on push, inapp; email after 10m if still unread"
    assert decision.plan is not None and decision.plan.fallback_at == NOW + 600
    assert decision.plan.fallback == ("email",)


def test_without_fallback_after_an_unreachable_channel_falls_back_at_once() -> None:
    rule = {"id": "r", "on": "order.shipped", "channels": ["sms", "inapp"], "fallback": ["email"]}
    (decision,) = decide(policy(rule), event("order.shipped"), buyer(), NOW)
    assert decision.plan is not None and decision.plan.channels == ("inapp", "email")
    assert decision.plan.fallback_at is None


@pytest.mark.parametrize(
    ("rule", "expires"),
    [
        ({"id": "r", "on": "x.y", "ttl": "1h"}, NOW + 3600),
        ({"id": "r", "on": "x.y", "ttl": "1h", "delay": "15m"}, NOW + 900 + 3600),
        ({"id": "r", "on": "x.y"}, None),
    ],
    ids=["from now", "from the delayed send time", "no ttl"],
)
def test_ttl_sets_the_expiry(rule: dict[str, Any], expires: float | None) -> None:
    (decision,) = decide(policy(rule), event("x.y"), buyer(), NOW)
    assert decision.plan is not None and decision.plan.expires_at == expires


def test_content_rendered_ahead_is_the_content_decided() -> None:
    """The processor renders before its write transaction (``prerender``): a plan takes that
    content, the same as it renders itself; a digest's content waits for the decision."""
    rules = policy(UNPAID, {**DIGEST, "on": "order.created", "to": "buyer"})
    created = event("order.created", order_id="o-42")
    people = buyer("Asia/Shanghai")
    ahead = prerender(rules, created, people)
    assert set(ahead) == {("/shop", "evt-1", "unpaid-reminder", "buyer-1")}
    assert ahead[("/shop", "evt-1", "unpaid-reminder", "buyer-1")] == (
        "en-US",
        {"title": "order.created", "body": "order o-42"},
    )
    inline = decide(rules, created, people, NOW)
    rendered = decide(rules, created, people, NOW, State(rendered=ahead))
    assert [d.plan for d in rendered] == [d.plan for d in inline]
    # what the plan carries is what was rendered ahead, not a fresh render
    marked = {key: ("en-US", {"title": "ahead", "body": ""}) for key in ahead}
    unpaid, digest = decide(rules, created, people, NOW, State(rendered=marked))
    assert unpaid.plan is not None and unpaid.plan.content["title"] == "ahead"
    assert digest.plan is not None and digest.plan.content["title"] == "You have 1 new paid orders"
