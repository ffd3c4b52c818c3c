"""The API keys a process accepts, kept fresh from the store, and their last use.

Authentication reads :class:`KeyRing` in memory (no query per request). The service reloads
it every :data:`REFRESH` seconds, so a key made or revoked by ``tidings keys`` counts within
that time in every process, and writes the keys' last-used times then: at most one write per
key per :data:`STAMP_EVERY` seconds.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace

from tidings.store.keys import ApiKey

REFRESH = 1.0
"""Seconds between reloads of the stored keys (API keys and PII data keys)."""
STAMP_EVERY = 60.0
"""A key's ``last_used_at`` is written at most this often."""


class KeyRing(Mapping[str, ApiKey]):
    """Key hash → :class:`ApiKey` for every key that is not revoked (expired ones included:
    their callers hear that they expired)."""

    def __init__(self) -> None:
        self._keys: dict[str, ApiKey] = {}
        self._stamped: dict[str, float] = {}
        self._used: dict[str, float] = {}

    def replace(
        self, stored: Mapping[str, ApiKey], configured: Mapping[str, frozenset[str]]
    ) -> None:
        """Hold this process's ``configured`` keys (hash → scopes) and the ``stored`` keys
        made by ``tidings keys create`` or generated, but the revoked ones.

        Configured rows stored by other processes (another config) do not count here; a
        configured key revoked with ``tidings keys revoke`` does not either.
        """
        keys = {d: key for d, key in stored.items() if key.label != "config"}
        for digest, scopes in configured.items():
            row = stored.get(digest)
            keys[digest] = (
                ApiKey(digest, scopes, "config", 0.0)
                if row is None
                else replace(row, scopes=scopes)
            )
        self._keys = {digest: key for digest, key in keys.items() if key.revoked_at is None}
        for digest, key in self._keys.items():
            if key.last_used_at is not None:
                stamped = self._stamped.get(digest, 0.0)
                self._stamped[digest] = max(stamped, key.last_used_at)

    def used(self, digest: str, now: float) -> None:
        """Note that the key ``digest`` authenticated a request at ``now``."""
        if now - self._stamped.get(digest, 0.0) >= STAMP_EVERY:
            self._stamped[digest] = now
            self._used[digest] = now

    def take_used(self) -> dict[str, float]:
        """The last-used times to write (hash → time), once each."""
        used, self._used = self._used, {}
        return used

    def __getitem__(self, digest: str) -> ApiKey:
        return self._keys[digest]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)
