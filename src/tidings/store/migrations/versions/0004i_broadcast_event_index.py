"""``ix_broadcasts_event``: a deferred notification's broadcast, found by its event.

When the scheduler fires (or expires) deferred notifications it looks up the broadcasts
they belong to by ``event_pk`` (a paused one holds them, a cancelled one drops them, and
each recipient's decision and counts move on); topic rules make a broadcast per event, so
the table grows with the events and needs the index.

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


def upgrade() -> None:
    """Create ``ix_broadcasts_event``."""
    # a database made by create_all (adopted at 0001, see tidings.store.migrations) has it
    indexes = sa.inspect(op.get_bind()).get_indexes("broadcasts")
    if any(index["name"] == "ix_broadcasts_event" for index in indexes):
        return
    op.create_index("ix_broadcasts_event", "broadcasts", ["event_pk"], unique=False)


def downgrade() -> None:
    """Drop ``ix_broadcasts_event``."""
    op.drop_index("ix_broadcasts_event", table_name="broadcasts")
