"""The broker contract (tidings.queue.base), one suite over every backend.

Backends: ``embedded`` (in-process lanes) and ``rabbitmq`` (a fresh vhost on the test node).
The last tests hold only for a broker that outlives its consumer (RabbitMQ): tickets a dead
consumer held are redelivered, and poison is dead-lettered rather than requeued forever.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustChannel

from testbed.cluster import fresh_vhost
from tidings.queue.amqp import DEAD
from tidings.queue.base import LANES, Broker, Handler, Lane, Ticket
from tidings.queue.embedded import EmbeddedBroker
from tidings.queue.rabbitmq import RabbitBroker, lane_queue

Factory = Callable[..., Broker]


@pytest.fixture(params=["embedded", "rabbitmq"])
def backend(request: pytest.FixtureRequest) -> str | None:
    """``None`` for the embedded broker, else the URL of a fresh RabbitMQ vhost."""
    if request.param == "embedded":
        return None
    return fresh_vhost(request.getfixturevalue("services"))


@pytest.fixture
async def make(backend: str | None) -> AsyncIterator[Factory]:
    """Builds started brokers of one backend (all sharing one vhost); closes them after."""
    made: list[Broker] = []
    url = backend

    def build(**options: Any) -> Broker:
        broker: Broker = EmbeddedBroker() if url is None else RabbitBroker(url, **options)
        made.append(broker)
        return broker

    yield build
    for broker in made:
        await broker.aclose()


async def started(make: Factory, **options: Any) -> Broker:
    broker = make(**options)
    await broker.start()
    return broker


class Recorder:
    """A handler that records what it got (and can be told to fail or wait)."""

    def __init__(self) -> None:
        self.got: list[Ticket] = []
        self.batches: list[tuple[Lane, int]] = []
        self.fail_times = 0
        self.gate: asyncio.Event | None = None
        self.changed = asyncio.Event()

    async def __call__(self, lane: Lane, tickets: list[Ticket]) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_times > 0:
            self.fail_times -= 1
            raise RuntimeError("handler failed")
        self.batches.append((lane, len(tickets)))
        self.got += tickets
        self.changed.set()

    def ids(self) -> set[str]:
        return {t.delivery_id for t in self.got}


async def until(predicate: Callable[[], Any], within: float = 15.0) -> Any:
    deadline = time.monotonic() + within
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s")
        await asyncio.sleep(0.02)
    return value


def consuming(broker: Broker, handler: Handler) -> asyncio.Task[None]:
    return asyncio.create_task(broker.consume(handler))


def tickets(n: int, lane: Lane = "normal", prefix: str = "d") -> list[Ticket]:
    return [Ticket(f"{prefix}-{lane}-{i}", lane, f"order-{i % 7}") for i in range(n)]


async def test_every_published_ticket_reaches_the_handler_with_its_lane_and_subject(
    make: Factory,
) -> None:
    broker = await started(make)
    sent = tickets(300, "normal") + tickets(50, "high") + tickets(20, "low")
    await broker.publish(sent)
    handler = Recorder()
    task = consuming(broker, handler)
    await until(lambda: len(handler.ids()) == len(sent))
    assert {(t.delivery_id, t.lane, t.subject) for t in handler.got} >= {
        (t.delivery_id, t.lane, t.subject) for t in sent
    }
    assert max(n for _, n in handler.batches) > 1  # batched, not one by one
    task.cancel()


async def test_a_handler_that_raises_gets_its_tickets_again(make: Factory) -> None:
    broker = await started(make)
    handler = Recorder()
    handler.fail_times = 2
    task = consuming(broker, handler)
    await broker.publish(tickets(5))
    await until(lambda: len(handler.ids()) == 5)
    task.cancel()


async def test_a_backlog_on_low_never_delays_high(make: Factory) -> None:
    broker = await started(make)
    gate = asyncio.Event()

    async def handler(lane: Lane, batch: list[Ticket]) -> None:
        if lane == "low":
            await gate.wait()  # every low slot is stuck
        else:
            seen.extend(batch)

    seen: list[Ticket] = []
    task = consuming(broker, handler)
    await broker.publish(tickets(2000, "low"))
    await asyncio.sleep(0.2)
    await broker.publish(tickets(10, "high"))
    await until(lambda: len(seen) == 10, within=5)
    gate.set()
    task.cancel()


async def test_depth_counts_waiting_tickets_per_lane(make: Factory) -> None:
    broker = await started(make)
    assert set(broker.depth()) == set(LANES)
    await broker.publish(tickets(30, "low"))
    await until(lambda: broker.depth()["low"] == 30, within=5)
    assert broker.depth()["high"] == 0


async def test_tickets_are_acked_only_after_the_handler_returned(make: Factory) -> None:
    broker = await started(make)
    handler = Recorder()
    handler.gate = asyncio.Event()
    task = consuming(broker, handler)
    await broker.publish(tickets(3))
    await asyncio.sleep(0.3)
    assert handler.got == []
    handler.gate.set()
    await until(lambda: len(handler.ids()) == 3)
    await asyncio.sleep(0.2)
    assert len(handler.got) == 3  # once each: acked after it returned, not redelivered
    task.cancel()


# --- a broker that outlives its consumers (RabbitMQ) ------------------------------------


@pytest.fixture
async def rabbit(amqp_vhost: str) -> AsyncIterator[Callable[..., Awaitable[RabbitBroker]]]:
    made: list[RabbitBroker] = []

    async def build(**options: Any) -> RabbitBroker:
        broker = RabbitBroker(amqp_vhost, **options)
        made.append(broker)
        await broker.start()
        return broker

    yield build
    for broker in made:
        await broker.aclose()


async def test_tickets_held_by_a_consumer_that_dies_go_to_another(
    rabbit: Callable[..., Awaitable[RabbitBroker]],
) -> None:
    first, second = await rabbit(), await rabbit()
    stuck = Recorder()
    stuck.gate = asyncio.Event()  # never opens: this consumer "hangs" then dies
    task = consuming(first, stuck)
    await first.publish(tickets(40))
    await asyncio.sleep(0.5)
    other = Recorder()
    other_task = consuming(second, other)
    await asyncio.sleep(0.5)
    assert other.got == []  # prefetched and unacked by the first consumer
    await first.connection.close()  # the first worker dies before acking
    task.cancel()
    await until(lambda: len(other.ids()) == 40)
    stuck.gate.set()
    other_task.cancel()


async def test_poison_goes_to_the_dead_letter_queue_not_round_and_round(
    rabbit: Callable[..., Awaitable[RabbitBroker]], amqp_vhost: str
) -> None:
    broker = await rabbit(delivery_limit=2, retries=1)
    calls = 0

    async def always_fails(lane: Lane, batch: list[Ticket]) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("poison")

    task = consuming(broker, always_fails)
    await broker.publish([Ticket("poison-1")])
    channel = await broker.connection.channel()
    await channel.default_exchange.publish(aio_pika.Message(b"not a ticket"), lane_queue("high"))

    async def dead_count() -> int:
        # not robust: a robust channel answers a passive declare from its cache
        queue = await cast(AbstractRobustChannel, channel).declare_queue(
            DEAD, passive=True, robust=False
        )
        return int(queue.declaration_result.message_count or 0)

    deadline = time.monotonic() + 20
    while await dead_count() < 2:
        assert time.monotonic() < deadline, "poison not dead-lettered"
        await asyncio.sleep(0.2)
    seen = calls
    await asyncio.sleep(1.5)
    assert calls == seen <= 3  # delivered at most limit + 1 times, then left alone
    task.cancel()


async def test_a_slow_batch_does_not_keep_later_ones_unacked(
    rabbit: Callable[..., Awaitable[RabbitBroker]],
) -> None:
    first, second = await rabbit(batch=1, slots=4), await rabbit()
    slow = asyncio.Event()  # never set: the batch holding "d-slow" hangs

    async def handler(lane: Lane, batch: list[Ticket]) -> None:
        if any(t.delivery_id == "d-slow" for t in batch):
            await slow.wait()

    task = consuming(first, handler)
    await first.publish([Ticket("d-slow")])
    for i in range(5):  # separate messages behind the slow one, on the same channel
        await first.publish([Ticket(f"d-fast-{i}")])
    await asyncio.sleep(1.0)  # the fast ones finish; their acks must not wait for "d-slow"
    await first.connection.close()  # the first worker dies with "d-slow" still in flight
    task.cancel()
    other = Recorder()
    other_task = consuming(second, other)
    await until(lambda: other.ids() == {"d-slow"})
    await asyncio.sleep(0.5)
    assert other.ids() == {"d-slow"}  # only the unfinished ticket came back
    other_task.cancel()


async def test_many_tickets_travel_in_few_messages_and_depth_still_counts_tickets(
    rabbit: Callable[..., Awaitable[RabbitBroker]], amqp_vhost: str
) -> None:
    broker = await rabbit(batch=64)
    await broker.publish(tickets(200, "low"))
    channel = await broker.connection.channel()
    queue = await cast(AbstractRobustChannel, channel).declare_queue(
        lane_queue("low"), passive=True, robust=False
    )
    assert queue.declaration_result.message_count == 4  # 64 + 64 + 64 + 8
    await until(lambda: broker.depth()["low"] == 200, within=5)
