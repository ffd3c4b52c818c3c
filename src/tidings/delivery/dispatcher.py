"""The dispatcher: claims queued deliveries, calls providers, records every outcome.

Per provider: a concurrency limit, a rate limit and a circuit breaker; per channel, the
config's provider list is the failover order (a provider whose breaker is open is skipped).
Transient failures are retried with backoff inside the retry budget, then dead-lettered;
permanent ones fail at once, and a dead destination is deactivated. When every primary
delivery of a notification has failed, its ``fallback`` channels get deliveries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.channels.base import CHANNELS, Channel, Destination, Message, Provider, ProviderContext
from tidings.channels.registry import build_provider
from tidings.clock import Clock
from tidings.config import ProviderSettings, RetrySettings, Settings
from tidings.delivery.breaker import Breaker
from tidings.delivery.ratelimit import RateLimit
from tidings.delivery.retry import backoff
from tidings.errors import DestinationGone, PermanentProviderError, TransientProviderError
from tidings.ids import new_id
from tidings.metrics import Metrics
from tidings.queue.base import Broker, Lane, Ticket
from tidings.runtime.processor import delivery_rows
from tidings.store import Store
from tidings.store import deliveries as delivery_rows_store
from tidings.store import subscribers as subscriber_rows
from tidings.store.deliveries import Claimed
from tidings.store.tables import deliveries, events

log = logging.getLogger(__name__)
_SUCCESS = frozenset({"sent", "delivered"})
_EXTERNAL_DONE = frozenset({"failed", "dead", "expired", "cancelled"})


@dataclass(slots=True)
class Slot:
    """One provider with its limits and breaker."""

    provider: Provider
    retry: RetrySettings
    timeout: float
    breaker: Breaker
    semaphore: asyncio.Semaphore
    limit: RateLimit | None


@dataclass(slots=True)
class _Result:
    claimed: Claimed
    status: str
    provider: str | None
    attempts: int
    error: str | None
    due_at: float
    started_at: float
    finished_at: float
    td: float | None
    outcome: str | None
    deactivate: str | None = None
    channel: str = ""


class Dispatcher:
    """Turns tickets into provider calls and recorded outcomes."""

    def __init__(
        self,
        store: Store,
        broker: Broker,
        settings: Settings,
        clock: Clock,
        metrics: Metrics,
        *,
        base_dir: Path | None = None,
        lease: float | None = None,
    ) -> None:
        self.store = store
        self.broker = broker
        self.settings = settings
        self.clock = clock
        self.metrics = metrics
        delivery = settings.delivery
        self.lease = lease if lease is not None else max(30.0, delivery.timeout * 3)
        self.slots: dict[Channel, list[Slot]] = {}
        console: Slot | None = None
        for channel in CHANNELS:
            if channel == "inapp":
                continue
            entries = settings.providers.get(channel) or []
            built = []
            for entry in entries:
                timeout = entry.timeout or delivery.timeout
                context = ProviderContext(base_dir=base_dir or Path.cwd(), timeout=timeout)
                built.append(self._slot(build_provider(entry, context), entry, timeout))
            if not built:
                if console is None:
                    context = ProviderContext(timeout=delivery.timeout)
                    entry = ProviderSettings(kind="console", name="console")
                    console = self._slot(build_provider(entry, context), entry, delivery.timeout)
                built = [console]
            self.slots[channel] = built
        for slots in self.slots.values():
            for slot in slots:
                metrics.provider_up.labels(slot.provider.name).set(1)

    def _slot(self, provider: Provider, entry: ProviderSettings, timeout: float) -> Slot:
        delivery = self.settings.delivery
        return Slot(
            provider=provider,
            retry=entry.retry or delivery.retry,
            timeout=timeout,
            breaker=Breaker(self.clock),
            semaphore=asyncio.Semaphore(entry.concurrency or delivery.concurrency),
            limit=RateLimit(entry.rate_limit) if entry.rate_limit else None,
        )

    def providers(self) -> list[dict[str, Any]]:
        """Every provider with its breaker state (for the dashboard and readiness)."""
        seen: dict[str, dict[str, Any]] = {}
        for channel, slots in self.slots.items():
            for slot in slots:
                entry = seen.setdefault(
                    slot.provider.name,
                    {"name": slot.provider.name, "kind": slot.provider.kind, "channels": [],
                     "state": slot.breaker.state, "failures": slot.breaker.failures},
                )
                entry["channels"].append(channel)
        return list(seen.values())

    async def aclose(self) -> None:
        """Close every provider."""
        closed: set[int] = set()
        for slots in self.slots.values():
            for slot in slots:
                if id(slot.provider) not in closed:
                    closed.add(id(slot.provider))
                    await slot.provider.aclose()

    # --- the ticket handler -----------------------------------------------------------

    async def handle(self, lane: Lane, tickets: list[Ticket]) -> None:
        """Attempt the deliveries named by ``tickets`` and record the outcomes."""
        now = self.clock.now()
        ids = list(dict.fromkeys(t.delivery_id for t in tickets))

        async def claim(conn: AsyncConnection) -> list[Claimed]:
            return await delivery_rows_store.claim(conn, ids, now, self.lease)

        claimed = await self.store.write(claim)
        if not claimed:
            return
        async with self.store.read() as conn:
            notes = await delivery_rows_store.notifications_by_id(
                conn, [c.notification_id for c in claimed]
            )
            event_data = await _event_data(conn, [n.event_pk for n in notes.values()])
            destinations = []
            for item in claimed:
                note = notes[item.notification_id]
                destinations.append(
                    await subscriber_rows.destination(
                        conn, self.store.cipher, note.subscriber_id, item.channel,  # type: ignore[arg-type]
                        item.device_id,
                    )
                )
        results = await asyncio.gather(
            *(
                self._attempt(item, notes[item.notification_id], destination,
                              event_data.get(notes[item.notification_id].event_pk, {}))
                for item, destination in zip(claimed, destinations, strict=True)
            )
        )
        fallback_tickets = await self.store.write(
            lambda conn: self._record(conn, results, notes)
        )
        if fallback_tickets:
            await self.broker.publish(fallback_tickets)
        for result in results:
            self._observe(result)

    async def _attempt(
        self, item: Claimed, note: Any, destination: Destination | None, data: dict[str, Any]
    ) -> _Result:
        started = self.clock.now()
        attempt = item.attempts + 1

        def result(status: str, *, provider: str | None = None, error: str | None = None,
                   due_at: float | None = None, td: float | None = None,
                   outcome: str | None = None, deactivate: str | None = None,
                   attempts: int = attempt) -> _Result:
            return _Result(item, status, provider, attempts, error,
                           due_at if due_at is not None else item.due_at, started,
                           self.clock.now(), td, outcome, deactivate, item.channel)

        if note.expires_at is not None and started > note.expires_at:
            return result("expired", error="expired before it could be delivered", attempts=item.attempts)
        if destination is None:
            return result("failed", error="the destination is gone (removed or deactivated)",
                          outcome="failed")
        candidates = [s for s in self.slots.get(item.channel, [])  # type: ignore[call-overload]
                      if destination.kind in s.provider.destinations]
        if not candidates:
            return result("failed", error=f"no provider for {destination.kind}", outcome="failed")
        slot = next((s for s in candidates if s.breaker.allow()), None)
        if slot is None:
            wait = min(s.breaker.reopens_in() for s in candidates) + 0.05
            return result("pending", error="every provider's circuit is open",
                          due_at=started + wait, attempts=item.attempts)
        category = self.settings.categories.get(note.category)
        message = _message(item, note, destination, data, bool(category and category.required))
        name = slot.provider.name
        call_start = self.clock.now()
        try:
            async with slot.semaphore:
                if slot.limit is not None:
                    await slot.limit.acquire()
                call_start = self.clock.now()
                receipt = await asyncio.wait_for(slot.provider.send(message), slot.timeout)
        except DestinationGone as exc:
            slot.breaker.success()
            return result("failed", provider=name, error=str(exc), outcome="gone",
                          td=self.clock.now() - call_start,
                          deactivate=destination.device_id or None)
        except PermanentProviderError as exc:
            slot.breaker.success()
            return result("failed", provider=name, error=str(exc), outcome="failed",
                          td=self.clock.now() - call_start)
        except (TransientProviderError, TimeoutError, OSError, Exception) as exc:
            retry_after = exc.retry_after if isinstance(exc, TransientProviderError) else None
            error = str(exc) if isinstance(exc, TransientProviderError) else (
                f"{name}: timed out" if isinstance(exc, TimeoutError) else f"{name}: {type(exc).__name__}"
            )
            if not isinstance(exc, TransientProviderError | TimeoutError):
                log.warning("provider %s raised %s", name, type(exc).__name__)
            slot.breaker.failure()
            self.metrics.provider_up.labels(name).set(1 if slot.breaker.state == "closed" else 0)
            td = self.clock.now() - call_start
            if attempt >= slot.retry.attempts:
                return result("dead", provider=name, error=error, outcome="retry", td=td)
            delay = backoff(slot.retry, attempt, retry_after)
            return result("pending", provider=name, error=error, outcome="retry", td=td,
                          due_at=self.clock.now() + delay)
        slot.breaker.success()
        self.metrics.provider_up.labels(name).set(1)
        return result(receipt.status, provider=name, outcome=receipt.status,
                      td=self.clock.now() - call_start)

    async def _record(
        self, conn: AsyncConnection, results: Sequence[_Result], notes: dict[str, Any]
    ) -> list[Ticket]:
        outcomes = []
        for r in results:
            c = r.claimed
            final = r.status != "pending"
            outcomes.append({
                "id": c.id,
                "status": r.status,
                "provider": r.provider,
                "attempts": r.attempts,
                "last_error": r.error,
                "due_at": r.due_at,
                "finished_at": r.finished_at if final else None,
                "tp": c.created_at - c.accepted_at,
                "tc": max(0.0, r.started_at - c.due_at),
                "td": r.td,
                "started_at": r.started_at,
                "outcome": r.outcome,
            })
        await delivery_rows_store.finish(conn, outcomes)
        now = self.clock.now()
        for r in results:
            if r.deactivate:
                kind = "webhook" if r.channel == "webhook" else "device"
                await subscriber_rows.deactivate(conn, kind, r.deactivate, r.error or "gone", now)
            if r.status == "dead":
                await delivery_rows_store.add_dead_letter(
                    conn, new_id(), r.claimed.id, r.channel, r.provider, r.error or "", now
                )
        failed_notes = {r.claimed.notification_id for r in results
                        if r.status in ("failed", "dead") and not r.claimed.is_fallback}
        tickets: list[Ticket] = []
        for notification_id in failed_notes:
            tickets += await self._fallback(conn, notes[notification_id], now)
        return tickets

    async def _fallback(self, conn: AsyncConnection, note: Any, now: float) -> list[Ticket]:
        """Fallback deliveries when every primary external delivery has failed."""
        if not note.fallback:
            return []
        rows = (await conn.execute(
            select(deliveries.c.channel, deliveries.c.status, deliveries.c.is_fallback)
            .where(deliveries.c.notification_id == note.id)
        )).all()
        if any(row.is_fallback for row in rows):
            return []
        external = [row for row in rows if row.channel != "inapp"]
        if not external or any(row.status not in _EXTERNAL_DONE for row in external):
            return []
        _, targets = await subscriber_rows.recipients(conn, [note.subscriber_id])
        fresh = delivery_rows(
            note.id, note.fallback, targets.get(note.subscriber_id, {}), lane=note.priority,
            accepted_at=now, due_at=now, now=now, is_fallback=True,
        )
        fresh = [row for row in fresh if row["channel"] != "inapp"]
        if fresh:
            await conn.execute(insert(deliveries), fresh)
        return [Ticket(row["id"], row["lane"], note.subject) for row in fresh]

    def _observe(self, r: _Result) -> None:
        provider = r.provider or "-"
        self.metrics.deliveries.labels(r.channel, provider, r.status).inc()
        if r.status in _SUCCESS:
            c = r.claimed
            channel = r.channel
            self.metrics.latency.labels("queue", channel).observe(max(0.0, r.started_at - c.due_at))
            if r.td is not None:
                self.metrics.latency.labels("deliver", channel).observe(r.td)
            self.metrics.latency.labels("produce", channel).observe(c.created_at - c.accepted_at)
            self.metrics.latency.labels("total", channel).observe(r.finished_at - c.accepted_at)


async def _event_data(conn: AsyncConnection, pks: Sequence[str]) -> dict[str, dict[str, Any]]:
    rows = await conn.execute(
        select(events.c.id, events.c.envelope).where(events.c.id.in_(list(set(pks))))
    )
    return {row.id: row.envelope for row in rows}


def _message(
    item: Claimed, note: Any, destination: Destination, envelope: dict[str, Any], required: bool
) -> Message:
    content = dict(note.content)
    return Message(
        delivery_id=item.id,
        notification_id=item.notification_id,
        channel=item.channel,  # type: ignore[arg-type]
        destination=destination,
        subscriber_id=note.subscriber_id,
        title=str(content.get("title", "")),
        body=str(content.get("body", "")),
        event_id=str(envelope.get("id", "")),
        event_type=str(envelope.get("type", "")),
        event_source=str(envelope.get("source", "")),
        subject=note.subject,
        category=note.category,
        category_required=required,
        priority=note.priority,
        locale=note.locale,
        ttl=None if note.expires_at is None else max(0.0, note.expires_at - item.created_at),
        content=content,
        data=dict(envelope.get("data") or {}),
    )

