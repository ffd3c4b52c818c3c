"""An index for frequency caps: a recipient's notifications of a category since a time.

The decision counts, per batch, each recipient's recent notifications of every capped
category; without it that count walked the recipient's whole history (a busy seller's grows
without end).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create ``ix_notifications_caps``."""
    # a database made by create_all (adopted at 0001, see tidings.store.migrations) may
    # already have it
    op.create_index(
        "ix_notifications_caps",
        "notifications",
        ["subscriber_id", "category", "created_at"],
        unique=False,
        if_not_exists=True,
    )


def downgrade() -> None:
    """Drop ``ix_notifications_caps``."""
    op.drop_index("ix_notifications_caps", table_name="notifications")
