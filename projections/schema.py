"""ClickHouse tables of database `rapport`; created idempotently at start."""

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


def ddl(database: str) -> list[str]:
    """Statements that create every table; each is safe to run again."""
    ts = "DateTime64(3, 'UTC')"
    return [
        f"CREATE DATABASE IF NOT EXISTS {database}",
        f"""
        CREATE TABLE IF NOT EXISTS {database}.interactions (
            event_id String,
            workspace LowCardinality(String),
            contact_id String,
            platform LowCardinality(String),
            kind LowCardinality(String),
            direction LowCardinality(String),
            intent LowCardinality(String),
            actor_id String,
            subject_id String,
            account_id String,
            member LowCardinality(String),
            occurred_at {ts},
            received_at {ts},
            conversation_id String,
            object_id String,
            in_reply_to String,
            raw_partition Int32,
            raw_offset Int64,
            schema_version UInt16
        ) ENGINE = ReplacingMergeTree
        PARTITION BY toYYYYMM(occurred_at)
        ORDER BY (workspace, contact_id, occurred_at, event_id)
        SETTINGS non_replicated_deduplication_window = 1000
        """,
        f"""
        CREATE TABLE IF NOT EXISTS {database}.relationships (
            workspace LowCardinality(String),
            contact_id String,
            first_contact_at Nullable({ts}),
            last_contact_at Nullable({ts}),
            last_inbound_at Nullable({ts}),
            last_outbound_at Nullable({ts}),
            last_platform LowCardinality(String),
            interactions UInt64,
            our_replies UInt32,
            our_latency_p50_s Nullable(Float64),
            our_latency_p90_s Nullable(Float64),
            awaiting_reply_since Nullable({ts}),
            their_replies UInt32,
            their_latency_p50_s Nullable(Float64),
            their_latency_p90_s Nullable(Float64),
            gives_out Float64,
            asks_out Float64,
            gives_in Float64,
            asks_in Float64,
            balance Float64,
            reciprocity Nullable(Float64),
            ask_only Bool,
            strength Float64,
            strength_at Nullable({ts}),
            typical_gap_days Nullable(Float64),
            touch_due_at Nullable({ts}),
            qualified_conversations UInt32,
            qualified_at Array({ts}),
            stage LowCardinality(String),
            platforms Array(LowCardinality(String)),
            platform_moves UInt32,
            members Array(LowCardinality(String)),
            late_events UInt32,
            policy_version LowCardinality(String),
            revision UInt64,
            updated_at {ts}
        ) ENGINE = ReplacingMergeTree(revision)
        ORDER BY (workspace, contact_id)
        SETTINGS non_replicated_deduplication_window = 1000
        """,
        f"""
        CREATE TABLE IF NOT EXISTS {database}.dead_letters (
            workspace LowCardinality(String),
            source LowCardinality(String),
            reason String,
            received_at {ts},
            failed_at {ts},
            raw_partition Int32,
            raw_offset Int64,
            body String
        ) ENGINE = ReplacingMergeTree
        ORDER BY (workspace, raw_partition, raw_offset)
        SETTINGS non_replicated_deduplication_window = 1000
        """,
    ]
