"""Status callbacks: every change of a delivery's status POSTed to the shop, signed.

Two halves, so that a slow or dead endpoint costs the shop its callbacks and never the buyers
their notifications:

* :class:`Watch` — on the delivery path. Where outcomes are committed, :meth:`Watch.record`
  adds one outbox row per registered callback wanting that status, *in the same transaction*.
  With no callback registered it returns before building anything. The registrations are
  cached per process and re-read every second (at once after a change through this
  process's API), so a callback registered through another process starts within a second.
* :class:`CallbackSender` — a loop of its own that sends due outbox rows as Standard Webhooks
  (``webhook-id`` = the outbox row id, stable across retries), retrying transient failures
  with the delivery retry budget and backoff, then giving up (``dead``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple
from weakref import WeakKeyDictionary

import httpx
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings import json_output
from tidings.channels.http import retry_after_seconds
from tidings.channels.ssrf import ForbiddenDestination, guard
from tidings.channels.webhook import secret_key, sign
from tidings.clock import Clock, iso
from tidings.config import RetrySettings
from tidings.delivery.retry import backoff
from tidings.errors import PermanentProviderError
from tidings.ids import new_id
from tidings.store import Store
from tidings.store import callbacks as rows
from tidings.store.callbacks import Due
from tidings.store.events import StoredEvent
from tidings.strategy.model import Decision

log = logging.getLogger(__name__)
REFRESH_EVERY = 1.0
"""Seconds the cached registrations are trusted before they are read again."""
KEEP_FINISHED = 3 * 86400.0
"""Seconds a sent (or abandoned) callback stays in the outbox, for ``GET /v1/callbacks/{id}``."""
PRUNE_EVERY = 60.0
"""Seconds between two sweeps of finished outbox rows."""


class StatusChange(NamedTuple):
    """A delivery's new status (or a decision not to notify), as the callback tells it."""

    status: str
    delivery_id: str | None
    notification_id: str | None
    subscriber_id: str | None
    channel: str | None
    provider: str | None
    error: str | None
    """Why it failed, or why it was suppressed."""
    attempts: int
    event: Mapping[str, Any] | None
    """The CloudEvent that caused the notification (its ``id``, ``source``, ``type`` are sent)."""
    rule: str | None = None
    """The rule of a suppressed decision."""


def suppressed(
    decided: Mapping[str, Sequence[tuple[Decision, Any]]], batch: Iterable[StoredEvent]
) -> Iterator[StatusChange]:
    """``suppressed`` changes for a batch's decisions not to notify (opted out, capped, stale):
    no notification exists, so the rule and the reason say what was held back."""
    events: dict[str, Mapping[str, Any]] | None = None
    for event_pk, made in decided.items():
        for decision, _ in made:
            if decision.outcome != "suppressed":
                continue
            if events is None:
                events = {item.pk: item.event.envelope() for item in batch}
            yield StatusChange(
                "suppressed", None, None, decision.recipient_id, None, None, decision.reason, 0,
                events.get(event_pk), decision.rule_id,
            )  # fmt: skip


def payload(change: StatusChange, now: float) -> dict[str, Any]:
    """The Standard Webhooks body of one change: ``{type, timestamp, data}``."""
    event = change.event or {}
    return {
        "type": f"notification.{change.status}",
        "timestamp": iso(now),
        "data": {
            "notification_id": change.notification_id,
            "delivery_id": change.delivery_id,
            "subscriber_id": change.subscriber_id,
            "channel": change.channel,
            "status": change.status,
            "provider": change.provider,
            "attempts": change.attempts,
            "error": change.error,
            "rule": change.rule,
            "event": {key: event.get(key) for key in ("id", "source", "type", "subject")},
        },
    }


class Watch:
    """The callbacks registered, cached for the delivery path of one process."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.routes: dict[str, tuple[str, ...]] = {}
        self._read_at = -math.inf
        self._refreshing: asyncio.Task[None] | None = None

    async def active(self, conn: AsyncConnection) -> bool:
        """Whether any callback is registered (read in ``conn`` the first time)."""
        if self._read_at == -math.inf:
            self.routes = await rows.routes(conn)
            self._read_at = time.monotonic()
        elif self._refreshing is None and self.stale:
            self._refreshing = asyncio.ensure_future(self._refresh_later())
        return bool(self.routes)

    @property
    def stale(self) -> bool:
        """Whether the cached registrations are older than :data:`REFRESH_EVERY`."""
        return time.monotonic() - self._read_at > REFRESH_EVERY

    async def refresh(self) -> None:
        """Read the registrations now."""
        async with self.store.read() as conn:
            self.routes = await rows.routes(conn)
        self._read_at = time.monotonic()

    async def _refresh_later(self) -> None:
        try:
            await self.refresh()
        except Exception:  # noqa: BLE001 - the cache stays; the next look tries again
            log.warning("reading the status callbacks failed", exc_info=True)
            self._read_at = time.monotonic()
        finally:
            self._refreshing = None

    async def record(
        self, conn: AsyncConnection, changes: Iterable[StatusChange], now: float
    ) -> None:
        """Add the outbox rows for ``changes`` in ``conn``'s transaction."""
        routes = self.routes
        made = []
        for change in changes:
            kind = f"notification.{change.status}"
            wanted = routes.get(kind)
            if not wanted:
                continue
            body = payload(change, now)
            made += [
                {"id": new_id(), "callback_id": c, "type": kind, "payload": body, "created_at": now}
                for c in wanted
            ]
        if made:
            await rows.enqueue(conn, made)

    async def record_inbox(
        self, conn: AsyncConnection, items: Sequence[Mapping[str, Any]], now: float
    ) -> None:
        """``notification.delivered`` for in-app items just written (inbox rows)."""
        if not items or not self.routes.get("notification.delivered"):
            return
        found = await rows.inbox_deliveries(conn, [item["notification_id"] for item in items])
        await self.record(conn, (_told("delivered", r) for r in found), now)

    async def record_suppressed(
        self, conn: AsyncConnection, delivery_ids: Sequence[str], now: float
    ) -> None:
        """``notification.suppressed`` for deliveries just suppressed (by their ids)."""
        if not delivery_ids or not self.routes.get("notification.suppressed"):
            return
        found = await rows.deliveries_of(conn, delivery_ids)
        await self.record(conn, (_told("suppressed", r) for r in found), now)


def _told(status: str, row: Any) -> StatusChange:
    """A delivery row read with its context (:func:`tidings.store.callbacks.deliveries_of`)."""
    return StatusChange(
        status, row.id, row.notification_id, row.subscriber_id, row.channel, row.provider,
        row.last_error, row.attempts, row.envelope,
    )  # fmt: skip


_WATCHES: WeakKeyDictionary[Store, Watch] = WeakKeyDictionary()


def watch(store: Store) -> Watch:
    """The :class:`Watch` of ``store`` in this process."""
    found = _WATCHES.get(store)
    if found is None:
        found = _WATCHES[store] = Watch(store)
    return found


class CallbackSender:
    """Sends due outbox rows, up to ``in_flight`` at once, each outcome recorded as it ends."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        retry: RetrySettings,
        *,
        timeout: float = 10.0,
        allow_private: bool = False,
        in_flight: int = 64,
        poll: float = 0.2,
    ) -> None:
        self.store = store
        self.clock = clock
        self.retry = retry
        self.timeout = timeout
        self.allow_private = allow_private
        self.in_flight = in_flight
        self.poll = poll
        self.lease = timeout * 3 + 30
        self._sending: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._http = httpx.AsyncClient(
            timeout=timeout,
            follow_redirects=False,  # a redirect could lead past the address guard
            headers={"user-agent": "tidings-callbacks"},
        )

    def start(self) -> None:
        """Start the loop (once)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="status-callbacks")

    async def aclose(self) -> None:
        """Stop sending (rows in flight become due again when their lease runs out)."""
        tasks = [*self._sending, *([self._task] if self._task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        await self._http.aclose()

    async def _run(self) -> None:
        registered = watch(self.store)
        pruned_at = -math.inf
        while True:
            try:
                if registered.stale:
                    await registered.refresh()
                taken = await self.send_due() if registered.routes else 0
                if time.monotonic() - pruned_at > PRUNE_EVERY:
                    pruned_at = time.monotonic()
                    await self.prune()
            except Exception:  # noqa: BLE001 - the database may be away: next round
                log.warning("status callbacks: a round failed", exc_info=True)
                taken = 0
            await asyncio.sleep(0 if taken else self.poll)

    async def prune(self) -> int:
        """Drop outbox rows finished more than :data:`KEEP_FINISHED` ago; how many."""
        before = self.clock.now() - KEEP_FINISHED
        return await self.store.write(lambda conn: rows.prune(conn, before))

    async def send_due(self) -> int:
        """Claim what is due (as room allows) and start sending it; how many were taken."""
        room = self.in_flight - len(self._sending)
        if room <= 0:
            return 0
        now = self.clock.now()
        async with self.store.read() as conn:  # a read: no write transaction while idle
            if not await rows.any_due(conn, now):
                return 0
        cipher = self.store.cipher
        due = await self.store.write(lambda conn: rows.claim(conn, cipher, now, self.lease, room))
        for item in due:
            task = asyncio.create_task(self._deliver(item))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        return len(due)

    async def _deliver(self, item: Due) -> None:
        attempt = item.attempts + 1
        status, error, retry_after = await self._post(item)
        now = self.clock.now()
        outcome: dict[str, Any] = {
            "id": item.id,
            "attempts": attempt,
            "last_error": error,
            "status": status,
            "finished_at": None,
        }
        if status == "pending" and attempt >= self.retry.attempts:
            outcome["status"] = "dead"
        if outcome["status"] == "pending":
            outcome["due_at"] = now + backoff(self.retry, attempt, retry_after)
        else:
            outcome["finished_at"] = now
        try:
            await self.store.write(lambda conn: rows.finish(conn, [outcome]))
        except Exception:  # noqa: BLE001 - the lease brings the row back
            log.warning("status callbacks: recording an outcome failed", exc_info=True)

    async def _post(self, item: Due) -> tuple[str, str | None, float | None]:
        """One signed POST: ``(status, error, retry_after)`` with status sent|pending|dead."""
        try:
            await guard(item.url, self.allow_private)
            key = secret_key(item.secret)
        except (ForbiddenDestination, PermanentProviderError) as exc:
            return "dead", str(exc), None
        except OSError as exc:  # the name did not resolve: maybe later
            return "pending", f"{type(exc).__name__}: {exc}", None
        body = json_output.utf8(item.payload)
        stamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": item.id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": sign(key, item.id, stamp, body),
        }
        try:
            reply = await self._http.post(item.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return "pending", f"{type(exc).__name__}: {exc}", None
        status = reply.status_code
        if 200 <= status < 300:
            return "sent", None, None
        error = f"HTTP {status}: {reply.text[:200]}"
        if status in (408, 425, 429) or status >= 500:
            return "pending", error, retry_after_seconds(reply.headers.get("retry-after"))
        return "dead", error, None
