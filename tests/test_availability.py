"""Availability (SPEC §13) from runs and breaker transitions: MTBF, MTTR, MTBF/(MTBF+MTTR)."""

from __future__ import annotations

from typing import Any

from tidings.availability import Run, Transition, report
from tidings.clock import OffsetClock
from tidings.delivery.breaker import Breaker

NOW = 1_800_000_000.0
H = 3600.0


def one_hour(found: list[dict[str, Any]], key: str, name: str) -> dict[str, Any]:
    (entry,) = [e for e in found if e[key] == name]
    return entry["windows"]["1h"]  # type: ignore[no-any-return]


def test_a_breaker_records_opening_and_closing_once_each() -> None:
    clock = OffsetClock()
    breaker = Breaker(clock, threshold=2, cooldown=0.0)
    breaker.failure()
    assert breaker.take_changes() == []
    breaker.failure()
    assert breaker.allow()  # the probe (cooldown 0)
    breaker.failure()  # the probe fails: still the same outage
    breaker.success()
    assert [state for state, _ in breaker.take_changes()] == ["open", "closed"]
    assert breaker.take_changes() == []


def test_a_provider_down_twice_in_the_hour() -> None:
    runs = [Run("r1", NOW - 2 * H, NOW)]
    transitions = [
        Transition("r1", "fcm", "push", "open", NOW - 50 * 60),
        Transition("r1", "fcm", "push", "closed", NOW - 40 * 60),  # down 10 min
        Transition("r1", "fcm", "push", "open", NOW - 20 * 60),
        Transition("r1", "fcm", "push", "closed", NOW - 15 * 60),  # down 5 min
    ]
    found = report(runs, transitions, {"push": ["fcm", "apns"]}, NOW)
    fcm = one_hour(found["providers"], "provider", "fcm")
    assert fcm["failures"] == 2
    assert fcm["down_seconds"] == 15 * 60 and fcm["up_seconds"] == 45 * 60
    assert fcm["mtbf_seconds"] == 45 * 60 / 2 and fcm["mttr_seconds"] == 15 * 60 / 2
    assert fcm["availability"] == 0.75  # MTBF / (MTBF + MTTR)
    apns = one_hour(found["providers"], "provider", "apns")
    assert apns == {
        "availability": 1.0,
        "mtbf_seconds": None,
        "mttr_seconds": None,
        "failures": 0,
        "up_seconds": H,
        "down_seconds": 0.0,
    }
    # push failed over to apns: the channel never went down
    assert one_hour(found["channels"], "channel", "push")["failures"] == 0


def test_a_channel_is_down_only_while_every_provider_is() -> None:
    runs = [Run("r1", NOW - H, NOW)]
    transitions = [
        Transition("r1", "a", "email", "open", NOW - 30 * 60),
        Transition("r1", "a", "email", "closed", NOW - 10 * 60),
        Transition("r1", "b", "email", "open", NOW - 20 * 60),
        Transition("r1", "b", "email", "closed", NOW - 5 * 60),
    ]
    found = report(runs, transitions, {"email": ["a", "b"]}, NOW)
    email = one_hour(found["channels"], "channel", "email")
    assert (email["failures"], email["down_seconds"]) == (1, 10 * 60)


def test_the_service_down_between_runs_and_a_breaker_open_when_its_run_died() -> None:
    runs = [
        Run("r1", NOW - 2 * H, NOW - 30 * 60),  # killed 30 min ago
        Run("r2", NOW - 20 * 60, NOW - 1),  # restarted 10 min later, beating
    ]
    transitions = [Transition("r1", "smtp", "email", "open", NOW - 35 * 60)]
    found = report(runs, transitions, {"email": ["smtp"]}, NOW)
    service = found["service"]["windows"]["1h"]
    assert (service["failures"], service["down_seconds"]) == (1, 10 * 60)
    assert service["availability"] == round(50 / 60, 6)
    smtp = one_hour(found["providers"], "provider", "smtp")
    # open from 35 min ago until its run ended; the service's own gap is not the provider's
    assert (smtp["failures"], smtp["down_seconds"], smtp["up_seconds"]) == (1, 5 * 60, 45 * 60)
    day = found["service"]["windows"]["24h"]
    assert day["up_seconds"] == 110 * 60  # observed from the first start only


def test_no_runs_yet_reports_nothing_measured() -> None:
    found = report([], [], {"sms": ["twilio"]}, NOW)
    assert found["service"]["windows"]["1h"]["availability"] is None
