"""The dispatcher: sends deliveries, calls providers, records every outcome.

A delivery reaches it one of two ways. Most are *born leased*: the processor of this process
decided them due, found nothing of their subject ahead of them, and inserted them already
``sending`` under this dispatcher's lease, with what sending needs (see :meth:`send_leased`):
no ticket, no claim transaction, no re-read. The rest (retries, fired deferrals, replays,
fallbacks, deliveries waiting behind an earlier one of their subject, the overflow while many
calls are in flight) come as tickets through the broker and are claimed first (:meth:`handle`).
Outcomes are committed in group commits: whatever finished meanwhile, from any batch, goes in
one write, which joins the processor's next transaction when there is one soon (see
:meth:`record_now`).

Per provider: a concurrency limit, a rate limit and a circuit breaker; per channel, the
config's provider list is the failover order (a provider whose breaker is open is skipped).
Transient failures are retried with backoff inside the retry budget, then dead-lettered;
permanent ones fail at once, and a dead destination is deactivated. When every primary
delivery of a notification has failed, its ``fallback`` channels get deliveries.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.channels.base import (
    CHANNELS,
    Channel,
    Destination,
    DestinationKind,
    Message,
    Provider,
    ProviderContext,
)
from tidings.channels.registry import build_provider
from tidings.clock import Clock
from tidings.config import ProviderSettings, RetrySettings, Settings
from tidings.crypto import Cipher
from tidings.delivery import callbacks as status_callbacks
from tidings.delivery.breaker import Breaker, EndpointBreakers
from tidings.delivery.ratelimit import Gate, RateLimit
from tidings.delivery.retry import backoff
from tidings.durations import parse_duration
from tidings.errors import (
    ConfigError,
    DestinationGone,
    PermanentProviderError,
    Suppressed,
    TransientProviderError,
)
from tidings.ids import new_id
from tidings.metrics import Metrics
from tidings.queue.base import LANES, Broker, Lane, Ticket
from tidings.runtime.processor import send_through
from tidings.store.planned import delivery_rows
from tidings.store import Store
from tidings.store import deliveries as delivery_rows_store
from tidings.store import subscribers as subscriber_rows
from tidings.store.deliveries import Claimed, Outgoing
from tidings.store.tables import deliveries, devices, subscribers, webhook_endpoints

log = logging.getLogger(__name__)
_OPEN_RECHECK = 0.25
"""Seconds a delivery waits before looking again when every provider's circuit is open."""
RECORD_WITHIN = 0.02
"""Seconds an outcome waits at most for a transaction to join before it gets one of its own.
(Before it is committed its row stays ``sending``: a crash meanwhile sends it again, as one
in flight; the batches of tickets waited up to 0.1 s for their slowest calls before.)"""
LEASED_IN_FLIGHT = 512
"""Born-leased deliveries this dispatcher takes at most at once (the embedded broker's own
bound on claimed ones: 8 batches of 64). Beyond it the processor makes them ``pending`` and
they come as tickets: a lease must not run out while its delivery waits for a provider."""
_SUCCESS = frozenset({"sent", "delivered"})
_EXTERNAL_DONE = frozenset({"failed", "dead", "expired", "cancelled"})


@dataclass(slots=True)
class Slot:
    """One provider with its limits and breaker."""

    provider: Provider
    retry: RetrySettings
    timeout: float
    breaker: Breaker
    gate: Gate
    limit: RateLimit | None
    blames_provider: bool = True
    """Whether a transient failure counts against the provider's breaker. Not for webhooks:
    there the endpoint is the subscriber's, and one seller's broken ERP must not open the
    circuit for every other seller."""
    endpoints: EndpointBreakers | None = None
    """Webhooks: a breaker per endpoint host, blamed instead of the provider's."""


@dataclass(slots=True)
class _Result:
    claimed: Claimed
    note: Outgoing
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
    called_at: float | None = None


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
        self._breakers = {s.provider.name: s.breaker for ss in self.slots.values() for s in ss}
        self._up: dict[str, int] = {}
        """The ``tidings_provider_up`` value last set per provider."""
        self._plain = _Plaintexts(store.cipher)
        self._served: dict[tuple[str, str], tuple[list[Slot], list[str]]] = {}
        self._leased: set[asyncio.Task[None]] = set()
        """Born-leased deliveries being attempted."""
        self.max_leased = LEASED_IN_FLIGHT
        """At most this many of them at once."""
        self._results: list[_Result] = []
        """Outcomes waiting for the next group commit."""
        self._committed: asyncio.Future[None] | None = None
        """Resolved when the outcomes in :attr:`_results` are committed."""
        self._timer: asyncio.TimerHandle | None = None
        self._recording: set[asyncio.Task[None]] = set()
        self.refresh_gauges()
        # the processors of this process hand the deliveries they decide to this dispatcher
        send_through(broker, self)

    def _slot(self, provider: Provider, entry: ProviderSettings, timeout: float) -> Slot:
        delivery = self.settings.delivery
        breaker = breaker_from(entry.option("breaker"), self.clock)
        return Slot(
            provider=provider,
            retry=entry.retry or delivery.retry,
            timeout=timeout,
            breaker=breaker,
            gate=Gate(entry.concurrency or delivery.concurrency),
            limit=RateLimit(entry.rate_limit) if entry.rate_limit else None,
            blames_provider=provider.channel != "webhook",
            endpoints=EndpointBreakers.like(breaker) if provider.channel == "webhook" else None,
        )

    def refresh_gauges(self) -> None:
        """``tidings_provider_up``: 1 while a provider's breaker is closed (checked now)."""
        for slots in self.slots.values():
            for slot in slots:
                up = 1 if slot.breaker.state == "closed" else 0
                self.metrics.provider_up.labels(slot.provider.name).set(up)
                self._up[slot.provider.name] = up

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
        self.record_now()
        if self._recording:
            await asyncio.wait(set(self._recording), timeout=5)
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
        return await _destinations(conn, self._plain, items, owners)

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
        self._record_soon(result)

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
            found = await _destinations(conn, self._plain, claimed, owners)
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
        return self._record_soon(await self._attempt(item, note, destination))

    # --- group commits of outcomes ----------------------------------------------------

    def _record_soon(self, result: _Result) -> asyncio.Future[None]:
        """Queue ``result`` for the next commit of outcomes; resolved once it is committed.

        That commit comes when the processor writes next (:meth:`record_now`), or after
        :data:`RECORD_WITHIN`: under load one carries the outcomes of many batches.
        """
        self._results.append(result)
        committed = self._committed
        if committed is None:
            committed = self._committed = asyncio.get_running_loop().create_future()
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(RECORD_WITHIN, self.record_now)
        return committed

    def record_now(self) -> None:
        """Write the outcomes waiting now. The processor calls this right before it queues its
        own write, so that both go in one transaction (the writer takes what is queued)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._results:
            return
        results, self._results = self._results, []
        committed, self._committed = self._committed, None
        assert committed is not None
        task = asyncio.ensure_future(self._commit_outcomes(results, committed))
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)

    async def _commit_outcomes(
        self, results: list[_Result], committed: asyncio.Future[None]
    ) -> None:
        try:
            fallback_tickets = await self.store.write(partial(self._record, results=results))
            if fallback_tickets:
                await self.broker.publish(fallback_tickets)
        except Exception as exc:  # noqa: BLE001 - the leases bring the rows back
            log.warning("recording %d outcomes failed: %s", len(results), exc)
            committed.set_exception(exc)
            committed.exception()  # whoever waits sees it; nobody must
            return
        except BaseException:
            committed.cancel()  # shutdown: the leases bring the rows back
            raise
        committed.set_result(None)
        self._observe(results)

    async def _attempt(
        self, item: Claimed, note: Outgoing, destination: Destination | None
    ) -> _Result:
        started = self.clock.now()
        attempt = item.attempts + 1

        def result(
            status: str,
            *,
            provider: str | None = None,
            error: str | None = None,
            due_at: float | None = None,
            td: float | None = None,
            outcome: str | None = None,
            deactivate: str | None = None,
            attempts: int = attempt,
            called_at: float | None = None,
        ) -> _Result:
            return _Result(
                item,
                note,
                status,
                provider,
                attempts,
                error,
                due_at if due_at is not None else item.due_at,
                started,
                self.clock.now(),
                td,
                outcome,
                deactivate,
                item.channel,
                called_at,
            )

        if note.expires_at is not None and started > note.expires_at:
            return result(
                "expired", error="expired before it could be delivered", attempts=item.attempts
            )
        if destination is None:
            return result(
                "failed", error="the destination is gone (removed or deactivated)", outcome="failed"
            )
        candidates, names = self._candidates(item.channel, destination.kind)
        if not candidates:
            return result("failed", error=f"no provider for {destination.kind}", outcome="failed")
        if item.attempts and item.provider in names:
            # a retry fails over at once: start with the provider after the one that failed
            # (the idempotency id is the same, so a late success there is deduplicated)
            after = names.index(item.provider) + 1
            candidates = candidates[after:] + candidates[:after]
        slot = None
        for candidate in candidates:
            if candidate.breaker.allow():
                slot = candidate
                break
        if slot is None:
            # not an attempt: nobody was called, so the budget is untouched
            wait = max(_OPEN_RECHECK, min(s.breaker.reopens_in() for s in candidates))
            return result(
                "pending",
                error="every provider's circuit is open",
                due_at=started + wait,
                attempts=item.attempts,
            )
        breaker = slot.breaker
        if slot.endpoints is not None:  # a webhook: its endpoint's circuit, not the provider's
            breaker = slot.endpoints.of(destination.address)
            if not breaker.allow():
                return result(
                    "pending",
                    error="the endpoint's circuit is open",
                    due_at=started + max(_OPEN_RECHECK, breaker.next_try_in()),
                    attempts=item.attempts,
                )
        category = self.settings.categories.get(note.category)
        message = _message(item, note, destination, bool(category and category.required))
        name = slot.provider.name
        call_start = self.clock.now()
        try:
            await slot.gate.acquire(_lane(item.lane))
            try:
                if slot.limit is not None:
                    await slot.limit.acquire()
                call_start = self.clock.now()
                # a timeout scope, not wait_for: no extra task per call
                async with asyncio.timeout(slot.timeout):
                    receipt = await slot.provider.send(message)
            finally:
                slot.gate.release()
        except DestinationGone as exc:
            breaker.success()
            return result(
                "failed",
                provider=name,
                error=str(exc),
                outcome="gone",
                td=self.clock.now() - call_start,
                deactivate=destination.device_id or None,
                called_at=call_start,
            )
        except PermanentProviderError as exc:
            breaker.success()
            # Suppressed: the recipient cannot take it now (no WeChat subscription left)
            status = "suppressed" if isinstance(exc, Suppressed) else "failed"
            return result(
                status,
                provider=name,
                error=str(exc),
                outcome=status,
                td=self.clock.now() - call_start,
                called_at=call_start,
            )
        except Exception as exc:  # noqa: BLE001 - a provider bug must not lose the delivery
            retry_after = exc.retry_after if isinstance(exc, TransientProviderError) else None
            if isinstance(exc, TransientProviderError):
                error = str(exc)
            elif isinstance(exc, TimeoutError):
                error = f"{name}: timed out after {slot.timeout:g}s"
            else:
                error = f"{name}: {type(exc).__name__}"
                log.warning("provider %s raised %s", name, type(exc).__name__)
            if slot.blames_provider or breaker is not slot.breaker:
                breaker.failure()  # the provider's, or a webhook endpoint's
            else:
                breaker.success()
            td = self.clock.now() - call_start
            if attempt >= slot.retry.attempts:
                return result(
                    "dead", provider=name, error=error, outcome="retry", td=td, called_at=call_start
                )
            # a Retry-After is the failed provider's own: a retry that fails over to the next
            # provider of the channel (see above) does not wait for it
            own = retry_after if len(candidates) == 1 else None
            delay = backoff(slot.retry, attempt, own)
            return result(
                "pending",
                provider=name,
                error=error,
                outcome="retry",
                td=td,
                due_at=self.clock.now() + delay,
                called_at=call_start,
            )
        except BaseException:
            breaker.abandon()  # cancelled (shutdown): free a half-open probe
            raise
        breaker.success()
        return result(
            receipt.status,
            provider=name,
            outcome=receipt.status,
            td=self.clock.now() - call_start,
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

    async def _record(self, conn: AsyncConnection, *, results: Sequence[_Result]) -> list[Ticket]:
        outcomes = []
        for r in results:
            c = r.claimed
            final = r.status != "pending"
            outcomes.append(
                {
                    "id": c.id,
                    "status": r.status,
                    "provider": r.provider,
                    "attempts": r.attempts,
                    "last_error": r.error,
                    "due_at": r.due_at,
                    "finished_at": r.finished_at if final else None,
                    "tp": c.created_at - c.accepted_at,
                    "tc": _queue_wait(r),
                    "td": r.td,
                    # the attempt began when the provider was called (after any wait for a slot)
                    "started_at": r.called_at if r.called_at is not None else r.started_at,
                    "outcome": r.outcome,
                }
            )
        await delivery_rows_store.finish(conn, outcomes)
        now = self.clock.now()
        callbacks = status_callbacks.watch(self.store)
        if await callbacks.active(conn):  # with none registered, nothing more is done
            await callbacks.record(conn, map(_status_change, results), now)
        for r in results:
            if r.deactivate:
                kind = "webhook" if r.channel == "webhook" else "device"
                await subscriber_rows.deactivate(conn, kind, r.deactivate, r.error or "gone", now)
            if r.status == "dead":
                await delivery_rows_store.add_dead_letter(
                    conn, new_id(), r.claimed.id, r.channel, r.provider, r.error or "", now
                )
        failed_notes = {
            r.claimed.notification_id: r.note
            for r in results
            if r.status in ("failed", "dead") and not r.claimed.is_fallback
        }
        tickets: list[Ticket] = []
        for note in failed_notes.values():
            tickets += await self._fallback(conn, note, now)
        return tickets

    async def _fallback(self, conn: AsyncConnection, note: Outgoing, now: float) -> list[Ticket]:
        """Fallback deliveries when every primary external delivery has failed."""
        if not note.fallback:
            return []
        rows = (
            await conn.execute(
                select(deliveries.c.channel, deliveries.c.status, deliveries.c.is_fallback).where(
                    deliveries.c.notification_id == note.id
                )
            )
        ).all()
        if any(row.is_fallback for row in rows):
            return []
        external = [row for row in rows if row.channel != "inapp"]
        if not external or any(row.status not in _EXTERNAL_DONE for row in external):
            return []
        _, targets = await subscriber_rows.recipients(conn, [note.subscriber_id])
        fresh = delivery_rows(
            note.id,
            note.fallback,
            targets.get(note.subscriber_id, {}),
            lane=note.priority,
            accepted_at=now,
            due_at=now,
            now=now,
            is_fallback=True,
        )
        fresh = [row for row in fresh if row["channel"] != "inapp"]
        if fresh:
            await conn.execute(insert(deliveries), fresh)
        return [Ticket(row["id"], row["lane"], note.subject) for row in fresh]

    def _observe(self, results: Sequence[_Result]) -> None:
        """Metrics of a group of outcomes: counted per label set, latencies per delivery."""
        child = self.metrics.child
        latency = self.metrics.latency
        counted: dict[tuple[str, str, str], int] = {}
        providers: set[str] = set()
        for r in results:
            if r.provider is None and r.status == "pending":
                continue  # deferred behind an open circuit: nothing was attempted
            provider = r.provider or "-"
            key = (r.channel, provider, r.status)
            counted[key] = counted.get(key, 0) + 1
            providers.add(r.provider or "")
            if r.status in _SUCCESS:
                c = r.claimed
                channel = r.channel
                tc = _queue_wait(r)
                if tc is not None:
                    child(latency, "queue", channel).observe(tc)
                if r.td is not None:
                    child(latency, "deliver", channel).observe(r.td)
                child(latency, "produce", channel).observe(c.created_at - c.accepted_at)
                child(latency, "total", channel).observe(r.finished_at - c.accepted_at)
        for labels, count in counted.items():
            child(self.metrics.deliveries, *labels).inc(count)
        for provider in providers:
            breaker = self._breakers.get(provider)
            if breaker is not None:
                up = 1 if breaker.state == "closed" else 0
                if self._up.get(provider) != up:  # set on a change, not per delivery
                    self._up[provider] = up
                    child(self.metrics.provider_up, provider).set(up)


def _status_change(r: _Result) -> status_callbacks.StatusChange:
    """An outcome as a status callback tells it."""
    c = r.claimed
    return status_callbacks.StatusChange(
        r.status, c.id, c.notification_id, r.note.subscriber_id, r.channel, r.provider,
        r.error, r.attempts, r.note.envelope,
    )  # fmt: skip


def breaker_from(options: Any, clock: Clock) -> Breaker:
    """The breaker a provider entry's ``breaker: {threshold, cooldown}`` asks for."""
    if not options:
        return Breaker(clock)
    if not isinstance(options, dict):
        raise ConfigError("breaker must be a mapping {threshold, cooldown}", "breaker")
    unknown = set(options) - {"threshold", "cooldown"}
    if unknown:
        raise ConfigError(f"unknown breaker keys: {sorted(unknown)}", "breaker")
    threshold = int(options.get("threshold", 5))
    cooldown = parse_duration(options.get("cooldown", 10.0))
    if threshold < 1 or cooldown <= 0:
        raise ConfigError("breaker threshold must be >= 1 and cooldown > 0", "breaker")
    return Breaker(clock, threshold=threshold, cooldown=cooldown)


_LANES: dict[str, Lane] = {lane: lane for lane in LANES}


def _lane(name: str) -> Lane:
    return _LANES.get(name, "normal")


def _queue_wait(r: _Result) -> float | None:
    """Tc: from when the delivery was due to when its provider call began."""
    if r.called_at is None:
        return None
    return max(0.0, r.called_at - r.claimed.due_at)


@dataclass(frozen=True, slots=True)
class _Batch:
    claimed: list[Claimed]
    notes: dict[str, Outgoing]
    found: dict[str, Destination]


class _Plaintexts:
    """Decrypted PII fields by ciphertext, so that a busy endpoint's URL and secret are not
    decrypted again for every delivery. Bounded (cleared when full); a field that changes
    has a new ciphertext, and a removed row is never looked up."""

    def __init__(self, cipher: Cipher, size: int = 4096) -> None:
        self.cipher = cipher
        self.size = size
        self._known: dict[str, str | None] = {}

    def decrypt(self, ciphertext: str | None) -> str | None:
        """What :meth:`Cipher.decrypt` answers for ``ciphertext``."""
        if ciphertext is None:
            return None
        known = self._known
        if ciphertext in known:
            return known[ciphertext]
        plain = self.cipher.decrypt(ciphertext)
        if len(known) >= self.size:
            known.clear()
        known[ciphertext] = plain
        return plain


_PROFILE_ADDRESSES: dict[str, tuple[str, DestinationKind]] = {
    "email": ("email_enc", "email"),
    "sms": ("phone_enc", "phone"),
    "wechat": ("wechat_openid_enc", "wechat"),
}
"""Channels addressed by a profile field: the field's column and the destination kind."""


async def _destinations(
    conn: AsyncConnection,
    cipher: _Plaintexts,
    claimed: Sequence[Claimed],
    owner: dict[str, str],
) -> dict[str, Destination]:
    """The destination of every delivery that still has one, in one query per table
    (``owner``: delivery id → subscriber id; another subscriber's device is not one).

    (A query per delivery was the dispatcher's largest cost per batch.)
    """
    found: dict[str, Destination] = {}
    people = {owner[c.id] for c in claimed if c.channel in _PROFILE_ADDRESSES}
    if people:
        rows = await conn.execute(
            select(
                subscribers.c.id,
                subscribers.c.email_enc,
                subscribers.c.phone_enc,
                subscribers.c.wechat_openid_enc,
            ).where(subscribers.c.id.in_(list(people)))
        )
        profiles = {row.id: row for row in rows}
        for c in claimed:
            profile = profiles.get(owner[c.id])
            where = _PROFILE_ADDRESSES.get(c.channel)
            if profile is None or where is None:
                continue
            column, kind = where
            address = cipher.decrypt(getattr(profile, column))
            if address:
                found[c.id] = Destination(kind, address)
    for channel, table in (("push", devices), ("webhook", webhook_endpoints)):
        wanted = [c.device_id for c in claimed if c.channel == channel and c.device_id]
        if not wanted:
            continue
        by_id = await delivery_rows_store.active_destinations(conn, table, wanted)
        for c in claimed:
            row = by_id.get(c.device_id or "")
            if c.channel != channel or row is None or row[1] != owner[c.id]:
                continue
            if channel == "push":
                device_id, _, kind, token_enc, keys_enc = row
                keys = json.loads(cipher.decrypt(keys_enc) or "{}") if keys_enc else {}
                found[c.id] = Destination(
                    kind, cipher.decrypt(token_enc) or "", device_id=device_id, keys=keys
                )
            else:
                endpoint_id, _, url_enc, secret_enc = row
                found[c.id] = Destination(
                    "webhook",
                    cipher.decrypt(url_enc) or "",
                    device_id=endpoint_id,
                    secret=cipher.decrypt(secret_enc),
                )
    return found


def _message(item: Claimed, note: Outgoing, destination: Destination, required: bool) -> Message:
    content = dict(note.content)
    envelope = note.envelope
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
        priority=_lane(note.priority),
        locale=note.locale,
        ttl=None if note.expires_at is None else max(0.0, note.expires_at - item.created_at),
        occurred_at=note.occurred_at,
        content=content,
        data=dict(envelope.get("data") or {}),
    )
