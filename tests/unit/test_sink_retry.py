"""The ClickHouse sink against real failures of the real engine: retried until it lands, once.

The failure is ClickHouse's own: a CHECK constraint that rejects every row
(`ALTER TABLE ... ADD CONSTRAINT block CHECK 0`) until it is dropped, and a server DSN where
nothing listens. No fake database.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from projections.rows import interaction_row
from projections.schema import INTERACTION_COLUMNS
from projections.store import ClickHouseStore, StoreUnavailable, redact, server_dsn
from rapport.process import free_port
from streams.sink import ClickHouseSink, batch_token
from tests.datasets import collegemsg_interactions

BLOCK = "ALTER TABLE rapport.interactions ADD CONSTRAINT block CHECK 0"
UNBLOCK = "ALTER TABLE rapport.interactions DROP CONSTRAINT block"


async def _wait_until(predicate: object, timeout_s: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def test_a_batch_retried_after_a_failure_lands_once(tmp_path: Path) -> None:
    rows = [interaction_row(e) for e in collegemsg_interactions({"323", "9"}, limit=2500)]
    offsets = [("t.events", i % 4, 100 + i // 4) for i in range(len(rows))]
    token = batch_token("interactions", offsets)

    async def scenario() -> tuple[int, int, int, int]:
        sink = ClickHouseSink(f"chdb://{tmp_path / 'ch'}", "rapport", retry_max_s=0.2)
        try:
            await sink.start()  # opens the engine and applies the migrations
            await sink.command(BLOCK)
            flushing = asyncio.create_task(
                sink.flush("interactions", INTERACTION_COLUMNS, rows, token)
            )
            await _wait_until(lambda: sink.failures >= 3)
            assert not flushing.done()  # blocked, retrying: the caller does not move on
            assert "VIOLATED_CONSTRAINT" in (sink.last_error or "")
            landed_while_blocked = (
                await sink.query("SELECT count() FROM rapport.interactions", {})
            ).rows[0][0]
            await sink.command(UNBLOCK)
            await asyncio.wait_for(flushing, 30)
            # The same batch again, as after a crash between the insert and the offset commit.
            await sink.flush("interactions", INTERACTION_COLUMNS, rows, token)
            count = (await sink.query("SELECT count() FROM rapport.interactions", {})).rows[0][0]
            daily = (
                await sink.query(
                    "SELECT uniqExactMerge(interactions) FROM rapport.workspace_daily", {}
                )
            ).rows[0][0]
            return landed_while_blocked, count, daily, sink.failures
        finally:
            sink.close()

    blocked, count, daily, failures = asyncio.run(scenario())
    assert blocked == 0
    assert count == len(rows) and daily == len(rows)
    assert failures >= 3


def test_the_token_covers_the_offset_range_not_the_arrival_order() -> None:
    a = batch_token("interactions", [("t", 0, 5), ("t", 1, 9), ("t", 0, 7)])
    b = batch_token("interactions", [("t", 1, 9), ("t", 0, 7), ("t", 0, 5)])
    assert a == b
    assert a != batch_token("interactions", [("t", 0, 5), ("t", 1, 9), ("t", 0, 8)])
    assert a != batch_token("relationships", [("t", 0, 5), ("t", 1, 9), ("t", 0, 7)])


def test_a_server_that_is_down_is_retried_not_skipped() -> None:
    """The http DSN path of clickhouse-connect with nothing listening: the sink keeps trying."""
    url = f"http://rapport:secret@127.0.0.1:{free_port()}/rapport"
    assert server_dsn(url) == url.removesuffix("/rapport")
    assert "secret" not in redact(url)
    with pytest.raises(StoreUnavailable) as raised:
        ClickHouseStore(url, "rapport")
    assert "secret" not in str(raised.value)
    rows = [interaction_row(e) for e in collegemsg_interactions({"323"}, limit=10)]

    async def scenario() -> int:
        sink = ClickHouseSink(url, "rapport", retry_max_s=0.1)
        try:
            await sink.start()  # logs, does not raise: the flushes retry opening it
            flushing = asyncio.create_task(
                sink.flush("interactions", INTERACTION_COLUMNS, rows, "token")
            )
            await _wait_until(lambda: sink.failures >= 3)
            assert not flushing.done()
            flushing.cancel()
            return sink.failures
        finally:
            sink.close()

    assert asyncio.run(scenario()) >= 3


def test_a_worker_activates_its_version_before_it_consumes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`rapport worker` exchanges the tables before the app starts: a built version becomes the
    active one, an unbuilt one is refused, and an unreachable ClickHouse is waited for."""
    from rapport.settings import Settings
    from streams import versions
    from streams.replay.sink import VersionActivation

    url = f"chdb://{tmp_path / 'ch'}"
    sink = ClickHouseSink(url, "rapport")
    try:
        sink.call(lambda store: versions.prepare(store, "rapport", 2, "b2"))
        v2 = Settings(home=tmp_path, clickhouse_url=url, projection_version=2, worker_id="w-v2")
        assert VersionActivation(v2, sink).run() == 1
        assert sink.call(lambda store: versions.active(store, "rapport")) == 2
        assert VersionActivation(v2, sink).run() == 2  # a restart: already active
        v3 = v2.model_copy(update={"projection_version": 3, "worker_id": "w-v3"})
        with pytest.raises(versions.VersionError, match="not built"):
            VersionActivation(v3, sink).run(sleep=lambda s: None)
    finally:
        sink.close()

    away = f"http://127.0.0.1:{free_port()}/rapport"
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 4:
            raise TimeoutError("gave up waiting (the test)")

    unreachable = ClickHouseSink(away, "rapport")
    try:
        settings = Settings(home=tmp_path, clickhouse_url=away, projection_version=2)
        with pytest.raises(TimeoutError):
            VersionActivation(settings, unreachable).run(sleep=sleep)
    finally:
        unreachable.close()
    assert waits == [0.5, 1.0, 2.0, 4.0]
    assert "cannot activate projection version 2 yet" in caplog.text


def test_unique_batches_skip_the_in_block_merge_others_keep_it(tmp_path: Path) -> None:
    """`flush(..., unique=True)` (the worker's replay sink: a build's rows are each event once)
    inserts without ReplacingMergeTree's in-block merge; the live sink's batches keep it. Two
    rows sharing the sorting key show which one ran."""
    event = collegemsg_interactions({"323"}, limit=1)[0]
    twins = [interaction_row(event), interaction_row(event.model_copy(update={"object_id": "2"}))]

    async def scenario() -> tuple[int, int]:
        sink = ClickHouseSink(f"chdb://{tmp_path / 'ch'}", "rapport", retry_max_s=0.2)
        counts = []
        try:
            await sink.start()
            for n, unique in enumerate((True, False)):
                await sink.command("TRUNCATE TABLE rapport.interactions")
                await sink.flush("interactions", INTERACTION_COLUMNS, twins, f"t{n}", unique=unique)
                result = await sink.query("SELECT count() FROM rapport.interactions", {})
                counts.append(int(result.rows[0][0]))
        finally:
            sink.close()
        return counts[0], counts[1]

    assert asyncio.run(scenario()) == (2, 1)
