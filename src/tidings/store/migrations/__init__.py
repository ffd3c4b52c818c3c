"""The schema's history (Alembic), one for SQLite and PostgreSQL, shipped inside the package.

:func:`upgrade` brings a database to the newest revision; :class:`tidings.store.Store` runs it
at start, so every ``tidings serve`` / ``tidings worker`` migrates before it works. Several
processes starting at once on PostgreSQL take turns (an advisory lock held by the migrating
transaction). A change to :mod:`tidings.store.tables` needs a new revision in ``versions/``::

    .venv/bin/alembic -c src/tidings/store/migrations/alembic.ini revision --autogenerate -m "why"

(with ``TIDINGS_DATABASE_URL`` naming a database at the current head);
``tests/store/test_migrations.py`` fails while the tables and the history disagree.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic (and Mako under it) is imported where it is used: the service's processes never
# migrate (``tidings serve`` does it once, before it starts them), and it costs each of them
# ~8 MB of memory and ~70 ms of start-up.

HERE = Path(__file__).resolve().parent
BASELINE = "0001"
"""The revision a database created before migrations existed (``create_all``) matches."""
_LOCK_KEY = 0x7469_6469  # "tidi": one advisory lock for every tidings migration


def config(connection: Connection | None = None) -> Config:
    """An Alembic config for this package's history (bound to ``connection`` if given)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def heads() -> frozenset[str]:
    """The newest revisions: one per branch (several features may each add one to ``0003``)."""
    from alembic.script import ScriptDirectory

    return frozenset(ScriptDirectory.from_config(config()).get_heads())


def current(connection: Connection) -> frozenset[str]:
    """The revisions ``connection``'s database is at (empty: never migrated)."""
    from alembic.runtime.migration import MigrationContext

    return frozenset(MigrationContext.configure(connection).get_current_heads())


def upgrade(connection: Connection) -> None:
    """Migrate to the newest revision inside the caller's transaction."""
    from alembic import command

    if connection.dialect.name == "postgresql":
        # held until the caller commits: a second process waits, then finds nothing to do
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    cfg = config(connection)
    if not current(connection) and inspect(connection).has_table("events"):
        command.stamp(cfg, BASELINE)  # made by create_all before the history began
    command.upgrade(cfg, "heads")
