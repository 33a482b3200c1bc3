"""The process runtime the ingest and the worker share: their event loop and garbage collector."""

from __future__ import annotations

import asyncio
import gc


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when it is installed (it is a dependency on Linux and macOS), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def freeze_startup_heap() -> None:
    """Keep the garbage collector off what was allocated at startup (modules, settings, app).

    Full collections otherwise walk every object the imports left behind, again and again,
    while serving: about 5 % of the ingest's time under load. What a request or an event
    allocates is still collected. The bare server of bench/bench_ingest.py calls this too.
    """
    gc.collect()
    gc.freeze()


WORKER_GC_THRESHOLDS = (20_000, 20, 10)  # Python's defaults: (700, 10, 10)


def collect_less_often() -> None:
    """Run the worker's cyclic garbage collector far less often than Python's default.

    The worker allocates many objects per event (Faust's events, messages and futures, decoded
    JSON, rows) and keeps many (the decoded relationship states); reference counting frees
    nearly all the former, but a young collection every 700 net allocations, and the older
    generations' collections it triggers, kept walking the latter. At 1,000 deliveries/s
    (`bench/bench_load.py`, docs/benchmarks.md) this threshold took the worker from falling
    behind (927 rows/s, freshness p95 8.3 s) to keeping up (p95 2.5 s).
    """
    gc.set_threshold(*WORKER_GC_THRESHOLDS)
