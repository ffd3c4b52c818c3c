"""Quiet hours in the subscriber's IANA zone, across DST changes (pure, table-driven)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.strategy.helpers import at, buyer, event, policy
from tidings.strategy.decide import decide
from tidings.strategy.timing import quiet_until

NY, SH = "America/New_York", "Asia/Shanghai"
NIGHT = {"start": "22:00", "end": "08:00"}


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


CASES = [
    # (zone, window, now, expected end or None, why)
    (
        NY,
        NIGHT,
        at("2026-03-07 23:00", NY),
        utc("2026-03-08 12:00"),
        "spring forward: 08:00 EDT is 8 real hours after 23:00 EST, not 9",
    ),
    (
        NY,
        NIGHT,
        at("2026-10-31 23:00", NY),
        utc("2026-11-01 13:00"),
        "fall back: 08:00 EST is 10 real hours after 23:00 EDT",
    ),
    (
        NY,
        NIGHT,
        at("2026-03-08 06:00", NY),
        utc("2026-03-08 12:00"),
        "early morning of the spring-forward day: same day's end",
    ),
    (
        SH,
        NIGHT,
        at("2026-03-07 23:00", SH),
        utc("2026-03-08 00:00"),
        "Shanghai has no DST: 08:00 +08",
    ),
    (
        SH,
        NIGHT,
        at("2026-11-01 07:59", SH),
        utc("2026-10-31 23:59") + 60,
        "a minute before the end",
    ),
    (SH, NIGHT, at("2026-11-01 08:00", SH), None, "the end itself is not quiet"),
    (SH, NIGHT, at("2026-11-01 12:00", SH), None, "midday"),
    (
        NY,
        {"start": "01:00", "end": "05:00"},
        at("2026-03-08 01:30", NY),
        utc("2026-03-08 09:00"),
        "a window without midnight across the gap: 05:00 EDT",
    ),
    (
        NY,
        {"start": "01:00", "end": "02:30"},
        at("2026-03-08 01:45", NY),
        utc("2026-03-08 07:30"),
        "an end inside the spring-forward gap resolves like zoneinfo fold=0 (03:30 EDT)",
    ),
    (
        NY,
        {"start": "00:30", "end": "01:30"},
        utc("2026-11-01 05:15"),
        utc("2026-11-01 05:30"),
        "fall back, first 01:15 (EDT): ends at the first 01:30",
    ),
    (
        NY,
        {"start": "00:30", "end": "01:30"},
        utc("2026-11-01 06:15"),
        utc("2026-11-01 06:30"),
        "fall back, repeated 01:15 (EST): ends at the second 01:30, not in the past",
    ),
    ("Not/AZone", NIGHT, utc("2026-05-01 23:00"), utc("2026-05-02 08:00"), "unknown zone: UTC"),
    (SH, {"start": "08:00", "end": "08:00"}, at("2026-11-01 08:00", SH), None, "empty window"),
]


@pytest.mark.parametrize(
    ("tz", "window", "now", "expected", "why"), CASES, ids=[c[-1] for c in CASES]
)
def test_quiet_until(
    tz: str, window: dict[str, str], now: float, expected: float | None, why: str
) -> None:
    assert quiet_until({"quiet_hours": window}, tz, now) == expected, why


def test_quiet_hours_defer_to_the_windows_end_with_the_reason() -> None:
    rules = policy({"id": "promo", "on": "promo.sent", "category": "marketing"})
    now = at("2026-03-07 23:00", NY)
    (decision,) = decide(rules, event("promo.sent"), buyer(NY, quiet_hours=NIGHT), now)
    assert decision.outcome == "deferred"
    assert decision.until == utc("2026-03-08 12:00")
    assert decision.reason.startswith("quiet hours until 08:00 America/New_York")
    assert decision.plan is not None and decision.plan.due_at == decision.until


@pytest.mark.parametrize(
    ("category", "prefs", "outcome", "reason"),
    [
        ("order_updates", {"quiet_hours": NIGHT}, "sent", "sent on inapp"),
        ("reviews", {"quiet_hours": NIGHT}, "deferred", "quiet hours until 08:00 Asia/Shanghai"),
        ("reviews", {}, "sent", "sent on inapp"),
        (
            "reviews",
            {"muted_until": "2026-03-10T00:00:00Z"},
            "deferred",
            "muted until 2026-03-10 08:00 Asia/Shanghai",
        ),
        ("order_updates", {"muted_until": "2026-03-10T00:00:00Z"}, "sent", "sent on inapp"),
        ("reviews", {"muted_until": "2026-03-01T00:00:00Z"}, "sent", "sent on inapp"),
        (
            "reviews",
            {"muted_until": "2026-03-07T23:30:00Z", "quiet_hours": NIGHT},
            "deferred",
            "muted until 07:30 Asia/Shanghai; quiet hours until 08:00 Asia/Shanghai",
        ),
    ],
    ids=[
        "required ignores quiet hours",
        "quiet",
        "no window",
        "muted",
        "required ignores mute",
        "mute over",
        "mute ends inside quiet hours",
    ],
)
def test_required_mute_and_quiet(
    category: str, prefs: dict[str, object], outcome: str, reason: str
) -> None:
    rules = policy({"id": "r", "on": "x.happened", "category": category})
    now = at("2026-03-07 23:00", SH)
    (decision,) = decide(rules, event("x.happened"), buyer(SH, **prefs), now)
    assert decision.outcome == outcome
    assert decision.reason.startswith(reason), decision.reason


def test_a_deferral_past_the_ttl_is_suppressed_with_the_reason() -> None:
    rules = policy({"id": "flash", "on": "promo.sent", "category": "marketing", "ttl": "2h"})
    (decision,) = decide(
        rules, event("promo.sent"), buyer(SH, quiet_hours=NIGHT), at("2026-03-07 23:00", SH)
    )
    assert decision.outcome == "suppressed"
    assert decision.reason == "would expire (ttl 2h) before quiet hours until 08:00 Asia/Shanghai"
