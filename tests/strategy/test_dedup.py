"""One life-cycle step, one notice: a re-sent ``order.paid`` (new id, same order) is
``deduplicated`` — across batches, within one batch, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from testbed.services import create_database, drop_database
from tests.strategy.helpers import TEMPLATES, event
from tests.strategy.test_engine_state import Engine
from tidings.clock import OffsetClock
from tidings.config import build_settings
from tidings.crypto import generate_key
from tidings.errors import ConfigError
from tidings.events.cloudevents import Event
from tidings.metrics import Metrics
from tidings.queue.embedded import EmbeddedBroker
from tidings.queue.inbox_hub import InboxHub
from tidings.runtime.processor import Processor
from tidings.store import Store
from tidings.store.tables import notifications
from tidings.strategy.decide import Policy
from tidings.templates import Templates

RULES: list[dict[str, Any]] = [
    {"id": "order-paid-buyer", "on": "order.paid"},
    {"id": "paid-per-event", "on": "order.paid", "to": "seller", "dedup": "event"},
    {"id": "refund-asked", "on": "refund.requested"},
    {"id": "note", "on": "order.note"},
    {"id": "note-per-kind", "on": "order.note", "to": "seller", "dedup": {"by": ["data.kind"]}},
]


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Engine]:
    raw = {
        "categories": {"order_updates": {"required": True}},
        "rules": [{"to": "buyer", "channels": ["inapp"], "template": "plain", **r} for r in RULES],
        "templates": TEMPLATES,
    }
    settings = build_settings(raw, {}, "test")
    if request.param == "postgresql":
        url = await create_database(request.getfixturevalue("postgres_url"))
    else:
        url = f"sqlite:///{tmp_path / 't.db'}"
    store = Store.open(url, generate_key() if request.param == "postgresql" else None)
    await store.start()
    policy = Policy(settings, Templates(settings.templates, settings.default_locale))
    processor = Processor(store, EmbeddedBroker(), policy, OffsetClock(), Metrics(), InboxHub())
    try:
        yield Engine(store, processor, OffsetClock())
    finally:
        await store.aclose()
        if request.param == "postgresql":
            await drop_database(url)


def paid(event_id: str, subject: str = "o-1") -> Event:
    return event("order.paid", event_id, subject, amount="9.00", currency="CNY")


async def test_a_resent_order_paid_is_deduplicated_naming_the_event_notified(
    engine: Engine,
) -> None:
    (first,) = await engine.process(paid("evt-9"))
    (second,) = await engine.process(paid("evt-10"))
    assert ("order-paid-buyer", "sent", "sent on inapp") in await engine.decisions_of(first)
    again = await engine.decisions_of(second)
    assert (
        "order-paid-buyer",
        "deduplicated",
        "order.paid was already notified for o-1 (event evt-9)",
    ) in again
    # `dedup: event` keeps the old behaviour: a new event id is a new notice
    assert ("paid-per-event", "sent", "sent on inapp") in again
    rows = await engine.rows(
        select(notifications.c.rule_id).where(notifications.c.subscriber_id == "buyer-1")
    )
    assert len(rows) == 1


async def test_two_duplicates_in_one_batch_notify_once(engine: Engine) -> None:
    first, second, other = await engine.process(paid("evt-1"), paid("evt-2"), paid("evt-3", "o-2"))
    assert ("order-paid-buyer", "sent", "sent on inapp") in await engine.decisions_of(first)
    assert (
        "order-paid-buyer",
        "deduplicated",
        "order.paid was already notified for o-1 (event evt-1)",
    ) in await engine.decisions_of(second)
    assert ("order-paid-buyer", "sent", "sent on inapp") in await engine.decisions_of(other)


async def test_events_outside_the_life_cycle_dedup_per_event_unless_told(engine: Engine) -> None:
    one, two, three = await engine.process(
        event("order.note", "n-1", kind="gift"),
        event("order.note", "n-2", kind="gift"),
        event("order.note", "n-3", kind="address"),
    )
    assert ("note", "sent", "sent on inapp") in await engine.decisions_of(two)
    assert (
        "note-per-kind",
        "deduplicated",
        "rule note-per-kind was already notified for gift (event n-1)",
    ) in await engine.decisions_of(two)
    assert ("note-per-kind", "sent", "sent on inapp") in await engine.decisions_of(three)
    assert ("note-per-kind", "sent", "sent on inapp") in await engine.decisions_of(one)


def test_dedup_by_names_known_parts_only() -> None:
    raw = {
        "categories": {"order_updates": {}},
        "rules": [
            {
                "id": "r",
                "on": "order.paid",
                "channels": ["inapp"],
                "template": "plain",
                "dedup": {"by": ["buyer"]},
            }
        ],
        "templates": TEMPLATES,
    }
    with pytest.raises(ConfigError, match=r"rules\[0\]\.dedup"):
        build_settings(raw, {}, "test")


async def test_each_refund_of_an_order_is_notified_once(engine: Engine) -> None:
    def asked(event_id: str, refund_id: str) -> Event:
        return event("refund.requested", event_id, refund_id=refund_id, amount="1", currency="CNY")

    first, other, again = await engine.process(
        asked("rq-1", "r-1"), asked("rq-2", "r-2"), asked("rq-3", "r-1")
    )
    assert ("refund-asked", "sent", "sent on inapp") in await engine.decisions_of(first)
    assert ("refund-asked", "sent", "sent on inapp") in await engine.decisions_of(other)
    assert (
        "refund-asked",
        "deduplicated",
        "refund.requested was already notified for o-1, r-1 (event rq-1)",
    ) in await engine.decisions_of(again)
