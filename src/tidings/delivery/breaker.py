"""A circuit breaker per provider: closed → open after repeated failures → half-open probe.

::

    closed ──threshold consecutive failures──▶ open ──cooldown──▶ half_open
       ▲                                        ▲                    │ one probe call
       └──────────────── probe succeeds ────────┼────────────────────┤
                                                └── probe fails ─────┘

While a provider's circuit is open the dispatcher skips it and the channel's next provider
(config order) takes the traffic; once the cooldown has passed, a single probe call decides
whether the provider is back.
"""

from __future__ import annotations

from typing import Literal

from tidings.clock import Clock

State = Literal["closed", "open", "half_open"]


class Breaker:
    """Opens after ``threshold`` consecutive transient failures; probes after ``cooldown``."""

    def __init__(self, clock: Clock, *, threshold: int = 5, cooldown: float = 10.0) -> None:
        self.clock = clock
        self.threshold = threshold
        self.cooldown = cooldown
        self.failures = 0
        self.opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> State:
        """The state now."""
        if self.opened_at is None:
            return "closed"
        if self.clock.now() - self.opened_at >= self.cooldown:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """Whether a call may go through now (one probe at a time when half-open)."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._probing:
            self._probing = True
            return True
        return False

    def reopens_in(self) -> float:
        """Seconds until a probe is allowed (0 when closed)."""
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + self.cooldown - self.clock.now())

    def success(self) -> None:
        """A call succeeded (or failed for reasons that are not the provider's)."""
        self.failures = 0
        self.opened_at = None
        self._probing = False

    def failure(self) -> None:
        """A call failed in a way that blames the provider."""
        self.failures += 1
        if self._probing or self.failures >= self.threshold:
            self.opened_at = self.clock.now()  # a failed probe restarts the cooldown
        self._probing = False

    def abandon(self) -> None:
        """A call allowed through ended with no verdict (cancelled): let another probe go."""
        self._probing = False
