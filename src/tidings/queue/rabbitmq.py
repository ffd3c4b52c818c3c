"""The RabbitMQ broker (scale-out mode): quorum queues per lane, confirms, acks after commit.

Topology (all declared idempotently by every process at start)::

    default exchange ──▶ tidings.deliveries.{high,normal,low}   quorum, x-delivery-limit
                              │ rejected / over the limit
                              ▼
                         tidings.dlx (fanout) ──▶ tidings.dead (quorum: poison kept, not lost)
    tidings.inbox (fanout) ──▶ one exclusive queue per process  (live inbox updates for SSE)

The connection, the dead letters and confirmed publishing are :mod:`tidings.queue.amqp`;
batches acked after their handler are :mod:`tidings.queue.amqp_consumer`; the inbox relay is
:mod:`tidings.queue.inbox_relay`.

Guarantees (see :mod:`tidings.queue.base`): :meth:`RabbitBroker.publish` returns once every
ticket is confirmed by the broker, waiting out a broker restart for up to ``patience``
seconds; consumers ack a ticket only after the handler returned (its outcome committed). A
handler that raises is retried in place a few times (a database restart is a pause, not a
poison), then the batch is requeued; a ticket that keeps failing reaches the delivery limit
and is dead-lettered — its delivery row is still in the store, so the scheduler requeues it
later. The connection is robust: after a broker restart channels, queues and consumers come
back by themselves, and unacked tickets are redelivered (a duplicate claims nothing).

While RabbitMQ is away a worker keeps delivering: what it publishes runs on its own
in-process lanes (an :class:`~tidings.queue.embedded.EmbeddedBroker`), and the service
processes the events the API could not hand off (see
:meth:`tidings.runtime.service.Service.start`). A broker restart is a change of route, not an
outage.

Each lane has its own channel, prefetch and batch slots, so a backlog on ``low`` never holds
up ``high``. Per-subject order does not depend on the queue: the claim in
:func:`tidings.store.deliveries.claim` lets a delivery go only when no earlier one of its
subject and destination is open, whichever worker holds it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any, cast

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
)

from tidings.errors import BrokerError
from tidings.queue.amqp import (
    COUNT_HEADER,
    DELIVERY_LIMIT,
    MessageHandler,
    connect,
    declare_dead_letters,
    publish_confirmed,
    work_queue_arguments,
)
from tidings.queue.amqp_consumer import BatchConsumer
from tidings.queue.base import LANES, Handler, Lane, Ticket
from tidings.queue.embedded import EmbeddedBroker
from tidings.queue.inbox_relay import RelayedHub

log = logging.getLogger(__name__)


def lane_queue(lane: Lane) -> str:
    """The queue name of ``lane``."""
    return f"tidings.deliveries.{lane}"


class RabbitBroker:
    """Delivery tickets on RabbitMQ quorum queues, one per lane."""

    name = "rabbitmq"

    def __init__(
        self,
        url: str,
        *,
        batch: int = 64,
        slots: int = 4,
        patience: float = 30.0,
        failover_after: float = 1.0,
        delivery_limit: int = DELIVERY_LIMIT,
        retries: int = 3,
    ) -> None:
        self.url = url
        self.failover_after = failover_after
        self.retries = retries
        self.batch = batch
        self.slots = slots
        self.prefetch = batch * slots * 2  # one batch waiting behind every slot
        self.patience = patience
        self.delivery_limit = delivery_limit
        self.hub = RelayedHub()
        """Live inbox updates, relayed to every process through this broker's connection."""
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractChannel | None = None
        self._consumers: list[BatchConsumer] = []
        self._depth: dict[Lane, int] = dict.fromkeys(LANES, 0)
        self._carried = _Carried()
        self._tasks: list[asyncio.Task[Any]] = []
        self._local = EmbeddedBroker(slots=slots, batch=batch)
        """This process's own lanes: they carry its tickets while RabbitMQ is away."""
        self._consuming = False

    @property
    def connection(self) -> AbstractRobustConnection:
        """The broker connection (after :meth:`start`)."""
        if self._connection is None:
            raise BrokerError("the RabbitMQ broker is not started")
        return self._connection

    async def start(self) -> None:
        """Connect; declare the lanes, the dead letters and the inbox relay."""
        self._connection = await connect(self.url)
        self._publisher = await self._connection.channel(publisher_confirms=True)
        await declare_dead_letters(self._publisher)
        for lane in LANES:
            await self._publisher.declare_queue(
                lane_queue(lane), durable=True, arguments=work_queue_arguments(self.delivery_limit)
            )
        await self.hub.start(self._connection)
        self._tasks.append(asyncio.create_task(self._watch_depth(), name="broker-depth"))

    async def publish(self, tickets: Sequence[Ticket]) -> None:
        """Queue ``tickets``; returns when RabbitMQ confirmed every one.

        The tickets of one call travel as few messages as the batch size allows (one per lane
        and ``batch`` tickets): on this path every message is a socket write and a confirm.
        """
        if not tickets:
            return
        publisher = self._publisher
        if publisher is None:
            raise BrokerError("the RabbitMQ broker is not started")
        by_lane: dict[Lane, list[Ticket]] = {}
        for ticket in tickets:
            by_lane.setdefault(ticket.lane, []).append(ticket)
        messages = []
        for lane, queued in by_lane.items():
            for start in range(0, len(queued), self.batch):
                chunk = queued[start : start + self.batch]
                body = {"tickets": [[t.delivery_id, t.subject] for t in chunk]}
                messages.append(
                    (
                        lane_queue(lane),
                        aio_pika.Message(
                            json.dumps(body).encode(),
                            content_type="application/json",
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                            headers={COUNT_HEADER: len(chunk)},
                        ),
                    )
                )
        self._carried.see(len(messages), len(tickets))
        if not self._consuming:  # nobody here to run them: wait for RabbitMQ
            await publish_confirmed(
                lambda: publisher.default_exchange, messages, patience=self.patience
            )
            return
        if self.available():
            try:
                await publish_confirmed(
                    lambda: publisher.default_exchange, messages, patience=self.failover_after
                )
                return
            except BrokerError as exc:
                log.warning("RabbitMQ did not confirm tickets (%s); running them here", exc)
        # Away: the deliveries are committed, so this process's lanes can carry them; a
        # ticket that reached RabbitMQ all the same is a duplicate, and claims nothing.
        await self._local.publish(tickets)

    def available(self) -> bool:
        """Whether RabbitMQ is connected (tickets go through it, not this process's lanes)."""
        connection = self._connection
        return connection is not None and connection.connected.is_set()

    async def consume(self, handler: Handler) -> None:
        """Feed each lane's tickets to ``handler`` until :meth:`aclose`.

        The process's own lanes feed it too: they carry what it publishes while RabbitMQ is
        away (see :meth:`publish`).
        """
        self._consuming = True
        runs = [self._local.consume(handler)]
        for lane in LANES:
            channel = await self.connection.channel()
            await channel.set_qos(prefetch_count=self.prefetch)
            queue = await channel.declare_queue(
                lane_queue(lane), durable=True, arguments=work_queue_arguments(self.delivery_limit)
            )
            consumer = BatchConsumer(
                queue,
                _ticket_handler(lane, handler, self._carried),
                batch=self.batch,
                slots=self.slots,
                retries=self.retries,
            )
            self._consumers.append(consumer)
            runs.append(consumer.run())
        await asyncio.gather(*runs)

    def depth(self) -> dict[Lane, int]:
        """Tickets waiting per lane (refreshed every second from the broker).

        RabbitMQ counts messages, and a message carries up to ``batch`` tickets: the depth is
        its count times the mean tickets per message this process has published and
        consumed lately (exact while every message carries the same number).
        """
        local = self._local.depth()
        per_message = self._carried.per_message
        return {lane: round(n * per_message) + local[lane] for lane, n in self._depth.items()}

    async def _watch_depth(self) -> None:
        channel: AbstractRobustChannel | None = None
        while True:
            try:
                if channel is None or channel.is_closed:
                    channel = cast(AbstractRobustChannel, await self.connection.channel())
                for lane in LANES:
                    # not robust: a robust passive declare answers from its cache
                    queue = await channel.declare_queue(
                        lane_queue(lane), passive=True, robust=False
                    )
                    result = queue.declaration_result
                    self._depth[lane] = int(result.message_count or 0)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a gauge: try again next second
                channel = None
            await asyncio.sleep(1.0)

    async def aclose(self) -> None:
        """Stop consuming (in-flight batches finish), then disconnect."""
        await asyncio.gather(self._local.aclose(), *(c.aclose() for c in self._consumers))
        await self.hub.aclose()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._connection is not None:
            await self._connection.close()


class _Carried:
    """Tickets per message, a moving mean over the messages seen lately."""

    def __init__(self, horizon: int = 1000) -> None:
        self.horizon = horizon
        self.messages = 0.0
        self.tickets = 0.0

    def see(self, messages: int, tickets: int) -> None:
        """Count ``messages`` that carried ``tickets`` in all."""
        if self.messages + messages > self.horizon:
            keep = self.horizon / (self.messages + messages)
            self.messages *= keep
            self.tickets *= keep
        self.messages += messages
        self.tickets += tickets

    @property
    def per_message(self) -> float:
        """The mean (1 before any message was seen)."""
        return self.tickets / self.messages if self.messages else 1.0


def parse_tickets(lane: Lane, body: bytes) -> list[Ticket]:
    """The tickets of a message body: ``{"tickets": [[id, subject], ...]}``.

    The older one-ticket body ``{"id": ..., "subject": ...}`` is read too. Raises
    ``ValueError`` for anything else.
    """
    try:
        decoded = json.loads(body)
        if isinstance(decoded, dict) and "tickets" in decoded:
            return [
                Ticket(str(i), lane, None if s is None else str(s)) for i, s in decoded["tickets"]
            ]
        return [Ticket(str(decoded["id"]), lane, decoded.get("subject"))]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError("not a ticket message") from exc


def _ticket_handler(lane: Lane, handler: Handler, carried: _Carried) -> MessageHandler:
    async def handle(messages: list[AbstractIncomingMessage]) -> None:
        tickets = []
        for message in messages:
            try:
                tickets += parse_tickets(lane, message.body)
            except ValueError:
                await message.reject(requeue=False)  # not a ticket: keep it in tidings.dead
        carried.see(len(messages), len(tickets))
        if tickets:
            await handler(lane, tickets)

    return handle
