"""Replay: recalculate every projection from the event log into a new projection version.

    rapport.events (snapshot: end offsets now) or an archive
        -> recalculation (pure): final identity map, events grouped by (workspace, contact),
           sorted by (occurred_at, event_id), folded (`replayed`: `apply_all` of the whole
           history at once) with each workspace's policy; on a log, by forked `shards`
        -> `writers`: relationships_vN, interactions_vN (through the worker that owns the
           embedded engine, or directly), and `worker_state`: the Faust state of the worker of
           version N (table changelogs, consumer group offsets at the snapshot)
    `activation` of N: stop the worker, hand the consumer offsets over, start the worker of
        version N, which exchanges the tables before it writes anything (`sink`).

`build` runs the whole of it (`rapport replay`); `interfaces` holds what the parts agree on,
`rows` the rows as the tables and the replay topic take them, `arrow` the same rows as Arrow.

The fold sees every event in order, so the result is the exact ordered definition of
docs/metrics.md for every event, late or not, and equal field for field to what the live path
holds for events that arrived on time. docs/replay.md describes the procedure.
"""
