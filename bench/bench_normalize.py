"""Normalization throughput: adapters vs `json.loads` alone on the same real webhook bodies.

The real fixture bodies under tests/fixtures/webhooks/ (X Account Activity and Slack vendor
examples, Meta bodies from restfb when the meta adapter is registered) are repeated, in a fixed
shuffled order, to about N bodies (default 50,000). One run times three passes over that list,
each the best of `--runs` timed repetitions after a warm-up:

* `json.loads`: parsing every body and nothing else (the floor any adapter pays);
* `adapters`: `events.adapters.normalize` for every body (parsing, adapter rules, direction,
  intent, deterministic ids, pydantic models), rejections included;
* `adapters + dump`: the same plus `dump_event` of every event (what the worker writes to Kafka).

Usage: .venv/bin/python bench/bench_normalize.py [--bodies 50000] [--seed 7] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from events.adapters import ADAPTERS, normalize  # noqa: E402
from events.adapters.base import RejectedPayload  # noqa: E402
from events.envelope import RawEnvelope  # noqa: E402
from events.models import dump_event  # noqa: E402
from rapport.workspaces import OwnedAccount, WorkspaceConfig  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "webhooks"
SOURCES = {"x": "x_account_activity", "slack": "slack_docs", "meta": "meta_restfb"}

# Owned accounts that appear in the fixtures, so directions and parties are really computed.
WORKSPACE = WorkspaceConfig(
    name="bench",
    accounts=tuple(
        OwnedAccount(platform=p, user_id=u, member="brand")
        for p, u in [
            ("x", "4337869213"),
            ("slack", "U222222222"),
            ("facebook", "1234567890321"),
            ("instagram", "1234567890321"),
            ("whatsapp", "1234567890321"),
        ]
    ),
)


def load_bodies() -> list[tuple[str, bytes]]:
    bodies: list[tuple[str, bytes]] = []
    for source, folder in SOURCES.items():
        if source not in ADAPTERS:
            continue
        for path in sorted((FIXTURES / folder).rglob("*.json")):
            body = path.read_bytes()
            try:
                json.loads(body)
            except ValueError:
                continue
            bodies.append((source, body))
    return bodies


def timed(label: str, run: Callable[[], tuple[int, int]], runs: int) -> tuple[str, float, int, int]:
    """The best of `runs` timed passes, after one warm-up pass (caches, lazy imports)."""
    run()
    best = float("inf")
    events = rejected = 0
    for _ in range(max(1, runs)):
        start = time.perf_counter()
        events, rejected = run()
        best = min(best, time.perf_counter() - start)
    return label, best, events, rejected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bodies", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--runs", type=int, default=3, help="timed passes; the best is kept")
    args = parser.parse_args()

    distinct = load_bodies()
    if not distinct:
        sys.exit("no fixture bodies found under tests/fixtures/webhooks")
    work = (distinct * (args.bodies // len(distinct) + 1))[: args.bodies]
    random.Random(args.seed).shuffle(work)
    received = datetime.now(UTC)

    def envelopes_of(items: list[tuple[str, bytes]]) -> list[RawEnvelope]:
        return [
            RawEnvelope(workspace="bench", source=source, received_at=received, body=body)
            for source, body in items
        ]

    envelopes = envelopes_of(work)

    def parse_only() -> tuple[int, int]:
        for envelope in envelopes:
            json.loads(envelope.body)
        return 0, 0

    def adapters(
        dump: bool, subset: list[RawEnvelope] = envelopes
    ) -> Callable[[], tuple[int, int]]:
        def run() -> tuple[int, int]:
            events = rejected = 0
            for envelope in subset:
                try:
                    result = normalize(WORKSPACE, envelope)
                except RejectedPayload:
                    rejected += 1
                    continue
                events += len(result.events)
                if dump:
                    for event in result.events:
                        dump_event(event)
            return events, rejected

        return run

    rows = [
        timed("json.loads", parse_only, args.runs),
        timed("adapters", adapters(dump=False), args.runs),
        timed("adapters + dump", adapters(dump=True), args.runs),
    ]
    per_source = Counter(source for source, _ in work)
    print(
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cpus; "
        f"{len(distinct)} distinct real bodies repeated to {len(work):,} "
        f"({', '.join(f'{s}: {n:,}' for s, n in sorted(per_source.items()))}); "
        f"best of {args.runs} runs"
    )
    print(
        f"{'pass':<16} {'seconds':>8} {'bodies/s':>10} {'events':>8} {'events/s':>10} "
        f"{'rejected':>8} {'x json':>7}"
    )
    base = rows[0][1]
    for label, seconds, events, rejected in rows:
        events_rate = f"{events / seconds:>10,.0f}" if events else f"{'-':>10}"
        print(
            f"{label:<16} {seconds:>8.3f} {len(work) / seconds:>10,.0f} {events:>8,} "
            f"{events_rate} {rejected:>8,} {seconds / base:>7.1f}"
        )
    # Each platform alone, its own distinct bodies repeated to --bodies / 5.
    count = max(1, args.bodies // 5)
    print(f"per platform, {count:,} bodies each (same columns):")
    for source in sorted(per_source):
        own = [item for item in distinct if item[0] == source]
        subset = envelopes_of((own * (count // len(own) + 1))[:count])
        _, seconds, events, rejected = timed(source, adapters(False, subset), args.runs)
        events_rate = f"{events / seconds:>10,.0f}" if events else f"{'-':>10}"
        print(
            f"{'  ' + source:<16} {seconds:>8.3f} {count / seconds:>10,.0f} {events:>8,} "
            f"{events_rate} {rejected:>8,}"
        )


if __name__ == "__main__":
    main()
