"""Column orders of the ClickHouse tables of database `rapport` (the DDL is in migrations/)."""

from __future__ import annotations

INTERACTION_COLUMNS = (
    "event_id",
    "workspace",
    "contact_id",
    "platform",
    "kind",
    "direction",
    "intent",
    "actor_id",
    "subject_id",
    "account_id",
    "member",
    "occurred_at",
    "received_at",
    "conversation_id",
    "object_id",
    "in_reply_to",
    "raw_partition",
    "raw_offset",
    "schema_version",
)

RELATIONSHIP_COLUMNS = (
    "workspace", "contact_id", "first_contact_at", "last_contact_at", "last_inbound_at",
    "last_outbound_at", "last_platform", "interactions", "our_replies", "our_latency_p50_s",
    "our_latency_p90_s", "awaiting_reply_since", "their_replies", "their_latency_p50_s",
    "their_latency_p90_s", "gives_out", "asks_out", "gives_in", "asks_in", "balance",
    "reciprocity", "ask_only", "strength", "strength_at", "typical_gap_days", "touch_due_at",
    "qualified_conversations", "qualified_at", "stage", "platforms", "platform_moves", "members",
    "late_events", "policy_version", "revision", "updated_at",
)  # fmt: skip
RELATIONSHIP_TIME_COLUMNS = frozenset(
    {
        "first_contact_at", "last_contact_at", "last_inbound_at", "last_outbound_at",
        "awaiting_reply_since", "strength_at", "touch_due_at",
    }
)  # fmt: skip

DEAD_LETTER_COLUMNS = (
    "workspace",
    "source",
    "reason",
    "received_at",
    "failed_at",
    "raw_partition",
    "raw_offset",
    "body",
)


RELATIONSHIP_DAILY_COLUMNS = ("day", *RELATIONSHIP_COLUMNS)

TABLES = (
    "interactions",
    "relationships",
    "relationships_daily",
    "workspace_daily",
    "dead_letters",
    "schema_migrations",
)


def ddl(database: str) -> list[str]:
    """Every statement of every migration, in order (`projections.migrations` owns the schema)."""
    from projections.migrations import statements

    return statements(database)
