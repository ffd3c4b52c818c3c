"""Retry timing: exponential backoff with full jitter, bounded, honouring ``Retry-After``."""

from __future__ import annotations

import random

from tidings.config import RetrySettings


def backoff(
    settings: RetrySettings,
    attempt: int,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    Full jitter (uniform in ``[0, min(max_backoff, backoff·2^(attempt-1))]``) spreads a herd of
    retries; a provider's ``Retry-After`` is a floor, never shortened by the jitter.
    """
    ceiling = min(settings.max_backoff, settings.backoff * (2 ** max(0, attempt - 1)))
    delay = (rng or random).uniform(0, ceiling)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay
