"""Status callbacks to the shop, their outbox, and the audit trail (issue 14).

``status_callbacks`` holds the shop's registered URLs (encrypted) and signing secrets;
``callback_outbox`` one row per status change and callback, written in the transaction that
committed the change and sent by a loop of its own; ``audit_log`` who (key id) did what to
which resource, when.

Revision ID: 0004e
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004e"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create ``status_callbacks``, ``callback_outbox`` and ``audit_log``."""
    # a database made by create_all (adopted at 0001, see tidings.store.migrations) has them
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "status_callbacks" not in existing:
        op.create_table(
            "status_callbacks",
            sa.Column("id", sa.String(length=36), primary_key=True),
            sa.Column("url_enc", sa.Text(), nullable=False),
            sa.Column("secret_enc", sa.Text(), nullable=False),
            sa.Column("types", sa.JSON(), nullable=False),
            sa.Column("created_at", sa.Float(), nullable=False),
        )
    if "callback_outbox" not in existing:
        op.create_table(
            "callback_outbox",
            sa.Column("id", sa.String(length=36), primary_key=True),
            sa.Column("callback_id", sa.String(length=36), nullable=False),
            sa.Column("type", sa.String(length=32), nullable=False),
            sa.Column("payload", sa.JSON(), nullable=False),
            sa.Column("status", sa.String(length=16), nullable=False),
            sa.Column("attempts", sa.Integer(), nullable=False),
            sa.Column("created_at", sa.Float(), nullable=False),
            sa.Column("due_at", sa.Float(), nullable=False),
            sa.Column("finished_at", sa.Float(), nullable=True),
            sa.Column("last_error", sa.Text(), nullable=True),
        )
        op.create_index(
            "ix_callback_outbox_callback_id", "callback_outbox", ["callback_id"], unique=False
        )
        op.create_index(
            "ix_callback_outbox_due", "callback_outbox", ["status", "due_at"], unique=False
        )
    if "audit_log" not in existing:
        op.create_table(
            "audit_log",
            sa.Column("id", sa.String(length=36), primary_key=True),
            sa.Column("key_id", sa.String(length=64), nullable=False),
            sa.Column("action", sa.String(length=128), nullable=False),
            sa.Column("resource", sa.String(length=1024), nullable=False),
            sa.Column("at", sa.Float(), nullable=False),
        )


def downgrade() -> None:
    """Drop the three tables."""
    op.drop_table("audit_log")
    op.drop_index("ix_callback_outbox_due", table_name="callback_outbox")
    op.drop_index("ix_callback_outbox_callback_id", table_name="callback_outbox")
    op.drop_table("callback_outbox")
    op.drop_table("status_callbacks")
