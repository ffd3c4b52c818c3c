"""Shared fixtures: a running service per test that asks for one, in each mode (SPEC §8)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Server

pytest_plugins = ["tests.services"]


@pytest.fixture(scope="session")
def vhosts(services: Any) -> Iterator[Any]:
    """Fresh RabbitMQ vhosts, made ahead of the tests that take them."""
    from tests.scaleout.cluster import VhostPool

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
        from tests.scaleout.cluster import Cluster, fresh_database

        database = fresh_database(request.getfixturevalue("services"))
        vhost = request.getfixturevalue("vhosts").take()
        running = Cluster(tmp_path, database.url, vhost).start()
        request.addfinalizer(database.drop)
    try:
        yield running
    finally:
        running.stop()
