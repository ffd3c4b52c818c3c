"""The RabbitMQ broker (scale-out mode): quorum queues per lane, confirms, acks after commit.

Topology (all declared idempotently by every process at start)::

    default exchange ──▶ tidings.deliveries.{high,normal,low}   quorum, x-delivery-limit
                              │ rejected / over the limit
                              ▼
                         tidings.dlx (fanout) ──▶ tidings.dead (quorum: poison kept, not lost)
    tidings.inbox (fanout) ──▶ one exclusive queue per process  (live inbox updates for SSE)

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
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from pamqp.common import FieldTable

from tidings.errors import BrokerError
from tidings.queue.base import LANES, Handler, Lane, Ticket
from tidings.queue.embedded import EmbeddedBroker
from tidings.runtime.inbox_hub import InboxHub

log = logging.getLogger(__name__)

DLX = "tidings.dlx"
DEAD = "tidings.dead"
INBOX = "tidings.inbox"
DELIVERY_LIMIT = 20
"""Deliveries of one message before it is dead-lettered as poison."""
QUORUM: FieldTable = {"x-queue-type": "quorum"}


def lane_queue(lane: Lane) -> str:
    """The queue name of ``lane``."""
    return f"tidings.deliveries.{lane}"


def work_queue_arguments(delivery_limit: int = DELIVERY_LIMIT) -> FieldTable:
    """Arguments of a work queue: quorum, dead-lettered to :data:`DLX` past the limit."""
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": delivery_limit,
        "x-dead-letter-exchange": DLX,
    }


async def connect(url: str) -> AbstractRobustConnection:
    """A connection that reconnects (and restores its topology) after a broker restart."""
    try:
        return await aio_pika.connect_robust(url, reconnect_interval=0.5, fail_fast="true")
    except (OSError, aio_pika.exceptions.AMQPError) as exc:
        raise BrokerError(f"cannot connect to RabbitMQ: {type(exc).__name__}") from exc


async def declare_dead_letters(channel: AbstractChannel) -> AbstractExchange:
    """The dead-letter exchange and the queue that keeps what reaches it."""
    exchange = await channel.declare_exchange(DLX, aio_pika.ExchangeType.FANOUT, durable=True)
    dead = await channel.declare_queue(DEAD, durable=True, arguments=QUORUM)
    await dead.bind(exchange)
    return exchange


async def publish_confirmed(
    exchange: Callable[[], AbstractExchange],
    messages: Sequence[tuple[str, aio_pika.Message]],
    *,
    patience: float,
) -> None:
    """Publish ``(routing_key, message)`` pairs and wait for every confirm.

    Publishing while the connection is down fails; the robust connection comes back on its
    own, so failed messages are retried until ``patience`` runs out (then :class:`BrokerError`).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    waiting = list(messages)
    while True:
        results = await asyncio.gather(
            *(exchange().publish(message, routing_key=key) for key, message in waiting),
            return_exceptions=True,
        )
        failed = [
            (pair, result)
            for pair, result in zip(waiting, results, strict=True)
            if isinstance(result, BaseException)
        ]
        if not failed:
            return
        for _, result in failed:
            if isinstance(result, asyncio.CancelledError):
                raise result
        if loop.time() >= deadline:
            error = failed[0][1]
            raise BrokerError(
                f"RabbitMQ did not confirm {len(failed)} messages: {type(error).__name__}"
            ) from error
        waiting = [pair for pair, _ in failed]
        await asyncio.sleep(0.25)


MessageHandler = Callable[[list[AbstractIncomingMessage]], Awaitable[None]]
COUNT_HEADER = "tidings-count"
"""How many items (events, tickets) a message carries, when it is more than one."""


def weight(message: AbstractIncomingMessage) -> int:
    """The items ``message`` carries (its :data:`COUNT_HEADER`, else 1)."""
    count = (message.headers or {}).get(COUNT_HEADER)
    return count if isinstance(count, int) and count > 0 else 1


class BatchConsumer:
    """Feeds a queue's messages to a handler in batches; acks each after the handler returned.

    A batch holds messages up to ``batch`` items (a message may carry several, see
    :func:`weight`). The handler may settle messages itself (e.g. reject an invalid one to the
    DLX); the rest are acked when it returns. It runs at most ``slots`` batches at once.
    Acks are cumulative where they can be (:class:`_Acks`): one frame for a run of finished
    messages rather than one per message, which matters where every socket write is a costly
    system call.
    """

    def __init__(
        self,
        queue: AbstractQueue,
        handler: MessageHandler,
        *,
        batch: int,
        slots: int,
        retries: int = 3,
    ) -> None:
        self.queue = queue
        self.retries = retries
        self.handler = handler
        self.batch = batch
        self.slots = slots
        self._buffer: list[AbstractIncomingMessage] = []
        self._acks = _Acks()
        self._wake = asyncio.Event()
        self._free = asyncio.Semaphore(slots)
        self._tasks: set[asyncio.Task[None]] = set()
        self._tag: str | None = None
        self._closed = False

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self._acks.received(message)
        self._buffer.append(message)
        self._wake.set()

    async def run(self) -> None:
        """Consume until :meth:`aclose`."""
        self._tag = await self.queue.consume(self._on_message, no_ack=False)
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            while self._buffer and not self._closed:
                await self._free.acquire()
                taken = self._take()
                task = asyncio.create_task(self._handle(taken))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def _take(self) -> list[AbstractIncomingMessage]:
        items = 0
        count = 0
        for message in self._buffer:
            items += weight(message)
            count += 1
            if items >= self.batch:
                break
        taken, self._buffer = self._buffer[:count], self._buffer[count:]
        return taken

    async def _handle(self, messages: list[AbstractIncomingMessage]) -> None:
        try:
            for attempt in range(self.retries):
                try:
                    await self.handler(messages)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.warning(
                        "a batch of %d failed (attempt %d)",
                        len(messages),
                        attempt + 1,
                        exc_info=True,
                    )
                    await asyncio.sleep(0.5 * 2**attempt)
                    continue
                await self._acks.finished(messages)
                return
            # still failing: give the messages back; the delivery limit catches real poison
            await self._acks.requeue(messages)
        finally:
            self._free.release()

    async def aclose(self) -> None:
        """Stop taking messages; let batches in flight finish (bounded)."""
        self._closed = True
        self._wake.set()
        if self._tag is not None:
            try:
                await asyncio.wait_for(self.queue.cancel(self._tag), 2)
            except Exception:  # noqa: BLE001 - the connection may be gone already
                pass
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5.0)
        for task in list(self._tasks):
            task.cancel()
        await self._acks.flush()
        # unsettled messages go back to the queue when the channel closes


@dataclass(slots=True)
class _Open:
    """A channel's messages not yet settled (by delivery tag, rising) and those finished."""

    channel: Any
    unsettled: dict[int, AbstractIncomingMessage] = field(default_factory=dict)
    finished: dict[int, float] = field(default_factory=dict)
    """Tag → when its handler finished: acked when the run before it is, or after patience."""


class _Acks:
    """Acknowledgements of one consumer, cumulative where that is safe.

    Delivery tags rise with arrival on a channel. A finished message is acked as part of the
    longest run of finished messages at the head of its channel's unsettled ones, with one
    ``multiple`` ack for the whole run. One that finished behind a message still in flight
    waits ``patience`` seconds for the run to reach it, then is acked alone, so a slow batch
    never holds later ones unacked (filling the prefetch window). Messages a handler settled
    itself are skipped. Tags are per channel: a channel that a reconnect replaced is
    forgotten (the broker requeued what it held).
    """

    def __init__(self, patience: float = 0.2) -> None:
        self.patience = patience
        self._open: dict[int, _Open] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[None]] = set()

    def received(self, message: AbstractIncomingMessage) -> None:
        """Track ``message`` until it is settled."""
        channel = _channel_of(message)
        if channel is None or message.delivery_tag is None:
            return
        entry = self._open.get(id(channel))
        if entry is None or entry.channel is not channel:
            for key, known in list(self._open.items()):
                if known.channel.is_closed:
                    del self._open[key]
            entry = self._open[id(channel)] = _Open(channel)
        entry.unsettled[message.delivery_tag] = message

    async def finished(self, messages: Sequence[AbstractIncomingMessage]) -> None:
        """The handler returned: ack ``messages`` (those it did not settle itself)."""
        now = asyncio.get_running_loop().time()
        touched: dict[int, _Open] = {}
        for message in messages:
            entry = self._entry(message)
            if entry is None:
                continue
            tag = message.delivery_tag
            assert tag is not None
            if message.processed:
                entry.unsettled.pop(tag, None)
            else:
                entry.finished[tag] = now
            touched[id(entry)] = entry
        for entry in touched.values():
            await self._sweep(entry, now)
        self._arm()

    async def requeue(self, messages: Sequence[AbstractIncomingMessage]) -> None:
        """The handler kept failing: give ``messages`` back to the queue."""
        for message in messages:
            if not message.processed:
                await _quietly(message.nack(requeue=True))
            entry = self._entry(message)
            if entry is not None and message.delivery_tag is not None:
                entry.unsettled.pop(message.delivery_tag, None)

    async def flush(self) -> None:
        """Ack every finished message now (before the channel closes)."""
        for entry in list(self._open.values()):
            await self._sweep(entry, float("inf"))

    def _entry(self, message: AbstractIncomingMessage) -> _Open | None:
        channel = _channel_of(message)
        entry = self._open.get(id(channel)) if channel is not None else None
        return entry if entry is not None and entry.channel is channel else None

    async def _sweep(self, entry: _Open, now: float) -> None:
        run_end = None
        for tag in entry.unsettled:
            if tag not in entry.finished:
                break
            run_end = tag
        if run_end is not None:
            for tag in [t for t in entry.unsettled if t <= run_end]:
                del entry.unsettled[tag]
                entry.finished.pop(tag, None)
            await _quietly(entry.channel.basic_ack(delivery_tag=run_end, multiple=True))
        for tag in [t for t, at in entry.finished.items() if now - at >= self.patience]:
            del entry.finished[tag]
            entry.unsettled.pop(tag, None)
            await _quietly(entry.channel.basic_ack(delivery_tag=tag))

    def _arm(self) -> None:
        if self._timer is not None or not any(e.finished for e in self._open.values()):
            return

        def fire() -> None:
            self._timer = None
            task = asyncio.create_task(self._stragglers())
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)

        self._timer = asyncio.get_running_loop().call_later(self.patience, fire)

    async def _stragglers(self) -> None:
        now = asyncio.get_running_loop().time()
        for entry in list(self._open.values()):
            await self._sweep(entry, now)
        self._arm()


def _channel_of(message: AbstractIncomingMessage) -> Any | None:
    try:
        return message.channel
    except aio_pika.exceptions.ChannelInvalidStateError:
        return None


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
        self.hub = RelayedHub(self)
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractChannel | None = None
        self._inbox: AbstractExchange | None = None
        self._consumers: list[BatchConsumer] = []
        self._depth: dict[Lane, int] = dict.fromkeys(LANES, 0)
        self._carried = _Carried()
        self._relaying: list[dict[str, Any]] = []
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
        relay = await self._connection.channel(publisher_confirms=False)
        self._inbox = await relay.declare_exchange(INBOX, aio_pika.ExchangeType.FANOUT)
        mine = await relay.declare_queue(exclusive=True, auto_delete=True)
        await mine.bind(self._inbox)
        await mine.consume(self.hub.received, no_ack=True)
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

    def publish_inbox(self, subscriber_id: str, message: dict[str, Any]) -> None:
        """Tell every process's SSE streams about a new inbox item (best effort).

        Items relayed in one pass of the event loop (a processed batch) go as one message.
        """
        if self._inbox is None:
            return
        if not self._relaying:
            asyncio.get_running_loop().call_soon(self._relay)
        self._relaying.append({"to": subscriber_id, "message": message})

    def _relay(self) -> None:
        exchange, items, self._relaying = self._inbox, self._relaying, []
        if exchange is None or not items:
            return
        body = json.dumps({"from": self.hub.origin, "items": items}, default=str)
        task = asyncio.create_task(_quietly(exchange.publish(aio_pika.Message(body.encode()), "")))
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    async def aclose(self) -> None:
        """Stop consuming (in-flight batches finish), then disconnect."""
        await asyncio.gather(self._local.aclose(), *(c.aclose() for c in self._consumers))
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


async def _quietly(publishing: Awaitable[Any]) -> None:
    try:
        await publishing
    except Exception:  # noqa: BLE001 - a live update; the inbox itself is in the database
        pass


class RelayedHub(InboxHub):
    """An :class:`InboxHub` whose items reach the SSE streams of every process, via RabbitMQ."""

    def __init__(self, broker: RabbitBroker) -> None:
        super().__init__()
        self.broker = broker
        self.origin = f"{os.getpid()}-{id(self):x}"

    def publish(self, subscriber_id: str, message: dict[str, Any]) -> None:
        """Deliver locally and relay to the other processes."""
        super().publish(subscriber_id, message)
        self.broker.publish_inbox(subscriber_id, message)

    async def received(self, message: AbstractIncomingMessage) -> None:
        """An item relayed by a process (ours were delivered locally already)."""
        try:
            relayed = json.loads(message.body)
            if relayed.get("from") == self.origin:
                return
            for item in relayed["items"]:
                super().publish(str(item["to"]), item["message"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return
