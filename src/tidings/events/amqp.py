"""CloudEvents in over AMQP (scale-out mode): the durable topic exchange ``tidings.events``.

Any producer — a plain ``pika`` script included — publishes a structured CloudEvent JSON with
routing key = event type::

    channel.basic_publish("tidings.events", "order.paid", json.dumps(event),
                          pika.BasicProperties(delivery_mode=2))

A message may also carry a CloudEvents batch (a JSON array of structured events, content type
``application/cloudevents-batch+json``). Every worker consumes the quorum queue
``tidings.ingest`` (bound with ``#``), commits the events (idempotent on ``(source, id)``: a
redelivered or replayed message is a duplicate), processes them and acks only after that
commit. A message that is not a valid CloudEvent (or a batch with one invalid event) is
rejected to the dead-letter exchange (queue ``tidings.dead``): kept, never requeued forever.
Messages are decoded as strictly as HTTP bodies (:mod:`tidings.json_input`), and a message the
store refuses while the others of its batch go in is dead-lettered alone
(:func:`tidings.events.poison.apart`): one poison message never stops the consumer.

The HTTP API of a ``--role api`` process hands its accepted events to the workers the same
way: after the database commit it publishes them as batches of up to ``HANDOFF_BATCH`` with
their row ids (header ``tidings-pk``, a list) and waits for the confirms; a worker then
processes them without inserting them again. Should that publish fail, the events are still
committed, and the workers' recovery loop processes them a few seconds later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from tidings import json_input, json_output
from tidings.errors import BrokerError, InvalidInput
from tidings.events.cloudevents import Event, checked, parse_structured
from tidings.events.poison import apart
from tidings.queue.amqp import (
    COUNT_HEADER,
    connect,
    declare_dead_letters,
    publish_confirmed,
    work_queue_arguments,
)
from tidings.queue.amqp_consumer import BatchConsumer
from tidings.store.events import Accepted, StoredEvent

log = logging.getLogger(__name__)

EXCHANGE = "tidings.events"
QUEUE = "tidings.ingest"
PK_HEADER = "tidings-pk"
RECEIVED_HEADER = "tidings-received-at"
BATCH_TYPE = "application/cloudevents-batch+json"
HANDOFF_BATCH = 128
"""Events per hand-off message: a socket write and a confirm per message is the cost here."""

Commit = Callable[[Sequence[Event]], Awaitable[list[Accepted]]]
Process = Callable[[Sequence[StoredEvent]], Awaitable[None]]


class EventIngest:
    """The ``tidings.events`` exchange: hand-off from the API, intake from any producer."""

    def __init__(
        self, url: str, *, batch: int = 256, slots: int = 2, patience: float = 1.0
    ) -> None:
        self.url = url
        self.batch = batch
        self.slots = slots
        self.patience = patience
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractChannel | None = None
        self._consumer: BatchConsumer | None = None
        self._now: Callable[[], float] = time.time

    async def start(self) -> None:
        """Connect; declare the exchange, the ingest queue and the dead letters."""
        self._connection = await connect(self.url)
        self._publisher = await self._connection.channel(publisher_confirms=True)
        await self._declare(self._publisher)

    async def _declare(self, channel: AbstractChannel) -> aio_pika.abc.AbstractQueue:
        await declare_dead_letters(channel)
        exchange = await channel.declare_exchange(
            EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(QUEUE, durable=True, arguments=work_queue_arguments())
        await queue.bind(exchange, routing_key="#")
        return queue

    async def hand_off(self, accepted: Sequence[StoredEvent]) -> bool:
        """Publish committed events to the workers; ``False`` if the broker did not confirm.

        Not confirmed is not lost: the events are committed, and the recovery loop finds them.
        """
        publisher = self._publisher
        if publisher is None or not accepted:
            return False
        if self._connection is None or not self._connection.connected.is_set():
            return False  # away: no wait before the 202; the workers recover the events
        exchange = await publisher.get_exchange(EXCHANGE, ensure=False)
        messages = []
        for start in range(0, len(accepted), HANDOFF_BATCH):
            chunk = accepted[start : start + HANDOFF_BATCH]
            body = json_output.utf8([item.event.envelope() for item in chunk])
            message = aio_pika.Message(
                body,
                content_type=BATCH_TYPE,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                headers={
                    PK_HEADER: [item.pk for item in chunk],
                    RECEIVED_HEADER: [item.received_at for item in chunk],
                    COUNT_HEADER: len(chunk),
                },
            )
            types = {item.event.type for item in chunk}
            messages.append((types.pop() if len(types) == 1 else "batch", message))
        try:
            await publish_confirmed(lambda: exchange, messages, patience=self.patience)
        except BrokerError:
            log.warning(
                "hand-off of %d events not confirmed; recovery will process them", len(accepted)
            )
            return False
        return True

    async def consume(
        self, commit: Commit, process: Process, now: Callable[[], float] = time.time
    ) -> None:
        """Commit and process events from ``tidings.ingest`` until :meth:`aclose`."""
        self._now = now
        if self._connection is None:
            raise BrokerError("the AMQP ingest is not started")
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=self.batch * self.slots * 2)
        queue = await self._declare(channel)

        async def handle(messages: list[AbstractIncomingMessage]) -> None:
            await self._handle(messages, commit, process)

        self._consumer = BatchConsumer(queue, handle, batch=self.batch, slots=self.slots)
        await self._consumer.run()

    async def _handle(
        self, messages: list[AbstractIncomingMessage], commit: Commit, process: Process
    ) -> None:
        known: list[StoredEvent] = []
        offered: list[tuple[AbstractIncomingMessage, list[Event]]] = []
        for message in messages:
            if message.processed:  # rejected by an earlier attempt at this batch
                continue
            try:
                events = _events_of(message.body)
            except (ValueError, InvalidInput) as exc:
                # the reason names a field, never a value (PII stays out of the logs)
                log.warning(
                    "dead-lettered an invalid event message: %s",
                    getattr(exc, "field", None) or type(exc).__name__,
                )
                await message.reject(requeue=False)
                continue
            headers = message.headers or {}
            pks = [pk for pk in _listed(headers.get(PK_HEADER)) if isinstance(pk, str)]
            received = [
                float(at)
                for at in _listed(headers.get(RECEIVED_HEADER))
                if isinstance(at, (int, float))
            ]
            if len(pks) == len(received) == len(events):
                known += [
                    StoredEvent(pk, event, at)
                    for pk, event, at in zip(pks, events, received, strict=True)
                ]
            else:
                offered.append((message, events))
        if offered:
            # a message the store refuses while the others go in is dead-lettered alone;
            # when nothing goes in, the error is raised (the batch is retried, then requeued)
            stored = await apart(offered, lambda group: self._commit(group, commit))
            for (message, _), outcome in zip(offered, stored, strict=True):
                if isinstance(outcome, InvalidInput):
                    log.warning("dead-lettered an event message the store refused")
                    await message.reject(requeue=False)
                else:
                    known += outcome
        for start in range(0, len(known), self.batch):
            # a duplicate already processed claims nothing (see Processor._write)
            await process(known[start : start + self.batch])

    async def _commit(
        self, offered: Sequence[tuple[AbstractIncomingMessage, list[Event]]], commit: Commit
    ) -> list[list[StoredEvent]]:
        """Commit the events of ``offered``; the stored events of each message."""
        events = [event for _, listed in offered for event in listed]
        # a producer's batch messages carry no count: one transaction per ``batch`` events
        # at most, however many the messages held
        results: list[Accepted] = []
        for start in range(0, len(events), self.batch):
            results += await commit(events[start : start + self.batch])
        # ``now`` is close enough for the received time of a redelivered duplicate
        now = self._now()
        stored = [
            StoredEvent(result.pk, event, now)
            for event, result in zip(events, results, strict=True)
        ]
        per_message = []
        start = 0
        for _, listed in offered:
            per_message.append(stored[start : start + len(listed)])
            start += len(listed)
        return per_message

    async def aclose(self) -> None:
        """Stop consuming (batches in flight finish) and disconnect."""
        if self._consumer is not None:
            await self._consumer.aclose()
        if self._connection is not None:
            await self._connection.close()


def _events_of(body: bytes) -> list[Event]:
    """The checked events of a message: one structured CloudEvent or a batch of them."""
    decoded = json_input.decode(body)
    if isinstance(decoded, list):
        return [checked(parse_structured(item, f"/{i}")) for i, item in enumerate(decoded)]
    return [checked(parse_structured(decoded))]


def _listed(value: object) -> list[object]:
    """A header value as a list (a single value from a one-event message is one item)."""
    if isinstance(value, (list, tuple)):
        return list(value)
    return [] if value is None else [value]
