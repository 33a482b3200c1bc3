"""`interactions.sunk_at`: when the row reached ClickHouse, for the pipeline lag panels.

Set by the column default at insert time (the sink never sends it). Rows that existed before
this migration get the migration's time.
"""

from __future__ import annotations

VERSION = 2
NAME = "interactions.sunk_at (insert time) for pipeline lag"


def statements(db: str) -> list[str]:
    return [
        f"""
        ALTER TABLE {db}.interactions
        ADD COLUMN IF NOT EXISTS sunk_at DateTime64(3, 'UTC') DEFAULT now64(3, 'UTC')
        """,
        f"ALTER TABLE {db}.interactions MATERIALIZE COLUMN sunk_at",
    ]
