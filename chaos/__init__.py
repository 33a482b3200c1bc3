"""The fault-injection suite (`make chaos`): real broker, ingest and workers, broken on purpose.

`python -m chaos [SCENARIO ...] [--events N]` runs each scenario against a real Apache Kafka
broker on free loopback ports, the real `rapport ingest` and `rapport worker` processes and their
embedded ClickHouse, injects one kind of failure, then checks that ClickHouse equals a clean
replay of the event log and that every generated event counts exactly once.
"""
