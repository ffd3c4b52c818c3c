"""Live inbox updates for Server-Sent Events: an in-process publish/subscribe hub."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any

from tidings.queue.stream_places import StreamPlaces


class InboxHub:
    """Fans new inbox items out to the SSE streams of their subscriber."""

    def __init__(self) -> None:
        self._listeners: dict[str, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)

    def subscribe(self, subscriber_id: str) -> asyncio.Queue[dict[str, Any]]:
        """A queue that receives this subscriber's new items."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
        self._listeners[subscriber_id].add(queue)
        return queue

    def streams(self, subscriber_id: str) -> int:
        """How many streams of ``subscriber_id`` this process holds open."""
        return len(self._listeners.get(subscriber_id, ()))

    def open_stream(self, subscriber_id: str, limit: int) -> asyncio.Queue[dict[str, Any]] | None:
        """:meth:`subscribe` for one more live stream, or ``None`` when the subscriber
        already holds ``limit`` (end it with :meth:`unsubscribe`)."""
        if self.streams(subscriber_id) >= limit:
            return None
        return self.subscribe(subscriber_id)

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

    def publish_items(self, rows: Sequence[dict[str, Any]]) -> None:
        """New inbox items (a broadcast chunk's, a batch's), each to its subscriber's open
        streams as ``{"type": "item", "item": row}``; relayed as one message."""
        self.deliver_items(rows)

    def deliver_items(self, rows: Iterable[dict[str, Any]]) -> None:
        """:meth:`publish_items` to this process's streams only (a message only for a
        subscriber with one open: most have none)."""
        listeners = self._listeners
        for row in rows:
            subscriber_id = row["subscriber_id"]
            if subscriber_id in listeners:
                InboxHub.publish(self, subscriber_id, {"type": "item", "item": row})


_OWN = ("id", "subscriber_id")
"""The fields every inbox item has of its own."""
_ABSENT = object()


def packed(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Inbox items as one message: the values they all share once (a broadcast chunk's
    items differ in their id and subscriber only), the other fields' values per item."""
    first = rows[0]
    common = {
        key: value
        for key, value in first.items()
        if key not in _OWN and all(row.get(key, _ABSENT) == value for row in rows)
    }
    keys = [key for key in first if key not in common]
    take = itemgetter(*keys)
    fields = list(first)
    return {"fields": fields, "common": common, "keys": keys, "rows": [take(r) for r in rows]}


def unpacked(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The inbox items of a :func:`packed` message (their fields in their order)."""
    common, keys = message["common"], [str(key) for key in message["keys"]]
    shared = {str(field): common.get(field) for field in message["fields"]}
    return [{**shared, **dict(zip(keys, values, strict=True))} for values in message["rows"]]


def _datagrams(message: dict[str, Any], limit: int) -> list[bytes]:
    """A :func:`packed` message encoded as datagrams of at most ``limit`` bytes (its items
    split between several when they do not fit one; an item too large alone is dropped)."""
    data = _ENCODE(message).encode()
    if len(data) <= limit:
        return [data]
    rows = message["rows"]
    if len(rows) < 2:
        return []
    half = len(rows) // 2
    return _datagrams({**message, "rows": rows[:half]}, limit) + _datagrams(
        {**message, "rows": rows[half:]}, limit
    )


class PeerHub(InboxHub):
    """An :class:`InboxHub` shared by the processes of one machine (``--processes N``).

    Each process binds a Unix datagram socket ``<index>.sock`` in the run's ``peers``
    directory. What one process publishes reaches its own streams at once and, coalesced
    per pass of the event loop, every other process in one datagram each; a process that
    receives one hands the items to its own streams. Best effort, as SSE is: a datagram
    that finds a peer gone or its buffer full is dropped, and a client that reconnects
    reads the inbox afresh.
    """

    MAX_DATAGRAM = 60_000
    """Bytes per datagram (Linux allows about 200 KB on a Unix socket by default)."""

    def __init__(self, directory: Path, index: int) -> None:
        super().__init__()
        self.directory = directory
        self.path = directory / f"{index}.sock"
        self._outbox: list[dict[str, Any]] = []
        self._batches: list[Sequence[dict[str, Any]]] = []
        self._sender: socket.socket | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._peers: tuple[float, list[str]] = (0.0, [])
        self._places: StreamPlaces | None = None
        self._held: dict[int, int] = {}
        """Stream queue (``id``) → the place it holds among its subscriber's."""

    async def start(self) -> None:
        """Bind this process's socket and listen for the others' items."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        receiver.bind(str(self.path))
        receiver.setblocking(False)
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Receiver(self._received), sock=receiver
        )
        self._transport = transport
        self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sender.setblocking(False)
        self._places = StreamPlaces(self.directory / "streams.lock")

    def open_stream(self, subscriber_id: str, limit: int) -> asyncio.Queue[dict[str, Any]] | None:
        """One more live stream if the subscriber holds fewer than ``limit`` in all the
        processes of this machine together (see :mod:`tidings.queue.stream_places`)."""
        if self._places is None:
            return super().open_stream(subscriber_id, limit)
        place = self._places.take(subscriber_id, limit)
        if place is None:
            return None
        queue = self.subscribe(subscriber_id)
        self._held[id(queue)] = place
        return queue

    def unsubscribe(self, subscriber_id: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        """Stop delivering to ``queue``; its place is free again."""
        super().unsubscribe(subscriber_id, queue)
        place = self._held.pop(id(queue), None)
        if place is not None and self._places is not None:
            self._places.give_back(subscriber_id, place)

    def publish(self, subscriber_id: str, message: dict[str, Any]) -> None:
        """Deliver locally; relay to the other processes after this loop pass."""
        super().publish(subscriber_id, message)
        if self._sender is None:
            return
        self._later()
        self._outbox.append({"to": subscriber_id, "message": message})

    def publish_items(self, rows: Sequence[dict[str, Any]]) -> None:
        """Deliver locally; relay them to the other processes as one :func:`packed` message
        (in as few datagrams as fit) after this loop pass."""
        self.deliver_items(rows)
        if self._sender is None or not rows:
            return
        self._later()
        self._batches.append(rows)

    def _later(self) -> None:
        if not self._outbox and not self._batches:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        items, self._outbox = self._outbox, []
        batches, self._batches = self._batches, []
        sender = self._sender
        if sender is None or not (items or batches):
            return
        # each item encoded once; a datagram is a JSON array of them
        chunks: list[bytes] = []
        chunk: list[bytes] = []
        size = 0
        for item in items:
            encoded = _ENCODE(item).encode()
            if chunk and size + len(encoded) > self.MAX_DATAGRAM:
                chunks.append(b"[" + b",".join(chunk) + b"]")
                chunk, size = [], 0
            chunk.append(encoded)
            size += len(encoded) + 1
        if chunk:
            chunks.append(b"[" + b",".join(chunk) + b"]")
        for batch in batches:
            chunks += _datagrams(packed(batch), self.MAX_DATAGRAM)
        for peer in self._peer_paths():
            for data in chunks:
                try:
                    sender.sendto(data, peer)
                except OSError:  # gone, not yet there, or full: best effort
                    break

    def _peer_paths(self) -> list[str]:
        """The other processes' sockets (the directory is listed at most once a second)."""
        now = time.monotonic()
        listed_at, paths = self._peers
        if now - listed_at > 1.0:
            mine = str(self.path)
            paths = [str(p) for p in self.directory.glob("*.sock") if str(p) != mine]
            self._peers = (now, paths)
        return paths

    def _received(self, data: bytes) -> None:
        try:
            items = json.loads(data)
            if isinstance(items, dict):  # a packed batch of items
                self.deliver_items(unpacked(items))
                return
            for item in items:
                InboxHub.publish(self, str(item["to"]), item["message"])
        except (ValueError, KeyError, TypeError):
            return

    def aclose(self) -> None:
        """Stop listening and remove this process's socket."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._sender is not None:
            self._sender.close()
            self._sender = None
        if self._places is not None:
            self._places.close()
            self._places = None
        self._held.clear()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


_ENCODE = json.JSONEncoder(ensure_ascii=False, default=str).encode


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, received: Callable[[bytes], None]) -> None:
        self.received = received

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received(data)
