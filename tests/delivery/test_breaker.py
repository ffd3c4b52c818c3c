"""The circuit breaker, driven by a clock the test moves."""

from __future__ import annotations

import pytest

from tidings.clock import OffsetClock
from tidings.delivery.breaker import Breaker


def test_opens_after_threshold_consecutive_failures() -> None:
    breaker = Breaker(OffsetClock(), threshold=3, cooldown=10)
    for _ in range(2):
        breaker.failure()
        assert breaker.state == "closed" and breaker.allow()
    breaker.failure()
    assert breaker.state == "open"
    assert not breaker.allow()
    assert 9.9 < breaker.reopens_in() <= 10


def test_a_success_resets_the_count() -> None:
    breaker = Breaker(OffsetClock(), threshold=3)
    breaker.failure()
    breaker.failure()
    breaker.success()
    breaker.failure()
    breaker.failure()
    assert breaker.state == "closed"


def test_half_open_lets_one_probe_through_and_closes_on_success() -> None:
    clock = OffsetClock()
    breaker = Breaker(clock, threshold=1, cooldown=5)
    breaker.failure()
    clock.advance(4.9)
    assert not breaker.allow()
    clock.advance(0.2)
    assert breaker.state == "half_open"
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # only one at a time
    breaker.success()
    assert breaker.state == "closed"  # type: ignore[comparison-overlap]
    assert breaker.allow() and breaker.allow()


def test_a_failed_probe_reopens_for_a_full_cooldown() -> None:
    clock = OffsetClock()
    breaker = Breaker(clock, threshold=2, cooldown=5)
    breaker.failure()
    breaker.failure()
    clock.advance(5)
    assert breaker.allow()
    breaker.failure()
    assert breaker.state == "open"
    assert breaker.reopens_in() == pytest.approx(5, abs=0.05)
    clock.advance(5)
    assert breaker.allow()


def test_an_abandoned_probe_frees_the_place() -> None:
    clock = OffsetClock()
    breaker = Breaker(clock, threshold=1, cooldown=1)
    breaker.failure()
    clock.advance(1)
    assert breaker.allow()
    breaker.abandon()
    assert breaker.allow()
