"""Live inbox updates for Server-Sent Events: an in-process publish/subscribe hub."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any


class InboxHub:
    """Fans new inbox items out to the SSE streams of their subscriber."""

    def __init__(self) -> None:
        self._listeners: dict[str, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)

    def subscribe(self, subscriber_id: str) -> asyncio.Queue[dict[str, Any]]:
        """A queue that receives this subscriber's new items."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
        self._listeners[subscriber_id].add(queue)
        return queue

    def unsubscribe(self, subscriber_id: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        """Stop delivering to ``queue``."""
        listeners = self._listeners.get(subscriber_id)
        if listeners is not None:
            listeners.discard(queue)
            if not listeners:
                del self._listeners[subscriber_id]

    def publish(self, subscriber_id: str, message: dict[str, Any]) -> None:
        """Hand ``message`` to every open stream of ``subscriber_id`` (never blocks)."""
        for queue in self._listeners.get(subscriber_id, ()):
            if not queue.full():
                queue.put_nowait(message)
