"""The order life cycle: which processed events make a late one obsolete, and cancel matching.

Events of one subject (an order) form a stream. A late event is *stale* when an event the
life cycle places after it was already processed — a ``payment.failed`` after ``order.paid``,
an ``order.shipped`` after ``order.delivered`` or after the order ended
(``order.cancelled``, ``refund.completed``). Refund events compare only within one
``refund_id`` (an order may see several refunds); reviews never go stale. Types outside the
catalog are never stale.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase

from tidings.strategy.model import PastEvent

ORDER_STEPS: dict[str, int] = {
    "order.created": 1,
    "payment.failed": 2,
    "order.paid": 3,
    "order.shipped": 4,
    "order.delivered": 5,
}
"""The main line of an order; a higher step makes every lower one obsolete."""

ORDER_ENDS = frozenset({"order.cancelled", "refund.completed"})
"""Events after which nothing of the main line is news any more."""

REFUND_STEPS: dict[str, int] = {
    "refund.requested": 1,
    "refund.approved": 2,
    "refund.rejected": 2,
    "refund.completed": 3,
}
"""One refund's steps (compared within the same ``refund_id``)."""


TRACKED = frozenset(ORDER_STEPS) | ORDER_ENDS | frozenset(REFUND_STEPS)
"""The types stale suppression looks back at."""


def _obsoletes(newer: PastEvent, event_type: str, refund_id: str | None) -> bool:
    if event_type in ORDER_STEPS:
        if newer.type in ORDER_ENDS:
            return True
        step = ORDER_STEPS.get(newer.type)
        return step is not None and step > ORDER_STEPS[event_type]
    if event_type in REFUND_STEPS and newer.type in REFUND_STEPS:
        if refund_id is None or newer.refund_id != refund_id:
            return False
        return REFUND_STEPS[newer.type] > REFUND_STEPS[event_type]
    return False


def obsoleted_by(
    event_type: str, refund_id: str | None, history: Sequence[PastEvent]
) -> PastEvent | None:
    """The processed event that makes this one stale, or ``None``."""
    for past in history:
        if _obsoletes(past, event_type, refund_id):
            return past
    return None


def type_matches(pattern: str, event_type: str) -> bool:
    """``cancel_on`` entries are event types or globs (``refund.*``)."""
    return pattern == event_type or ("*" in pattern and fnmatchcase(event_type, pattern))


def cancels(patterns: Iterable[str], event_type: str) -> bool:
    """Whether an event of ``event_type`` matches any of ``patterns``."""
    return any(type_matches(p, event_type) for p in patterns)
