"""Backoff: exponential ceiling, full jitter, bounded, Retry-After as a floor."""

from __future__ import annotations

import random

from tidings.config import RetrySettings
from tidings.delivery.retry import backoff

SETTINGS = RetrySettings(attempts=8, backoff=1.0, max_backoff=30.0)


def test_full_jitter_stays_under_a_doubling_ceiling() -> None:
    rng = random.Random(7)
    for attempt, ceiling in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 16), (6, 30), (12, 30)]:
        delays = [backoff(SETTINGS, attempt, rng=rng) for _ in range(2000)]
        assert all(0 <= d <= ceiling for d in delays)
        # full jitter spreads over the whole range, not around the ceiling
        assert min(delays) < ceiling * 0.05 and max(delays) > ceiling * 0.95
        assert abs(sum(delays) / len(delays) - ceiling / 2) < ceiling * 0.05


def test_retry_after_is_a_floor() -> None:
    rng = random.Random(1)
    assert all(backoff(SETTINGS, 1, retry_after=5, rng=rng) == 5 for _ in range(100))
    # a later attempt may wait longer than Retry-After, never shorter
    delays = [backoff(SETTINGS, 6, retry_after=5, rng=rng) for _ in range(500)]
    assert min(delays) == 5 and max(delays) > 20


def test_huge_attempt_numbers_do_not_overflow() -> None:
    assert 0 <= backoff(SETTINGS, 100) <= 30
