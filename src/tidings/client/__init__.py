"""The Python client of the tidings API (SPEC §11).

>>> from tidings.client import Client
>>> with Client("http://localhost:8000", "tid_...", source="/shop") as tidings:
...     tidings.subscribers.upsert("buyer-1", email="ann@example.com", locale="en-US")
...     tidings.emit("order.paid", {"order_id": "o-1", "buyer_id": "buyer-1", ...})

:class:`AsyncClient` is the same with ``await``. Both retry connection errors, 5xx and 429
with backoff and the same event id, and raise :class:`TidingsError` with the problem body.
"""

from __future__ import annotations

from tidings.client.aio import AsyncClient, AsyncSubscribers
from tidings.client.calls import Accepted, InboxToken, ItemResult, Retry
from tidings.client.errors import TidingsConnectionError, TidingsError
from tidings.client.sync import Client, Subscribers

__all__ = [
    "Accepted",
    "AsyncClient",
    "AsyncSubscribers",
    "Client",
    "InboxToken",
    "ItemResult",
    "Retry",
    "Subscribers",
    "TidingsConnectionError",
    "TidingsError",
]
