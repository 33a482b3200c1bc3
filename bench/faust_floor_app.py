"""A Faust app whose only agent consumes a topic and does nothing: the framework's own cost.

Run by bench_worker.py as `python bench/faust_floor_app.py worker -l warn` with FLOOR_BOOTSTRAP,
FLOOR_TOPIC, FLOOR_EVENTS and FLOOR_MODE (`batch`: take_events like Rapport's agents;
`forward`: also re-produce every record, one hop like Rapport's re-keying) in the environment.
It prints `<mode>: <events/s>` and exits once it has seen FLOOR_EVENTS records.
"""

from __future__ import annotations

import os
import time
from typing import Any

import faust

BOOTSTRAP = os.environ["FLOOR_BOOTSTRAP"]
TOPIC = os.environ["FLOOR_TOPIC"]
EVENTS = int(os.environ["FLOOR_EVENTS"])
MODE = os.environ.get("FLOOR_MODE", "batch")

app = faust.App(
    f"faust-floor-{os.getpid()}",
    broker=f"kafka://{BOOTSTRAP}",
    store="memory://",
    key_serializer="raw",
    value_serializer="raw",
    consumer_auto_offset_reset="earliest",
    web_enabled=False,
    producer_linger_ms=10,
    autodiscover=False,
)
source = app.topic(TOPIC, key_type=bytes, value_type=bytes)
seen = {"n": 0, "t0": 0.0}


@app.agent(source)
async def consume(stream: Any) -> Any:
    async for batch in stream.take_events(2000, 0.2):
        if MODE == "forward":
            for event in batch:
                await app.producer.send(f"{TOPIC}.floor", event.key, event.value, None, None, None)
        if not seen["t0"]:
            seen["t0"] = time.perf_counter()
        seen["n"] += len(batch)
        if seen["n"] >= EVENTS:
            rate = seen["n"] / (time.perf_counter() - seen["t0"])
            print(f"{MODE}: {rate:.0f}", flush=True)
            os._exit(0)
        yield None


if __name__ == "__main__":
    app.main()
