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
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
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


_ITEM = (
    "INSERT INTO inbox_items (id, subscriber_id, notification_id, category, title, body, data,"
    " created_at) VALUES (:id, 'buyer-1', :notification, 'marketing', 'Sale', 'On', '{}', 1.0)"
)
_DECISION = (
    "INSERT INTO broadcast_recipients (broadcast_id, subscriber_id, outcome, reason,"
    " created_at) VALUES ('b-1', :subscriber, 'sent', 'sent on inapp', 1.0)"
)


async def test_0004k_keeps_the_rows_and_one_item_per_notification(database_url: str) -> None:
    """Rows written at 0004i survive the rebuild (and the way back); a notification still
    has one item at most, while broadcast items without one are not limited."""

    def at_0004i(connection: Connection) -> None:
        command.upgrade(migrations.config(connection), "0004i")
        for n, notification in enumerate(("n-1", "n-2", None, None)):
            connection.execute(text(_ITEM), {"id": f"i-{n}", "notification": notification})
        for subscriber in ("buyer-1", "buyer-2"):
            connection.execute(text(_DECISION), {"subscriber": subscriber})
        # another revision's index: SQLite's rebuild makes it again
        connection.execute(text("CREATE INDEX ix_inbox_other ON inbox_items (category)"))

    def rows(connection: Connection) -> tuple[list[Any], list[Any]]:
        indexes = {str(i["name"]) for i in inspect(connection).get_indexes("inbox_items")}
        assert {"ix_inbox_other", "ix_inbox_subscriber"} <= indexes
        items = connection.execute(
            text("SELECT id, notification_id FROM inbox_items ORDER BY id")
        ).all()
        decided = connection.execute(
            text("SELECT subscriber_id, outcome FROM broadcast_recipients ORDER BY 2, 1")
        ).all()
        return [tuple(r) for r in items], [tuple(r) for r in decided]

    def twice(connection: Connection, notification: str | None) -> bool:
        """Whether a second item of ``notification`` is refused."""
        try:
            with connection.begin_nested():
                connection.execute(text(_ITEM), {"id": "i-9", "notification": notification})
        except IntegrityError:
            return True
        return False

    def down(connection: Connection) -> None:
        command.downgrade(migrations.config(connection), "0004i")

    expected = (
        [("i-0", "n-1"), ("i-1", "n-2"), ("i-2", None), ("i-3", None)],
        [("buyer-1", "sent"), ("buyer-2", "sent")],
    )
    steps = (at_0004i, migrations.upgrade, rows, lambda c: twice(c, "n-1"))
    _, _, upgraded, refused = await _run(database_url, *steps)
    assert upgraded == expected and refused
    assert await _run(database_url, lambda c: twice(c, None)) == [False]
    expected[0].append(("i-9", None))
    assert await _run(database_url, down, rows) == [None, expected]
