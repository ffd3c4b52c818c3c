"""Shared fixtures: a running ``tidings serve`` subprocess per test that asks for one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Server

pytest_plugins = ["tests.services"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A service on the built-in config with an embedded SQLite database."""
    running = Server(tmp_path).start()
    try:
        yield running
    finally:
        running.stop()
