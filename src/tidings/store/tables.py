"""The tables (SQLAlchemy Core), one metadata for SQLite and PostgreSQL.

Times are epoch seconds (``Float``) so that both backends compare and index them alike.
PII columns end in ``_enc`` and hold :class:`tidings.crypto.Cipher` ciphertext.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData()

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_hash", String(64), primary_key=True),
    Column("scopes", String(64), nullable=False),
    Column("label", String(128), nullable=False, default=""),
    Column("created_at", Float, nullable=False),
    # issue 12: ``tidings keys create --name --expires``, ``keys revoke``, use (once a minute)
    Column("name", String(128)),
    Column("expires_at", Float),
    Column("revoked_at", Float),
    Column("last_used_at", Float),
)

events = Table(
    "events",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("source", String(512), nullable=False),
    Column("event_id", String(512), nullable=False),
    Column("type", String(256), nullable=False),
    Column("subject", String(512)),
    Column("time", Float),
    Column("envelope", JSON, nullable=False),
    Column("received_at", Float, nullable=False),
    Column("processed_at", Float),
    UniqueConstraint("source", "event_id", name="uq_events_source_id"),
)
Index("ix_events_unprocessed", events.c.processed_at, events.c.received_at)
Index("ix_events_subject", events.c.subject)

decisions = Table(
    "decisions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("event_pk", String(36), ForeignKey("events.id"), nullable=False, index=True),
    Column("rule_id", String(128), nullable=False),
    Column("recipient_id", String(256)),
    Column("outcome", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("until", Float),
    Column("notification_ids", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
)

notifications = Table(
    "notifications",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("event_pk", String(36), nullable=False, index=True),
    Column("rule_id", String(128), nullable=False),
    Column("subscriber_id", String(256), nullable=False),
    Column("category", String(64), nullable=False),
    Column("priority", String(8), nullable=False),
    Column("subject", String(512)),
    Column("locale", String(35), nullable=False),
    Column("content", JSON, nullable=False),
    Column("channels", JSON, nullable=False),
    Column("fallback", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("dedup_key", String(700), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("due_at", Float, nullable=False),
    Column("expires_at", Float),
    # strategy (issue 5): what cancels a deferred one, and a digest's collected events
    Column("cancel_on", JSON),
    Column("digest", JSON),
)
Index("ix_notifications_subscriber", notifications.c.subscriber_id, notifications.c.id)
Index("ix_notifications_due", notifications.c.status, notifications.c.due_at)
# partial indexes hold only open rows (migration 0004h): a few hot pages whatever the history
Index(
    "ix_notifications_subject",
    notifications.c.subject,
    notifications.c.status,
    sqlite_where=text("status = 'scheduled'"),
    postgresql_where=text("status = 'scheduled'"),
)
Index(
    "ix_notifications_caps",
    notifications.c.subscriber_id,
    notifications.c.category,
    notifications.c.created_at,
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("notification_id", String(36), nullable=False, index=True),
    Column("channel", String(16), nullable=False),
    Column("destination_kind", String(16), nullable=False),
    Column("device_id", String(36)),
    Column("provider", String(64)),
    Column("lane", String(8), nullable=False),
    Column("status", String(16), nullable=False),
    Column("is_fallback", Boolean, nullable=False, default=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text),
    Column("accepted_at", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("due_at", Float, nullable=False),
    Column("enqueued_at", Float),
    Column("lease_until", Float),
    # the process holding a ``sending`` lease: when it dies, its supervisor (or the next
    # start) puts exactly its rows back to ``pending``, not those of live siblings
    Column("leased_by", String(64)),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("tp", Float),
    Column("tc", Float),
    Column("td", Float),
    # per-subject ordering: deliveries with one order_key (subscriber + subject) and one
    # destination leave in ``seq`` (event time) order
    Column("order_key", String(800)),
    Column("seq", Float),
)
Index("ix_deliveries_due", deliveries.c.status, deliveries.c.due_at)
Index(
    "ix_deliveries_order",
    deliveries.c.order_key,
    deliveries.c.status,
    sqlite_where=text("status IN ('pending', 'sending')"),
    postgresql_where=text("status IN ('pending', 'sending')"),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("delivery_id", String(36), nullable=False, index=True),
    Column("number", Integer, nullable=False),
    Column("provider", String(64), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("error", Text),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("delivery_id", String(36), nullable=False, index=True),
    Column("channel", String(16), nullable=False),
    Column("provider", String(64)),
    Column("reason", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("replayed_at", Float),
)

subscribers = Table(
    "subscribers",
    metadata,
    Column("id", String(256), primary_key=True),
    Column("name_enc", Text),
    Column("email_enc", Text),
    Column("phone_enc", Text),
    Column("wechat_openid_enc", Text),
    Column("locale", String(35)),
    Column("timezone", String(64)),
    Column("role", String(32)),
    Column("attributes", JSON, nullable=False),
    Column("preferences", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

devices = Table(
    "devices",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("subscriber_id", String(256), nullable=False, index=True),
    Column("kind", String(16), nullable=False),
    Column("token_enc", Text, nullable=False),
    Column("token_index", String(64), nullable=False),
    Column("keys_enc", Text),
    Column("active", Boolean, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("deactivated_at", Float),
    Column("deactivated_reason", Text),
    UniqueConstraint("subscriber_id", "token_index", name="uq_devices_token"),
)

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("subscriber_id", String(256), nullable=False, index=True),
    Column("url_enc", Text, nullable=False),
    Column("secret_enc", Text, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("deactivated_at", Float),
)

inbox_items = Table(
    "inbox_items",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("subscriber_id", String(256), nullable=False),
    # null: a broadcast's in-app recipient, reached with this item alone (migration 0004i)
    Column("notification_id", String(36)),
    Column("category", String(64), nullable=False),
    Column("title", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("data", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("seen_at", Float),
    Column("read_at", Float),
    Column("archived_at", Float),
)
# also counts a subscriber's broadcast items (no notification) in a cap's window: their ids
# are minted no earlier than their created_at (tidings.ids.floor_id, migration 0004k)
Index("ix_inbox_subscriber", inbox_items.c.subscriber_id, inbox_items.c.id)
# one item per notification; a broadcast's items (null) stay out of it (migration 0004k)
Index(
    "ix_inbox_notification",
    inbox_items.c.notification_id,
    unique=True,
    sqlite_where=text("notification_id IS NOT NULL"),
    postgresql_where=text("notification_id IS NOT NULL"),
)

# issue 14: status callbacks to the shop, their outbox, and the audit trail of API/CLI writes
status_callbacks = Table(
    "status_callbacks",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("url_enc", Text, nullable=False),
    Column("secret_enc", Text, nullable=False),
    Column("types", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
)

callback_outbox = Table(
    "callback_outbox",
    metadata,
    # the ``webhook-id``: one per status change and callback, the same on every retry
    Column("id", String(36), primary_key=True),
    Column("callback_id", String(36), nullable=False, index=True),
    Column("type", String(32), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Column("due_at", Float, nullable=False),
    Column("finished_at", Float),
    Column("last_error", Text),
)
Index("ix_callback_outbox_due", callback_outbox.c.status, callback_outbox.c.due_at)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("key_id", String(64), nullable=False),
    Column("action", String(128), nullable=False),
    Column("resource", String(1024), nullable=False),
    Column("at", Float, nullable=False),
)

# audiences and broadcasts (issue 13, SPEC §10)
topics = Table(
    "topics",
    metadata,
    Column("key", String(256), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

topic_subscribers = Table(
    "topic_subscribers",
    metadata,
    Column("topic_key", String(256), primary_key=True),
    Column("subscriber_id", String(256), primary_key=True),
    Column("created_at", Float, nullable=False),
)
Index("ix_topic_subscribers_subscriber", topic_subscribers.c.subscriber_id)

broadcasts = Table(
    "broadcasts",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("event_pk", String(36), nullable=False),
    # a topic rule's fan-out: the rule (null for POST /v1/broadcasts)
    Column("rule_id", String(128)),
    Column("status", String(16), nullable=False),
    Column("audience", JSON, nullable=False),
    Column("message", JSON, nullable=False),
    Column("send_at", Float, nullable=False),
    Column("rate", Float),
    Column("audience_size", Integer),
    # the chunks made so far cover the audience up to this subscriber id
    Column("planned_to", String(256)),
    Column("planned", Boolean, nullable=False),
    Column("next_at", Float),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
)
Index("ix_broadcasts_status", broadcasts.c.status, broadcasts.c.send_at)
# a deferred notification's broadcast, found by its event (migration 0004i)
Index("ix_broadcasts_event", broadcasts.c.event_pk)

broadcast_chunks = Table(
    "broadcast_chunks",
    metadata,
    Column("broadcast_id", String(128), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("after_id", String(256), nullable=False),
    Column("upto_id", String(256)),
    Column("status", String(16), nullable=False),
    Column("counts", JSON),
    Column("done_at", Float),
)
Index("ix_broadcast_chunks_status", broadcast_chunks.c.status, broadcast_chunks.c.broadcast_id)

broadcast_recipients = Table(
    "broadcast_recipients",
    metadata,
    Column("broadcast_id", String(128), primary_key=True),
    Column("subscriber_id", String(256), primary_key=True),
    Column("outcome", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("until", Float),
    Column("notification_id", String(36)),
    Column("created_at", Float, nullable=False),
    # on SQLite the rows live in the primary key's B-tree, not a rowid's and an index's
    sqlite_with_rowid=False,
)

# availability (SPEC §13): each process's run of the service (its heartbeat says until when
# it was up) and its providers' circuit breaker transitions
service_runs = Table(
    "service_runs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("started_at", Float, nullable=False),
    Column("seen_at", Float, nullable=False),
)
Index("ix_service_runs_seen", service_runs.c.seen_at)

breaker_transitions = Table(
    "breaker_transitions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("run_id", String(36), nullable=False),
    Column("provider", String(64), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("state", String(8), nullable=False),
    Column("at", Float, nullable=False),
)
Index("ix_breaker_transitions_run", breaker_transitions.c.run_id, breaker_transitions.c.at)
