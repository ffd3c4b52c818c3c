"""classify and settle, as pure functions over every error kind the providers raise."""

from __future__ import annotations

import httpx
import pytest

from tidings.channels.http1 import InvalidResponse
from tidings.channels.ssrf import ForbiddenDestination
from tidings.config import RetrySettings
from tidings.delivery.outcomes import RETRIED, Kind, Verdict, classify, settle
from tidings.errors import (
    DestinationGone,
    PermanentProviderError,
    RateLimited,
    Suppressed,
    TransientProviderError,
)

OWN_WORDS = None
"""The recorded error is the provider's own message."""


@pytest.mark.parametrize(
    ("error", "kind", "text", "retry_after", "unexpected"),
    [
        (DestinationGone("fcm: UNREGISTERED"), "gone", OWN_WORDS, None, False),
        (Suppressed("wechat: 43101 no subscription left"), "suppressed", OWN_WORDS, None, False),
        (PermanentProviderError("twilio: 21211 bad 'To'"), "permanent", OWN_WORDS, None, False),
        (ForbiddenDestination("webhook: private address"), "permanent", OWN_WORDS, None, False),
        (RateLimited("apns: 429", retry_after=30.0), "rate_limited", OWN_WORDS, 30.0, False),
        (RateLimited("aliyun_sms: BUSINESS_LIMIT"), "rate_limited", OWN_WORDS, None, False),
        (
            TransientProviderError("webhook: 503", retry_after=2.5),
            "transient",
            OWN_WORDS,
            2.5,
            False,
        ),
        (TransientProviderError("smtp: 421 try later"), "transient", OWN_WORDS, None, False),
        (TimeoutError(), "transient", "hook: timed out after 1.5s", None, False),
        (InvalidResponse("not HTTP/1.x"), "transient", "hook: InvalidResponse", None, True),
        (httpx.ConnectError("refused"), "transient", "hook: ConnectError", None, True),
        (KeyError("title"), "transient", "hook: KeyError", None, True),
    ],
)
def test_each_error_a_provider_raises_has_one_meaning(
    error: Exception, kind: Kind, text: str | None, retry_after: float | None, unexpected: bool
) -> None:
    expected = Verdict(kind, str(error) if text is OWN_WORDS else text, retry_after, unexpected)
    assert classify(error, "hook", 1.5) == expected


def test_a_bug_never_leaks_the_exception_text() -> None:
    # the message of an unexpected exception may quote PII (an address, a token): only its type
    verdict = classify(ValueError("buyer@example.com"), "smtp", 10)
    assert "example.com" not in verdict.error
    assert verdict.error == "smtp: ValueError"


@pytest.mark.parametrize(
    ("kind", "status", "outcome"),
    [
        ("gone", "failed", "gone"),
        ("suppressed", "suppressed", "suppressed"),
        ("permanent", "failed", "failed"),
    ],
)
def test_final_kinds_end_the_delivery_at_once_whatever_the_budget(
    kind: Kind, status: str, outcome: str
) -> None:
    verdict = Verdict(kind, "x")
    assert kind not in RETRIED
    assert settle(verdict, 1, RetrySettings(attempts=8), alone=True) == (status, outcome, None)


@pytest.mark.parametrize("kind", ["transient", "rate_limited"])
def test_retried_kinds_wait_within_the_budget_then_die(kind: Kind) -> None:
    retry = RetrySettings(attempts=3, backoff=1.0, max_backoff=4.0)
    verdict = Verdict(kind, "x")
    for attempt in (1, 2):
        status, outcome, delay = settle(verdict, attempt, retry, alone=True)
        assert (status, outcome) == ("pending", "retry")
        assert delay is not None and 0 <= delay <= 4.0
    assert settle(verdict, 3, retry, alone=True) == ("dead", "retry", None)


def test_retry_after_is_a_floor_only_when_the_provider_is_the_channels_only_one() -> None:
    retry = RetrySettings(attempts=5, backoff=1.0, max_backoff=2.0)
    verdict = classify(RateLimited("429", retry_after=600.0), "p", 10)
    _, _, alone = settle(verdict, 1, retry, alone=True)
    _, _, failing_over = settle(verdict, 1, retry, alone=False)
    assert alone == 600.0
    assert failing_over is not None and failing_over <= 2.0
