"""Broadcast B-trees: fewer index writes for each in-app recipient of a broadcast.

Such a recipient is two rows, its decision (``broadcast_recipients``) and its inbox item; each
B-tree a row goes into is work that grows with the audience.

- ``broadcast_recipients`` is a ``WITHOUT ROWID`` table on SQLite: the rows live in their
  primary key's B-tree (before: a rowid B-tree and the key's index).
- ``inbox_items.notification_id``: unique by a partial index of the items that have one
  (``ix_inbox_notification``), no longer by a constraint whose index held every broadcast
  item's null too.
- ``ix_inbox_broadcast_caps`` is gone: a cap's count finds a subscriber's broadcast items
  through ``ix_inbox_subscriber``, from the window's first id on (an item's id is minted no
  earlier than its ``created_at``).

SQLite changes a table's shape by building it anew: both tables are copied, dropped and
renamed, and their other indexes made again as they were (a database made by ``create_all``
and adopted at 0001 ends up the same; other revisions' indexes stay). PostgreSQL keeps its
tables and swaps the constraint for the index.

Revision ID: 0004k
Revises: 0004i
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.schema import SchemaItem

revision = "0004k"
down_revision: str | tuple[str, ...] | None = "0004i"
branch_labels: str | None = None
depends_on: str | None = None

_NONE: frozenset[str] = frozenset()
WITH_NOTIFICATION = "notification_id IS NOT NULL"
WITHOUT_NOTIFICATION = "notification_id IS NULL"


def _recipient_columns() -> list[SchemaItem]:
    return [
        sa.Column("broadcast_id", sa.String(length=128), nullable=False),
        sa.Column("subscriber_id", sa.String(length=256), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("until", sa.Float(), nullable=True),
        sa.Column("notification_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("broadcast_id", "subscriber_id"),
    ]


def _inbox_columns(*, unique_notification: bool) -> list[SchemaItem]:
    return [
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("subscriber_id", sa.String(length=256), nullable=False),
        sa.Column("notification_id", sa.String(length=36), nullable=True),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("seen_at", sa.Float(), nullable=True),
        sa.Column("read_at", sa.Float(), nullable=True),
        sa.Column("archived_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        *([sa.UniqueConstraint("notification_id")] if unique_notification else []),
    ]


def _rebuild(
    name: str, items: list[SchemaItem], *, with_rowid: bool = True, leave: frozenset[str] = _NONE
) -> None:
    """SQLite: ``name`` made anew from ``items`` with its rows, and its indexes made again
    as they were (but those named in ``leave``)."""
    indexes = op.get_bind().exec_driver_sql(
        "SELECT name, sql FROM sqlite_master"
        f" WHERE type = 'index' AND tbl_name = '{name}' AND sql IS NOT NULL"
    )
    kept = [sql for index, sql in indexes.all() if index not in leave]
    fresh = f"_new_{name}"
    op.create_table(fresh, *items, sqlite_with_rowid=with_rowid)
    columns = ", ".join(item.name for item in items if isinstance(item, sa.Column))
    op.execute(sa.text(f"INSERT INTO {fresh} ({columns}) SELECT {columns} FROM {name}"))
    op.drop_table(name)
    op.rename_table(fresh, name)
    for sql in kept:
        op.execute(sa.text(sql))


def _indexes(table: str) -> set[str]:
    return {str(index["name"]) for index in sa.inspect(op.get_bind()).get_indexes(table)}


def _notification_constraints() -> list[str]:
    """PostgreSQL: the unique constraints on ``inbox_items.notification_id`` alone."""
    found = sa.inspect(op.get_bind()).get_unique_constraints("inbox_items")
    return [str(c["name"]) for c in found if list(c["column_names"]) == ["notification_id"]]


def _notification_index() -> None:
    op.create_index(
        "ix_inbox_notification",
        "inbox_items",
        ["notification_id"],
        unique=True,
        sqlite_where=sa.text(WITH_NOTIFICATION),
        postgresql_where=sa.text(WITH_NOTIFICATION),
    )


def _caps_index() -> None:
    op.create_index(
        "ix_inbox_broadcast_caps",
        "inbox_items",
        ["subscriber_id", "category", "created_at"],
        unique=False,
        sqlite_where=sa.text(WITHOUT_NOTIFICATION),
        postgresql_where=sa.text(WITHOUT_NOTIFICATION),
    )


def upgrade() -> None:
    """Recipients without a rowid (SQLite); the partial unique index; no caps index."""
    if op.get_bind().dialect.name == "sqlite":
        _rebuild("broadcast_recipients", _recipient_columns(), with_rowid=False)
        _rebuild(
            "inbox_items",
            _inbox_columns(unique_notification=False),
            leave=frozenset({"ix_inbox_broadcast_caps", "ix_inbox_notification"}),
        )
        _notification_index()
        return
    indexes = _indexes("inbox_items")
    if "ix_inbox_broadcast_caps" in indexes:
        op.drop_index("ix_inbox_broadcast_caps", table_name="inbox_items")
    for name in _notification_constraints():
        op.drop_constraint(name, "inbox_items", type_="unique")
    if "ix_inbox_notification" not in indexes:
        _notification_index()


def downgrade() -> None:
    """Back to 0004i: rowid recipients, the unique constraint and the caps index."""
    if op.get_bind().dialect.name == "sqlite":
        _rebuild("broadcast_recipients", _recipient_columns())
        _rebuild(
            "inbox_items",
            _inbox_columns(unique_notification=True),
            leave=frozenset({"ix_inbox_notification"}),
        )
    else:
        op.drop_index("ix_inbox_notification", table_name="inbox_items")
        op.create_unique_constraint(
            "inbox_items_notification_id_key", "inbox_items", ["notification_id"]
        )
    _caps_index()
