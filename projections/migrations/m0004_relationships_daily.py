"""`relationships_daily`: the relationship row as of each UTC day on which it changed.

Written by the relationships sink next to `relationships`: for every emitted view, a row keyed
by (workspace, contact_id, day of the relationship's last event) holding the same fields. A
ReplacingMergeTree(revision) keeps the newest revision per day (read with FINAL or argMax), so
the table is the relationship's daily history: latency percentiles, give/take, strength and
stage per day. Backfilled from the current `relationships` rows.
"""

from __future__ import annotations

VERSION = 4
NAME = "relationships_daily (ReplacingMergeTree(revision) by workspace, contact, day), backfilled"
TS = "DateTime64(3, 'UTC')"

COLUMNS = """
    workspace, contact_id, first_contact_at, last_contact_at, last_inbound_at,
    last_outbound_at, last_platform, interactions, our_replies, our_latency_p50_s,
    our_latency_p90_s, awaiting_reply_since, their_replies, their_latency_p50_s,
    their_latency_p90_s, gives_out, asks_out, gives_in, asks_in, balance, reciprocity,
    ask_only, strength, strength_at, typical_gap_days, touch_due_at, qualified_conversations,
    qualified_at, stage, platforms, platform_moves, members, late_events, policy_version,
    revision, updated_at
"""


def statements(db: str) -> list[str]:
    return [
        f"""
        CREATE TABLE IF NOT EXISTS {db}.relationships_daily (
            day Date,
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
        PARTITION BY toYYYYMM(day)
        ORDER BY (workspace, contact_id, day)
        SETTINGS non_replicated_deduplication_window = 1000
        """,
        f"""
        INSERT INTO {db}.relationships_daily (day, {COLUMNS})
        SELECT toDate(assumeNotNull(last_contact_at)) AS day, {COLUMNS}
        FROM {db}.relationships FINAL
        WHERE last_contact_at IS NOT NULL
        """,
    ]
