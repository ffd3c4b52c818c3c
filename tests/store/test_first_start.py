"""Processes starting side by side on one PostgreSQL database set it up once, without errors."""

from __future__ import annotations

import asyncio

import pytest

from tidings.config import load_settings
from tidings.runtime.service import Service

pytestmark = pytest.mark.scaleout


def _settings(database: str, api_keys: str) -> object:
    env = {"TIDINGS_DATABASE_URL": database, "TIDINGS_ENCRYPTION_KEY": "A" * 43 + "="}
    if api_keys:
        env["TIDINGS_API_KEYS"] = api_keys
    return load_settings(env=env)


@pytest.mark.parametrize(
    "api_keys", ["tid_one_0123456789abcdefghij:admin,tid_two_0123456789abcdefghij:events", ""]
)
async def test_concurrent_first_starts_agree(postgres_database: str, api_keys: str) -> None:
    services = [
        Service(_settings(postgres_database, api_keys), role="api")  # type: ignore[arg-type]
        for _ in range(6)
    ]
    try:
        for service in services:  # migrated already: the starts below contend for setup alone
            await service.store.start()
        await asyncio.gather(*(service.start() for service in services))
        assert len({service.inbox_secret for service in services}) == 1
        assert len({frozenset(service.api_keys) for service in services}) == 1
        generated = [s.generated_admin_key for s in services if s.generated_admin_key]
        # configured keys: nothing generated; none configured: exactly one admin key, once
        assert len(generated) == (0 if api_keys else 1)
        assert len(services[0].api_keys) == (2 if api_keys else 1)
    finally:
        await asyncio.gather(*(service.aclose() for service in services))
