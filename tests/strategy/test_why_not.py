"""Every "why not" explained: an event no rule took, and a reason that follows each channel."""

from __future__ import annotations

from tests.strategy.helpers import buyer, event, policy
from tidings.strategy.decide import decide
from tidings.strategy.outcomes import ChannelOutcome, followed

NOW = 1_800_000_000.0


def test_an_event_no_rule_listens_to_says_so() -> None:
    rules = policy({"id": "order-paid-buyer", "on": "order.paid"})
    (made,) = decide(rules, event("cart.abandoned"), buyer(), NOW)
    assert (made.rule_id, made.recipient_id, made.outcome) == ("", None, "suppressed")
    assert made.reason == "no rule listens to cart.abandoned"


def test_an_event_whose_conditions_fail_names_the_rule_and_condition() -> None:
    rules = policy(
        {"id": "order-paid-buyer", "on": "order.paid", "when": {"payment_method": "card"}}
    )
    (made,) = decide(rules, event("order.paid", payment_method="paypal"), buyer(), NOW)
    assert made.outcome == "suppressed"
    assert made.reason == "rule order-paid-buyer: condition payment_method=card not met"


def test_a_matched_event_has_no_why_not_decision() -> None:
    rules = policy(
        {"id": "a", "on": "order.paid"}, {"id": "b", "on": "order.paid", "when": {"x": 1}}
    )
    made = decide(rules, event("order.paid"), buyer(), NOW)
    assert [d.rule_id for d in made] == ["a"]


def test_the_reason_follows_push_failing_and_sms_taking_over() -> None:
    reason = followed(
        "sent on push, inapp",
        "sent",
        [
            ChannelOutcome("push", "dead", error="UNREGISTERED"),
            ChannelOutcome("inapp", "delivered"),
            ChannelOutcome("sms", "sent", fallback=True),
        ],
    )
    assert reason == (
        "sent on push, inapp — push failed (UNREGISTERED); inapp delivered; sms took over: sent"
    )


def test_a_reason_stays_as_decided_while_every_channel_went_as_planned() -> None:
    went = [ChannelOutcome("push", "sent"), ChannelOutcome("push", "failed", error="x")]
    assert followed("sent on push", "sent", [ChannelOutcome("inapp", "delivered")]) == (
        "sent on push"
    )
    # one device of two reached: the channel shows its best
    assert followed("sent on push", "sent", went) == "sent on push — push sent"
    assert followed("opted out of email", "suppressed", went) == "opted out of email"
