"""The service: one object that owns the store, broker, processor, dispatcher and scheduler."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.clock import Clock, OffsetClock, SystemClock
from tidings.config import Settings
from tidings.crypto import hash_api_key
from tidings.delivery.breaker import Breaker
from tidings.delivery.dispatcher import Dispatcher
from tidings.delivery.scheduler import Scheduler
from tidings.durations import parse_duration
from tidings.errors import ConfigError
from tidings.events.cloudevents import Event
from tidings.metrics import Metrics
from tidings.queue.base import Broker
from tidings.queue.embedded import EmbeddedBroker
from tidings.queue.inbox_hub import InboxHub, PeerHub
from tidings.runtime.broadcaster import Broadcaster
from tidings.runtime.intake import Intake
from tidings.runtime.keyring import REFRESH, KeyRing
from tidings.runtime.processor import Processor
from tidings.runtime.supervisor import RUN_DIR, Share
from tidings.runtime.uptime import UptimeRecorder
from tidings.store import Store
from tidings.store import deliveries as delivery_leases
from tidings.store import keys as key_rows
from tidings.store.db import advisory_lock
from tidings.store.events import Accepted, StoredEvent
from tidings.strategy.decide import Policy
from tidings.templates import Templates

if TYPE_CHECKING:
    from tidings.events.amqp import EventIngest

log = logging.getLogger(__name__)


def clock_from_env() -> Clock:
    """The system clock, shifted by ``TIDINGS_CLOCK_OFFSET`` (a duration, e.g. ``16m``) if set.

    A test aid: restart a service "later" to see deferred work fire, without sleeping.
    """
    offset = os.environ.get("TIDINGS_CLOCK_OFFSET")
    return OffsetClock(parse_duration(offset)) if offset else SystemClock()


def make_broker(settings: Settings) -> tuple[Broker, InboxHub | None]:
    """The broker the config names, and the inbox hub it carries between processes.

    The hub is ``None`` for the embedded broker: it relays nothing, and the service makes a
    hub of its own (see :meth:`Service._local_hub`).
    """
    if settings.broker == "embedded":
        return EmbeddedBroker(), None
    from tidings.queue.rabbitmq import RabbitBroker

    broker = RabbitBroker(settings.broker)
    return broker, broker.hub


def make_ingest(settings: Settings) -> EventIngest | None:
    """The AMQP event intake in scale-out mode (``None`` with the embedded broker)."""
    if settings.broker == "embedded":
        return None
    from tidings.events.amqp import EventIngest

    return EventIngest(settings.broker)


async def prepare(settings: Settings, clock: Clock | None = None, role: str = "all") -> str | None:
    """What a run of several processes does once, before they start; a generated admin key.

    Migrates the database, creates the PII key file, the API keys and the inbox secret (so
    that N processes starting together neither race for them nor print N admin keys), and
    on SQLite puts every ``sending`` row of a previous run back to ``pending``: every process
    that could hold one is gone.
    """
    now = (clock or clock_from_env()).now()
    store = Store.open(settings.database, settings.encryption_key)
    await store.start()
    try:
        generated, _ = await _setup_keys(store, settings, now, role)
        if store.is_sqlite:
            await store.write(lambda conn: delivery_leases.release_expired_leases(conn, now + 1e9))
    finally:
        await store.aclose()
    return generated


MIN_SECRET = 24
"""The fewest characters an API key or the inbox secret may have."""


def check_secrets(settings: Settings) -> None:
    """Refuse configured API keys and an inbox secret shorter than :data:`MIN_SECRET`.

    The error names where the short one is set, never the value.
    """
    for index, entry in enumerate(settings.api_keys):
        if len(entry.key) < MIN_SECRET:
            where = entry.origin or f"api_keys[{index}] in {settings.source}"
            raise ConfigError(
                f"the API key of {where} is {len(entry.key)} characters:"
                f" at least {MIN_SECRET} are needed",
                where,
            )
    secret = settings.inbox.secret
    if secret and len(secret) < MIN_SECRET:  # empty is unset (`${TIDINGS_INBOX_SECRET}`)
        where = "TIDINGS_INBOX_SECRET or inbox.secret"
        raise ConfigError(
            f"the inbox secret is {len(secret)} characters: at least {MIN_SECRET} are needed",
            where,
        )


async def _setup_keys(
    store: Store, settings: Settings, now: float, role: str = "all"
) -> tuple[str | None, str]:
    """The configured keys made the stored ``config`` set, an admin key generated if no key
    works, and the inbox secret (generated and stored encrypted when none is configured).

    A worker serves no HTTP: its config's keys (often none) change nothing stored.
    """
    check_secrets(settings)
    configured = {entry.key: frozenset(entry.scopes) for entry in settings.api_keys}
    serves_http = role != "worker"

    async def setup(conn: AsyncConnection) -> tuple[str | None, str]:
        # an API process and its workers start side by side: one sets up, the rest wait
        # for its commit and then find every key and secret in place
        await advisory_lock(conn, "tidings:setup")
        generated = None
        if serves_http:
            await key_rows.sync_configured(conn, configured, now)
        if (
            serves_http
            and not configured
            and not key_rows.usable(await key_rows.all_keys(conn), now)
        ):
            generated = "tid_" + secrets.token_urlsafe(24)
            await key_rows.add_key(conn, generated, ["admin"], "generated", now)
        secret = settings.inbox.secret or await key_rows.inbox_secret(conn, store.cipher)
        return generated, secret

    result: tuple[str | None, str] = await store.write(setup)
    return result


class Service:
    """Everything a ``tidings serve`` process runs (role ``all``, ``api`` or ``worker``)."""

    def __init__(
        self,
        settings: Settings,
        *,
        role: str = "all",
        clock: Clock | None = None,
        base_dir: Path | None = None,
        share: Share | None = None,
    ) -> None:
        self.share = share or Share()
        settings = self.share.limits(settings)
        self.settings = settings
        self.role = role
        self.clock = clock or clock_from_env()
        self.metrics = Metrics()
        self.store = Store.open(settings.database, settings.encryption_key)
        # scale-out: events reach the workers through RabbitMQ, inbox updates every API process
        self.broker, relayed = make_broker(settings)
        self.ingest = make_ingest(settings)
        self.hub: InboxHub = relayed if relayed is not None else self._local_hub()
        self.intake = Intake(self.store, self.clock)
        self.templates = Templates(settings.templates, settings.default_locale)
        self.policy = Policy(settings, self.templates)
        self.dispatcher = Dispatcher(
            self.store, self.broker, settings, self.clock, self.metrics, base_dir=base_dir
        )
        self.processor = Processor(
            self.store,
            self.broker,
            self.policy,
            self.clock,
            self.metrics,
            self.hub,
            sender=self.dispatcher,
            # several processes on one SQLite file: an idle one helps with another's backlog
            steals=self.share.count > 1 and self.store.is_sqlite and self.ingest is None,
        )
        # In-memory lanes never lose a published ticket while the process lives (a restart
        # republishes everything), so only RabbitMQ needs a prompt re-publish of rows whose
        # hand-off may have failed.
        self.scheduler = Scheduler(
            self.store,
            self.broker,
            self.processor,
            self.clock,
            self.metrics,
            requeue_after=300.0 if settings.broker == "embedded" else 30.0,
            recover_after=30.0 if self.share.count > 1 else None,
        )
        self.broadcaster = Broadcaster(
            self.store, self.broker, self.policy, self.clock, self.metrics, self.hub
        )
        self.api_keys = KeyRing()
        """The API keys that authenticate, reloaded every :data:`REFRESH` seconds."""
        self._configured = {hash_api_key(k.key): frozenset(k.scopes) for k in settings.api_keys}
        self.rate_buckets: dict[str, Any] = {}
        """Per-API-key token buckets of the HTTP rate limit (``api.rate_limit``)."""
        self.inbox_secret = ""
        self.generated_admin_key: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.started_at = self.clock.now()
        self.uptime = UptimeRecorder(self.store, self.clock, self.metrics, self.breakers)
        """This run and its breakers' transitions, for availability (SPEC §13)."""

    def breakers(self) -> list[tuple[str, str, Breaker]]:
        """(channel, provider, breaker) of every provider, in each channel's failover order."""
        return [
            (channel, slot.provider.name, slot.breaker)
            for channel, slots in self.dispatcher.slots.items()
            for slot in slots
        ]

    def _local_hub(self) -> InboxHub:
        """The live-update hub: shared with the sibling processes of this run, if any."""
        run_dir = os.environ.get(RUN_DIR)
        if self.share.count > 1 and run_dir:
            return PeerHub(Path(run_dir) / "peers", self.share.index)
        return InboxHub()

    async def start(self) -> None:
        """Open the store, load keys and secrets, start the workers (per role)."""
        await self.store.start(migrate=not self.share.child)
        await self._keys_and_secrets()
        await self.uptime.start()
        self._tasks.append(asyncio.create_task(self.uptime.run(), name="uptime"))
        if isinstance(self.hub, PeerHub):
            await self.hub.start()
        await self.broker.start()
        if self.ingest is not None:
            await self.ingest.start()
        if self.role in ("all", "worker"):
            # one of several processes: the supervisor released the leases, once
            await self.scheduler.startup(release_leases=not self.share.child)
            self._tasks += [
                asyncio.create_task(self.processor.run(), name="processor"),
                asyncio.create_task(self.broker.consume(self.dispatcher.handle), name="dispatcher"),
                asyncio.create_task(self.scheduler.run(), name="scheduler"),
                asyncio.create_task(self.broadcaster.run(), name="broadcaster"),
            ]
            if self.ingest is not None:
                consuming = self.ingest.consume(
                    self._commit, self.processor.process, self.clock.now
                )
                self._tasks += [
                    asyncio.create_task(consuming, name="ingest"),
                    asyncio.create_task(self._while_broker_away(), name="broker-away"),
                ]

    async def _while_broker_away(self, every: float = 0.5) -> None:
        """While RabbitMQ is away, process what the API could not hand off, promptly.

        The API commits every event before its 202 and skips the hand-off while the broker
        is unreachable; the scheduler's recovery would find those events only after
        seconds. Here they are processed within ``every`` (the tickets they make run on the
        worker's own lanes), so a broker restart does not stop deliveries.
        """
        while True:
            await asyncio.sleep(every)
            if self.broker.available():
                continue
            try:
                await self.processor.recover(older_than=self.clock.now() - every)
            except Exception:  # noqa: BLE001 - the database may be away too: next round
                log.warning("recovery while the broker is away failed", exc_info=True)

    async def _keys_and_secrets(self) -> None:
        self.generated_admin_key, self.inbox_secret = await _setup_keys(
            self.store, self.settings, self.clock.now(), self.role
        )
        await self.refresh_keys()
        self._tasks.append(asyncio.create_task(self._keep_keys_fresh(), name="keys"))

    async def refresh_keys(self) -> None:
        """Write the keys' last-used times, reload the API keys and the PII data keys."""
        used = self.api_keys.take_used()
        if used:
            await self.store.write(lambda conn: key_rows.stamp_used(conn, used))
        async with self.store.read() as conn:
            self.api_keys.replace(await key_rows.all_keys(conn), self._configured)
        await self.store.load_keys()

    async def _keep_keys_fresh(self) -> None:
        """Keys made, revoked or rotated by ``tidings keys`` count here within REFRESH."""
        while True:
            await asyncio.sleep(REFRESH)
            try:
                await self.refresh_keys()
            except Exception:  # noqa: BLE001 - the database may be away: the next round
                log.warning("reloading the keys failed", exc_info=True)

    async def accept(self, batch: Sequence[Event]) -> list[Accepted]:
        """Commit ``batch`` (durable when this returns) and hand the new events on."""
        accepted = await self._commit(batch)
        now = self.clock.now()
        fresh = [
            StoredEvent(result.pk, event, now)
            for event, result in zip(batch, accepted, strict=True)
            if not result.duplicate
        ]
        if fresh and self.ingest is not None:
            await self.ingest.hand_off(fresh)  # to any worker; unconfirmed → recovery loop
        elif fresh and self.role in ("all", "worker"):
            self.processor.submit(fresh)
        return accepted

    async def _commit(self, batch: Sequence[Event]) -> list[Accepted]:
        accepted = await self.intake.accept(batch)
        counts = Counter(
            (event.type, "duplicate" if result.duplicate else "accepted")
            for event, result in zip(batch, accepted, strict=True)
        )
        for labels, count in counts.items():
            self.metrics.events.labels(*labels).inc(count)
        return accepted

    async def aclose(self) -> None:
        """Stop workers, close providers, broker and store."""
        if self.ingest is not None:
            await self.ingest.aclose()
        await self.broker.aclose()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.dispatcher.aclose()
        if isinstance(self.hub, PeerHub):
            self.hub.aclose()
        used = self.api_keys.take_used()
        if used:
            try:
                await self.store.write(lambda conn: key_rows.stamp_used(conn, used))
            except Exception:  # noqa: BLE001 - a last-used time is not worth a failed stop
                log.warning("recording the keys' last use failed", exc_info=True)
        await self.store.aclose()
