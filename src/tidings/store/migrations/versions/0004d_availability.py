"""Availability (SPEC §13): ``service_runs`` and ``breaker_transitions``.

Each process of the service keeps a row of its run (``started_at``, and ``seen_at``
refreshed by a heartbeat: a process killed mid-run was up until then); each provider
circuit breaker's open/close transition is a row of its run. MTBF, MTTR and availability
per provider, channel and for the service are computed from them.

Revision ID: 0004d
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004d"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create ``service_runs`` and ``breaker_transitions``."""
    # a database made by create_all (adopted at 0001, see tidings.store.migrations) has them
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "service_runs" not in existing:
        op.create_table(
            "service_runs",
            sa.Column("id", sa.String(length=36), primary_key=True),
            sa.Column("started_at", sa.Float(), nullable=False),
            sa.Column("seen_at", sa.Float(), nullable=False),
        )
        op.create_index("ix_service_runs_seen", "service_runs", ["seen_at"], unique=False)
    if "breaker_transitions" not in existing:
        op.create_table(
            "breaker_transitions",
            sa.Column("id", sa.String(length=36), primary_key=True),
            sa.Column("run_id", sa.String(length=36), nullable=False),
            sa.Column("provider", sa.String(length=64), nullable=False),
            sa.Column("channel", sa.String(length=16), nullable=False),
            sa.Column("state", sa.String(length=8), nullable=False),
            sa.Column("at", sa.Float(), nullable=False),
        )
        op.create_index(
            "ix_breaker_transitions_run",
            "breaker_transitions",
            ["run_id", "at"],
            unique=False,
        )


def downgrade() -> None:
    """Drop both tables."""
    op.drop_index("ix_breaker_transitions_run", table_name="breaker_transitions")
    op.drop_table("breaker_transitions")
    op.drop_index("ix_service_runs_seen", table_name="service_runs")
    op.drop_table("service_runs")
