"""Places for live inbox streams, counted across the processes of one machine.

``inbox.max_streams`` bounds the streams a subscriber holds open at once. With
``--processes N`` those streams land on whichever process accepted the connection, so a
count in each process would allow N times the limit. Here each subscriber has
``max_streams`` places, and a stream holds one as an exclusive POSIX byte-range lock on one
shared file (one byte per place, at an offset from a hash of the subscriber id):

- nothing is written, the file stays empty, and there is nothing to clean up;
- a lock is held by the process, so one that dies (``kill -9``) lets go of its places at once;
- POSIX locks do not conflict within one process, so each process also remembers which
  places it holds itself.

Two subscribers whose 40-bit hashes collide would share places; at 2⁴⁰ that is not a concern.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path

STRIDE = 1024
"""Places per subscriber at most (``inbox.max_streams`` above it counts as this)."""


class StreamPlaces:
    """Take and give back places for one subscriber's live streams (see module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self._mine: dict[str, set[int]] = {}

    def take(self, subscriber_id: str, limit: int) -> int | None:
        """A free place of ``subscriber_id`` among its first ``limit`` (``None``: all taken)."""
        if self._fd is None:
            return None
        base = _base(subscriber_id)
        mine = self._mine.setdefault(subscriber_id, set())
        for place in range(min(limit, STRIDE)):
            if place in mine:
                continue
            try:
                fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, base + place, os.SEEK_SET)
            except OSError:  # another process holds it
                continue
            mine.add(place)
            return place
        if not mine:
            del self._mine[subscriber_id]
        return None

    def give_back(self, subscriber_id: str, place: int) -> None:
        """Release a place taken with :meth:`take`."""
        mine = self._mine.get(subscriber_id)
        if mine is None or place not in mine or self._fd is None:
            return
        fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, _base(subscriber_id) + place, os.SEEK_SET)
        mine.discard(place)
        if not mine:
            del self._mine[subscriber_id]

    def close(self) -> None:
        """Release every place this process holds."""
        if self._fd is not None:
            os.close(self._fd)  # closing the file drops all of this process's locks on it
            self._fd = None
        self._mine.clear()


def _base(subscriber_id: str) -> int:
    digest = hashlib.sha256(subscriber_id.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:5], "big") * STRIDE
