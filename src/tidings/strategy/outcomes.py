"""A decision's reason, followed to the final outcome of each channel.

The decision says what was planned ("sent on push, inapp"); its deliveries say what
happened. When a channel failed, or a fallback took over, the reason a support agent reads
must say so: "sent on push, inapp — push failed (Unregistered); sms took over: delivered;
inapp delivered". Pure: the deliveries are passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

_FAILED = frozenset({"failed", "dead", "expired"})
_RANK = (
    "delivered",
    "sent",
    "sending",
    "pending",
    "scheduled",
    "failed",
    "dead",
    "expired",
    "cancelled",
    "suppressed",
)
"""Best first: a channel with several deliveries (push to two devices) shows its best."""


@dataclass(frozen=True, slots=True)
class ChannelOutcome:
    """One delivery as the reason reads it."""

    channel: str
    status: str
    fallback: bool = False
    error: str | None = None


def followed(reason: str, outcome: str, deliveries: Sequence[ChannelOutcome]) -> str:
    """``reason``, plus what became of each channel once one failed or a fallback went out."""
    if outcome not in ("sent", "deferred") or not deliveries:
        return reason
    if not any(d.status in _FAILED or d.fallback for d in deliveries):
        return reason  # everything went as the decision said
    groups: dict[tuple[bool, str], list[ChannelOutcome]] = {}
    for delivery in deliveries:
        groups.setdefault((delivery.fallback, delivery.channel), []).append(delivery)
    primary_failed = any(
        _best(found).status in _FAILED for (fallback, _), found in groups.items() if not fallback
    )
    parts = []
    for (fallback, channel), found in sorted(groups.items(), key=lambda g: g[0][0]):
        best = _best(found)
        status = "failed" if best.status == "dead" else best.status
        if fallback:
            lead = f"{channel} took over" if primary_failed else f"{channel} (fallback)"
            parts.append(f"{lead}: {status}" + _why(best))
        else:
            parts.append(f"{channel} {status}" + _why(best))
    return f"{reason} — " + "; ".join(parts)


def _best(found: Sequence[ChannelOutcome]) -> ChannelOutcome:
    return min(found, key=lambda d: _RANK.index(d.status) if d.status in _RANK else len(_RANK))


def _why(delivery: ChannelOutcome) -> str:
    if delivery.status in _FAILED and delivery.error:
        return f" ({delivery.error})"
    return ""
