"""Broadcast rows: ``ix_broadcasts_event``, and in-app broadcast recipients as inbox items.

- ``ix_broadcasts_event``: when the scheduler fires (or expires) deferred notifications it
  looks up the broadcasts they belong to by ``event_pk`` (a paused one holds them, a cancelled
  one drops them, each recipient's decision and counts move on); topic rules make a broadcast
  per event, so the table grows with the events.
- ``inbox_items.notification_id`` may be null: a broadcast's recipient reached in-app only and
  at once is one inbox item (and its decision), with no notification or delivery row.
- ``ix_inbox_broadcast_caps``: those items count towards their category's cap (partial: only
  such items are in it).

Revision ID: 0004i
Revises: 0004h, 0004f
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004i"
# after the open indexes and the broadcasts table (it merges those two branches of 0003)
down_revision: str | tuple[str, ...] | None = ("0004h", "0004f")
branch_labels: str | None = None
depends_on: str | None = None

WITHOUT_NOTIFICATION = "notification_id IS NULL"


def _indexes(table: str) -> set[str]:
    return {str(index["name"]) for index in sa.inspect(op.get_bind()).get_indexes(table)}


def upgrade() -> None:
    """Create both indexes; ``inbox_items.notification_id`` nullable."""
    # a database made by create_all (adopted at 0001, see tidings.store.migrations) has them
    if "ix_broadcasts_event" not in _indexes("broadcasts"):
        op.create_index("ix_broadcasts_event", "broadcasts", ["event_pk"], unique=False)
    if "ix_inbox_broadcast_caps" in _indexes("inbox_items"):
        return
    with op.batch_alter_table("inbox_items") as batch:
        batch.alter_column("notification_id", existing_type=sa.String(length=36), nullable=True)
    op.create_index(
        "ix_inbox_broadcast_caps",
        "inbox_items",
        ["subscriber_id", "category", "created_at"],
        unique=False,
        sqlite_where=sa.text(WITHOUT_NOTIFICATION),
        postgresql_where=sa.text(WITHOUT_NOTIFICATION),
    )


def downgrade() -> None:
    """Drop both indexes and the inbox items without a notification."""
    op.drop_index("ix_inbox_broadcast_caps", table_name="inbox_items")
    op.execute(sa.text(f"DELETE FROM inbox_items WHERE {WITHOUT_NOTIFICATION}"))
    with op.batch_alter_table("inbox_items") as batch:
        batch.alter_column("notification_id", existing_type=sa.String(length=36), nullable=False)
    op.drop_index("ix_broadcasts_event", table_name="broadcasts")
