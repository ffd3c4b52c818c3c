"""Who holds a delivery's lease: ``deliveries.leased_by``.

Several processes share one database on one machine (``tidings serve --processes N``). When
one of them dies mid-call, its ``sending`` rows must go back to ``pending`` at once — but only
its own: a sibling's in-flight calls are alive, and releasing them would send twice.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add ``deliveries.leased_by``."""
    # a database made by create_all (adopted at 0001, see tidings.store.migrations) has it
    columns = sa.inspect(op.get_bind()).get_columns("deliveries")
    if any(column["name"] == "leased_by" for column in columns):
        return
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("leased_by", sa.String(length=64), nullable=True))


def downgrade() -> None:
    """Drop ``deliveries.leased_by``."""
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("leased_by")
