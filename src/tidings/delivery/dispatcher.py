"""The dispatcher: sends deliveries, calls providers, records every outcome.

A delivery reaches it one of two ways. Most are *born leased*: the processor of this process
decided them due, found nothing of their subject ahead of them, and inserted them already
``sending`` under this dispatcher's lease, with what sending needs (see :meth:`send_leased`):
no ticket, no claim transaction, no re-read. The rest (retries, fired deferrals, replays,
fallbacks, deliveries waiting behind an earlier one of their subject, the overflow while many
calls are in flight) come as tickets through the broker and are claimed first (:meth:`handle`).
Outcomes are committed in group commits (:mod:`tidings.delivery.recording`).

Per provider: a concurrency limit, a rate limit and a circuit breaker
(:mod:`tidings.delivery.slots`); per channel, the config's provider list is the failover order
(a provider whose breaker is open is skipped). What a provider's error means is decided in one
place, :func:`tidings.delivery.outcomes.classify`: transient failures are retried with backoff
inside the retry budget, then dead-lettered; permanent ones fail at once, and a dead
destination is deactivated. When every primary delivery of a notification has failed, its
``fallback`` channels get deliveries (:mod:`tidings.delivery.fallback`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.channels.base import Destination, Message
from tidings.clock import Clock
from tidings.config import Settings
from tidings.delivery.breaker import Breaker
from tidings.delivery.destinations import Plaintexts, destinations
from tidings.delivery.handoff import send_through
from tidings.delivery.messages import lane, message
from tidings.delivery.outcomes import RETRIED, Attempt, Result, Verdict, classify, settle
from tidings.delivery.recording import Recorder
from tidings.delivery.slots import Slot, build_slots
from tidings.metrics import Metrics
from tidings.queue.base import Broker, Ticket
from tidings.store import Store
from tidings.store import deliveries as delivery_rows_store
from tidings.store.deliveries import Claimed, Outgoing
from tidings.vocabulary import Channel, Lane

log = logging.getLogger(__name__)
_OPEN_RECHECK = 0.25
"""Seconds a delivery waits before looking again when every provider's circuit is open."""
LEASED_IN_FLIGHT = 512
"""Born-leased deliveries this dispatcher takes at most at once (the embedded broker's own
bound on claimed ones: 8 batches of 64). Beyond it the processor makes them ``pending`` and
they come as tickets: a lease must not run out while its delivery waits for a provider."""


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
        self.owner = delivery_rows_store.lease_owner()
        """How this process signs the leases it takes (released at once if it dies)."""
        self.slots: dict[Channel, list[Slot]] = build_slots(settings, clock, base_dir)
        breakers = {s.provider.name: s.breaker for ss in self.slots.values() for s in ss}
        self.recorder = Recorder(store, broker, clock, metrics, breakers)
        """Commits the outcomes in groups."""
        self._plain = Plaintexts(store.cipher)
        self._served: dict[tuple[str, str], tuple[list[Slot], list[str]]] = {}
        self._leased: set[asyncio.Task[None]] = set()
        """Born-leased deliveries being attempted."""
        self.max_leased = LEASED_IN_FLIGHT
        """At most this many of them at once."""
        self.refresh_gauges()
        # the processors of this process hand the deliveries they decide to this dispatcher
        send_through(broker, self)

    def refresh_gauges(self) -> None:
        """``tidings_provider_up``: 1 while a provider's breaker is closed (checked now)."""
        for slots in self.slots.values():
            for slot in slots:
                up = 1 if slot.breaker.state == "closed" else 0
                self.metrics.provider_up.labels(slot.provider.name).set(up)
                self.recorder.up[slot.provider.name] = up

    def providers(self) -> list[dict[str, Any]]:
        """Every provider with its breaker state (for the dashboard and readiness)."""
        seen: dict[str, dict[str, Any]] = {}
        for channel, slots in self.slots.items():
            for slot in slots:
                entry = seen.setdefault(
                    slot.provider.name,
                    {
                        "name": slot.provider.name,
                        "kind": slot.provider.kind,
                        "channels": [],
                        "state": slot.breaker.state,
                        "failures": slot.breaker.failures,
                    },
                )
                entry["channels"].append(channel)
        return list(seen.values())

    async def aclose(self) -> None:
        """Let born-leased attempts finish (bounded), record what finished, close providers.

        Attempts still running after that are cancelled: their rows stay ``sending`` under
        this process's lease, and come back when it is released (the next start, the
        supervisor) or runs out.
        """
        if self._leased:
            await asyncio.wait(set(self._leased), timeout=5)
        for task in list(self._leased):
            task.cancel()
        if self._leased:
            await asyncio.wait(set(self._leased))
        await self.recorder.aclose()
        closed: set[int] = set()
        for slots in self.slots.values():
            for slot in slots:
                if id(slot.provider) not in closed:
                    closed.add(id(slot.provider))
                    await slot.provider.aclose()

    # --- born leased ------------------------------------------------------------------

    def room(self) -> int:
        """How many more born-leased deliveries this dispatcher takes now."""
        return self.max_leased - len(self._leased)

    async def destinations(
        self, conn: AsyncConnection, items: Sequence[Claimed], owners: dict[str, str]
    ) -> dict[str, Destination]:
        """Where each of ``items`` goes (``owners``: delivery id → subscriber id), read in
        ``conn``'s transaction; a delivery whose destination is gone is left out."""
        return await destinations(conn, self._plain, items, owners)

    def send_leased(self, items: Sequence[tuple[Claimed, Outgoing, Destination | None]]) -> None:
        """Attempt deliveries committed ``sending`` under this dispatcher's lease.

        Each is attempted at once and its outcome recorded in the next group commit; nobody
        waits for them. If this process dies first, the lease brings the row back.
        """
        leased = self._leased
        for item, note, destination in items:
            task = asyncio.ensure_future(self._leased_attempt(item, note, destination))
            leased.add(task)
            task.add_done_callback(leased.discard)

    async def _leased_attempt(
        self, item: Claimed, note: Outgoing, destination: Destination | None
    ) -> None:
        try:
            result = await self._attempt(item, note, destination)
        except Exception:  # a bug: the lease brings the row back
            log.exception("attempting delivery %s failed", item.id)
            return
        self.recorder.record_soon(result)

    def record_now(self) -> None:
        """Write the outcomes waiting now. The processor calls this right before it queues its
        own write, so that both go in one transaction (the writer takes what is queued)."""
        self.recorder.record_now()

    # --- the ticket handler -----------------------------------------------------------

    async def handle(self, lane: Lane, tickets: list[Ticket]) -> None:
        """Attempt the deliveries named by ``tickets``; return once their outcomes are
        committed."""
        now = self.clock.now()
        ids = list(dict.fromkeys(t.delivery_id for t in tickets))

        async def claim(conn: AsyncConnection) -> _Batch:
            # what sending needs is read in the claiming transaction: no second connection,
            # no wait for it (a read on its own added ~2 ms to Tc here)
            claimed = await delivery_rows_store.claim(conn, ids, now, self.lease, self.owner)
            if not claimed:
                return _Batch([], {}, {})
            notes = await delivery_rows_store.outgoing(conn, [c.notification_id for c in claimed])
            owners = {c.id: notes[c.notification_id].subscriber_id for c in claimed}
            found = await destinations(conn, self._plain, claimed, owners)
            return _Batch(claimed, notes, found)

        batch = await self.store.write(claim)
        claimed, notes, found = batch.claimed, batch.notes, batch.found
        if not claimed:
            return
        # outcomes are committed as they come in: one slow endpoint does not keep the rest
        # of the batch "sending" (nor re-sendable after a crash) until it ends
        committed = await asyncio.gather(
            *(
                self._attempt_recorded(item, notes[item.notification_id], found.get(item.id))
                for item in claimed
            )
        )
        for done in set(committed):
            await done

    async def _attempt_recorded(
        self, item: Claimed, note: Outgoing, destination: Destination | None
    ) -> asyncio.Future[None]:
        return self.recorder.record_soon(await self._attempt(item, note, destination))

    # --- one attempt ------------------------------------------------------------------

    async def _attempt(
        self, item: Claimed, note: Outgoing, destination: Destination | None
    ) -> Result:
        attempt = Attempt(item, note, self.clock)
        started = attempt.started
        if note.expires_at is not None and started > note.expires_at:
            error = "expired before it could be delivered"
            return attempt.result("expired", error=error, counted=False)
        if destination is None:
            error = "the destination is gone (removed or deactivated)"
            return attempt.result("failed", error=error, outcome="failed")
        candidates, names = self._candidates(item.channel, destination.kind)
        if not candidates:
            error = f"no provider for {destination.kind}"
            return attempt.result("failed", error=error, outcome="failed")
        if item.attempts and item.provider in names:
            # a retry fails over at once: start with the provider after the one that failed
            # (the idempotency id is the same, so a late success there is deduplicated)
            after = names.index(item.provider) + 1
            candidates = candidates[after:] + candidates[:after]
        slot = next((c for c in candidates if c.breaker.allow()), None)
        if slot is None:
            # not an attempt: nobody was called, so the budget is untouched
            wait = max(_OPEN_RECHECK, min(s.breaker.reopens_in() for s in candidates))
            error = "every provider's circuit is open"
            return attempt.result("pending", error=error, due_at=started + wait, counted=False)
        breaker = slot.breaker
        if slot.endpoints is not None:  # a webhook: its endpoint's circuit, not the provider's
            breaker = slot.endpoints.of(destination.address)
            if not breaker.allow():
                wait = max(_OPEN_RECHECK, breaker.next_try_in())
                error = "the endpoint's circuit is open"
                return attempt.result("pending", error=error, due_at=started + wait, counted=False)
        category = self.settings.categories.get(note.category)
        sent = message(item, note, destination, bool(category and category.required))
        return await self._call(attempt, slot, breaker, sent, alone=len(candidates) == 1)

    async def _call(
        self, attempt: Attempt, slot: Slot, breaker: Breaker, sent: Message, *, alone: bool
    ) -> Result:
        """Send through ``slot`` (its gate, rate limit and timeout); the outcome, with the
        breaker told (``alone``: the channel has no other provider for this destination)."""
        name = slot.provider.name
        call_start = self.clock.now()
        try:
            await slot.gate.acquire(lane(attempt.item.lane))
            try:
                if slot.limit is not None:
                    await slot.limit.acquire()
                call_start = self.clock.now()
                # a timeout scope, not wait_for: no extra task per call
                async with asyncio.timeout(slot.timeout):
                    receipt = await slot.provider.send(sent)
            finally:
                slot.gate.release()
        except Exception as exc:  # noqa: BLE001 - classified; a provider bug must not lose it
            verdict = classify(exc, name, slot.timeout)
            if verdict.unexpected:
                log.warning("provider %s raised %s", name, type(exc).__name__)
            return self._failed(attempt, slot, breaker, verdict, call_start, alone, sent)
        except BaseException:
            breaker.abandon()  # cancelled (shutdown): free a half-open probe
            raise
        breaker.success()
        td = self.clock.now() - call_start
        status = receipt.status
        return attempt.result(status, provider=name, outcome=status, td=td, called_at=call_start)

    def _failed(
        self,
        attempt: Attempt,
        slot: Slot,
        breaker: Breaker,
        verdict: Verdict,
        call_start: float,
        alone: bool,
        sent: Message,
    ) -> Result:
        """The outcome of a call that raised, as :func:`~tidings.delivery.outcomes.settle`
        says; a retried kind counts against the breaker attempted (unless a webhook provider's
        own: its endpoints' breakers take the blame)."""
        if verdict.kind in RETRIED and (slot.blames_provider or breaker is not slot.breaker):
            breaker.failure()
        else:
            breaker.success()
        td = self.clock.now() - call_start
        status, outcome, delay = settle(verdict, attempt.number, slot.retry, alone)
        gone = sent.destination.device_id or None if verdict.kind == "gone" else None
        return attempt.result(
            status,
            provider=slot.provider.name,
            error=verdict.error,
            outcome=outcome,
            td=td,
            due_at=None if delay is None else self.clock.now() + delay,
            deactivate=gone,
            called_at=call_start,
        )

    def _candidates(self, channel: str, kind: str) -> tuple[list[Slot], list[str]]:
        """The slots (config order) whose provider serves ``kind`` on ``channel``, and their
        names; computed once per pair."""
        known = self._served.get((channel, kind))
        if known is None:
            slots = [
                s
                for s in self.slots.get(channel, [])  # type: ignore[call-overload]
                if kind in s.provider.destinations
            ]
            known = self._served[(channel, kind)] = (slots, [s.provider.name for s in slots])
        return known


@dataclass(frozen=True, slots=True)
class _Batch:
    claimed: list[Claimed]
    notes: dict[str, Outgoing]
    found: dict[str, Destination]
