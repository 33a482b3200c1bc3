"""`workspace_daily`: distinct interactions and contacts per UTC day, workspace, platform, member,
direction, kind and intent, kept by a materialized view over `interactions`.

The counts are `uniqExact` states of event ids and contact ids, so they stay exact whatever
reaches `interactions` twice (a redelivered webhook, a batch replayed after a crash with other
offsets, the backfill below racing the view): merging a state with itself changes nothing.
A retried batch with the same deduplication token is dropped before the view sees it.
"""

from __future__ import annotations

VERSION = 3
NAME = "workspace_daily (AggregatingMergeTree) + materialized view over interactions, backfilled"

CONVERSATIONAL = (
    "'message', 'reply', 'comment', 'mention', 'quote', 'introduction', 'meeting', 'call', 'email'"
)


def _select(db: str) -> str:
    return f"""
        SELECT
            workspace,
            toDate(occurred_at) AS day,
            platform,
            member,
            direction,
            kind,
            intent,
            kind IN ({CONVERSATIONAL}) AS conversational,
            uniqExactState(event_id) AS interactions,
            uniqExactState(contact_id) AS contacts
        FROM {db}.interactions
        GROUP BY workspace, day, platform, member, direction, kind, intent, conversational
    """


def statements(db: str) -> list[str]:
    return [
        f"""
        CREATE TABLE IF NOT EXISTS {db}.workspace_daily (
            workspace LowCardinality(String),
            day Date,
            platform LowCardinality(String),
            member LowCardinality(String),
            direction LowCardinality(String),
            kind LowCardinality(String),
            intent LowCardinality(String),
            conversational Bool,
            interactions AggregateFunction(uniqExact, String),
            contacts AggregateFunction(uniqExact, String)
        ) ENGINE = AggregatingMergeTree
        PARTITION BY toYYYYMM(day)
        ORDER BY (workspace, day, platform, member, direction, kind, intent, conversational)
        SETTINGS non_replicated_deduplication_window = 1000
        """,
        f"""
        CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.workspace_daily_mv TO {db}.workspace_daily
        AS {_select(db)}
        """,
        f"INSERT INTO {db}.workspace_daily {_select(db)}",
    ]
