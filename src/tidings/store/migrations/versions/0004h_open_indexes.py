"""Partial indexes of open rows: ``ix_deliveries_order`` and ``ix_notifications_subject``.

Both are looked up only for open rows: a delivery's turn in its subject's order asks for
``pending``/``sending`` deliveries of an order key, and a cancelling event for the
``scheduled`` notifications of a subject. Indexing every row made each insert touch a page
at a random place in a b-tree that grew with the history (the keys are per subscriber and
subject), and under load each such page was written to the WAL once per transaction. As
partial indexes they hold only the open rows: a few pages, hot, whatever the history.

Revision ID: 0004h
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004h"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

OPEN_DELIVERY = "status IN ('pending', 'sending')"
SCHEDULED = "status = 'scheduled'"


def _partial(where: str) -> dict[str, Any]:
    return {"sqlite_where": sa.text(where), "postgresql_where": sa.text(where)}


def upgrade() -> None:
    """Recreate both indexes as partial ones."""
    op.drop_index("ix_deliveries_order", table_name="deliveries")
    op.create_index(
        "ix_deliveries_order",
        "deliveries",
        ["order_key", "status"],
        unique=False,
        **_partial(OPEN_DELIVERY),
    )
    op.drop_index("ix_notifications_subject", table_name="notifications")
    op.create_index(
        "ix_notifications_subject",
        "notifications",
        ["subject", "status"],
        unique=False,
        **_partial(SCHEDULED),
    )


def downgrade() -> None:
    """Index every row again."""
    op.drop_index("ix_notifications_subject", table_name="notifications")
    op.create_index("ix_notifications_subject", "notifications", ["subject", "status"])
    op.drop_index("ix_deliveries_order", table_name="deliveries")
    op.create_index("ix_deliveries_order", "deliveries", ["order_key", "status"])
