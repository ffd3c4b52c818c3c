"""What an attempt comes to: one place that maps a provider's error to an outcome.

As httpx maps transport errors in one place, :func:`classify` is the only code that decides
what an exception raised by a provider *means*::

    DestinationGone          → gone          (failed; the device / endpoint is deactivated)
    Suppressed               → suppressed    (the recipient cannot take it now; no fault)
    PermanentProviderError   → permanent     (failed at once)
    RateLimited              → rate_limited  (retried, after the provider's Retry-After)
    TransientProviderError   → transient     (retried with backoff inside the budget)
    TimeoutError             → transient     (the delivery timeout ran out)
    anything else            → transient     (a provider bug: retried, and logged)

:func:`settle` then says where the delivery goes next (its status, recorded outcome and retry
delay). Both are pure; the dispatcher only calls the provider and applies them. A
:class:`Result` is one attempt's outcome as it is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tidings.clock import Clock
from tidings.config import RetrySettings
from tidings.delivery.callbacks import StatusChange
from tidings.delivery.retry import backoff
from tidings.errors import (
    DestinationGone,
    PermanentProviderError,
    RateLimited,
    Suppressed,
    TransientProviderError,
)
from tidings.store.deliveries import Claimed, Outgoing
from tidings.vocabulary import DeliveryStatus

Kind = Literal["transient", "rate_limited", "permanent", "gone", "suppressed"]
RETRIED: frozenset[Kind] = frozenset({"transient", "rate_limited"})
"""The kinds retried inside the budget (and blamed on the provider's or endpoint's breaker)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a provider's error means for the delivery."""

    kind: Kind
    error: str
    """The error as recorded (``last_error``): the provider's own words, or what happened."""
    retry_after: float | None = None
    """Seconds the provider asked to wait before the next try (transient kinds only)."""
    unexpected: bool = False
    """Not a :class:`~tidings.errors.ProviderError` nor a timeout: a provider bug."""


def classify(error: Exception, provider: str, timeout: float) -> Verdict:
    """What ``error``, raised by ``provider`` within a ``timeout`` (seconds) scope, means.

    >>> classify(DestinationGone("fcm: UNREGISTERED"), "fcm", 10).kind
    'gone'
    """
    if isinstance(error, DestinationGone):
        return Verdict("gone", str(error))
    if isinstance(error, Suppressed):
        return Verdict("suppressed", str(error))
    if isinstance(error, PermanentProviderError):
        return Verdict("permanent", str(error))
    if isinstance(error, TransientProviderError):
        kind: Kind = "rate_limited" if isinstance(error, RateLimited) else "transient"
        return Verdict(kind, str(error), error.retry_after)
    if isinstance(error, TimeoutError):
        return Verdict("transient", f"{provider}: timed out after {timeout:g}s")
    return Verdict("transient", f"{provider}: {type(error).__name__}", unexpected=True)


_FINAL: dict[Kind, tuple[DeliveryStatus, str]] = {
    "gone": ("failed", "gone"),
    "suppressed": ("suppressed", "suppressed"),
    "permanent": ("failed", "failed"),
}
"""Status and recorded outcome of the kinds that end the delivery at once."""


def settle(
    verdict: Verdict, attempt: int, retry: RetrySettings, alone: bool
) -> tuple[DeliveryStatus, str, float | None]:
    """``(status, outcome, retry delay)`` after failed attempt number ``attempt``.

    A retried kind is ``pending`` again after a backoff while the budget lasts, then ``dead``.
    The provider's Retry-After is honoured when it is the channel's only candidate (``alone``):
    a retry that fails over to the next provider does not wait for the failed one's wish.
    """
    final = _FINAL.get(verdict.kind)
    if final is not None:
        return final[0], final[1], None
    if attempt >= retry.attempts:
        return "dead", "retry", None
    return "pending", "retry", backoff(retry, attempt, verdict.retry_after if alone else None)


@dataclass(slots=True)
class Result:
    """One attempt's outcome, as it is recorded (and called back, and counted)."""

    claimed: Claimed
    note: Outgoing
    status: DeliveryStatus
    provider: str | None
    attempts: int
    error: str | None
    due_at: float
    started_at: float
    finished_at: float
    td: float | None
    outcome: str | None
    deactivate: str | None = None
    channel: str = ""
    called_at: float | None = None


class Attempt:
    """One attempt of one delivery, under way: makes its :class:`Result`."""

    __slots__ = ("clock", "item", "note", "number", "started")

    def __init__(self, item: Claimed, note: Outgoing, clock: Clock) -> None:
        self.item = item
        self.note = note
        self.clock = clock
        self.started = clock.now()
        self.number = item.attempts + 1
        """This attempt's number (1-based)."""

    def result(
        self,
        status: DeliveryStatus,
        *,
        provider: str | None = None,
        error: str | None = None,
        due_at: float | None = None,
        td: float | None = None,
        outcome: str | None = None,
        deactivate: str | None = None,
        counted: bool = True,
        called_at: float | None = None,
    ) -> Result:
        """The outcome ``status``, finished now (``counted``: the attempt used the budget)."""
        item = self.item
        return Result(
            item,
            self.note,
            status,
            provider,
            self.number if counted else item.attempts,
            error,
            due_at if due_at is not None else item.due_at,
            self.started,
            self.clock.now(),
            td,
            outcome,
            deactivate,
            item.channel,
            called_at,
        )


def queue_wait(r: Result) -> float | None:
    """Tc: from when the delivery was due to when its provider call began."""
    if r.called_at is None:
        return None
    return max(0.0, r.called_at - r.claimed.due_at)


def status_change(r: Result) -> StatusChange:
    """An outcome as a status callback tells it."""
    c = r.claimed
    return StatusChange(
        r.status, c.id, c.notification_id, r.note.subscriber_id, r.channel, r.provider,
        r.error, r.attempts, r.note.envelope,
    )  # fmt: skip
