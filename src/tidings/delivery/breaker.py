"""A circuit breaker per provider: closed → open after repeated failures → half-open probe.

::

    closed ──threshold consecutive failures──▶ open ──cooldown──▶ half_open
       ▲                                        ▲                    │ one probe call
       └──────────────── probe succeeds ────────┼────────────────────┤
                                                └── probe fails ─────┘

While a provider's circuit is open the dispatcher skips it and the channel's next provider
(config order) takes the traffic; once the cooldown has passed, a single probe call decides
whether the provider is back.

A webhook's failures belong to its endpoint, not to the provider: each seller's ERP is
someone else's server. :class:`EndpointBreakers` keeps one breaker per endpoint host, so a
dead ERP stops being called (its deliveries wait, spending no attempt) while every other
seller's webhooks flow through the same provider.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from tidings.clock import Clock

State = Literal["closed", "open", "half_open"]
Change = tuple[Literal["open", "closed"], float]
"""A transition of the circuit: opened (the provider went down) or closed (back), and when."""
_KEEP_CHANGES = 256


class Breaker:
    """Opens after ``threshold`` consecutive transient failures; probes after ``cooldown``."""

    def __init__(self, clock: Clock, *, threshold: int = 5, cooldown: float = 10.0) -> None:
        self.clock = clock
        self.threshold = threshold
        self.cooldown = cooldown
        self.failures = 0
        self.opened_at: float | None = None
        self._probing = False
        self.changes: list[Change] = []
        """Transitions not yet recorded (availability, SPEC §13, takes them with
        :meth:`take_changes`); a failed probe re-opening the circuit is no new one."""

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

    def next_try_in(self) -> float:
        """Seconds a call turned away now should wait: until the cooldown ends, or a whole
        cooldown while a probe is out (its verdict comes before that)."""
        left = self.reopens_in()
        return left if left > 0 else self.cooldown

    def success(self) -> None:
        """A call succeeded (or failed for reasons that are not the provider's)."""
        if self.opened_at is not None:
            self._changed("closed")
        self.failures = 0
        self.opened_at = None
        self._probing = False

    def failure(self) -> None:
        """A call failed in a way that blames the provider."""
        self.failures += 1
        if self._probing or self.failures >= self.threshold:
            if self.opened_at is None:
                self._changed("open")
            self.opened_at = self.clock.now()  # a failed probe restarts the cooldown
        self._probing = False

    def abandon(self) -> None:
        """A call allowed through ended with no verdict (cancelled): let another probe go."""
        self._probing = False

    def take_changes(self) -> list[Change]:
        """The transitions since the last call (oldest first), forgotten here."""
        taken, self.changes = self.changes, []
        return taken

    def _changed(self, to: Literal["open", "closed"]) -> None:
        if len(self.changes) >= _KEEP_CHANGES:  # nobody records them: keep the latest
            del self.changes[: len(self.changes) - _KEEP_CHANGES + 1]
        self.changes.append((to, self.clock.now()))


class EndpointBreakers:
    """A :class:`Breaker` per endpoint host (a webhook URL's host), made on first use.

    Bounded: past ``limit`` endpoints, the breakers with nothing to remember (closed, no
    failures) are dropped; a dropped one comes back closed, as it was.
    """

    def __init__(
        self, clock: Clock, *, threshold: int, cooldown: float, limit: int = 10_000
    ) -> None:
        self.clock = clock
        self.threshold = threshold
        self.cooldown = cooldown
        self.limit = limit
        self._breakers: dict[str, Breaker] = {}
        self._hosts: dict[str, str] = {}
        """URL → its host, lower-cased (bounded by ``limit`` too)."""

    @classmethod
    def like(cls, breaker: Breaker) -> EndpointBreakers:
        """Endpoint breakers with ``breaker``'s threshold and cooldown."""
        return cls(breaker.clock, threshold=breaker.threshold, cooldown=breaker.cooldown)

    def of(self, url: str) -> Breaker:
        """The breaker of ``url``'s host."""
        host = self._hosts.get(url)
        if host is None:  # parsed once per URL: this runs for every webhook delivery
            try:
                host = (urlsplit(url).hostname or url).lower()
            except ValueError:
                host = url
            if len(self._hosts) >= self.limit:
                self._hosts.clear()
            self._hosts[url] = host
        found = self._breakers.get(host)
        if found is None:
            if len(self._breakers) >= self.limit:
                self._forget_quiet()
            found = self._breakers[host] = Breaker(
                self.clock, threshold=self.threshold, cooldown=self.cooldown
            )
        return found

    def open(self) -> list[str]:
        """The hosts whose circuit is not closed now."""
        return [host for host, b in self._breakers.items() if b.state != "closed"]

    def _forget_quiet(self) -> None:
        for host, breaker in list(self._breakers.items()):
            if breaker.opened_at is None and not breaker.failures:
                del self._breakers[host]
