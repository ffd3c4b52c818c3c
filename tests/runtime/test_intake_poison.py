"""One event the store refuses fails only its own caller (issue 12): the coalesced insert of
concurrent accepts is retried in halves without the offender, on SQLite and PostgreSQL.

The offenders here are built as :class:`Event` objects directly, past the parsers that refuse
such text at the door: this is the net under the validation, for what it may miss.
"""

from __future__ import annotations

import asyncio

import pytest

from tidings.clock import SystemClock
from tidings.errors import InvalidInput
from tidings.events.cloudevents import Event
from tidings.runtime.intake import Intake
from tidings.store import Store
from tidings.store import events as event_rows


def event(event_id: str) -> Event:
    return Event(id=event_id, source="/shop", type="x.y", data={"note": "fine"})


POISON = "\ud800"  # a lone surrogate: no database driver can encode it


async def stored(store: Store, *ids: str) -> set[str]:
    async with store.read() as conn:
        return {event_id for event_id in ids if await event_rows.find(conn, event_id, "/shop")}


async def test_concurrent_accepts_outlive_one_poisoned_caller(store: Store) -> None:
    intake = Intake(store, SystemClock())
    good = [[event(f"good-{i}")] for i in range(12)]
    offenders = [[event("bad-1" + POISON)], [event("ok-in-bad"), event("bad-2" + POISON)]]
    callers = good[:5] + offenders[:1] + good[5:9] + offenders[1:] + good[9:]
    outcomes = await asyncio.gather(
        *(intake.accept(batch) for batch in callers), return_exceptions=True
    )
    for batch, outcome in zip(callers, outcomes, strict=True):
        if batch in offenders:
            assert isinstance(outcome, InvalidInput), outcome
            assert outcome.status == 422
        else:
            assert isinstance(outcome, list) and not outcome[0].duplicate, outcome
    ids = [e.id for batch in callers for e in batch if POISON not in e.id]
    # a caller is all or nothing: the good event sent with a bad one is not stored either
    assert await stored(store, *ids) == {f"good-{i}" for i in range(12)}


async def test_a_lone_caller_the_store_refuses_gets_the_stores_error(store: Store) -> None:
    intake = Intake(store, SystemClock())
    with pytest.raises(Exception) as refused:  # noqa: PT011 - whatever the driver raises
        await intake.accept([event("alone" + POISON)])
    assert not isinstance(refused.value, InvalidInput)  # nothing went in: not proof of a bad item
    (accepted,) = await intake.accept([event("after")])
    assert not accepted.duplicate


async def test_an_outage_is_not_halved_down_to_every_item() -> None:
    # the store down (a lost connection, a locked database) blames no item: one try, raised
    from sqlalchemy.exc import OperationalError

    from tidings.events.poison import apart

    calls = 0

    async def commit(items: object) -> list[object]:
        nonlocal calls
        calls += 1
        raise OperationalError("INSERT …", {}, Exception("server closed the connection"))

    with pytest.raises(OperationalError):
        await apart(list(range(64)), commit)
    assert calls == 1
