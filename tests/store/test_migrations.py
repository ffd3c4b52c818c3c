"""The Alembic history builds exactly the tables of ``tidings.store.tables``, on both backends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from testbed.services import create_database, drop_database
from tidings.config import sqlalchemy_url
from tidings.store import migrations
from tidings.store.tables import metadata


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database of each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
        return
    url = await create_database(request.getfixturevalue("postgres_url"))
    try:
        yield url
    finally:
        await drop_database(url)


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


async def _run(url: str, *steps: Any) -> list[Any]:
    engine = create_async_engine(sqlalchemy_url(url))
    try:
        results = []
        for step in steps:
            async with engine.begin() as conn:
                results.append(await conn.run_sync(step))
        return results
    finally:
        await engine.dispose()


async def test_the_history_matches_the_tables(database_url: str) -> None:
    _, diff, revision = await _run(database_url, migrations.upgrade, _diff, migrations.current)
    # a failure here means tables.py changed without a revision: see tidings.store.migrations
    assert diff == []
    assert revision == migrations.heads()


async def test_upgrade_is_idempotent_and_downgrade_empties(database_url: str) -> None:
    def tables(connection: Connection) -> set[str]:
        return set(inspect(connection).get_table_names()) - {"alembic_version"}

    def downgrade(connection: Connection) -> None:
        command.downgrade(migrations.config(connection), "base")

    steps = (migrations.upgrade, migrations.upgrade, tables, downgrade, tables)
    _, _, before, _, after = await _run(database_url, *steps)
    assert before == set(metadata.tables) and after == set()


async def test_a_database_from_before_the_history_is_adopted(database_url: str) -> None:
    _, _, revision, diff = await _run(
        database_url, metadata.create_all, migrations.upgrade, migrations.current, _diff
    )
    assert revision == migrations.heads() and diff == []


async def test_processes_starting_together_migrate_once(postgres_database: str) -> None:
    engines = [create_async_engine(sqlalchemy_url(postgres_database)) for _ in range(4)]

    async def start(engine: Any) -> None:
        async with engine.begin() as conn:
            await conn.run_sync(migrations.upgrade)

    try:
        await asyncio.gather(*(start(e) for e in engines))
    finally:
        for engine in engines:
            await engine.dispose()
    (revision,) = await _run(postgres_database, migrations.current)
    assert revision == migrations.heads()


def _sqlite_shape(connection: Connection) -> dict[str, Any]:
    """What Alembic's comparison leaves out on SQLite: ``WITHOUT ROWID`` tables, and each
    index's uniqueness and ``WHERE`` clause."""
    raw = connection.exec_driver_sql
    tables = {
        name: bool(without_rowid)
        for _, name, kind, _, without_rowid, _ in raw("PRAGMA table_list").all()
        if kind == "table" and not name.startswith("sqlite_") and name != "alembic_version"
    }
    indexes = {
        name: " ".join(sql.split()).replace('"', "")
        for name, sql in raw(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        ).all()
    }
    return {"tables": tables, "indexes": indexes}


async def test_sqlite_tables_and_indexes_are_create_alls(tmp_path: Path) -> None:
    def migrated(connection: Connection) -> dict[str, Any]:
        migrations.upgrade(connection)
        return _sqlite_shape(connection)

    def created(connection: Connection) -> dict[str, Any]:
        metadata.create_all(connection)
        return _sqlite_shape(connection)

    (history,) = await _run(f"sqlite:///{tmp_path / 'm.db'}", migrated)
    (tables,) = await _run(f"sqlite:///{tmp_path / 'c.db'}", created)
    assert history == tables
    assert history["tables"]["broadcast_recipients"] is True  # its rows in its key's B-tree
