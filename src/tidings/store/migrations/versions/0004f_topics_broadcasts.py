"""Topics and broadcasts (issue 13, SPEC §10).

``topics`` and ``topic_subscribers`` are named audiences; ``broadcasts`` one row per
campaign (or topic rule fan-out) with its audience, message and progress;
``broadcast_chunks`` the audience cut into ranges of subscriber ids, each done in the
transaction that writes its recipients; ``broadcast_recipients`` one decision per broadcast
and subscriber (its primary key is what keeps a broadcast to one message per subscriber).

Revision ID: 0004f
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004f"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create the five tables."""
    # a database made by create_all (adopted at 0001, see tidings.store.migrations) has them
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "topics" not in existing:
        op.create_table(
            "topics",
            sa.Column("key", sa.String(length=256), primary_key=True),
            sa.Column("name", sa.String(length=200), nullable=False),
            sa.Column("description", sa.Text(), nullable=False),
            sa.Column("created_at", sa.Float(), nullable=False),
            sa.Column("updated_at", sa.Float(), nullable=False),
        )
    if "topic_subscribers" not in existing:
        op.create_table(
            "topic_subscribers",
            sa.Column("topic_key", sa.String(length=256), primary_key=True),
            sa.Column("subscriber_id", sa.String(length=256), primary_key=True),
            sa.Column("created_at", sa.Float(), nullable=False),
        )
        op.create_index(
            "ix_topic_subscribers_subscriber", "topic_subscribers", ["subscriber_id"], unique=False
        )
    if "broadcasts" not in existing:
        op.create_table(
            "broadcasts",
            sa.Column("id", sa.String(length=128), primary_key=True),
            sa.Column("event_pk", sa.String(length=36), nullable=False),
            sa.Column("rule_id", sa.String(length=128), nullable=True),
            sa.Column("status", sa.String(length=16), nullable=False),
            sa.Column("audience", sa.JSON(), nullable=False),
            sa.Column("message", sa.JSON(), nullable=False),
            sa.Column("send_at", sa.Float(), nullable=False),
            sa.Column("rate", sa.Float(), nullable=True),
            sa.Column("audience_size", sa.Integer(), nullable=True),
            sa.Column("planned_to", sa.String(length=256), nullable=True),
            sa.Column("planned", sa.Boolean(), nullable=False),
            sa.Column("next_at", sa.Float(), nullable=True),
            sa.Column("created_at", sa.Float(), nullable=False),
            sa.Column("started_at", sa.Float(), nullable=True),
            sa.Column("finished_at", sa.Float(), nullable=True),
        )
        op.create_index("ix_broadcasts_status", "broadcasts", ["status", "send_at"], unique=False)
    if "broadcast_chunks" not in existing:
        op.create_table(
            "broadcast_chunks",
            sa.Column("broadcast_id", sa.String(length=128), primary_key=True),
            sa.Column("seq", sa.Integer(), primary_key=True),
            sa.Column("after_id", sa.String(length=256), nullable=False),
            sa.Column("upto_id", sa.String(length=256), nullable=True),
            sa.Column("status", sa.String(length=16), nullable=False),
            sa.Column("counts", sa.JSON(), nullable=True),
            sa.Column("done_at", sa.Float(), nullable=True),
        )
        op.create_index(
            "ix_broadcast_chunks_status",
            "broadcast_chunks",
            ["status", "broadcast_id"],
            unique=False,
        )
    if "broadcast_recipients" not in existing:
        op.create_table(
            "broadcast_recipients",
            sa.Column("broadcast_id", sa.String(length=128), primary_key=True),
            sa.Column("subscriber_id", sa.String(length=256), primary_key=True),
            sa.Column("outcome", sa.String(length=16), nullable=False),
            sa.Column("reason", sa.Text(), nullable=False),
            sa.Column("until", sa.Float(), nullable=True),
            sa.Column("notification_id", sa.String(length=36), nullable=True),
            sa.Column("created_at", sa.Float(), nullable=False),
        )


def downgrade() -> None:
    """Drop the five tables."""
    op.drop_table("broadcast_recipients")
    op.drop_index("ix_broadcast_chunks_status", table_name="broadcast_chunks")
    op.drop_table("broadcast_chunks")
    op.drop_index("ix_broadcasts_status", table_name="broadcasts")
    op.drop_table("broadcasts")
    op.drop_index("ix_topic_subscribers_subscriber", table_name="topic_subscribers")
    op.drop_table("topic_subscribers")
    op.drop_table("topics")
