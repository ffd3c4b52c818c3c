"""Shared fixtures: a running service per test that asks for one, in each mode (SPEC §8)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.harness import Server
from tidings.crypto import Cipher
from tidings.store import Store

pytest_plugins = ["testbed.services"]


@pytest.fixture(scope="session")
def vhosts(services: Any) -> Iterator[Any]:
    """Fresh RabbitMQ vhosts, made ahead of the tests that take them."""
    from testbed.cluster import VhostPool

    pool = VhostPool(services)
    yield pool
    pool.close()


@pytest.fixture(params=["embedded", "scaleout"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """The built-in config served embedded (SQLite) and scaled out (PostgreSQL + RabbitMQ).

    Scaled out, the ``Server`` is a ``--role api`` process with one ``tidings worker`` beside it.
    """
    if request.param == "embedded":
        running = Server(tmp_path).start()
    else:
        from testbed.cluster import Cluster, fresh_database

        database = fresh_database(request.getfixturevalue("services"))
        vhost = request.getfixturevalue("vhosts").take()
        running = Cluster(tmp_path, database.url, vhost).start()
        request.addfinalizer(database.drop)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database on each backend (a module may define its own ``database_url``)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 't.db'}"
    from testbed.cluster import fresh_database

    database = fresh_database(request.getfixturevalue("services"))
    request.addfinalizer(database.drop)
    return str(database.url)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    """A started store on ``database_url`` with a fresh PII key."""
    opened = Store(database_url, Cipher(os.urandom(32)))
    await opened.start()
    try:
        yield opened
    finally:
        await opened.aclose()
