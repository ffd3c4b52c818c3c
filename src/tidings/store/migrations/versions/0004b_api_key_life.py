"""API keys with a life: a name, an expiry, a revocation and a last-used time (issue 12).

``tidings keys create`` stores keys (hashed) with an optional ``name`` and ``expires_at``;
``tidings keys revoke`` sets ``revoked_at``; a key's use is stamped in ``last_used_at`` (at
most once a minute per key).

Revision ID: 0004b
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004b"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

_COLUMNS = (
    ("name", sa.String(length=128)),
    ("expires_at", sa.Float()),
    ("revoked_at", sa.Float()),
    ("last_used_at", sa.Float()),
)


def upgrade() -> None:
    """Add ``api_keys.name``, ``expires_at``, ``revoked_at`` and ``last_used_at``."""
    # a database made by create_all (adopted at 0001, see tidings.store.migrations) has them
    present = {column["name"] for column in sa.inspect(op.get_bind()).get_columns("api_keys")}
    missing = [(name, kind) for name, kind in _COLUMNS if name not in present]
    if not missing:
        return
    with op.batch_alter_table("api_keys") as batch:
        for name, kind in missing:
            batch.add_column(sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    """Drop the columns."""
    with op.batch_alter_table("api_keys") as batch:
        for name, _ in reversed(_COLUMNS):
            batch.drop_column(name)
