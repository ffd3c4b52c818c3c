"""A subscriber's WeChat openid: ``subscribers.wechat_openid_enc`` (PII, encrypted at rest).

The ``wechat`` channel (SPEC §12) sends subscribe messages to the buyer's openid in the
shop's mini program; like email and phone it is stored as ciphertext.

Revision ID: 0004g
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004g"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add ``subscribers.wechat_openid_enc``."""
    # a database made by create_all (adopted at 0001, see tidings.store.migrations) has it
    columns = sa.inspect(op.get_bind()).get_columns("subscribers")
    if any(column["name"] == "wechat_openid_enc" for column in columns):
        return
    with op.batch_alter_table("subscribers") as batch:
        batch.add_column(sa.Column("wechat_openid_enc", sa.Text(), nullable=True))


def downgrade() -> None:
    """Drop ``subscribers.wechat_openid_enc``."""
    with op.batch_alter_table("subscribers") as batch:
        batch.drop_column("wechat_openid_enc")
