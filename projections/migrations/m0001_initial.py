"""The tables that existed before versioned migrations: interactions, relationships, dead_letters.

Identical to the DDL the worker ran at start before; on a database created by it, every
statement is a no-op and the migration is only recorded.
"""

from __future__ import annotations

VERSION = 1
NAME = "initial tables: interactions, relationships, dead_letters"
TS = "DateTime64(3, 'UTC')"


def statements(db: str) -> list[str]:
    return [
        f"CREATE DATABASE IF NOT EXISTS {db}",
        f"""
        CREATE TABLE IF NOT EXISTS {db}.interactions (
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
            occurred_at {TS},
            received_at {TS},
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
        CREATE TABLE IF NOT EXISTS {db}.relationships (
            workspace LowCardinality(String),
            contact_id String,
            first_contact_at Nullable({TS}),
            last_contact_at Nullable({TS}),
            last_inbound_at Nullable({TS}),
            last_outbound_at Nullable({TS}),
            last_platform LowCardinality(String),
            interactions UInt64,
            our_replies UInt32,
            our_latency_p50_s Nullable(Float64),
            our_latency_p90_s Nullable(Float64),
            awaiting_reply_since Nullable({TS}),
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
            strength_at Nullable({TS}),
            typical_gap_days Nullable(Float64),
            touch_due_at Nullable({TS}),
            qualified_conversations UInt32,
            qualified_at Array({TS}),
            stage LowCardinality(String),
            platforms Array(LowCardinality(String)),
            platform_moves UInt32,
            members Array(LowCardinality(String)),
            late_events UInt32,
            policy_version LowCardinality(String),
            revision UInt64,
            updated_at {TS}
        ) ENGINE = ReplacingMergeTree(revision)
        ORDER BY (workspace, contact_id)
        SETTINGS non_replicated_deduplication_window = 1000
        """,
        f"""
        CREATE TABLE IF NOT EXISTS {db}.dead_letters (
            workspace LowCardinality(String),
            source LowCardinality(String),
            reason String,
            received_at {TS},
            failed_at {TS},
            raw_partition Int32,
            raw_offset Int64,
            body String
        ) ENGINE = ReplacingMergeTree
        ORDER BY (workspace, raw_partition, raw_offset)
        SETTINGS non_replicated_deduplication_window = 1000
        """,
    ]
